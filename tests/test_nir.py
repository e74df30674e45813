"""xbar.from_nir: NIR graphs exported by snntorch, SpikingJelly, norse, sinabs, rockpool
and spyx, and the stepping of every primitive against closed forms."""

import warnings

import nir
import numpy as np
import pytest
import torch
import torch.nn as nn

import snn_helpers
import xbar
from snn_helpers import N_TRAIN, accuracy_per_step, train

import snntorch as snn  # noqa: E402
import norse.torch as norse  # noqa: E402
from snntorch.export_nir import export_to_nir  # noqa: E402
from spikingjelly.activation_based import functional, layer, neuron  # noqa: E402
from spikingjelly.activation_based.nir_exchange import to_nir  # noqa: E402
import sinabs  # noqa: E402
import sinabs.layers as sl  # noqa: E402
import sinabs.nir  # noqa: E402
from rockpool.nn.combinators import Sequential as RockpoolSequential  # noqa: E402
from rockpool.nn.modules import ExpSynTorch, LIFNeuronTorch, LIFTorch, LinearTorch  # noqa: E402
import rockpool.nn.modules.torch.nir as rockpool_nir  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402
import spyx.nn as spyx_nn  # noqa: E402
import spyx.nir as spyx_nir  # noqa: E402

T = 6


@pytest.fixture(scope="module")
def digits():
    return snn_helpers.digits()


def _simulate(model, x, y):
    hw = xbar.convert(model, xbar.Spec.ideal())
    return hw, xbar.simulate(hw, model, (x, y), T, progress=False)


def _snntorch_net():
    # per-neuron beta and threshold: snntorch 1.0 cannot export scalar ones to NIR 1.0.8;
    # reset to zero: NIR's LIF resets to v_reset, snntorch's default subtracts
    def lif(n, beta, **kw):
        return snn.Leaky(beta=torch.full((n,), beta), threshold=torch.ones(n), init_hidden=True,
                         reset_mechanism="zero", **kw)
    return nn.Sequential(nn.Linear(64, 48), lif(48, 0.9), nn.Linear(48, 10), lif(10, 0.8, output=True))


def _snn_summed(net, xb):
    xbar.reset_state(net)
    return sum(net(xb)[0] for _ in range(T))


def test_snntorch_export_runs_as_snntorch_does(digits, tmp_path):
    x, y = digits
    net = train(_snntorch_net(), _snn_summed, x, y)
    with torch.no_grad():
        xbar.reset_state(net)
        running = np.cumsum([net(x[N_TRAIN:])[0].numpy() for _ in range(T)], axis=0)
    own = accuracy_per_step(torch.tensor(running), y[N_TRAIN:])
    assert own[-1] > 0.5
    path = tmp_path / "snn.nir"
    nir.write(str(path), export_to_nir(net, torch.rand(64)))
    model = xbar.from_nir(path, dt=1e-4)  # snntorch exports with dt = 1e-4 s
    hw, ds = _simulate(model, x[N_TRAIN:], y[N_TRAIN:])
    assert [r.name for r in hw.xbar_report if r.on_crossbars] == ["nodes.0", "nodes.2"]
    np.testing.assert_array_equal(ds.accuracy_ideal.values, own)
    np.testing.assert_array_equal(ds.accuracy.values[0], own)
    assert list(ds.neuron.values) == ["nodes.1", "nodes.3"]
    assert float(ds.membrane_error.max()) < 1e-4 and float(ds.spike_mismatch.max()) == 0
    # another dt is another network: the time constants are honoured
    other = xbar.simulate(xbar.convert(xbar.from_nir(path, dt=5e-5), xbar.Spec.ideal()),
                          xbar.from_nir(path, dt=5e-5), (x[N_TRAIN:], y[N_TRAIN:]), T, progress=False)
    assert not np.array_equal(other.accuracy_ideal.values, own)


def _sj_net():
    return nn.Sequential(layer.Conv2d(1, 8, 3, padding=1), neuron.IFNode(), layer.AvgPool2d(2),
                         layer.Flatten(), layer.Linear(8 * 16, 10), neuron.LIFNode(tau=2.0))


def _sj_summed(net, xb):
    functional.reset_net(net)
    return sum(net(xb) for _ in range(T))


