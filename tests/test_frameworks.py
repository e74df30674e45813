"""Models as snntorch, SpikingJelly and norse users write them, with the real libraries.

Each case either equals the library's own answer under ``Spec.ideal()`` (accuracy at
every step, from an evaluation loop written as that library's tutorials write it, and
the crossbar network equal to it), with neuron metrics present, or is refused with a
clear error.  The networks are trained for a few seconds on scikit-learn's digits so
that the accuracies are far from chance and a wrong readout would show.
"""

import inspect
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn

import snn_helpers
import xbar
from snn_helpers import N_TRAIN, accuracy_per_step, train
from xbar.neurons import multi_step_reason, neuron_reading, threshold

import snntorch as snn  # noqa: E402  (the real libraries: a missing one fails, never skips)
import norse.torch as norse  # noqa: E402
from spikingjelly.activation_based import functional, layer, neuron  # noqa: E402

T = 5


@pytest.fixture(scope="module")
def digits():
    return snn_helpers.digits()


def _check_equal(ds, own, *, neuron_layers):
    """Ideal and crossbar accuracy equal the library's own at every step; the neuron
    metrics of the layers feeding neurons are present and ideal."""
    np.testing.assert_array_equal(ds.accuracy_ideal.values, own)
    np.testing.assert_array_equal(ds.accuracy.values[0], own)
    assert own[-1] > 0.5  # trained: far from chance (0.1)
    for name in neuron_layers:
        lay = ds.sel(layer=name)
        assert np.isfinite(lay.membrane_error.values).all(), name
        assert float(lay.membrane_error.max()) < 1e-4, name
        assert float(lay.spike_mismatch.max()) == 0.0, name
        assert float(lay.spike_rate_ideal.mean()) > 0.0, name
        np.testing.assert_array_equal(lay.spike_rate.values[0], lay.spike_rate_ideal.values)


