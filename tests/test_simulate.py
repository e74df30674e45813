import importlib

import numpy as np
import pytest
import torch

import xbar
from devices import presets
from xbar.streams import READ_NOISE_GENERATOR

SIM_VARS = {"read_error", "layer_error", "membrane_error", "spike_mismatch", "spike_rate",
            "spike_rate_ideal", "accuracy", "accuracy_ideal", "neurons"}


def _test_split(data, n=None, dtype=torch.float32):
    """``n`` test images, the classes in turn (the test sets are stored by class: the first
    300 of mnist5k are zeros and ones)."""
    from studies.data import class_round_robin

    order = class_round_robin(data.y_test)[:n]
    return data.x_test[order].to(dtype), data.y_test[order]


def test_surrogate_mlp_reaches_95_percent_on_digits(digits_mlp):
    model, info, data, config = digits_mlp
    hw = xbar.convert(model, xbar.Spec.ideal())
    ds = xbar.simulate(hw, model, _test_split(data), config.timesteps, progress=False)
    assert float(ds.accuracy_ideal.sel(timestep=config.timesteps)) >= 0.95


def test_surrogate_conv_reaches_96_percent_on_mnist_subset(mnist_conv):
    model, info, data, config = mnist_conv
    assert len(data.x_test) == 1000 and len(data.x_train) == 4000
    hw = xbar.convert(model, xbar.Spec.ideal())
    ds = xbar.simulate(hw, model, _test_split(data), config.timesteps, progress=False)
    assert float(ds.accuracy_ideal.sel(timestep=config.timesteps)) >= 0.96


def _assert_ideal_equivalence(ds):
    assert float(ds.read_error.max()) < 1e-10
    assert float(ds.layer_error.max()) < 1e-10
    assert float(ds.membrane_error.max()) < 1e-10
    assert float(ds.spike_mismatch.max()) == 0.0
    np.testing.assert_array_equal(ds.spike_rate.values[0], ds.spike_rate_ideal.values)
    np.testing.assert_array_equal(ds.accuracy.values, np.broadcast_to(ds.accuracy_ideal.values,
                                                                      ds.accuracy.shape))


def test_no_non_ideality_gives_the_ideal_mlp_at_every_timestep_and_layer(digits_mlp):
    model, _, data, _ = digits_mlp
    model64 = _double(model)
    hw = xbar.convert(model64, xbar.Spec.ideal(tile=(32, 32)), trials=2)
    ds = xbar.simulate(hw, model64, _test_split(data, dtype=torch.float64), 8, progress=False)
    assert ds.sizes == {"trial": 2, "timestep": 8, "layer": 3}
    _assert_ideal_equivalence(ds)


def test_no_non_ideality_gives_the_ideal_conv_net(mnist_conv):
    model, _, data, _ = mnist_conv
    model64 = _double(model)
    for scheme in ("differential", "offset"):
        hw = xbar.convert(model64, xbar.Spec.ideal(tile=(64, 64), mapping=scheme))
        ds = xbar.simulate(hw, model64, _test_split(data, 100, torch.float64), 6, progress=False)
        assert ds.sizes["layer"] == 4
        _assert_ideal_equivalence(ds)


def _double(model):
    import copy

    xbar.reset_state(model)
    return copy.deepcopy(model).double()


def _calibration_split(data, n=64):
    """``n`` training images, the classes in turn: what a chip is calibrated on."""
    from studies.data import class_round_robin

    return data.x_train[class_round_robin(data.y_train)[:n]]


def _run(model, data, spec, seed=0, trials=2, n=300, t=4):
    hw = xbar.convert(model, spec, seed=seed, trials=trials)
    cal = _calibration_split(data) if spec.calibration == "data" else None
    return xbar.simulate(hw, model, _test_split(data, n), t, progress=False, calibration_data=cal)