def test_spikingjelly_export_runs_as_spikingjelly_does(digits):
    x, y = digits
    x = x.reshape(-1, 1, 8, 8) * 2
    net = train(_sj_net(), _sj_summed, x, y)
    with torch.no_grad():
        functional.reset_net(net)
        running = torch.stack([net(x[N_TRAIN:]) for _ in range(T)]).cumsum(0)
        own = accuracy_per_step(running, y[N_TRAIN:])
        graph = to_nir.export_to_nir(net, x[:4])
    assert own[-1] > 0.5
    model = xbar.from_nir(graph, dt=1e-4)  # SpikingJelly exports with dt = 1e-4 s
    _, ds = _simulate(model, x[N_TRAIN:], y[N_TRAIN:])
    np.testing.assert_array_equal(ds.accuracy_ideal.values, own)
    np.testing.assert_array_equal(ds.accuracy.values[0], own)
    assert np.isfinite(ds.membrane_error.values).all()


@pytest.mark.parametrize("spec", [xbar.Spec.ideal(), xbar.Spec(adc_bits=6)], ids=["ideal", "calibrated"])
def test_nirtorch_graph_executor_is_refused_not_run_ideal(spec):
    """Refused before any result, by the first step's check or, with a calibration from
    data, by the calibration that runs first."""
    graph = export_to_nir(_snntorch_net(), torch.rand(64))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = norse.from_nir(graph, dt=1e-4)  # a nirtorch GraphExecutor
    hw = xbar.convert(model, spec)
    cal = torch.rand(8, 64) if spec.calibration == "data" else None
    with pytest.raises(ValueError, match="never ran its crossbar layers.*xbar.from_nir"):
        xbar.simulate(hw, model, (torch.rand(8, 64), torch.zeros(8, dtype=torch.long)), 2,
                      progress=False, calibration_data=cal)


def _steps(model, x, steps=12):
    """``model``'s outputs over ``steps`` calls with the input ``x`` each time: a list of
    arrays (spikes, or a leaky integrator's voltages, step by step)."""
    outs = []
    with torch.no_grad():
        for _ in range(steps):
            out = model(x)
            out = out[0] if isinstance(out, tuple) else out
            outs.append(out.double().numpy().copy())
    return outs


def _assert_same_steps(ours, theirs, what):
    """Step by step: the same spikes (every one), the same values to float rounding."""
    for t, (a, b) in enumerate(zip(ours, theirs)):
        assert a.shape == b.shape, (what, t, a.shape, b.shape)
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=f"{what}, step {t + 1}")
    assert any(np.abs(b).sum() > 0 for b in theirs), f"{what}: nothing happened in the reference run"


def _snntorch_graph(net, sample):
    """snntorch's export (``export_to_nir``) without its last call, ``infer_types``, which
    fails on any conv net with nir 1.0.8 (``tuple index out of range`` for a batched
    sample, a type mismatch for an unbatched one): the graph snntorch hands over, in
    memory, its conv nodes holding torch tensors."""
    import nirtorch
    from snntorch.export_nir import _extract_snntorch_module

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return nirtorch.extract_nir_graph(net, _extract_snntorch_module, sample, model_name="snntorch",
                                          ignore_submodules_of=[snn.RLeaky, snn.RSynaptic])


def test_snntorch_conv_graph_in_memory_runs_as_snntorch_does():
    """Conv, pooling, flatten, Leaky and Synaptic (reset to zero, the only reset snntorch's
    export writes), from the graph as snntorch returns it, tensors in its nodes."""
    torch.manual_seed(0)
    n = 4 * 4 * 4

    def per_neuron(shape, value):
        return torch.full(shape, value)

    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), snn.Leaky(beta=per_neuron((4, 8, 8), 0.8), threshold=per_neuron((4, 8, 8), 0.5),
                                                 init_hidden=True, reset_mechanism="zero"),
        nn.AvgPool2d(2), nn.Flatten(), nn.Linear(n, 10),
        snn.Synaptic(alpha=per_neuron((10,), 0.6), beta=per_neuron((10,), 0.8), threshold=per_neuron((10,), 0.5),
                     init_hidden=True, reset_mechanism="zero", output=True))
    graph = _snntorch_graph(net, torch.rand(1, 1, 8, 8))
    assert any(isinstance(getattr(node, "weight", None), torch.Tensor) for node in graph.nodes.values())
    x = torch.rand(16, 1, 8, 8) * 3
    xbar.reset_state(net)
    theirs = _steps(net, x)
    model = xbar.from_nir(graph, exporter="snntorch")
    _assert_same_steps(_steps(model, x), theirs, "snntorch conv, exporter='snntorch'")


