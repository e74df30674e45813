"""Sweeps: the file's checks, per-point seeds, the store, resuming after SIGKILL, a real Dask
cluster on loopback, the stopping rule and the report."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import pytest
import xarray as xr
from click.testing import CliRunner

from studies.sweeps import store as sweep_store
from studies.cli import main
from studies.sweeps.run import PointTask, run_point, model_blob, run_sweep
from studies.sweeps.config import SweepFileError, point_seed, read_sweep_file
from studies.sweeps.pool import LocalPool

TINY = """
[sweep]
seed = 3
trials = 2

[data]
dataset = "digits"
n_test = 120

[model]
arch = "mlp"
timesteps = 4
epochs = 3

[device]
preset = "rram_hfo2"

[spec]
tile = [32, 32]
adc_bits = 6
r_wire = 1.0

[simulation]
timesteps = 4

[axes]
"device.read_sigma_rel" = [0.0, 0.03, 0.06]
"spec.adc_bits" = [0, 3, 4, 6]
"""
N_POINTS = 12


def write(tmp_path: Path, text: str, name: str = "tiny.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def xbar_cmd(*args: str) -> list[str]:
    return [sys.executable, "-c", "from studies.cli import main; main()", *args]


def sweep_env() -> dict:
    return {**os.environ, "COLUMNS": "120"}


def deterministic(ds: xr.Dataset) -> xr.Dataset:
    """Everything but the wall time of each point (the only variable that may differ)."""
    return ds.drop_vars("seconds")


@pytest.fixture(scope="module")
def reference(tmp_path_factory, _model_cache):
    """The tiny sweep, uninterrupted, on a local pool of two processes."""
    folder = tmp_path_factory.mktemp("reference")
    path = write(folder, TINY)
    done = subprocess.run(xbar_cmd("sweep", str(path), "--store", str(folder / "ref.zarr"), "--workers", "2"),
                          capture_output=True, text=True, env=sweep_env(), cwd=folder, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return path, folder / "ref.zarr", done.stdout


# --- the file -----------------------------------------------------------------------------

BAD = [
    ("[spec]\nadc_bit = 6\n", "spec.adc_bit"),
    ("[hardware]\nx = 1\n", "the sections of a sweep file"),
    ('[axes]\n"spec.adc_bit" = [4, 6]\n', "axes.spec.adc_bit"),
    ('[axes]\n"adc_bits" = [4, 6]\n', "did you mean 'spec.adc_bits'"),
    ('[axes]\n"spec.adc_bits" = []\n', "must be a non-empty list"),
    ('[axes]\n"spec.adc_bits" = [4, 4]\n', "must not repeat a value"),
    ('[axes]\n"device.read_sigma_rel" = [0.0, -0.1]\n', "read_sigma_rel = -0.1"),
    ('[axes]\n"spec.adc_bits" = [4, -1]\n', "adc_bits = -1"),
    ('[axes]\n"spec.tile" = [[32, 32], [0, 32]]\n', "Spec.tile"),
    ('[device]\ng_max = 1e-6\n[axes]\n"device.g_min" = [1e-7, 2e-6]\n', "DeviceModel.g_min = 2e-06"),
    ('[axes]\n"simulation.timesteps" = [4, 0]\n', "simulation.timesteps = 0"),
    ('[axes]\n"model.arch" = ["mlp", "conv"]\n', "axes.model.arch"),
    ('[data]\ndataset = "no-such-folder"\n[axes]\n"spec.adc_bits" = [4]\n', "data.dataset"),
    ('[model]\nfile = "no-such-model.pt"\n[axes]\n"spec.adc_bits" = [4]\n', "model.file"),
    ('[model]\nmethod = "annealed"\n[axes]\n"spec.adc_bits" = [4]\n', "model.method"),
    ('[sweep]\ntrials = 0\n[axes]\n"spec.adc_bits" = [4]\n', "sweep.trials = 0"),
    ('[sweep]\ntrials = 4\nci_width = 1.0\nmax_trials = 10\n[axes]\n"spec.adc_bits" = [4]\n',
     "must be a multiple of sweep.trials"),
    ('[sweep]\nci_width = -1\n[axes]\n"spec.adc_bits" = [4]\n', "sweep.ci_width = -1"),
    ("[spec]\nadc_bits = 6\n", "needs at least one axis"),
    ("[spec\n", "not valid TOML"),
    ('[axes]\n"model.aware" = [["adc"], []]\n', "set model.hardware_aware = true"),
    ('[model]\nhardware_aware = true\n[axes]\n"model.aware" = [["adc"], ["drift"]]\n', "axes.model.aware"),
    ('[model]\nhardware_aware = "yes"\n[axes]\n"spec.adc_bits" = [4]\n', "model.hardware_aware"),
]


@pytest.mark.parametrize("text, words", BAD)
def test_each_malformed_sweep_file_is_refused_naming_the_problem_and_writing_nothing(
        tmp_path, monkeypatch, text, words):
    monkeypatch.setenv("XBAR_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, text, "bad.toml")
    before = sorted(tmp_path.iterdir())
    result = CliRunner().invoke(main, ["sweep", str(path)])
    assert result.exit_code == 2, result.output
    assert words in " ".join(result.output.split()), result.output
    assert sorted(tmp_path.iterdir()) == before  # no store, no cache, no model trained


def test_a_store_of_a_different_sweep_is_refused_with_the_differences(tmp_path, reference):
    path, ref, _ = reference
    store = tmp_path / "store.zarr"
    shutil.copytree(ref, store)
    changed = write(tmp_path, TINY.replace("trials = 2", "trials = 3").replace("r_wire = 1.0", "r_wire = 2.0"))
    before = sorted(p.name for p in store.rglob("*"))
    result = CliRunner().invoke(main, ["sweep", str(changed), "--store", str(store)])
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert "belongs to a different sweep" in text
    assert "sweep.trials: stored 2, now 3" in text and "spec.r_wire: stored 1.0, now 2.0" in text
    assert sorted(p.name for p in store.rglob("*")) == before
    not_a_store = tmp_path / "plain"
    not_a_store.mkdir()
    result = CliRunner().invoke(main, ["sweep", str(path), "--store", str(not_a_store)])
    assert result.exit_code == 1 and "not an xbar sweep store" in result.output


def test_point_seeds_come_from_the_coordinates_that_change_the_draws():
    a = point_seed(0, {"device.read_sigma_rel": 0.03, "spec.tile": [32, 32], "model.timesteps": 4})
    assert a == point_seed(0, {"device.read_sigma_rel": 0.03, "spec.tile": [32, 32], "model.timesteps": 4})
    assert a != point_seed(1, {"device.read_sigma_rel": 0.03, "spec.tile": [32, 32], "model.timesteps": 4})
    assert a != point_seed(0, {"device.read_sigma_rel": 0.03, "spec.tile": [64, 64], "model.timesteps": 4})
    assert a != point_seed(0, {"device.read_sigma_rel": 0.03, "spec.tile": [32, 32], "model.timesteps": 8})
    # common random numbers: axes that do not change the draws share the seed
    assert a == point_seed(0, {"device.read_sigma_rel": 0.06, "spec.tile": [32, 32], "model.timesteps": 4})
    assert point_seed(0, {"spec.adc_bits": 4}) == point_seed(0, {"spec.adc_bits": 6})


def test_a_point_keeps_its_seed_when_its_axis_is_reordered(tmp_path):
    one = read_sweep_file(write(tmp_path, TINY))
    other = read_sweep_file(write(tmp_path, TINY.replace("[0, 3, 4, 6]", "[6, 4, 3, 0]"), "other.toml"))
    seeds = {json.dumps(p.coords): p.seed for p in one.points()}
    assert {json.dumps(p.coords): p.seed for p in other.points()} == seeds
    assert len(set(seeds.values())) == 1  # read noise and ADC bits: one set of draws


def test_the_example_sweep_file_reads(tmp_path):
    result = CliRunner().invoke(main, ["sweep", "--example"])
    assert result.exit_code == 0
    config = read_sweep_file(write(tmp_path, result.output, "example.toml"))
    assert len(config.points()) == 18
    assert [a.dim for a in config.axes] == ["read_sigma_rel", "adc_bits", "calibration"]
    specs = {p.coords["spec.calibration"]: p.spec.calibration for p in config.points()}
    assert specs == {"data": "data", "none": None}


def test_wire_axes_and_a_base_r_wire_combine(tmp_path):
    text = TINY.replace('"spec.adc_bits" = [0, 3, 4, 6]', '"spec.r_wire_row" = [0.5, 2.0]')
    config = read_sweep_file(write(tmp_path, text))
    specs = {p.coords["spec.r_wire_row"]: p.spec for p in config.points()}
    assert (specs[2.0].r_wire_row, specs[2.0].r_wire_col) == (2.0, 1.0)
    assert (specs[0.5].r_wire_row, specs[0.5].r_wire_col) == (0.5, 1.0)
    zero = TINY.replace('"spec.adc_bits" = [0, 3, 4, 6]', '"spec.r_wire_row" = [0.0, 2.0]')
    with pytest.raises(SweepFileError, match="spec.r_wire_row = 0.0: Spec.r_wire_row"):
        read_sweep_file(write(tmp_path, zero))


def test_how_weights_and_inputs_meet_the_array_are_axes(tmp_path):
    """Bit slicing (cell_bits = 0: one pair per weight), the input scheme and the neurons
    are spec fields like any other: axes and base values of a sweep file, every point
    checked before anything runs."""
    text = TINY.replace('"spec.adc_bits" = [0, 3, 4, 6]', '"spec.cell_bits" = [0, 2]\n"spec.weight_slices" = [1]')
    specs = {p.coords["spec.cell_bits"]: p.spec for p in read_sweep_file(write(tmp_path, text)).points()}
    assert specs[0].cell_bits is None and not specs[0].sliced
    assert specs[2].cell_bits == 2 and specs[2].sliced
    with pytest.raises(SweepFileError, match="weight_slices = 2 is not allowed.*set cell_bits"):
        read_sweep_file(write(tmp_path, text.replace('"spec.weight_slices" = [1]', '"spec.weight_slices" = [1, 2]')))
    analog = TINY.replace('"spec.adc_bits" = [0, 3, 4, 6]', '"spec.neuron_threshold_sigma" = [0.0, 0.05]').replace(
        "adc_bits = 6", 'adc_bits = 0\nneuron = "analog"\ndac_bits = 4\ninput_scheme = "bit_serial"')
    points = read_sweep_file(write(tmp_path, analog, "analog.toml")).points()
    assert [(p.spec.neuron, p.spec.neuron_threshold_sigma, p.spec.input_scheme, p.spec.adc_bits)
            for p in points if p.coords["device.read_sigma_rel"] == 0.0] == [
        ("analog", 0.0, "bit_serial", None), ("analog", 0.05, "bit_serial", None)]


# --- running ------------------------------------------------------------------------------

def test_the_store_has_one_dim_per_axis_and_the_config(reference):
    path, ref, out = reference
    ds = sweep_store.open_sweep(ref)
    config = read_sweep_file(path)
    assert ds.accuracy.dims == ("read_sigma_rel", "adc_bits", "trial", "timestep")
    assert ds.read_error.dims == ("read_sigma_rel", "adc_bits", "trial", "timestep", "layer")
    assert list(ds.adc_bits.values) == [0, 3, 4, 6] and ds.sizes["trial"] == 2
    assert json.loads(ds.attrs["sweep_config"]) == json.loads(json.dumps(config.as_dict()))
    assert bool((ds.done == 1).all()) and bool((ds.trials_done == 2).all())
    assert bool(ds.accuracy.notnull().all()) and bool((ds.seconds > 0).all())
    # more read noise and fewer ADC bits cost accuracy: the sweep measures something
    final = ds.accuracy.isel(timestep=-1).mean("trial")
    assert float(final.sel(read_sigma_rel=0.0, adc_bits=0)) > float(final.sel(read_sigma_rel=0.06, adc_bits=3))
    assert "points done" in out or "12 of 12" in out
    assert "95% CI" in out


def test_a_sweep_killed_midway_and_resumed_equals_the_uninterrupted_one(tmp_path, reference):
    path, ref, _ = reference
    store = tmp_path / "killed.zarr"
    proc = subprocess.Popen(xbar_cmd("sweep", str(path), "--store", str(store), "--workers", "2"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=sweep_env(),
                            start_new_session=True)
    try:
        n = 0
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            if sweep_store.is_store(store):
                n = int(sweep_store.done_mask(store).sum())
                if n >= 2:
                    break
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the whole process group: main and workers
        proc.wait()
    partial = int(sweep_store.done_mask(store).sum())
    assert 2 <= partial < N_POINTS, partial
    again = subprocess.run(xbar_cmd("sweep", str(path), "--store", str(store), "--workers", "2"),
                           capture_output=True, text=True, env=sweep_env(), timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"{N_POINTS - partial} of {N_POINTS} points to compute" in again.stdout
    xr.testing.assert_identical(deterministic(sweep_store.open_sweep(store)),
                                deterministic(sweep_store.open_sweep(ref)))


def test_a_half_written_point_is_computed_again(tmp_path, reference):
    """A point whose variables were written but not its done flag (cut off in between) is
    not finished: the next run computes it, and only it."""
    path, ref, _ = reference
    store = tmp_path / "half.zarr"
    shutil.copytree(ref, store)
    group = sweep_store.open_group(store)
    group["done"][1, 2] = 0
    group["accuracy"][1, 2] = np.zeros(group["accuracy"].shape[2:])  # garbage, half-written
    run = run_sweep(read_sweep_file(path), store, lambda: LocalPool(1), progress=False, log=lambda s: None)
    assert (run.computed, run.already_done) == (1, N_POINTS - 1)
    # a finished sweep run again starts no pool and trains nothing
    run = run_sweep(read_sweep_file(path), store, lambda: pytest.fail("started a pool"), progress=False)
    assert (run.computed, run.already_done) == (0, N_POINTS)
    xr.testing.assert_identical(deterministic(sweep_store.open_sweep(store)),
                                deterministic(sweep_store.open_sweep(ref)))


def test_a_dask_cluster_gives_the_same_dataset_as_the_local_pool(tmp_path, reference, dask_cluster):
    path, ref, _ = reference
    store = tmp_path / "dask.zarr"
    done = subprocess.run(xbar_cmd("sweep", str(path), "--store", str(store), "--scheduler", dask_cluster),
                          capture_output=True, text=True, env=sweep_env(), timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Dask cluster at" in done.stdout and "(2 workers)" in done.stdout
    xr.testing.assert_identical(deterministic(sweep_store.open_sweep(store)),
                                deterministic(sweep_store.open_sweep(ref)))


def test_an_unreachable_scheduler_is_refused(tmp_path, reference):
    path, _, _ = reference
    result = CliRunner().invoke(main, ["sweep", str(path), "--store", str(tmp_path / "s.zarr"),
                                       "--scheduler", "tcp://127.0.0.1:9"])
    assert result.exit_code == 1 and "no Dask scheduler answered" in result.output
    assert not (tmp_path / "s.zarr").exists()


# --- one point ----------------------------------------------------------------------------

def _task(config, ci_width=None, capacity=None, spec=None):
    p = config.points()[-1]
    return PointTask(p.index, p.seed, spec or p.spec, p.timesteps, config.sweep["trials"],
                     capacity or config.sweep["trials"], p.timesteps, ci_width, config.data["dataset"],
                     config.data["n_test"], config.data["batch_size"], p.model_key)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, _model_cache):
    from studies.sweeps.run import load_models

    config = read_sweep_file(write(tmp_path_factory.mktemp("m"), TINY))
    models, _ = load_models(config, progress=False)
    return config, model_blob(next(iter(models.values())))


def test_the_stopping_rule_adds_trials_until_the_interval_is_narrow(tiny_model):
    """On the calibrated chip, whose programmings can agree exactly on this tiny set: an
    interval never narrower than one image's resolution keeps a tight target adding trials."""
    config, blob = tiny_model
    spec = config.points()[-1].spec
    plain = run_point(_task(config, spec=spec), blob)
    never = run_point(_task(config, ci_width=1e-9, capacity=8, spec=spec), blob)
    loose = run_point(_task(config, ci_width=100.0, capacity=8, spec=spec), blob)
    assert never["trials_done"] == 8 and loose["trials_done"] == 2
    # the first block is the same programming whether or not more are added
    np.testing.assert_array_equal(never["accuracy"][:2], plain["accuracy"])
    np.testing.assert_array_equal(loose["accuracy"][:2], plain["accuracy"])
    assert np.isnan(loose["accuracy"][2:]).all() and not np.isnan(never["accuracy"]).any()


