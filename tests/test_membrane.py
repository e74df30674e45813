"""Analog neurons (Spec.neuron="analog", xbar.membrane): the ideal limit (the digital
neuron without an ADC), the spread of their parts against its closed form, and the
exact equivalence of the gain with a neuron whose own capacitor and threshold differ."""

import pytest
import torch
import torch.nn as nn

import xbar
from devices import presets
from studies.models import LIF
from xbar.membrane import neuron_gains
from xbar.streams import ProgrammingDraws

RRAM = presets["rram_hfo2"]


def rand(seed, *shape):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _small_snn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 24), LIF(0.9, threshold=0.5), nn.Linear(24, 4), LIF(0.9, threshold=0.5)).double()


def _run(spec, model, x, y):
    hw = xbar.calibrate(xbar.convert(model, spec, seed=0, trials=2), model, rand(22, 16, 16), timesteps=4,
                        labels=torch.arange(16) % 4)
    return xbar.simulate(hw, model, (x, y), 6, progress=False)


def test_analog_neurons_with_ideal_parts_are_digital_neurons_without_an_adc():
    """End to end on RRAM with variation and wires, calibrated: the analog neurons' network
    reads spike for spike what the digital neurons' does with an ideal ADC, and not what a
    4-bit ADC at every step gives."""
    model = _small_snn()
    x, y = rand(20, 64, 16), torch.randint(0, 4, (64,), generator=torch.Generator().manual_seed(21))
    base = xbar.Spec(tile=(8, 8), device=RRAM, r_wire_row=1.0, r_wire_col=1.0, adc_bits=None)
    analog = _run(base.replace(neuron="analog"), model, x, y)
    digital = _run(base, model, x, y)
    for name in ("read_error", "spike_mismatch", "accuracy"):
        assert bool((analog[name] == digital[name]).all()), name
    four_bit = _run(base.replace(adc_bits=4), model, x, y)
    assert float(abs(four_bit.read_error - digital.read_error).max()) > 1e-3


def test_the_spread_of_the_parts_has_its_closed_form():
    """1 / gain = (1 + s_C N1)(1 + s_T N2), independent normals: mean 1, variance
    (1 + s_C^2)(1 + s_T^2) - 1."""
    spec = xbar.Spec.ideal(neuron="analog", neuron_gain_sigma=0.05, neuron_threshold_sigma=0.1)
    inverse = 1 / neuron_gains((400_000,), spec, torch.Generator().manual_seed(0))
    assert abs(float(inverse.mean()) - 1) < 3 * 0.112 / 400_000**0.5
    theory = (1 + 0.05**2) * (1 + 0.1**2) - 1
    assert abs(float(inverse.var()) / theory - 1) < 0.01
    assert neuron_gains((10,), spec.replace(neuron_gain_sigma=0.0, neuron_threshold_sigma=0.0),
                        torch.Generator()) is None


class _OwnPartsLIF(nn.Module):
    """A LIF neuron with its own capacitor ``c`` (relative) and threshold ``theta``, per
    neuron: the membrane gains ``x / c`` a step, fires at ``theta``, and subtracts it."""

    def __init__(self, beta, c, theta):
        super().__init__()
        self.beta, self.c, self.theta, self.mem = beta, c, theta, None

    def forward(self, x):
        self.mem = x / self.c if self.mem is None else self.beta * self.mem + x / self.c
        spk = (self.mem >= self.theta).double()
        self.mem = self.mem - spk * self.theta
        return spk


def test_the_gain_is_a_neuron_with_its_own_capacitor_and_threshold():
    """An analog layer feeding the nominal LIF spikes exactly as the ideal layer feeding
    neurons that each have their own capacitor and threshold (drawn as the chip draws
    them), over 30 steps; and not as the nominal neurons do."""
    lin = nn.Linear(40, 12).double()
    spec = xbar.Spec.ideal(neuron="analog", neuron_gain_sigma=0.1, neuron_threshold_sigma=0.15, calibration=None)
    layer = xbar.AnalogLinear(lin, spec, trials=1, seeds=(7, 8))
    gen = ProgrammingDraws.from_seed(7).neurons  # the layer's programming seed
    c = 1 + 0.1 * torch.randn((1, 12), generator=gen, dtype=torch.float64)
    theta = 0.5 * (1 + 0.15 * torch.randn((1, 12), generator=gen, dtype=torch.float64))
    x = rand(3, 50, 40) * 0.3
    nominal, own, plain = LIF(0.9, threshold=0.5), _OwnPartsLIF(0.9, c, theta), LIF(0.9, threshold=0.5)
    with torch.no_grad():
        spikes = [(nominal(layer(x)), own(lin(x)), plain(lin(x))) for _ in range(30)]
    a, b, n = (torch.stack(s) for s in zip(*spikes))
    assert torch.equal(a, b)
    assert float(b.sum()) > 200 and float((b != n).double().mean()) > 0.01