def test_snntorch_synaptic_zero_reset_is_reproduced_and_nir_semantics_differ(tmp_path):
    """snntorch's Synaptic resets one step late: the step after a spike its membrane, with
    that step's input added, is set to zero.  NIR's CubaLIF resets at once.  With
    exporter='snntorch' the graph reads as snntorch ran it (in memory and from a file);
    without, it follows NIR, and the spikes differ after the first reset."""
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(20, 12),
                        snn.Synaptic(alpha=torch.full((12,), 0.6), beta=torch.full((12,), 0.8),
                                     threshold=torch.ones(12), init_hidden=True, reset_mechanism="zero",
                                     output=True))
    graph = export_to_nir(net, torch.rand(20))
    x = torch.rand(32, 20) * 2
    xbar.reset_state(net)
    theirs = _steps(net, x)
    _assert_same_steps(_steps(xbar.from_nir(graph, exporter="snntorch"), x), theirs, "snntorch Synaptic")
    path = tmp_path / "synaptic.nir"
    nir.write(str(path), graph)
    _assert_same_steps(_steps(xbar.from_nir(path, exporter="snntorch"), x), theirs, "snntorch Synaptic, file")
    nir_run = _steps(xbar.from_nir(graph, dt=1e-4), x)
    assert any(not np.array_equal(a, b) for a, b in zip(nir_run, theirs))
    with pytest.raises(ValueError, match="dt = 0.001 is not allowed with exporter='snntorch'"):
        xbar.from_nir(graph, exporter="snntorch", dt=1e-3)


@pytest.mark.parametrize("dt", [1e-4, 1e-3])
def test_spikingjelly_neurons_run_as_spikingjelly_does(dt, tmp_path):
    """Every neuron SpikingJelly exports (IFNode -> IF, LIFNode with and without
    decay_input and ParametricLIFNode -> LIF, CUBALIFNode -> CubaLIF), hard reset, in
    memory and from a file, step by step, at the dt of the export (default 1e-4 s)."""
    torch.manual_seed(3)
    net = nn.Sequential(layer.Linear(20, 16), neuron.IFNode(), layer.Linear(16, 14), neuron.LIFNode(tau=3.0),
                        layer.Linear(14, 12), neuron.LIFNode(tau=2.5, decay_input=False),
                        layer.Linear(12, 10), neuron.ParametricLIFNode(init_tau=2.0),
                        layer.Linear(10, 6), neuron.CUBALIFNode(c_decay=0.5, v_decay=0.75))
    x = torch.rand(24, 20) * 2
    with torch.no_grad():
        functional.reset_net(net)
        theirs = _steps(net, x)
        functional.reset_net(net)
        graph = to_nir.export_to_nir(net, x[:4], dt=dt)
    model = xbar.from_nir(graph, exporter="spikingjelly", dt=dt)
    _assert_same_steps(_steps(model, x), theirs, f"SpikingJelly dt={dt}")
    path = tmp_path / "sj.nir"
    nir.write(str(path), graph)
    _assert_same_steps(_steps(xbar.from_nir(path, exporter="spikingjelly", dt=dt), x), theirs,
                       f"SpikingJelly dt={dt}, file")
    _assert_same_steps(_steps(xbar.from_nir(graph, dt=dt), x), theirs, "SpikingJelly, NIR's equations")


def test_snntorch_recurrent_leaky_runs_as_snntorch_does():
    """``RLeaky`` (all-to-all recurrent weights), exported as a nested graph whose LIF sits
    on a loop: snntorch resets it one step late, as ``Synaptic``; with
    exporter='snntorch' the graph reads as snntorch ran it."""
    torch.manual_seed(4)
    net = nn.Sequential(nn.Linear(20, 12),
                        snn.RLeaky(beta=0.8, linear_features=12, all_to_all=True, init_hidden=True,
                                   reset_mechanism="zero"),
                        nn.Linear(12, 6),
                        snn.Leaky(beta=torch.full((6,), 0.9), threshold=torch.ones(6), init_hidden=True,
                                  reset_mechanism="zero", output=True))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = export_to_nir(net, torch.rand(20))
    x = torch.rand(32, 20) * 2
    xbar.reset_state(net)
    theirs = _steps(net, x)
    _assert_same_steps(_steps(xbar.from_nir(graph, exporter="snntorch"), x), theirs, "snntorch RLeaky")