def test_the_stopping_interval_is_student_t_and_never_narrower_than_one_image():
    """Two trials 2 images apart on 50 images: the t interval of their spread; two that
    agree exactly: the interval of the resolution (sd of a rounding to one image), not 0."""
    from scipy import stats
    from studies.sweeps.run import ci_width_points

    t = stats.t.ppf(0.975, 1)
    apart = np.array([0.90, 0.94])
    assert ci_width_points(apart, 50) == pytest.approx(200 * t * np.std(apart, ddof=1) / 2**0.5)
    same = np.array([0.9, 0.9])
    assert ci_width_points(same, 50) == pytest.approx(200 * t / (50 * 12**0.5) / 2**0.5)
    assert ci_width_points(same, 50) > 10  # points: two agreeing trials on 50 images say little
    assert ci_width_points(np.array([0.9]), 50) == float("inf")


def test_a_point_with_no_non_ideality_is_the_ideal_network(tiny_model):
    import xbar

    config, blob = tiny_model
    out = run_point(_task(config, spec=xbar.Spec.ideal(tile=(32, 32))), blob)
    np.testing.assert_array_equal(out["accuracy"], np.broadcast_to(out["accuracy_ideal"], out["accuracy"].shape))
    assert np.nanmax(out["layer_error"]) < 1e-5