def test_dataset_layout(digits_mlp):
    model, _, data, _ = digits_mlp
    ds = _run(model, data, xbar.Spec(device=presets["pcm"], adc_bits=6), trials=3, t=5)
    assert set(ds.data_vars) == SIM_VARS
    assert ds.sizes == {"trial": 3, "timestep": 5, "layer": 3}
    assert list(ds.timestep.values) == [1, 2, 3, 4, 5]
    assert ds.attrs["spec_adc_bits"] == 6 and ds.attrs["spec_device_name"] == "pcm"
    assert np.isnan(ds.membrane_error.sel(layer=ds.layer[-1])).all()  # output layer: no neuron
    assert (ds.membrane_error.isel(layer=0) > 0).all()
    assert list(ds.neurons.values) == [256, 128, 0]  # the MLP's hidden layers; none after the output


def test_same_seed_bit_identical_different_seed_differs(digits_mlp):
    model, _, data, _ = digits_mlp
    spec = xbar.Spec(device=presets["pcm"], adc_bits=6)
    a, b = _run(model, data, spec, seed=4), _run(model, data, spec, seed=4)
    assert a.identical(b)
    c = _run(model, data, spec, seed=5)
    assert not np.array_equal(a.read_error.values, c.read_error.values)
    # different trials are different programmings
    assert not np.array_equal(a.read_error.values[0], a.read_error.values[1])


def test_a_trial_reads_the_same_whatever_chunk_of_trials_it_runs_in(digits_mlp):
    """Trials run in chunks to bound memory; each trial has its own read-noise streams, so
    its results do not depend on the chunks (white and correlated per-read noise, ADC
    conversion noise, per-read draws in every layer)."""
    model, _, data, _ = digits_mlp
    dev = presets["rram_hfo2"].replace(read_sigma_rel=0.03, read_noise_correlation=0.5)
    spec = xbar.Spec(device=dev, adc_bits=6, adc_noise=0.5, calibration=None)
    hw = xbar.convert(model, spec, seed=3, trials=3)
    split = _test_split(data, 120)
    runs = [xbar.simulate(hw, model, split, 4, progress=False, trials_per_chunk=c) for c in (3, 1, 2)]
    assert runs[0].attrs["read_noise_generator"] == READ_NOISE_GENERATOR
    for other in runs[1:]:
        assert runs[0].identical(other)
    # the noise is drawn anew at every read: trials differ, and a second run repeats the first
    assert not np.array_equal(runs[0].read_error.values[0], runs[0].read_error.values[1])
    assert xbar.simulate(hw, model, split, 4, progress=False).identical(runs[0])


@pytest.mark.parametrize("correlation", [0.0, 0.5])
def test_per_read_noise_is_the_same_whatever_the_thread_count(digits_mlp, correlation):
    """The per-read noise is counter-based: one thread or two draw the same numbers, in
    the ADC's rounding (white noise) and as normals (correlated noise)."""
    model, _, data, _ = digits_mlp
    dev = presets["rram_hfo2"].replace(read_sigma_rel=0.03, read_noise_correlation=correlation)
    hw = xbar.convert(model, xbar.Spec(device=dev, adc_bits=6, calibration=None), seed=3, trials=2)
    split = _test_split(data, 120)
    threads = torch.get_num_threads()
    runs = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            runs.append(xbar.simulate(hw, model, split, 4, progress=False))
    finally:
        torch.set_num_threads(threads)
    assert runs[0].identical(runs[1])
    assert float(runs[0].read_error.max()) > 0


def test_more_read_noise_gives_larger_read_error(digits_mlp):
    model, _, data, _ = digits_mlp
    errors = []
    for sigma in (0.01, 0.03, 0.1):
        dev = presets["rram_hfo2"].replace(prog_sigma_poly=(), read_sigma_rel=sigma)
        errors.append(float(_run(model, data, xbar.Spec.ideal(device=dev)).read_error.mean()))
    assert errors[0] < errors[1] < errors[2], errors


def test_fewer_adc_bits_give_larger_read_error(digits_mlp):
    model, _, data, _ = digits_mlp
    errors = [float(_run(model, data, xbar.Spec.ideal(adc_bits=b)).read_error.mean()) for b in (8, 6, 4, 3)]
    assert all(a < b for a, b in zip(errors, errors[1:])), errors