def test_norse_conv_graph_runs_as_norse_does():
    """norse's Conv2d nodes (it exports no Flatten, so a conv-only network), with its
    LIFBoxCell and LIFCell, step by step."""
    torch.manual_seed(5)
    net = norse.SequentialState(nn.Conv2d(1, 4, 3, padding=1), norse.LIFBoxCell(), nn.Conv2d(4, 3, 3, padding=1),
                                norse.LIFCell())
    graph = norse.to_nir(net, torch.rand(1, 1, 8, 8), dt=1e-3)
    x = torch.rand(8, 1, 8, 8) * 30
    theirs, state = [], None
    with torch.no_grad():
        for _ in range(12):
            out, state = net(x, state)
            theirs.append(out.double().numpy().copy())
    _assert_same_steps(_steps(xbar.from_nir(graph, exporter="norse"), x), theirs, "norse conv")


def _norse_net(dt=1e-3):
    torch.manual_seed(2)
    return norse.SequentialState(nn.Linear(20, 16), norse.LIFBoxCell(dt=dt), nn.Linear(16, 12), norse.LIFCell(dt=dt),
                                 nn.Linear(12, 10), norse.IAFCell(dt=dt), nn.Linear(10, 6), norse.LIBoxCell(dt=dt))


@pytest.mark.parametrize("dt", [1e-3, 5e-4])
def test_norse_graph_runs_as_norse_does_with_its_exporter(dt, tmp_path):
    """norse writes tau = dt / tau_inv (1e-5 s for its default 10 ms at dt = 1e-3): read as
    NIR's equations, dt/tau = 100 per step, which is refused with the numbers; with
    exporter='norse' every neuron it exports (LIFBoxCell -> LIF, LIFCell -> CubaLIF with
    its current jump before the membrane, IAFCell -> IF, LIBoxCell -> LI) steps as norse
    does, at the dt of the export, from the graph in memory (torch tensors in its nodes)
    and from a file."""
    net = _norse_net(dt)
    x = torch.rand(24, 20) * 4
    graph = norse.to_nir(net, torch.rand(1, 20), dt=dt)
    theirs, state = [], None
    with torch.no_grad():
        for _ in range(12):
            out, state = net(x, state)
            theirs.append(out.double().numpy().copy())
    _assert_same_steps(_steps(xbar.from_nir(graph, exporter="norse", dt=dt), x), theirs, f"norse dt={dt}")
    path = tmp_path / "norse.nir"
    nir.write(str(path), graph, compression=None)  # norse writes scalar parameters, which gzip refuses
    _assert_same_steps(_steps(xbar.from_nir(path, exporter="norse", dt=dt), x), theirs, f"norse dt={dt}, file")
    with pytest.raises(ValueError, match=rf"has tau down to {dt / 100:g} s, and dt = {dt:g} s steps it by "
                                         r"dt/tau = 100: .*exporter='norse'"):  # tau = dt / 100 at any dt
        xbar.from_nir(graph, dt=dt)


def _run_over_time(model, x):
    """``model`` (from_nir's) stepped over the time axis (1) of ``x``: its outputs, a list of arrays."""
    with torch.no_grad():
        return [model(x[:, t]).double().numpy().copy() for t in range(x.shape[1])]


def _sinabs_read(graph):
    with pytest.warns(UserWarning, match=r"does not record .*MultiSpike .*MembraneSubtract.*IAF floored at "
                                         r"-threshold.*LIF with norm_input=True.*ExpLeak with norm_input=False"):
        return xbar.from_nir(graph, exporter="sinabs")


def test_sinabs_converted_network_runs_as_sinabs_does():
    """sinabs's own workflow: an ANN converted by ``sinabs.from_model`` (IAFSqueeze, several
    spikes per step, subtractive reset, membrane floored at -1), exported with
    ``sinabs.nir.to_nir``: conv, SumPool2d, Flatten and Affine nodes, read back step by step
    as sinabs runs it (in memory: its Conv2d and Flatten nodes leave ``input_shape`` and
    ``input_type`` as None, which ``nir.write`` refuses).  NIR's own equations (one spike, reset
    to zero) read it otherwise."""
    torch.manual_seed(11)
    steps = 10
    ann = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), sl.SumPool2d(2), nn.Flatten(),
                        nn.Linear(64, 10), nn.ReLU())
    snn_model = sinabs.from_model(ann, input_shape=(1, 8, 8), num_timesteps=steps).spiking_model
    x = torch.rand(3, steps, 1, 8, 8) * 3
    counts = []
    hook = snn_model[1].register_forward_hook(lambda m, i, o: counts.append(o))
    sinabs.reset_states(snn_model)  # from_model ran a sample through it
    with torch.no_grad():
        theirs = list(snn_model(x.flatten(0, 1)).unflatten(0, (3, steps)).double().numpy().transpose(1, 0, 2))
    hook.remove()
    graph = sinabs.nir.to_nir(snn_model, torch.zeros(steps, 1, 8, 8))
    assert float(counts[0].max()) >= 2, "the reference run should emit several spikes in one step"
    floor = float(snn_model[1].min_v_mem)
    _assert_same_steps(_run_over_time(_sinabs_read(graph), x), theirs, "sinabs from_model")
    assert floor == -1.0
    nir_run = _run_over_time(xbar.from_nir(graph, dt=1.0), x)
    assert any(not np.array_equal(a, b) for a, b in zip(nir_run, theirs))