def _simulate(net, x, y, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # layers left digital are checked where they matter
        hw = xbar.convert(net, xbar.Spec.ideal())
    return hw, xbar.simulate(hw, net, (x, y), T, progress=False, **kw)


# ---------------------------------------------------------------- snntorch

def _snn_summed(net, xb):
    xbar.reset_state(net)
    out = 0
    for _ in range(T):
        o = net(xb)
        out = out + (o[0] if isinstance(o, tuple) else o)
    return out


def _snn_own_eval(net, x, y):
    """snntorch's tutorial evaluation: reset, step, sum the output spikes."""
    with torch.no_grad():
        xbar.reset_state(net)
        acc, rec = 0, []
        for _ in range(T):
            o = net(x)
            acc = acc + (o[0] if isinstance(o, tuple) else o)
            rec.append(acc)
    return accuracy_per_step(rec, y)


def test_snntorch_sequential_init_hidden_with_output_true(digits):
    x, y = digits
    net = nn.Sequential(nn.Linear(64, 64), snn.Leaky(beta=0.9, init_hidden=True),
                        nn.Linear(64, 10), snn.Leaky(beta=0.9, init_hidden=True, output=True))
    train(net, _snn_summed, x, y)
    own = _snn_own_eval(net, x[N_TRAIN:], y[N_TRAIN:])
    _, ds = _simulate(net, x[N_TRAIN:], y[N_TRAIN:])
    assert list(ds.neuron.values) == ["1", "3"]
    _check_equal(ds, own, neuron_layers=["0", "2"])


class _ExplicitMembranes(nn.Module):
    """init_hidden=False, (spk, mem) returned, neurons registered after all the layers."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(64, 64), nn.Linear(64, 32), nn.Linear(32, 10)
        self.lif1, self.lif2 = snn.Leaky(beta=0.9), snn.Leaky(beta=0.8)

    def forward(self, x):
        spk1, _ = self.lif1(self.fc1(x))
        spk2, _ = self.lif2(self.fc2(spk1))
        return self.fc3(spk2)


def test_snntorch_explicit_membranes_matched_by_execution_order(digits):
    x, y = digits
    net = train(_ExplicitMembranes(), _snn_summed, x, y)
    own = _snn_own_eval(net, x[N_TRAIN:], y[N_TRAIN:])
    _, ds = _simulate(net, x[N_TRAIN:], y[N_TRAIN:])
    # registration order would give fc3 -> lif1; execution order gives no neuron
    assert list(ds.neuron.values) == ["lif1", "lif2", ""]
    _check_equal(ds, own, neuron_layers=["fc1", "fc2"])
    assert np.isnan(ds.membrane_error.sel(layer="fc3").values).all()


class _Recurrent(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(64, 48), nn.Linear(48, 10)
        self.lif1 = snn.RLeaky(beta=0.9, linear_features=48)
        self.lif2 = snn.Synaptic(alpha=0.8, beta=0.9)

    def forward(self, x):
        spk1, _ = self.lif1(self.fc1(x))
        spk2, _, _ = self.lif2(self.fc2(spk1))
        return spk2


def test_snntorch_recurrent_weights_go_on_crossbars(digits):
    x, y = digits
    net = train(_Recurrent(), _snn_summed, x, y)
    own = _snn_own_eval(net, x[N_TRAIN:], y[N_TRAIN:])
    hw, ds = _simulate(net, x[N_TRAIN:], y[N_TRAIN:])
    assert {r.name for r in hw.xbar_report if r.on_crossbars} == {"fc1", "lif1.recurrent", "fc2"}
    assert dict(zip(ds.layer.values, ds.neuron.values)) == {
        "fc1": "lif1", "lif1.recurrent": "lif1", "fc2": "lif2"}
    _check_equal(ds, own, neuron_layers=["fc1", "lif1.recurrent", "fc2"])


class _TutorialTimeLoop(nn.Module):
    """snntorch tutorial 5: the time loop inside forward, outputs stacked."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(64, 32), nn.Linear(32, 10)
        self.lif1, self.lif2 = snn.Leaky(beta=0.9), snn.Leaky(beta=0.9)

    def forward(self, x):
        mem1, mem2 = self.lif1.init_leaky(), self.lif2.init_leaky()
        spk_rec, mem_rec = [], []
        for _ in range(T):
            spk1, mem1 = self.lif1(self.fc1(x), mem1)
            spk2, mem2 = self.lif2(self.fc2(spk1), mem2)
            spk_rec.append(spk2)
            mem_rec.append(mem2)
        return torch.stack(spk_rec), torch.stack(mem_rec)


def test_snntorch_time_loop_in_forward_is_refused_before_any_work(digits):
    x, y = digits
    net = _TutorialTimeLoop()
    hw = xbar.convert(net, xbar.Spec.ideal())
    with pytest.raises(ValueError, match=r"looks like \[time, batch, classes\].*own time loop"):
        xbar.simulate(hw, net, (x[:50], y[:50]), T, progress=False)


_SNNTORCH_SEQUENCE = {
    snn.LeakyParallel: lambda: snn.LeakyParallel(64, 10),
    snn.StateLeaky: lambda: snn.StateLeaky(beta=0.9, channels=10),
    snn.LinearLeaky: lambda: snn.LinearLeaky(0.9, 64, 10),
    snn.AssociativeLeaky: lambda: snn.AssociativeLeaky(64, 4, 4, 16),
}


@pytest.mark.parametrize("cls", list(_SNNTORCH_SEQUENCE), ids=lambda c: c.__name__)
def test_snntorch_sequence_neurons_are_refused(cls):
    net = nn.Sequential(nn.Linear(64, 64), _SNNTORCH_SEQUENCE[cls]())
    with pytest.raises(ValueError, match=f"{cls.__name__} takes a whole sequence per call.*use snntorch.Leaky"):
        xbar.convert(net, xbar.Spec.ideal())


_SNNTORCH_CASES = {
    "Leaky": lambda: snn.Leaky(0.9), "Leaky(init_hidden)": lambda: snn.Leaky(0.9, init_hidden=True),
    "Leaky(output)": lambda: snn.Leaky(0.9, init_hidden=True, output=True),
    "RLeaky": lambda: snn.RLeaky(0.9, linear_features=8), "Synaptic": lambda: snn.Synaptic(0.8, 0.9),
    "RSynaptic": lambda: snn.RSynaptic(0.8, 0.9, linear_features=8),
    "Lapicque": lambda: snn.Lapicque(beta=0.9), "Alpha": lambda: snn.Alpha(0.9, 0.8),
    "SLSTM": lambda: snn.SLSTM(8, 8), "DeltaLeaky": lambda: snn.DeltaLeaky(beta=0.9, init_hidden=True),
}


def test_every_snntorch_neuron_is_recognised_or_refused():
    neuron_classes = {c for c in vars(snn).values() if inspect.isclass(c)
                      and issubclass(c, snn.SpikingNeuron) and c not in (snn.SpikingNeuron, snn.LIF)}
    neuron_classes |= {snn.LeakyParallel}
    covered = set()
    x = torch.rand(4, 8) * 3
    for name, make in _SNNTORCH_CASES.items():
        m = make()
        covered.add(type(m))
        out = m(x)
        out = m(x)
        reading = neuron_reading(m, out)
        assert reading is not None and reading[0].shape == (4, 8), name
        assert threshold(m) is not None, name
    m = snn.SConv2dLSTM(3, 4, 3)
    assert neuron_reading(m, m(torch.rand(2, 3, 8, 8))) is not None
    covered.add(snn.SConv2dLSTM)
    for cls, make in _SNNTORCH_SEQUENCE.items():
        assert multi_step_reason(make()) is not None, cls
    assert neuron_classes - covered - set(_SNNTORCH_SEQUENCE) == set()


# ---------------------------------------------------------------- SpikingJelly

def _sj_mlp(mode):
    net = nn.Sequential(layer.Linear(64, 64), neuron.LIFNode(tau=2.0), layer.Linear(64, 10),
                        neuron.IFNode())
    functional.set_step_mode(net, mode)
    return net


def _sj_conv(mode):
    net = nn.Sequential(layer.Conv2d(1, 8, 3, padding=1), layer.BatchNorm2d(8), neuron.IFNode(),
                        layer.AvgPool2d(2), layer.Flatten(), nn.Linear(8 * 16, 10), neuron.LIFNode())
    functional.set_step_mode(net, mode)
    return net


def _sj_summed(net, xb):
    functional.reset_net(net)
    if net[0].step_mode == "m":
        return net(xb.unsqueeze(0).repeat(T, *[1] * xb.dim())).sum(0)
    return sum(net(xb) for _ in range(T))


def _sj_own_eval(net, x, y):
    """SpikingJelly's tutorial evaluation: reset_net, then the firing rate of the output."""
    with torch.no_grad():
        functional.reset_net(net)
        if net[0].step_mode == "m":
            return accuracy_per_step(net(x.unsqueeze(0).repeat(T, *[1] * x.dim())).cumsum(0), y)
        out_fr, rec = 0, []
        for _ in range(T):
            out_fr = out_fr + net(x)
            rec.append(out_fr)
    return accuracy_per_step(rec, y)


@pytest.mark.parametrize("mode", ["s", "m"])
def test_spikingjelly_layer_linear_mlp(digits, mode):
    x, y = digits
    net = train(_sj_mlp(mode), _sj_summed, x, y, epochs=6, lr=1e-2)
    own = _sj_own_eval(net, x[N_TRAIN:], y[N_TRAIN:])
    hw, ds = _simulate(net, x[N_TRAIN:], y[N_TRAIN:])
    assert [r.name for r in hw.xbar_report if r.on_crossbars] == ["0", "2"]
    assert list(ds.neuron.values) == ["1", "3"]
    _check_equal(ds, own, neuron_layers=["0", "2"])


@pytest.mark.parametrize("mode", ["s", "m"])
def test_spikingjelly_conv_net_mixing_layer_conv2d_and_nn_linear(digits, mode):
    x, y = digits
    x = x.reshape(-1, 1, 8, 8)
    net = train(_sj_conv(mode), _sj_summed, x, y)
    own = _sj_own_eval(net, x[N_TRAIN:], y[N_TRAIN:])
    hw, ds = _simulate(net, x[N_TRAIN:], y[N_TRAIN:])
    assert [(r.name, r.on_crossbars) for r in hw.xbar_report] == [("0", True), ("5", True)]
    _check_equal(ds, own, neuron_layers=["0", "5"])


class _SJBasicBlock(nn.Module):
    """SpikingJelly's ``spiking_resnet.BasicBlock`` as it is written there (its module
    imports torchvision, which these machines do not have): the shortcut's crossbar
    layer runs between ``conv2`` and ``sn2``."""

    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.conv1 = layer.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = layer.BatchNorm2d(c_out)
        self.sn1 = neuron.LIFNode()
        self.conv2 = layer.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = layer.BatchNorm2d(c_out)
        self.downsample = nn.Sequential(layer.Conv2d(c_in, c_out, 1, stride, bias=False), layer.BatchNorm2d(c_out))
        self.sn2 = neuron.LIFNode()

    def forward(self, x):
        identity = x
        out = self.sn1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = self.downsample(x)
        out += identity
        return self.sn2(out)


def test_spikingjelly_residual_block_shortcut_layer_feeds_the_neuron_after_the_add(digits):
    """Matched by data flow: ``conv2`` and the shortcut's ``downsample.0`` both feed
    ``sn2``, though ``downsample.0`` (a crossbar layer) runs between ``conv2`` and ``sn2``
    (the order rule gave ``conv2`` no neuron)."""
    x, y = digits
    x = x.reshape(-1, 1, 8, 8)
    net = nn.Sequential(layer.Conv2d(1, 8, 3, padding=1), neuron.IFNode(), _SJBasicBlock(8, 16, 2),
                        layer.Flatten(), layer.Linear(16 * 16, 10), neuron.LIFNode(tau=2.0))
    net = train(net, _sj_summed, x, y)
    net.eval()
    own = _sj_own_eval(net, x[N_TRAIN:], y[N_TRAIN:])
    hw, ds = _simulate(net, x[N_TRAIN:], y[N_TRAIN:])
    assert dict(zip(ds.layer.values, ds.neuron.values)) == {
        "0": "1", "2.conv1": "2.sn1", "2.conv2": "2.sn2", "2.downsample.0": "2.sn2", "4": "5"}
    _check_equal(ds, own, neuron_layers=["0", "2.conv1", "2.conv2", "2.downsample.0", "4"])


def test_snntorch_conv_lstm_pooling_its_spikes_is_a_neuron(digits):
    """``SConv2dLSTM(max_pool=2)`` returns spikes pooled to half the size of its
    membrane: it is found as the neuron of the conv before it (and of its own conv), and
    its membrane error is counted over its membrane's elements.  (Untrained: the check is
    the metering, on the ideal chip.)"""
    x, y = digits
    x = x.reshape(-1, 1, 8, 8)[N_TRAIN:] * 4
    torch.manual_seed(0)
    # its membrane is the LSTM's output, within (-1, 1): a threshold below 1 lets it spike
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1),
                        snn.SConv2dLSTM(2, 8, 3, max_pool=2, init_hidden=True, threshold=0.1),
                        nn.Flatten(), nn.Linear(8 * 4 * 4, 10))
    with torch.no_grad():
        xbar.reset_state(net)
        out = net[1](net[0](x[:4]))
        assert out.shape == (4, 8, 4, 4) and net[1].mem.shape == (4, 8, 8, 8)
        assert neuron_reading(net[1], out) is not None
    hw, ds = _simulate(net.eval(), x, y[N_TRAIN:])
    matched = dict(zip(ds.layer.values, ds.neuron.values))
    assert matched["0"] == "1" and matched["3"] == ""
    assert [n for n in matched if n.startswith("1.")] and all(matched[n] == "1" for n in matched if n.startswith("1."))
    np.testing.assert_array_equal(ds.accuracy.values[0], ds.accuracy_ideal.values)
    lay = ds.sel(layer="0")
    assert np.isfinite(lay.membrane_error.values).all() and float(lay.membrane_error.max()) < 1e-4
    assert float(lay.spike_mismatch.max()) == 0.0 and float(lay.spike_rate_ideal.mean()) > 0.0
    assert float(lay.neurons) == 8 * 4 * 4  # per sample: its pooled spikes


