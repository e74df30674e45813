"""The timestep study (``xbar timesteps``) on a tiny configuration."""

import numpy as np
import pytest
import xarray as xr
from click.testing import CliRunner

import studies.timesteps as ts
from studies.cli import main
from studies.timesteps import TimestepStudyConfig, run_timestep_study

TINY = dict(dataset="digits", arch="mlp", tiles=((16, 16), (64, 32)), trials=2, n_test=60,
            surrogate_timesteps=(2, 3), converted_timesteps=6, qcfs_timesteps=4,
            train_epochs=2, ann_epochs=2)


@pytest.fixture(scope="module")
def tiny_study(_model_cache):
    return run_timestep_study(TimestepStudyConfig(**TINY), progress=False)


def test_dataset_has_the_documented_dims_and_variables(tiny_study):
    ds = tiny_study
    assert set(ds.dims) == set(ts.DIMS)
    assert {name: ds[name].dims for name in ds.data_vars} == ts.VARIABLES
    for name in [*ts.VARIABLES, *ts.DIMS]:
        assert f"``{name}``" in ts.__doc__, name  # every variable and dim is documented
    assert ds.sizes == {"model": 4, "tile": 2, "trial": 2, "timestep": 6, "layer": 3, "phase": 2}
    assert list(ds.model.values) == ["surrogate T=2", "surrogate T=3", "converted", "qcfs"]
    assert list(ds.method.values) == ["surrogate", "surrogate", "converted", "qcfs"]
    assert list(ds.run_timesteps.values) == [3, 3, 6, 4]
    assert list(ds.tile.values) == ["16x16", "64x32"]
    assert ds.attrs["study_trials"] == 2 and ds.attrs["n_samples"] == 60


def test_values_stop_at_each_models_run_and_spikes_add_up(tiny_study):
    ds = tiny_study
    for model in ds.model.values:
        one = ds.sel(model=model)
        run = int(one.run_timesteps)
        assert bool(one.accuracy.isel(timestep=slice(0, run)).notnull().all())
        assert bool(one.accuracy.isel(timestep=slice(run, None)).isnull().all())
        assert bool(((one.accuracy >= 0) & (one.accuracy <= 1)).sum() == one.accuracy.notnull().sum())
        # spikes per image over steps 1..t == sum of spike rate x neurons
        hidden = one.isel(layer=0, timestep=slice(0, run))
        expect = (hidden.spike_rate * hidden.neurons).cumsum("timestep")
        np.testing.assert_allclose(hidden.spikes, expect, rtol=1e-12)
    # neurons fed per image: the MLP's hidden layers, none after the output layer
    np.testing.assert_array_equal(ds.neurons, np.broadcast_to([256, 128, 0], ds.neurons.shape))
    # the output layer has no neuron: no spikes, no membrane
    assert bool(ds.spikes.isel(layer=-1).isnull().all())
    assert bool((ds.seconds >= 0).all()) and bool((ds.seconds_training >= 0).all())


def test_no_non_ideality_gives_the_ideal_networks(_model_cache):
    config = TimestepStudyConfig(**{**TINY, "tiles": ((16, 16),), "trials": 1}, device="ideal",
                                 r_wire=0.0, adc_bits=None)
    ds = run_timestep_study(config, progress=False)
    np.testing.assert_array_equal(ds.accuracy.isel(tile=0, trial=0), ds.accuracy_ideal)
    err = ds.layer_error.where(ds.layer_error.notnull(), 0)
    assert float(err.max()) < 1e-5
    assert float(ds.spike_mismatch.fillna(0).max()) == 0


def test_programming_seed_depends_only_on_the_cells_own_names():
    a = ts.programming_seed(0, "converted", (64, 64))
    assert a == ts.programming_seed(0, "converted", (64, 64))
    assert len({a, ts.programming_seed(1, "converted", (64, 64)), ts.programming_seed(0, "qcfs", (64, 64)),
                ts.programming_seed(0, "converted", (32, 32))}) == 4


def test_figures_and_dataset_are_written_and_reopen(tmp_path, tiny_study):
    paths = ts.write_timestep_results(tiny_study, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        [ts.RESULTS_FILE, ts.ACCURACY_FIGURE, ts.ERRORS_FIGURE])
    for png in paths[1:]:
        data = png.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    back = xr.open_dataset(paths[0])
    xr.testing.assert_allclose(back.accuracy, tiny_study.accuracy)
    assert list(back.layer_name.sel(model="converted").values) == list(
        tiny_study.layer_name.sel(model="converted").values)


@pytest.mark.parametrize("change, words", [
    ({"tiles": ()}, "tiles"),
    ({"tiles": ((16, 16), (16, 16))}, "tiles"),
    ({"tiles": ((16, 0),)}, "Spec.tile"),
    ({"surrogate_timesteps": ()}, "surrogate_timesteps"),
    ({"surrogate_timesteps": (2, 0)}, "surrogate_timesteps"),
    ({"converted_timesteps": 0}, "converted_timesteps"),
    ({"trials": 0}, "trials"),
    ({"r_wire": -1.0}, "r_wire_row"),
    ({"arch": "vgg"}, "arch"),
])
def test_bad_configs_are_named(change, words):
    with pytest.raises(ValueError, match=words):
        TimestepStudyConfig(**{**TINY, **change})


CLI = ["--dataset", "digits", "--tiles", "16,64x32", "--trials", "2", "--n-test", "60",
       "--surrogate-timesteps", "2,3", "--converted-timesteps", "6", "--qcfs-timesteps", "4",
       "--train-epochs", "2", "--ann-epochs", "2"]