def test_sinabs_converted_ann_simulates_as_sinabs_runs_it(digits):
    """An ANN trained on the digits, converted by sinabs (IAF, several spikes per step) and
    read from its NIR export: on ideal crossbars xbar's accuracy at every step is sinabs's
    own, its neurons found and metered (spike counts, so no binary spike metrics)."""
    x, y = digits
    torch.manual_seed(3)
    ann = train(nn.Sequential(nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 10)), lambda net, xb: net(xb), x, y,
                epochs=10)
    snn_model = sinabs.from_model(ann, input_shape=(64,), num_timesteps=T, add_spiking_output=True).spiking_model
    sinabs.reset_states(snn_model)
    test_x, test_y = x[N_TRAIN:], y[N_TRAIN:]
    with torch.no_grad():
        out = snn_model(test_x[:, None].expand(-1, T, -1).flatten(0, 1)).unflatten(0, (len(test_x), T))
    own = accuracy_per_step(out.cumsum(1).transpose(0, 1), test_y)
    assert own[-1] > 0.8 and float(out.max()) >= 2
    model = _sinabs_read(sinabs.nir.to_nir(snn_model, torch.zeros(T, 64)))
    hw, ds = _simulate(model, test_x, test_y)
    np.testing.assert_array_equal(ds.accuracy_ideal.values, own)
    np.testing.assert_array_equal(ds.accuracy.values[0], own)
    assert list(ds.neuron.values) == ["nodes.1", "nodes.spike_output"]
    assert float(ds.membrane_error.max()) < 1e-4 and np.isnan(ds.spike_mismatch.values).all()


def test_sinabs_leaky_neurons_run_as_sinabs_does(tmp_path):
    """sinabs's LIF (norm_input=True: v = a v + (1-a) I) and ExpLeak (v = a v + I), with
    a = exp(-1/tau) and tau in steps, exported as LIF and LI, step by step, in memory and
    from a file."""
    torch.manual_seed(12)
    steps = 12
    net = nn.Sequential(nn.Linear(16, 12), sl.LIFSqueeze(tau_mem=8.0, num_timesteps=steps), nn.Linear(12, 5),
                        sl.ExpLeakSqueeze(tau_mem=5.0, num_timesteps=steps))
    x = torch.rand(4, steps, 16) * 6
    with torch.no_grad():
        theirs = list(net(x.flatten(0, 1)).unflatten(0, (4, steps)).double().numpy().transpose(1, 0, 2))
    graph = sinabs.nir.to_nir(net, torch.zeros(steps, 16))
    assert [type(n).__name__ for n in graph.nodes.values() if type(n).__name__ in ("LIF", "LI")] == ["LIF", "LI"]
    _assert_same_steps(_run_over_time(_sinabs_read(graph), x), theirs, "sinabs LIF and ExpLeak")
    path = tmp_path / "sinabs.nir"
    nir.write(str(path), graph, compression=None)  # sinabs writes scalar time constants, which gzip refuses
    _assert_same_steps(_run_over_time(_sinabs_read(path), x), theirs, "sinabs LIF and ExpLeak, file")
    with pytest.raises(ValueError, match=r"dt = 0.0001 is not allowed with exporter='sinabs': .*in steps"):
        xbar.from_nir(graph, exporter="sinabs", dt=1e-4)


def _rockpool_net(dt):
    torch.manual_seed(13)
    return RockpoolSequential(LinearTorch((16, 12)), LIFTorch(12, tau_mem=0.02, tau_syn=0.01, dt=dt),
                              LinearTorch((12, 8), has_bias=True), LIFNeuronTorch(8, tau_mem=0.03, dt=dt),
                              LinearTorch((8, 5)), ExpSynTorch(5, tau=0.05, dt=dt))