def test_spikingjelly_multi_step_data_given_time_first_is_refused(digits):
    x, y = digits
    net = _sj_mlp("m")
    hw = xbar.convert(net, xbar.Spec.ideal())
    seq = x[:40].unsqueeze(0).repeat(T, 1, 1)  # [T, N, 64], as a multi-step user holds it
    with pytest.raises(ValueError, match="x has 5 samples but y has 40 labels"):
        xbar.simulate(hw, net, (seq, y[:40]), T, progress=False)


def test_spikingjelly_psn_is_refused():
    from spikingjelly.activation_based.neuron import PSN

    net = nn.Sequential(layer.Linear(64, 10), PSN(T=4))
    with pytest.raises(ValueError, match="PSN takes a whole sequence per call"):
        xbar.convert(net, xbar.Spec.ideal())


def test_every_spikingjelly_neuron_is_recognised_or_refused():
    extra = {"SimpleLIFNode": dict(tau=2.0, decay_input=True), "GatedLIFNode": dict(T=4),
             "PSN": dict(T=4), "MaskedPSN": dict(k=2, T=4), "SlidingPSN": dict(k=2)}
    abstract = {"BaseNode", "AdaptBaseNode", "SimpleBaseNode", "NonSpikingBaseNode"}
    x = torch.rand(4, 8) * 3
    checked = 0
    for name, cls in vars(neuron).items():
        if not (inspect.isclass(cls) and issubclass(cls, nn.Module)
                and cls.__module__.startswith("spikingjelly")) or name in abstract:
            continue
        try:
            m = cls(**extra.get(name, {}))
        except (TypeError, ValueError):
            continue  # needs problem-specific arguments (tables, lookup functions, sizes)
        if multi_step_reason(m) is not None:
            checked += 1
            continue
        mode = getattr(m, "step_mode", "s")
        if mode == "m" and "s" in m.supported_step_mode():
            m.step_mode = mode = "s"
        xs = x.unsqueeze(0) if mode == "m" else x
        out = m(xs)
        out = m(xs)
        # SlidingPSN keeps a window of past inputs, not a membrane: it runs, unmetered
        assert (neuron_reading(m, out) is None) == (name == "SlidingPSN"), name
        checked += 1
    assert checked >= 25