def test_more_stuck_at_faults_give_lower_accuracy(digits_mlp):
    model, _, data, _ = digits_mlp
    acc = []
    for p in (0.0, 0.05, 0.2):
        dev = presets["ideal"].replace(p_stuck_low=p / 2, p_stuck_high=p / 2)
        acc.append(float(_run(model, data, xbar.Spec.ideal(device=dev), trials=3, n=None).accuracy
                         .isel(timestep=-1).mean()))
    assert acc[0] > acc[1] > acc[2], acc


def test_simulate_rejects_bad_input(digits_mlp):
    model, _, data, _ = digits_mlp
    hw = xbar.convert(model, xbar.Spec())
    with pytest.raises(ValueError, match="timesteps = 0"):
        xbar.simulate(hw, model, _test_split(data, 10), 0, progress=False)
    with pytest.raises(ValueError, match="no crossbar layer"):
        xbar.simulate(model, model, _test_split(data, 10), 2, progress=False)


def test_accuracy_falls_with_tile_size_under_ir_drop(mnist_conv):
    """Longer wires, larger IR drop: on raw RRAM crossbars (up to 225 uS) with 2.5 ohm per
    cell, the error of one read grows with the tile size and 128x128 tiles lose accuracy
    that 16x16 tiles keep; with ideal wires the same 128x128 tiles keep it, and a per-tile
    calibration from data wins back more than half of the loss (most of it is a systematic
    attenuation; docs/hardware.md#ir-drop-and-tile-size).  Measured on 300 class-balanced
    images: 76.7% raw, 91.2% calibrated, 96.8% with ideal wires."""
    model, _, data, config = mnist_conv
    rram = presets["rram_hfo2"]
    wires = dict(r_wire_row=2.5, r_wire_col=2.5, calibration=None)
    runs = {n: _run(model, data, xbar.Spec(tile=(n, n), device=rram, **wires), n=300, t=config.timesteps)
            for n in (16, 32, 64, 128)}
    read_error = [float(ds.read_error.isel(layer=0).mean()) for ds in runs.values()]
    assert all(a < b for a, b in zip(read_error, read_error[1:])), read_error
    acc = {n: float(ds.accuracy.isel(timestep=-1).mean()) for n, ds in runs.items()}
    ideal_wires = _run(model, data, xbar.Spec.ideal(tile=(128, 128), device=rram), n=300, t=config.timesteps)
    acc_ideal_wires = float(ideal_wires.accuracy.isel(timestep=-1).mean())
    assert acc[128] < acc[16] - 0.03, acc
    assert acc[128] < acc_ideal_wires - 0.03, (acc, acc_ideal_wires)
    cal = xbar.Spec(tile=(128, 128), device=rram, **{**wires, "calibration": "data"})
    acc_calibrated = float(_run(model, data, cal, n=300, t=config.timesteps).accuracy.isel(timestep=-1).mean())
    won_back = (acc_calibrated - acc[128]) / (acc_ideal_wires - acc[128])
    assert won_back > 0.5, (acc, acc_calibrated, acc_ideal_wires)


def test_lif_inference_path_is_the_training_path_bit_for_bit():
    """The studies' LIF takes a leaner path without autograd: the same spikes and
    membranes, bit for bit, including inputs that land exactly on the threshold."""
    from studies.models import LIF

    gen = torch.Generator().manual_seed(0)
    xs = [torch.randn(64, 32, generator=gen) for _ in range(6)]
    xs[2][:8] = 1.0  # exactly at threshold from a reset membrane ... and after leak
    a, b = LIF(0.9, threshold=1.0, init=0.5), LIF(0.9, threshold=1.0, init=0.5)
    for x in xs:
        with torch.enable_grad():
            spk_grad = a(x.clone().requires_grad_())
        with torch.no_grad():
            spk_fast = b(x)
        assert torch.equal(spk_grad.detach(), spk_fast)
        assert torch.equal(a.mem.detach(), b.mem)
    assert 0 < float(spk_fast.mean()) < 1