@pytest.mark.parametrize("dt", [1e-3, 2e-3])
def test_rockpool_graph_runs_as_rockpool_does(dt, tmp_path):
    """rockpool's LIFTorch (CubaLIF), LIFNeuronTorch (LIF) and ExpSynTorch (LI): exact
    exponential decays, several spikes per step, subtractive reset.  Its graph does not
    record dt but writes r = tau exp(-dt/tau)/dt, from which xbar reads it back; a dt
    that disagrees is refused."""
    net = _rockpool_net(dt)
    graph = rockpool_nir.to_nir(net, torch.zeros(1, 16))
    net.reset_state()  # the export ran its sample through the network
    x = (torch.rand(3, 15, 16) < 0.4).float()
    with torch.no_grad():
        out, _, _ = net(x)
    theirs = list(out.detach().double().numpy().transpose(1, 0, 2))
    model = xbar.from_nir(graph, exporter="rockpool")
    assert model.dt == pytest.approx(dt, rel=1e-5)
    _assert_same_steps(_run_over_time(model, x), theirs, f"rockpool dt={dt}")
    path = tmp_path / "rockpool.nir"
    li = next(n for n in graph.nodes.values() if isinstance(n, nir.LI))
    li.tau = li.tau.detach()  # rockpool leaves ExpSynTorch's tau with its gradient, which nir.write refuses
    nir.write(str(path), graph)
    _assert_same_steps(_run_over_time(xbar.from_nir(path, exporter="rockpool", dt=dt), x), theirs,
                       f"rockpool dt={dt}, file")
    with pytest.raises(ValueError, match=rf"dt = 0.005 is not the {dt:g} s this rockpool graph was exported"):
        xbar.from_nir(graph, exporter="rockpool", dt=5e-3)


def _spyx_mlp():
    rngs = nnx.Rngs(0)
    return spyx_nn.Sequential(nnx.Linear(16, 12, rngs=rngs), spyx_nn.LIF((12,), beta=0.8, rngs=rngs),
                              nnx.Linear(12, 10, rngs=rngs), spyx_nn.CuBaLIF((10,), alpha=0.7, beta=0.85, rngs=rngs),
                              nnx.Linear(10, 8, rngs=rngs), spyx_nn.IF((8,), rngs=rngs),
                              nnx.Linear(8, 5, rngs=rngs), spyx_nn.PSU_LIF((5,), beta=0.9, rngs=rngs))


@pytest.mark.parametrize("dt", [1.0, 0.5])
def test_spyx_graph_runs_as_spyx_does(dt, tmp_path):
    """spyx's LIF, CuBaLIF, IF and PSU_LIF (exported as LI + Threshold): its neurons fire
    on the state before the step and subtract the threshold, and add their input as it
    is (it writes r = beta, which NIR's equations would read as a gain).  Step by step,
    in memory and from a file, at the dt of the export; NIR's equations read it otherwise."""
    model = _spyx_mlp()
    graph = spyx_nir.to_nir(model, {"input": np.array([16])}, {"output": np.array([5])}, dt=dt)
    x = np.random.default_rng(0).random((12, 6, 16)).astype(np.float32) * 6
    out, _ = spyx_nn.run(model, jnp.asarray(x))
    theirs = list(np.asarray(out, dtype=np.float64))
    xt = torch.tensor(x).transpose(0, 1)
    _assert_same_steps(_run_over_time(xbar.from_nir(graph, exporter="spyx", dt=dt), xt), theirs, f"spyx dt={dt}")
    path = tmp_path / "spyx.nir"
    nir.write(str(path), graph)
    _assert_same_steps(_run_over_time(xbar.from_nir(path, exporter="spyx", dt=dt), xt), theirs,
                       f"spyx dt={dt}, file")
    nir_run = _run_over_time(xbar.from_nir(graph, dt=dt), xt)
    assert any(not np.array_equal(a, b) for a, b in zip(nir_run, theirs))


def test_spyx_conv_graph_runs_as_spyx_does():
    """spyx's Conv and SumPool (channels last, as JAX runs them; NIR's nodes channels
    first), with an IF between them, step by step."""
    rngs = nnx.Rngs(1)
    model = spyx_nn.Sequential(nnx.Conv(2, 4, (3, 3), padding="SAME", rngs=rngs), spyx_nn.IF((8, 8, 4), rngs=rngs),
                               spyx_nn.SumPool((2, 2), (2, 2), "VALID"))
    graph = spyx_nir.to_nir(model, {"input": np.array([2, 8, 8])}, {"output": np.array([4, 4, 4])})
    x = np.random.default_rng(1).random((10, 3, 8, 8, 2)).astype(np.float32) * 2  # time, batch, H, W, C
    out, _ = spyx_nn.run(model, jnp.asarray(x))
    theirs = list(np.asarray(out, dtype=np.float64).transpose(0, 1, 4, 2, 3))
    xt = torch.tensor(x).permute(1, 0, 4, 2, 3)  # batch, time, C, H, W
    _assert_same_steps(_run_over_time(xbar.from_nir(graph, exporter="spyx"), xt), theirs, "spyx conv")