def test_cli_writes_the_study(tmp_path, _model_cache):
    out = tmp_path / "res"
    result = CliRunner().invoke(main, ["timesteps", "--out", str(out), *CLI])
    assert result.exit_code == 0, result.output
    for words in ("accuracy (%)", "surrogate T=3", "qcfs", "where the time went"):
        assert words in result.output
    ds = xr.open_dataset(out / ts.RESULTS_FILE)
    assert list(ds.tile.values) == ["16x16", "64x32"] and ds.sizes["trial"] == 2
    assert ds.attrs["study_train_epochs"] == 2
    assert (out / ts.ACCURACY_FIGURE).is_file() and (out / ts.ERRORS_FIGURE).is_file()


@pytest.mark.parametrize("args, words", [
    (["--tiles", "16,abc"], "tiles"),
    (["--tiles", "16,16"], "tiles"),
    (["--surrogate-timesteps", "2,x"], "surrogate_timesteps"),
    (["--trials", "0"], "trials"),
    (["--train-epochs", "0"], "train_epochs"),
    (["--data", "/nonexistent/xbar-data"], "TimestepStudyConfig.dataset"),
    (["--hardware-aware", "--aware", "adc,drift"], "TimestepStudyConfig.aware"),
    (["--hardware-aware", "--aware-tile", "32"], "aware_tile"),
])
def test_cli_refuses_bad_options_before_writing(tmp_path, args, words):
    out = tmp_path / "never"
    result = CliRunner().invoke(main, ["timesteps", "--out", str(out), *CLI, *args])
    assert result.exit_code == 2, result.output
    assert words in result.output
    assert not out.exists()


def test_read_noise_replaces_the_presets():
    config = TimestepStudyConfig(**TINY, device="pcm", read_noise=0.05)
    assert config.spec((16, 16)).device.read_sigma_rel == 0.05
    assert config.spec((16, 16)).device.g_max == ts.presets["pcm"].g_max
    assert TimestepStudyConfig(**TINY, device="pcm").spec((16, 16)).device == ts.presets["pcm"]
    assert TimestepStudyConfig(**TINY, device="ideal").spec((16, 16)).device == ts.presets["ideal"]
    assert TimestepStudyConfig(**TINY).spec((16, 16)).device == ts.presets["rram_hfo2"]
    static = TimestepStudyConfig(**TINY, read_noise_static=1.0).spec((16, 16)).device
    assert static == ts.presets["rram_hfo2"].replace(read_noise_static=1.0)
    assert TimestepStudyConfig(**TINY, calibration=None).spec((16, 16)).calibration is None
    with pytest.raises(ValueError, match="read_noise"):
        TimestepStudyConfig(**TINY, read_noise=-0.1)
    with pytest.raises(ValueError, match="read_noise_static = 2"):
        TimestepStudyConfig(**TINY, read_noise_static=2)


def test_conv_networks_run_in_the_study(_model_cache):
    """The surrogate conv net (max pooling) and the converted one (average pooling) both
    map onto the crossbars: four crossbar layers each."""
    config = TimestepStudyConfig(**{**TINY, "arch": "conv", "tiles": ((32, 32),), "trials": 1,
                                    "surrogate_timesteps": (2,), "qcfs_levels": None,
                                    "converted_timesteps": 3})
    ds = run_timestep_study(config, progress=False)
    assert list(ds.model.values) == ["surrogate T=2", "converted"]
    assert ds.sizes["layer"] == 4
    assert bool((ds.layer_name != "").all())
    assert bool(ds.accuracy.sel(model="converted").notnull().all())
    assert bool((ds.read_error.sel(model="converted") > 0).all())  # RRAM, IR drop, noise: not ideal


def test_hardware_aware_models_stand_beside_the_standard_ones(tmp_path, _model_cache):
    """--hardware-aware adds each surrogate network trained on the largest tile's crossbars,
    and the converted one fine-tuned plainly and hardware-aware, each trained into its own
    cache file."""
    from studies.train import cache_dir

    out = tmp_path / "res"
    before = set(cache_dir().glob("*.pt"))
    result = CliRunner().invoke(main, ["timesteps", "--out", str(out), *CLI, "--qcfs-levels", "0",
                                       "--hardware-aware", "--fine-tune-epochs", "1", "--fine-tune-timesteps", "3"])
    assert result.exit_code == 0, result.output
    assert "trained on the 64x32 crossbars" in result.output
    ds = xr.open_dataset(out / ts.RESULTS_FILE)
    assert list(ds.model.values) == ["surrogate T=2", "surrogate T=3", "converted", "surrogate T=2, aware",
                                     "surrogate T=3, aware", "converted, tuned", "converted, aware"]
    assert list(ds.method.values) == ["surrogate", "surrogate", "converted", "surrogate-aware",
                                      "surrogate-aware", "converted-tuned", "converted-aware"]
    assert ds.attrs["study_hardware_aware"] == 1
    new = {p.name.split("-")[0] for p in set(cache_dir().glob("*.pt")) - before}
    assert new >= {"mlp", "snn"}  # aware surrogate models and fine-tuned SNNs, cached apart
    # The standard and aware networks differ, so their reads do
    a = ds.accuracy.sel(model="surrogate T=3", tile="64x32")
    b = ds.accuracy.sel(model="surrogate T=3, aware", tile="64x32")
    assert not np.array_equal(a.values, b.values)
