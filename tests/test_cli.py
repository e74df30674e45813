import pytest
import xarray as xr
from click.testing import CliRunner

from studies.cli import main
from studies.data import load_dataset

TINY = ["--dataset", "digits", "--arch", "mlp", "--trials", "2", "--timesteps", "3", "--n-test", "60"]


def test_study_writes_results_that_reopen(tmp_path, digits_mlp):
    out = tmp_path / "res"
    result = CliRunner().invoke(main, ["study", "--out", str(out), *TINY])
    assert result.exit_code == 0, result.output
    assert "accuracy (%)" in result.output and "per layer" in result.output
    ds = xr.open_dataset(out / "robustness.nc")
    assert ds.sizes == {"trial": 2, "timestep": 3, "layer": 3}
    assert ds.attrs["study_arch"] == "mlp" and ds.attrs["spec_adc_bits"] == 6
    assert ds.attrs["spec_r_wire_row"] == ds.attrs["spec_r_wire_col"] == 0.35  # IR drop on by default
    png = (out / "robustness.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert sorted(p.name for p in out.iterdir()) == ["robustness.nc", "robustness.png"]


@pytest.mark.parametrize("args, words", [
    (["--tile", "0", "64"], "Spec.tile"),
    (["--tile", "64", "1"], "Spec.tile"),
    (["--adc-bits", "-2"], "adc_bits"),
    (["--trials", "0"], "trials"),
    (["--timesteps", "0"], "timesteps"),
    (["--n-test", "0"], "n_test"),
    (["--r-wire", "-1"], "r_wire_row"),
    (["--r-wire", "0", "--r-source", "5"], "r_wire_row"),
    (["--hardware-aware", "--aware", "adc,noise"], "StudyConfig.aware"),
    (["--margin", "-1"], "margin"),
    (["--weight-clip", "0"], "weight_clip"),
    (["--adc-percentile", "200"], "adc_percentile"),
    (["--t-inference", "-1"], "t_inference"),
    (["--t-inference", "10", "--t-calibration", "20"], "t_calibration"),
    (["--t-inference", "10", "--drift-compensation", "global"], "drift_compensation"),
    (["--adc-range-scope", "column", "--mapping", "offset"], "adc_range_scope"),
    (["--subtraction", "analog", "--mapping", "offset"], "subtraction"),
    (["--memory-gb", "0"], "StudyConfig: memory_gb = 0.0"),
])
def test_bad_options_are_refused_before_anything_is_written(tmp_path, args, words):
    out = tmp_path / "never"
    result = CliRunner().invoke(main, ["study", "--out", str(out), *TINY, *args])
    assert result.exit_code == 2
    assert words in result.output
    assert not out.exists()


def test_study_takes_the_chip_options_and_records_the_chip_it_read(tmp_path, digits_mlp):
    out = tmp_path / "res"
    result = CliRunner().invoke(main, ["study", "--out", str(out), *TINY, "--adc-percentile", "0",
                                       "--subtraction", "digital", "--t-inference", "10", "--t-calibration", "0",
                                       "--drift-compensation", "global", "--weight-scale", "column"])
    assert result.exit_code == 0, result.output
    assert ("worst-case ADC ranges, digital subtraction, a weight scale per column, t = 10 s"
            in " ".join(result.output.split()))
    ds = xr.open_dataset(out / "robustness.nc")
    assert ds.attrs["spec_adc_percentile"] == "None" and ds.attrs["spec_subtraction"] == "digital"
    assert ds.attrs["spec_t_inference"] == 10.0 and ds.attrs["spec_analog_subtraction"] == 0
    assert ds.attrs["spec_t_calibration"] == 0.0 and ds.attrs["spec_drift_compensation"] == "global"
    assert ds.attrs["spec_weight_scale"] == "column"
    default = CliRunner().invoke(main, ["study", "--out", str(tmp_path / "default"), *TINY])
    assert "ADC ranges at the 99.9th percentile per column, analog subtraction, t = 0 s" in " ".join(
        default.output.split())
    ds = xr.open_dataset(tmp_path / "default" / "robustness.nc")
    assert ds.attrs["spec_analog_subtraction"] == 1 and ds.attrs["spec_signed_adc"] == 1
    assert ds.attrs["spec_range_scope"] == "column" and ds.attrs["spec_ranges_from_calibration"] == 1
    assert ds.attrs["spec_weight_scale"] == "layer"


def test_study_within_a_small_memory_budget_gives_the_same_results(tmp_path, digits_mlp):
    """--memory-gb sizes the chunks of trials (and parts of a batch) the reads take: one
    trial and a few samples at a time give the default's numbers (the default study's
    chip has no per-read noise) and record the budget."""
    runs = {}
    for name, extra in (("default", []), ("small", ["--memory-gb", "0.0002"])):
        result = CliRunner().invoke(main, ["study", "--out", str(tmp_path / name), *TINY, *extra])
        assert result.exit_code == 0, result.output
        runs[name] = xr.open_dataset(tmp_path / name / "robustness.nc")
    assert runs["small"].attrs["study_memory_gb"] == 0.0002 and runs["default"].attrs["study_memory_gb"] == 2.0
    for var in ("accuracy", "read_error", "membrane_error", "spike_rate"):
        xr.testing.assert_allclose(runs["small"][var], runs["default"][var], rtol=1e-5, atol=1e-7)


def test_study_trains_and_records_a_hardware_aware_model(tmp_path, digits_mlp):
    out = tmp_path / "res"
    result = CliRunner().invoke(main, ["study", "--out", str(out), *TINY, "--hardware-aware",
                                       "--aware", "adc,read_noise"])
    assert result.exit_code == 0, result.output
    assert "trained hardware-aware on these crossbars (adc, read_noise)" in result.output
    ds = xr.open_dataset(out / "robustness.nc")
    assert ds.attrs["study_hardware_aware"] == 1
    import json
    trained = json.loads(ds.attrs["train_config"])
    assert trained["hardware"]["adc_bits"] == 6 and trained["hardware"]["tile"] == [64, 64]
    assert trained["aware"] == {"variation": False, "read_noise": True, "adc": True, "ir_drop": False,
                                "calibration": False, "ir_refresh": 50}


def test_output_path_that_is_a_file_is_refused(tmp_path):
    f = tmp_path / "file"
    f.write_text("keep me")
    result = CliRunner().invoke(main, ["study", "--out", str(f), *TINY])
    assert result.exit_code == 2 and "is not a folder" in result.output
    assert f.read_text() == "keep me"


def test_missing_dataset_path_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither an embedded dataset .* nor an existing path"):
        load_dataset(str(tmp_path / "no-such-folder"))


def test_study_with_ir_drop_lowers_the_output_currents(tmp_path, digits_mlp):
    args = ["study", *TINY, "--adc-bits", "0", "--device", "ideal", "--trials", "1"]
    runner = CliRunner()
    for name, extra in (("ideal", ["--r-wire", "0"]), ("ir", ["--r-wire", "50", "--r-source", "100"])):
        result = runner.invoke(main, [*args, "--out", str(tmp_path / name), *extra])
        assert result.exit_code == 0, result.output
    ideal = xr.open_dataset(tmp_path / "ideal" / "robustness.nc")
    ir = xr.open_dataset(tmp_path / "ir" / "robustness.nc")
    assert float(ideal.read_error.max()) < 1e-5
    assert float(ir.read_error.isel(layer=0).mean()) > 1e-3
    assert ir.attrs["spec_r_wire_row"] == 50.0


def test_study_reads_a_local_folder(tmp_path):
    from test_data import _mnist

    _mnist(tmp_path / "data", n=(40, 20))
    out = tmp_path / "res"
    args = ["study", "--out", str(out), "--data", str(tmp_path / "data"), "--arch", "mlp", "--trials", "1",
            "--timesteps", "2"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    ds = xr.open_dataset(out / "robustness.nc")
    assert ds.attrs["study_dataset"] == str(tmp_path / "data")
    assert ds.sizes["trial"] == 1


def test_study_refuses_a_folder_without_a_dataset(tmp_path):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "never"
    result = CliRunner().invoke(main, ["study", "--out", str(out), "--data", str(tmp_path / "nothere")])
    assert result.exit_code == 2 and "StudyConfig.dataset" in result.output and not out.exists()
    result = CliRunner().invoke(main, ["study", "--out", str(out), "--data", str(tmp_path / "empty"),
                                       "--arch", "mlp"])
    assert result.exit_code == 2 and "holds no dataset in torchvision's layout" in result.output
    assert not out.exists()


def test_study_split_over_a_dask_cluster_gives_the_local_results(tmp_path, digits_mlp, dask_cluster):
    """--scheduler: two workers on loopback program, calibrate and read their own trials
    (0..1 and 2..3) from the same seeds; the joined dataset is the local run's, bit for
    bit, on a chip with per-read noise (RRAM, 4-bit ADCs, calibrated from data)."""
    args = [*TINY, "--trials", "4", "--device", "rram_hfo2", "--adc-bits", "4"]
    runs = {}
    for name, extra in (("local", []), ("dask", ["--scheduler", dask_cluster])):
        result = CliRunner().invoke(main, ["study", "--out", str(tmp_path / name), *args, *extra])
        assert result.exit_code == 0, result.output
        runs[name] = xr.open_dataset(tmp_path / name / "robustness.nc")
    xr.testing.assert_identical(runs["dask"], runs["local"])
    assert list(runs["dask"].trial.values) == [0, 1, 2, 3]
    assert float(runs["local"].read_error.std("trial").max()) > 0  # the trials differ


def test_study_refuses_an_unreachable_scheduler(tmp_path):
    result = CliRunner().invoke(main, ["study", "--out", str(tmp_path / "never"), *TINY,
                                       "--scheduler", "tcp://127.0.0.1:9"])
    assert result.exit_code == 1 and "no Dask scheduler answered" in result.output
    assert not (tmp_path / "never").exists()


def test_a_study_in_parts_of_its_trials_is_the_whole_study(digits_mlp, monkeypatch):
    """Trials whose programmed tiles do not fit memory_gb run in consecutive parts
    (studies.robustness): one trial at a time gives the whole run's dataset, bit for bit,
    with per-read noise and calibration from data."""
    import studies.robustness as rb

    config = rb.StudyConfig(dataset="digits", arch="mlp", trials=3, timesteps=3, n_test=60, device="rram_hfo2",
                            adc_bits=4)
    whole = rb.run_study(config, progress=False)
    calls = []

    def one_at_a_time(per_trial, trials, memory_gb):
        calls.append((per_trial, trials, memory_gb))
        return 1

    monkeypatch.setattr(rb, "trials_per_part", one_at_a_time)
    parts = rb.run_study(config, progress=False)
    assert calls and calls[0][1:] == (3, 2.0)
    xr.testing.assert_identical(parts, whole)


def test_the_programmed_bytes_of_a_trial_bound_what_programming_holds(digits_mlp):
    """The estimate of a trial's programmed tiles (three numbers per cell, two columns per
    weight) against the buffers a conversion holds: at least them, at most twice them;
    and its closed form for one layer."""
    import torch.nn as nn

    import xbar
    from devices import presets
    from xbar.memory import programmed_bytes_per_trial, trials_per_part

    assert programmed_bytes_per_trial(nn.Linear(100, 30), (64, 64)) == 3 * 128 * 64 * 4
    model = digits_mlp[0]
    hw = xbar.convert(model, xbar.Spec(device=presets["rram_hfo2"], adc_bits=4, calibration=None), trials=2)
    held = sum(getattr(m.matrix, name).numel() * 4 for m in hw.modules() if isinstance(m, xbar.AnalogLinear)
               for name in ("g_tiles", "g_read", "s2_read")) / 2
    estimate = programmed_bytes_per_trial(model, (64, 64))
    assert held <= estimate <= 2 * held, (held, estimate)
    assert trials_per_part(estimate, 100, 2.0) == min(100, int(0.25 * 2 * 2**30 // estimate))  # 25% of 2 GiB
    assert trials_per_part(10 * 2**30, 5, 2.0) == 1