def test_an_exporter_refuses_the_neurons_it_never_writes():
    """A CubaLIF cannot come from sinabs, an IF not from rockpool: the graph is another's."""
    cuba = nir.CubaLIF(tau_syn=np.full(3, 0.01), tau_mem=np.full(3, 0.02), r=np.ones(3), v_leak=np.zeros(3),
                       v_threshold=np.ones(3))
    with pytest.raises(ValueError, match=r"'n0' is a CubaLIF, which sinabs does not export \(it writes IF, LIF, LI\)"):
        xbar.from_nir(_chain(cuba), exporter="sinabs")
    integrate = nir.IF(r=np.ones(3), v_threshold=np.ones(3))
    with pytest.raises(ValueError, match=r"'n0' is a IF, which rockpool does not export"):
        xbar.from_nir(_chain(integrate), exporter="rockpool", dt=1e-3)


def _graph(nodes, edges):
    return nir.NIRGraph(nodes=nodes, edges=edges)


def _chain(*middle):
    nodes = {"in": nir.Input(np.array([3])), **{f"n{i}": n for i, n in enumerate(middle)},
             "out": nir.Output(np.array([3]))}
    keys = list(nodes)
    return _graph(nodes, list(zip(keys[:-1], keys[1:])))


@pytest.mark.parametrize("dt", [1e-4, 1e-3])
def test_leaky_integrator_follows_its_closed_form(dt):
    tau, r, leak = np.full(3, 2e-3), np.array([1.0, 2.0, 0.5]), np.array([0.0, 0.1, -0.2])
    model = xbar.from_nir(_chain(nir.LI(tau=tau, r=r, v_leak=leak)), dt=dt, dtype=torch.float64)
    i = torch.tensor([[0.5, -1.0, 2.0]], dtype=torch.float64)
    a = dt / tau
    for t in range(1, 20):
        v = model(i).numpy()[0]
        np.testing.assert_allclose(v, leak + r * i.numpy()[0] * (1 - (1 - a) ** t), rtol=1e-12, atol=1e-12)


def test_lif_fires_when_the_closed_form_crosses_threshold_and_resets():
    tau, thr = np.full(3, 1e-3), np.array([0.5, 0.9, 2.0])
    node = nir.LIF(tau=tau, r=np.ones(3), v_leak=np.zeros(3), v_threshold=thr, v_reset=np.zeros(3))
    dt, current = 1e-4, 1.0
    model = xbar.from_nir(_chain(node), dt=dt, dtype=torch.float64)
    spikes = torch.stack([model(torch.full((1, 3), current, dtype=torch.float64))[0] for _ in range(40)]).numpy()
    a = dt / tau[0]
    first = [next((t for t in range(1, 41) if current * (1 - (1 - a) ** t) > h), None) for h in thr]
    for j, t0 in enumerate(first):
        if t0 is None:  # the steady state rI = 1 never crosses 2.0
            assert spikes[:, j].sum() == 0
        else:
            assert spikes[: t0 - 1, j].sum() == 0 and spikes[t0 - 1, j] == 1
            # reset to 0: the same rise again, so it fires every t0 steps
            np.testing.assert_array_equal(np.flatnonzero(spikes[:, j]) + 1, np.arange(t0, 41, t0))


def test_cuba_lif_synapse_then_membrane():
    tau_syn, tau_mem, dt = np.full(3, 5e-4), np.full(3, 1e-3), 1e-4
    node = nir.CubaLI(tau_syn=tau_syn, tau_mem=tau_mem, r=np.ones(3), v_leak=np.zeros(3), w_in=np.full(3, 2.0))
    model = xbar.from_nir(_chain(node), dt=dt, dtype=torch.float64)
    a, b = dt / tau_syn[0], dt / tau_mem[0]
    i = v = 0.0
    for _ in range(10):
        i = i + a * (2.0 * 1.0 - i)
        v = v + b * (-v + i)
        np.testing.assert_allclose(model(torch.ones(1, 3, dtype=torch.float64))[0].numpy(), v, rtol=1e-12)