# ---------------------------------------------------------------- norse

def _norse_readouts(net, x):
    """norse's tutorial evaluation: carry the state, take the max voltage over time."""
    state, volts = None, []
    for _ in range(T):
        out, state = net(x, state)
        volts.append(out)
    return torch.stack(volts).cummax(0).values


def _norse_summed(net, xb):
    return _norse_readouts(net, xb)[-1]


@pytest.mark.parametrize("cells", ["feedforward", "recurrent"])
def test_norse_sequential_state_keeps_its_state(digits, cells):
    x, y = digits
    x = x * 5  # norse's cells integrate a current: a larger input drive
    torch.manual_seed(0)  # the initial weights, whatever ran before
    hidden = norse.LIFCell() if cells == "feedforward" else norse.LIFRecurrentCell(64, 64)
    net = norse.SequentialState(nn.Linear(64, 64), hidden, nn.Linear(64, 10), norse.LICell())
    train(net, _norse_summed, x, y, epochs=4)
    with torch.no_grad():
        own = accuracy_per_step(_norse_readouts(net, x[N_TRAIN:]), y[N_TRAIN:])
    if cells == "recurrent":
        with pytest.warns(UserWarning, match=r"1 \(norse.LIFRecurrentCell\): holds input_weights"):
            xbar.convert(net, xbar.Spec.ideal())
    hw, ds = _simulate(net, x[N_TRAIN:], y[N_TRAIN:], readout="max")
    assert [r.on_crossbars for r in hw.xbar_report] == (
        [True, True] if cells == "feedforward" else [True, False, True])
    assert list(ds.neuron.values) == ["1", "3"]
    _check_equal(ds, own, neuron_layers=["0"])
    # the LI readout is a neuron without threshold or spikes: its metrics are NaN, by design
    assert np.isnan(ds.membrane_error.sel(layer="2").values).all()