def test_a_step_counts_its_reads_outputs_and_membranes_in_closed_form():
    """What sizes the reads (xbar.memory.step_bytes): per sample, each layer's output
    (conv1: 6 channels x 144 positions; conv2: 8 x 36; fc: 16; out: 4), the neurons'
    membranes (6 x 144 + 8 x 36 + 16), float32; and the read's peak
    (:meth:`ProgrammedMatrix.read_bytes` per position) plus 3 numbers per output and 4 per
    neuron (the analog and ideal networks' membranes and spikes)."""
    from studies.models import conv_net
    from xbar.memory import KEPT_PER_NEURON, KEPT_PER_OUTPUT, read_bytes_per_sample, step_bytes

    model = conv_net((1, 12, 12), 4, channels=(6, 8), hidden=16).eval()
    hw = xbar.convert(model, xbar.Spec(tile=(16, 16), adc_bits=4, calibration=None), seed=0)
    x = torch.rand(3, 1, 12, 12)
    step = xbar.stepping.Stepper(model, xbar.reset_state)
    reads, outputs, neurons = step_bytes(hw, model, x, step)
    assert outputs == {"0": 4 * 6 * 144, "3": 4 * 8 * 36, "7": 4 * 16, "9": 4 * 4}
    assert neurons == 4 * (6 * 144 + 8 * 36 + 16)
    assert reads["3"] == 36 * hw[3].matrix.read_bytes() and reads["0"] == 144 * hw[0].matrix.read_bytes()
    assert read_bytes_per_sample(hw, model, x, step) == (max(reads.values()) + KEPT_PER_OUTPUT * sum(outputs.values())
                                                         + KEPT_PER_NEURON * neurons)


def test_fresh_pages_nest_and_give_the_kept_heap_back():
    """fresh_pages() inside another restores the outer one's threshold on leaving, and the
    outermost the kept heap's (nothing of it left in force)."""
    from xbar import memory

    with memory.fresh_pages():
        with memory.fresh_pages(memory.KEPT_PAGES_FROM):
            assert memory._fresh_from == [memory.KEPT_PAGES_FROM]
        assert memory._fresh_from == [memory.FRESH_PAGES_FROM]
    assert memory._fresh_from == [None]