def test_recurrent_integrator_is_a_linear_recursion():
    """I with a recurrent Linear: v_t = (1 + dt r W) v_{t-1} + dt r W_in x (the loop edge
    carries the previous step): v_t = sum_{s<t} A^s b."""
    rng = np.random.default_rng(0)
    w_in, w_rec = rng.normal(size=(3, 3)), rng.normal(size=(3, 3)) * 0.3
    dt = 0.1
    nodes = {"in": nir.Input(np.array([3])), "a": nir.Linear(w_in), "v": nir.I(r=np.ones(3)),
             "w": nir.Linear(w_rec), "out": nir.Output(np.array([3]))}
    edges = [("in", "a"), ("a", "v"), ("v", "w"), ("w", "v"), ("v", "out")]
    model = xbar.from_nir(_graph(nodes, edges), dt=dt, dtype=torch.float64)
    x = rng.normal(size=3)
    A, b = np.eye(3) + dt * w_rec, dt * (w_in @ x)
    with torch.no_grad():
        v_seq = [model(torch.tensor(x[None]))[0].numpy() for _ in range(7)]
        model.reset()
        first = model(torch.tensor(x[None]))[0].numpy()
    for t, v in enumerate(v_seq, start=1):
        np.testing.assert_allclose(v, sum(np.linalg.matrix_power(A, s) @ b for s in range(t)), rtol=1e-10)
    np.testing.assert_allclose(first, b, rtol=1e-12)


def test_conv_pooling_flatten_scale_threshold_match_torch():
    rng = np.random.default_rng(1)
    w, bias = rng.normal(size=(4, 2, 3, 3)), rng.normal(size=4)
    nodes = {"in": nir.Input(np.array([2, 8, 8])),
             "c": nir.Conv2d(input_shape=(8, 8), weight=w, stride=1, padding=1, dilation=1, groups=1, bias=bias),
             "p": nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0])),
             "q": nir.AvgPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0])),
             "f": nir.Flatten(input_type={"input": np.array([4, 2, 2])}, start_dim=0, end_dim=-1),
             "s": nir.Scale(np.full(16, 0.5)), "t": nir.Threshold(np.full(16, 0.1)),
             "out": nir.Output(np.array([16]))}
    keys = list(nodes)
    model = xbar.from_nir(_graph(nodes, list(zip(keys[:-1], keys[1:]))), dt=1.0, dtype=torch.float64)
    x = torch.tensor(rng.normal(size=(5, 2, 8, 8)))
    y = torch.nn.functional.conv2d(x, torch.tensor(w), torch.tensor(bias), padding=1)
    y = torch.nn.functional.avg_pool2d(torch.nn.functional.avg_pool2d(y, 2) * 4, 2).flatten(1) * 0.5
    with torch.no_grad():
        np.testing.assert_array_equal(model(x).numpy(), (y > 0.1).double().numpy())


def test_refusals_name_the_problem(tmp_path):
    good = _chain(nir.LI(tau=np.ones(3), r=np.ones(3), v_leak=np.zeros(3)))
    with pytest.raises(TypeError, match="dt"):
        xbar.from_nir(good)
    for bad in (0, -1e-4, float("nan"), "1e-4"):
        with pytest.raises(ValueError, match="dt = .* is not allowed.*snntorch and SpikingJelly use 1e-4"):
            xbar.from_nir(good, dt=bad)
    delay = _chain(nir.Delay(np.ones(3)))
    with pytest.raises(ValueError, match=r"n0 \(Delay\).*Supported: Input"):
        xbar.from_nir(delay, dt=1e-4)
    two = _graph({"a": nir.Input(np.array([3])), "b": nir.Input(np.array([3])),
                  "out": nir.Output(np.array([3]))}, [("a", "out"), ("b", "out")])
    with pytest.raises(ValueError, match="2 Input nodes"):
        xbar.from_nir(two, dt=1e-4)
    with pytest.raises(FileNotFoundError, match="no NIR file"):
        xbar.from_nir(tmp_path / "missing.nir", dt=1e-4)
    with pytest.raises(TypeError, match="nir.NIRGraph or the path"):
        xbar.from_nir(nn.Linear(2, 2), dt=1e-4)
    with pytest.raises(ValueError, match="exporter = 'brian2' is not allowed: must be one of"):
        xbar.from_nir(good, exporter="brian2")
    fast = _chain(nir.LIF(tau=np.full(3, 1e-4), r=np.ones(3), v_leak=np.zeros(3), v_threshold=np.ones(3)))
    with pytest.raises(ValueError, match=r"'n0' \(LIF\) has tau down to 0.0001 s, and dt = 0.0003 s steps it by "
                                         r"dt/tau = 3: forward Euler needs dt/tau <= 1"):
        xbar.from_nir(fast, dt=3e-4)
    assert xbar.from_nir(fast, dt=1e-4) is not None  # dt/tau = 1: v = r I, allowed