def test_norse_sequence_modules_are_refused():
    net = norse.SequentialState(nn.Linear(64, 10), norse.LIF())
    with pytest.raises(ValueError, match="takes a whole sequence per call.*LIFCell"):
        xbar.convert(net, xbar.Spec.ideal())


def test_every_norse_cell_is_recognised_or_refused():
    from norse.torch.module.snn import SNN, SNNCell, SNNRecurrent, SNNRecurrentCell
    from norse.torch.functional.izhikevich import tonic_spiking

    x = torch.rand(3, 5) * 3
    checked = 0
    for name, cls in vars(norse).items():
        if not (inspect.isclass(cls) and issubclass(cls, (SNN, SNNCell, SNNRecurrent, SNNRecurrentCell))):
            continue
        if "Izhikevich" in name:
            m = cls(5, 5, tonic_spiking) if "Recurrent" in name else cls(tonic_spiking)
        else:
            try:
                m = cls()
            except TypeError:
                m = cls(5, 5)
        if multi_step_reason(m) is not None:
            checked += 1
            continue
        out = m(x)
        out = m(x, out[1])
        assert neuron_reading(m, out) is not None, name
        if "LI" not in name.replace("LIF", ""):
            assert threshold(m) is not None, name
        checked += 1
    assert checked >= 30