# --- the report ---------------------------------------------------------------------------

def test_report_prints_the_table_and_writes_the_figures(tmp_path, reference):
    _, ref, _ = reference
    out = tmp_path / "rep"
    result = CliRunner().invoke(main, ["report", str(ref), "--out", str(out), "--at", "read_sigma_rel=0.03"])
    assert result.exit_code == 0, result.output
    assert "12 of 12 points done" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["accuracy_heatmap.png", "accuracy_vs_axes.png", "summary.csv"]
    for name in ("accuracy_heatmap.png", "accuracy_vs_axes.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    rows = (out / "summary.csv").read_text().splitlines()
    assert rows[0].startswith("read_sigma_rel,adc_bits,t,trials") and len(rows) == 1 + N_POINTS
    for args, words in ((["--heatmap", "adc_bits,nope"], "--heatmap"), (["--at", "adc_bits=5"], "not a value"),
                        (["--at", "nope=1"], "not an axis")):
        bad = CliRunner().invoke(main, ["report", str(ref), "--out", str(tmp_path / "bad"), *args])
        assert bad.exit_code == 2 and words in bad.output
        assert not (tmp_path / "bad").exists()
    missing = CliRunner().invoke(main, ["report", str(tmp_path / "none.zarr")])
    assert missing.exit_code == 2 and "no such store" in missing.output


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_stops_the_sweep_and_keeps_the_finished_points(tmp_path, reference, sig):
    """Deterministic: every point but the first waits (HOLD_ENV) until the test has seen the
    first one done and sent Ctrl-C (or SIGTERM) to the sweep's process group, workers
    included, so the sweep is always cut with 1 of 12 points in."""
    from studies.sweeps.run import HOLD_ENV

    path = write(tmp_path, TINY)
    store = tmp_path / "held.zarr"
    env = {**sweep_env(), HOLD_ENV: str(tmp_path / "never"), "PYTHONFAULTHANDLER": "1"}
    proc = subprocess.Popen(xbar_cmd("sweep", str(path), "--store", str(store), "--workers", "2"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if sweep_store.is_store(store) and sweep_store.done_mask(store).sum() >= 1:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the sweep ended although its points were held"
    os.killpg(proc.pid, sig)  # what a terminal sends on Ctrl-C
    try:
        out, _ = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:  # show where the sweep was stuck (faulthandler), then fail
        os.kill(proc.pid, signal.SIGABRT)
        time.sleep(2)
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"the sweep did not exit within 60 s of {signal.Signals(sig).name}; it printed:\n{out}")
    assert proc.returncode == 130, out
    n = int(sweep_store.done_mask(store).sum())
    assert n == 1
    assert f"interrupted: 1 of {N_POINTS} points are in" in " ".join(out.split())
    assert "Traceback" not in out and "leaked" not in out


def test_a_model_file_runs_and_a_point_does_not_depend_on_the_rest_of_the_grid(tmp_path, reference):
    """The reference's trained model saved whole and swept on one point of the reference grid
    gives that point's numbers: same weights, and a seed from the point's coordinates only."""
    import torch

    from studies.sweeps.run import load_models

    path, ref, _ = reference
    models, _ = load_models(read_sweep_file(path), progress=False)
    torch.save(next(iter(models.values())), tmp_path / "snn.pt")
    head, _, _ = TINY.partition("[model]")
    text = (head + '[model]\nfile = "snn.pt"\n' + TINY.partition("[device]")[1] + TINY.partition("[device]")[2])
    text = text.replace("[0.0, 0.03, 0.06]", "[0.03]").replace("[0, 3, 4, 6]", "[4]")
    config = read_sweep_file(write(tmp_path, text, "file.toml"))
    assert config.model["file"] == str(tmp_path / "snn.pt") and len(config.points()) == 1
    run_sweep(config, tmp_path / "one.zarr", lambda: LocalPool(1), progress=False, log=lambda s: None)
    one = deterministic(sweep_store.open_sweep(tmp_path / "one.zarr"))
    want = deterministic(sweep_store.open_sweep(ref)).sel(read_sigma_rel=[0.03], adc_bits=[4])
    for name in want.data_vars:
        np.testing.assert_array_equal(one[name].values, want[name].values, err_msg=name)


def test_points_differing_only_in_adc_bits_see_the_same_programmed_conductances(tmp_path, digits_mlp):
    """Common random numbers: two points of the tiny sweep that differ only in ADC bits (or
    only in read noise) are programmed identically, so their difference is paired."""
    import xbar

    model = digits_mlp[0]
    config = read_sweep_file(write(tmp_path, TINY))
    by_coords = {(p.coords["device.read_sigma_rel"], p.coords["spec.adc_bits"]): p for p in config.points()}
    programmed = {}
    for key in [(0.03, 3), (0.03, 6), (0.06, 6)]:
        p = by_coords[key]
        hw = xbar.convert(model, p.spec, seed=p.seed, trials=2)
        programmed[key] = [m.matrix.g_tiles for _, m in xbar.analog_layers(hw)]
    for a, b in zip(programmed[(0.03, 3)], programmed[(0.03, 6)]):
        assert torch.equal(a, b)
    for a, b in zip(programmed[(0.03, 6)], programmed[(0.06, 6)]):
        assert torch.equal(a, b)  # read noise changes the reads, not the programming


def test_hardware_aware_models_train_on_each_points_crossbars(tmp_path):
    """model.hardware_aware as an axis: one standard model for every point, and one
    hardware-aware model per hardware it is trained on (here per ADC resolution), keyed by
    that point's spec; the resolved [model] section of a standard sweep is unchanged."""
    from studies.sweeps.config import build_recipe

    text = TINY.replace('"device.read_sigma_rel" = [0.0, 0.03, 0.06]\n', '"model.hardware_aware" = [false, true]\n')
    text = text.replace('"spec.adc_bits" = [0, 3, 4, 6]', '"spec.adc_bits" = [3, 6]')
    config = read_sweep_file(write(tmp_path, text))
    recipes = {k: build_recipe(m) for k, m in config.model_recipes().items()}
    assert len(recipes) == 3
    trained_on = sorted(r.hardware.adc_bits for r in recipes.values() if r.hardware is not None)
    assert trained_on == [3, 6]
    points = {p.coords["spec.adc_bits"]: set() for p in config.points()}
    for p in config.points():
        points[p.coords["spec.adc_bits"]].add(p.model_key)
    assert all(len(keys) == 2 for keys in points.values())
    standard = read_sweep_file(write(tmp_path, TINY, "standard.toml")).as_dict()["model"]
    assert set(standard) == {"method", "dataset", "arch", "timesteps", "epochs", "batch_size", "lr", "seed"}
    off = read_sweep_file(write(tmp_path, text.replace('[model]\n', '[model]\naware = ["read_noise"]\n'),
                                "off.toml"))
    aware = [build_recipe(m).aware for m in off.model_recipes().values() if m.get("hardware_aware")]
    assert aware and all(not a.adc and a.read_noise for a in aware)


def test_a_converted_hardware_aware_model_is_fine_tuned_on_the_points_crossbars(tmp_path):
    from studies.sweeps.config import build_recipe

    text = TINY.replace('[model]\n', '[model]\nmethod = "converted"\nhardware_aware = true\n')
    text = text.replace('timesteps = 4\nepochs = 3\n', 'epochs = 3\n')
    config = read_sweep_file(write(tmp_path, text))
    recipes = [build_recipe(m) for m in config.model_recipes().values()]
    assert len(recipes) == N_POINTS  # every point's hardware differs: one fine-tuning each
    assert all(r.fine_tune is not None and r.fine_tune.hardware is not None for r in recipes)
    assert {r.fine_tune.hardware.adc_bits for r in recipes} == {None, 3, 4, 6}
    assert len({r.key() for r in recipes}) == N_POINTS


def test_the_robustness_options_are_axes_with_zero_for_no_clipping(tmp_path):
    """model.margin and model.weight_clip sweep without being set in [model]; a weight clip
    of 0 is no clipping (None), the standard model, cached under the standard key."""
    from studies.sweeps.config import build_recipe
    from studies.train import TrainConfig

    text = TINY.replace('"device.read_sigma_rel" = [0.0, 0.03, 0.06]\n"spec.adc_bits" = [0, 3, 4, 6]',
                        '"model.margin" = [0.0, 10]\n"model.weight_clip" = [0, 2.5]')
    config = read_sweep_file(write(tmp_path, text))
    recipes = {(p.coords["model.margin"], p.coords["model.weight_clip"]): build_recipe(config.settings(p.coords)["model"])
               for p in config.points()}
    assert {k: (r.margin, r.weight_clip) for k, r in recipes.items()} == {
        (0.0, 0): (0.0, None), (0.0, 2.5): (0.0, 2.5), (10, 0): (10.0, None), (10, 2.5): (10.0, 2.5)}
    standard = TrainConfig(dataset="digits", arch="mlp", timesteps=4, epochs=3)
    assert recipes[(0.0, 0)].key() == standard.key()
    assert len({r.key() for r in recipes.values()}) == 4
    with pytest.raises(SweepFileError, match="model.weight_clip"):
        read_sweep_file(write(tmp_path, text.replace("[0, 2.5]", "[-1, 2.5]"), "bad.toml")).points()