def test_memory_budget_sizes_the_trials_and_parts_of_a_batch():
    from xbar.memory import chunking

    gib = 2**30
    # the reads get 30% of the budget: 600 sample-trials of gib / 1000 bytes at 2 GiB
    assert chunking(gib // 1000, 200, 5, 2.0) == (3, 200)  # three trials of the whole batch
    assert chunking(gib // 1000, 200, 2, 2.0) == (2, 200)
    assert chunking(gib // 1000, 200, 9, 4.0) == (6, 200)
    assert chunking(gib // 100, 200, 5, 2.0) == (1, 60)  # not one trial of the batch: parts of 60
    assert chunking(10 * gib, 200, 5, 2.0) == (1, 1)
    with pytest.raises(ValueError, match=r"memory_gb = 0 is not allowed: must be a number of GiB > 0"):
        xbar.memory.check_memory("simulate", 0)


def test_a_batch_read_in_parts_gives_the_whole_batchs_results_without_per_read_noise():
    """A budget too small for one trial of the batch reads it in parts; with programming
    variation, IR drop and a 4-bit ADC but no per-read noise every read is deterministic,
    so the parts give the whole batch's results: the accuracies and spike counts bit for
    bit, the errors (means over the batch, summed per part) to float rounding."""
    from studies.models import conv_net, set_spiking_thresholds

    torch.manual_seed(0)
    model = conv_net((1, 12, 12), 4, channels=(6, 8), hidden=16).eval()
    g = torch.Generator().manual_seed(1)
    set_spiking_thresholds(model, torch.rand(8, 1, 12, 12, generator=g), 3)
    spec = xbar.Spec(tile=(16, 16), device=presets["rram_hfo2"].replace(read_sigma_rel=0.0), adc_bits=4,
                     r_wire_row=1.0, r_wire_col=1.0, calibration=None)
    hw = xbar.convert(model, spec, seed=2, trials=3)
    data = (torch.rand(40, 1, 12, 12, generator=g), torch.randint(0, 4, (40,), generator=g))
    per_sample = xbar.memory.read_bytes_per_sample(hw, model, data[0], xbar.stepping.Stepper(model, xbar.reset_state))
    whole = xbar.simulate(hw, model, data, 3, progress=False)
    parts = xbar.simulate(hw, model, data, 3, progress=False, memory_gb=7 * per_sample / 0.5 / 2**30)
    for name in ("accuracy", "accuracy_ideal", "spike_mismatch", "spike_rate", "spike_rate_ideal"):
        np.testing.assert_array_equal(whole[name].values, parts[name].values, err_msg=name)
    for name in ("read_error", "layer_error", "membrane_error"):
        np.testing.assert_allclose(whole[name].values, parts[name].values, rtol=1e-6, err_msg=name)


@pytest.mark.parametrize("only", [range(2, 5), range(0, 0), range(0, 3, 2), [0, 1]])
def test_a_part_of_the_trials_outside_the_run_is_refused(digits_mlp, only):
    model = digits_mlp[0]
    with pytest.raises(ValueError, match=r"convert: only = .* is not allowed: must be a range of consecutive trials "
                                         r"within range\(0, 3\)"):
        xbar.convert(model, xbar.Spec(adc_bits=6, calibration=None), seed=0, trials=3, only=only)


def test_parts_of_a_run_joined_are_the_whole_run(digits_mlp):
    """convert(..., only=): trials 0 and 1..2 programmed, calibrated from data and read
    apart (per-read noise, correlated, and ADC noise) are the three-trial run's, bit for
    bit, whatever memory budget sizes the calibration's trial chunks (here one trial at a
    time, the batch whole)."""
    import xarray as xr

    model, _, data, _ = digits_mlp
    dev = presets["rram_hfo2"].replace(read_sigma_rel=0.03, read_noise_correlation=0.5)
    spec = xbar.Spec(device=dev, adc_bits=6, adc_noise=0.5)
    split = _test_split(data, 120)
    from studies.data import calibration_inputs

    cal = calibration_inputs(data).float()

    def run(only, memory_gb=2.0):
        hw = xbar.convert(model, spec, seed=3, trials=3, only=only)
        xbar.calibrate(hw, model, cal, 4, memory_gb=memory_gb)
        return xbar.simulate(hw, model, split, 4, progress=False)

    from xbar.memory import READ_SHARE, chunking, read_bytes_per_sample
    from xbar.neurons import reset_state
    from xbar.stepping import Stepper

    per = read_bytes_per_sample(xbar.convert(model, spec, seed=3, trials=3), model, cal, Stepper(model, reset_state))
    one_trial = 1.5 * len(cal) * per / (READ_SHARE * 2**30)
    assert chunking(per, len(cal), 2, one_trial) == (1, len(cal))
    whole = run(None)
    parts = xr.concat([run(range(0, 1)), run(range(1, 3), memory_gb=one_trial)], "trial", data_vars="minimal",
                      coords="minimal", compat="override", combine_attrs="override")
    xr.testing.assert_identical(parts, whole)
    assert not np.array_equal(whole.read_error.values[0], whole.read_error.values[1])


@pytest.mark.parametrize("env, warns", [({}, True), ({"MALLOC_ARENA_MAX": "1"}, False),
                                        ({"GLIBC_TUNABLES": "glibc.malloc.arena_max=1"}, False)])
def test_running_in_a_thread_without_one_arena_is_warned_of(monkeypatch, env, warns):
    """A thread's glibc arena maps large tensors afresh (xbar.memory): said once, with what to do."""
    import threading
    import warnings

    from xbar.memory import keep_freed_memory

    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    caught, kept = [], []

    def run():
        with warnings.catch_warnings(record=True) as found:
            warnings.simplefilter("always")
            kept.append(keep_freed_memory.__wrapped__())  # False on a C library other than glibc
        caught.extend(str(w.message) for w in found)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    said = [m for m in caught if "MALLOC_ARENA_MAX=1" in m]
    assert len(said) == (1 if warns and kept[0] else 0), caught
    if warns:
        assert "dask worker" in said[0] and "4.5x" in said[0]


@pytest.mark.parametrize("layout", ["channels_last", "contiguous", "linear", "time_first"])
@pytest.mark.parametrize("dtype, b", [(torch.float32, 5), (torch.float64, 5), (torch.float32, 1)])
def test_a_steps_sums_are_the_float64_sums_natively_and_by_torch(layout, dtype, b, monkeypatch):
    """simulate's per-step sums (xbar.simulate._output_sums, _spike_sums,
    _squared_differences), in one native pass on the CPU (float64 to 1e-12 whatever the
    tensors' width) and by torch's passes where the native one does not apply (a CUDA
    tensor; here forced), against the same sums of float64 numpy arrays: per trial, a channels-last convolution's
    output beside an NCHW ideal one, a linear layer's, SpikingJelly's ``[1, N, ...]``;
    and a batch of one sample, whose samples and bias map are the same size."""
    sim = importlib.import_module("xbar.simulate")  # the module, not xbar.simulate the function
    g = torch.Generator().manual_seed(3)
    k = 3
    shape = (7,) if layout == "linear" else (4, 6, 5)
    ya = torch.randn(k * b, *shape, generator=g, dtype=dtype)
    ref = ya + 0.1 * torch.randn(ya.shape, generator=g, dtype=dtype)
    yi = torch.randn(b, *shape, generator=g, dtype=dtype)
    bias = torch.randn(1, *shape, generator=g, dtype=dtype)
    s_a = (torch.rand(k * b, *shape, generator=g) < 0.3).to(dtype)
    s_i = (torch.rand(b, *shape, generator=g) < 0.3).to(dtype)
    s_i[0].view(-1)[0] = 0.5  # one graded output: not binary
    if layout == "channels_last":
        ya, ref, s_a = (t.contiguous(memory_format=torch.channels_last) for t in (ya, ref, s_a))
    lead = (lambda t: t.unsqueeze(0)) if layout == "time_first" else (lambda t: t)

    def np_rows(t):
        return t.double().numpy().reshape(k, b, -1)

    a, r, i, bb = np_rows(ya), np_rows(ref), yi.double().numpy().reshape(b, -1), bias.double().numpy().reshape(-1)
    expected = (((a - r) ** 2).sum((1, 2)), ((a - i) ** 2).sum((1, 2)), ((r - bb) ** 2).sum((1, 2)),
                np.full(k, ((i - bb) ** 2).sum()))
    sa, si = np_rows(s_a), s_i.double().numpy().reshape(b, -1)
    spikes = (sa.sum((1, 2)), (sa != si).sum((1, 2)), si.sum(), True)
    assert sim._rows(k, (lead(ya), lead(ref)), (lead(yi),), (bias,)) is not None  # the native pass applies
    for native in (True, False):
        if not native:
            monkeypatch.setattr(sim, "_rows", lambda *args: None)
        # Natively every term is widened before it is formed; torch's passes form them in
        # the tensors' width and sum in float64.
        tol = 1e-12 if native or dtype == torch.float64 else 1e-6
        got = sim._output_sums(lead(ya), lead(ref), lead(yi), bias, k)
        for g_, e in zip(got, expected):
            np.testing.assert_allclose(np.asarray(g_, float), e, rtol=tol)
        got = sim._spike_sums(lead(s_a), lead(s_i), k)
        np.testing.assert_array_equal(got[0], spikes[0])
        np.testing.assert_array_equal(got[1], spikes[1])
        assert got[2] == spikes[2] and got[3] is spikes[3]
        np.testing.assert_allclose(sim._squared_differences(lead(ya), lead(yi), k), expected[1], rtol=tol)
        no_bias = sim._output_sums(ya, ref, yi, None, k)
        np.testing.assert_allclose(no_bias[2], (r ** 2).sum((1, 2)), rtol=tol)
        np.testing.assert_allclose(no_bias[3], np.full(k, (i ** 2).sum()), rtol=tol)