def test_hardware_aware_training_draws_the_neurons_with_the_programming():
    """Training's forward multiplies the layer's output, bias included, by gains drawn
    again for every batch and fixed within it; the gradient goes through them."""
    lin = nn.Linear(20, 6).double()
    x = rand(0, 8, 20)
    spec = xbar.Spec.ideal(neuron="analog", neuron_threshold_sigma=0.1, calibration=None)
    with xbar.HardwareAware(lin, spec, seed=3) as hw:
        assert hw.active == ("variation",)
        hw.new_batch()
        a, a2 = lin(x), lin(x)
        hw.new_batch()
        b = lin(x)
    ideal = lin(x).detach()
    ratio_a, ratio_b = a.detach() / ideal, b.detach() / ideal
    torch.testing.assert_close(a.detach(), a2.detach(), rtol=0, atol=0)
    torch.testing.assert_close(ratio_a, ratio_a[:1].expand_as(ratio_a), rtol=1e-10, atol=0)  # a gain per neuron
    assert float((ratio_a - ratio_b).abs().max()) > 1e-3  # drawn again
    a.sum().backward()
    torch.testing.assert_close(lin.bias.grad, 8 * ratio_a[0], rtol=1e-10, atol=0)


@pytest.mark.parametrize("changes, field, says", [
    (dict(neuron="analog", adc_bits=6), "neuron", "set adc_bits=None"),
    (dict(neuron="spiking"), "neuron", "must be one of"),
    (dict(neuron_gain_sigma=0.05), "neuron_gain_sigma", "set neuron='analog'"),
    (dict(neuron="analog", neuron_threshold_sigma=0.5), "neuron_threshold_sigma", r"in \[0, 0.2\]"),
    (dict(neuron="analog", neuron_gain_sigma=-0.1), "neuron_gain_sigma", r"in \[0, 0.2\]"),
])
def test_bad_neurons_are_refused_with_the_field(changes, field, says):
    with pytest.raises(ValueError, match=rf"Spec\.{field} = .* not allowed.*{says}"):
        xbar.Spec(**changes)


def _leaky_net(beta):
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(30, 10), LIF(beta, threshold=0.5)).double()


def test_leakage_is_an_extra_leak_of_every_membrane():
    """With leakage l, an analog chip's LIF neurons of leak beta run as the ideal network
    whose neurons leak beta - l, spike for spike (membranes to round-off), and not as the
    ideal network itself; detached from training, no hook is left."""
    model, twin = _leaky_net(0.9), _leaky_net(0.8)
    twin.load_state_dict(model.state_dict())
    spec = xbar.Spec.ideal(neuron="analog", neuron_leakage=0.1, calibration=None)
    hw = xbar.convert(model, spec, seed=0)
    x = rand(4, 16, 30)
    with torch.no_grad():
        steps = [(hw(x), twin(x), model(x), hw[1].mem.clone(), twin[1].mem.clone()) for _ in range(20)]
    assert all(torch.equal(a, b) for a, b, *_ in steps)
    assert all(torch.allclose(m, n, rtol=0, atol=1e-12) for *_, m, n in steps)
    assert sum(float((a != c).sum()) for a, _, c, *_ in steps) > 10  # the leak shows
    trained = _leaky_net(0.9)
    with xbar.HardwareAware(trained, spec) as aware:
        aware.new_batch()
        assert len(aware._hooks) == 1  # before the LIF neuron (the crossbar layer has its own forward)
        out = [trained(x) for _ in range(5)]
    assert not any(m._forward_pre_hooks for m in trained.modules())
    xbar.reset_state(twin)
    with torch.no_grad():
        assert all(torch.equal(o.detach(), twin(x)) for o in out)


def test_leakage_reaches_another_librarys_membrane():
    """snntorch's Leaky keeps its membrane itself: with leakage l, its beta acts as beta - l
    (to its float32 beta's rounding)."""
    snntorch = pytest.importorskip("snntorch")
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(20, 8), snntorch.Leaky(beta=0.9, threshold=0.4, init_hidden=True)).double()
    twin = nn.Sequential(nn.Linear(20, 8), snntorch.Leaky(beta=0.7, threshold=0.4, init_hidden=True)).double()
    twin[0].load_state_dict(model[0].state_dict())
    hw = xbar.convert(model, xbar.Spec.ideal(neuron="analog", neuron_leakage=0.2, calibration=None), seed=0)
    x = rand(5, 12, 20)
    xbar.reset_state(hw), xbar.reset_state(twin)
    with torch.no_grad():
        for _ in range(15):
            spikes = (hw(x), twin(x))
            assert torch.equal(*spikes)
            torch.testing.assert_close(hw[1].mem, twin[1].mem, rtol=0, atol=1e-6)
        assert float(spikes[0].sum()) > 10
