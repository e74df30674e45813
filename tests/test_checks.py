"""What convert and simulate refuse or warn about before any work, and which layers go
onto crossbars."""

import copy
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn
import xarray as xr

import xbar
from devices import presets
from studies.models import LIF


def _mlp(seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(16, 12), LIF(0.9, threshold=0.5), nn.Linear(12, 4)).to(dtype)


def _data(n=40, seed=0, scale=1.0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 16, generator=g) * scale).to(dtype), torch.randint(0, 4, (n,), generator=g)


def _sim(model, data, spec=None, t=3, **kw):
    hw = xbar.convert(model, spec or xbar.Spec.ideal())
    if any(m.matrix.awaits_data for _, m in xbar.analog_layers(hw)):  # on other samples than data's
        kw.setdefault("calibration_data", _data(16, seed=99, scale=float(data[0].max()), dtype=data[0].dtype)[0])
    return xbar.simulate(hw, model, data, t, progress=False, **kw)


@pytest.mark.parametrize("labels, message", [
    (lambda y: y[:1], r"x has 40 samples but y has 1 labels"),
    (lambda y: y[:-3], r"x has 40 samples but y has 37 labels"),
    (lambda y: y[:, None], r"shape \(40, 1\).*y.squeeze\(1\)"),
    (lambda y: nn.functional.one_hot(y, 4), r"shape \(40, 4\) \(one-hot or scores\?\).*y.argmax\(1\)"),
    (lambda y: y.float(), r"dtype torch.float32: they must be integer class indices"),
    (lambda y: y - 1, r"hold -1: class indices must be >= 0"),
    (lambda y: y + 4, r"label 7 is not a class of the model's output, which has 4 classes"),
])
def test_bad_labels_are_refused_by_name(labels, message):
    x, y = _data()
    with pytest.raises(ValueError, match=message):
        _sim(_mlp(), (x, labels(y)))


def test_bad_inputs_are_refused_by_name():
    x, y = _data()
    with pytest.raises(ValueError, match=r"x has dtype torch.uint8: inputs must be floating point"):
        _sim(_mlp(), ((x * 255).to(torch.uint8), y))
    with pytest.raises(ValueError, match=r"failed on its first step, for an input of shape \(40, 20\)"):
        _sim(_mlp(), (torch.rand(40, 20), y))
    with pytest.raises(TypeError, match="pass \\(x, y\\), inputs and labels"):
        _sim(_mlp(), x)
    with pytest.raises(TypeError, match="batch 0 of data is a tuple of 3 items"):
        _sim(_mlp(), [(x, y, y)])
    with pytest.raises(ValueError, match="NaN or inf"):
        _sim(_mlp(), (x.masked_fill(x > 0.9, float("nan")), y))


def test_half_precision_model_is_refused():
    with pytest.raises(ValueError, match=r"torch.float16 tensors; xbar simulates in float32 or float64"):
        xbar.convert(_mlp().half(), xbar.Spec.ideal())


def test_numpy_arrays_and_lists_give_the_same_dataset_as_tensors():
    x, y = _data()
    model = _mlp()
    ref = _sim(model, (x, y))
    xr.testing.assert_identical(_sim(model, (x.numpy(), y.numpy())), ref)
    xr.testing.assert_identical(_sim(model, [x, y]), ref)
    two = _sim(model, [(x[:25], y[:25]), (x[25:], y[25:])])  # pooled in another order
    xr.testing.assert_allclose(two, ref, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(two.accuracy.values, ref.accuracy.values)
    # float64 data are cast to the model's dtype, not refused
    xr.testing.assert_identical(_sim(model, (x.double(), y)), ref)


class _Stacked(nn.Module):
    """A forward that runs its own time loop and stacks the outputs."""

    def __init__(self):
        super().__init__()
        self.net = _mlp()

    def forward(self, x):
        return torch.stack([self.net(x) for _ in range(3)])


def test_step_output_must_be_batch_by_classes():
    x, y = _data()
    with pytest.raises(ValueError, match=r"shape \(3, 40, 4\), which looks like \[time, batch, classes\]"):
        _sim(_Stacked(), (x, y))
    flat = nn.Sequential(_mlp(), nn.Flatten(0))
    with pytest.raises(ValueError, match=r"returned shape \(160,\) for a batch of 40: it must be \[batch, classes\]"):
        _sim(flat, (x, y))


def test_inputs_outside_the_dac_range_are_warned_once_with_the_numbers():
    model = _mlp()
    x, y = _data(scale=16.0)  # raw 0..16 pixels
    spec = xbar.Spec.ideal(adc_bits=6)
    with pytest.warns(UserWarning) as record:
        _sim(model, (x, y), spec)
    mine = [str(w.message) for w in record if "DAC range" in str(w.message)]
    share = float((x > 1).double().mean())
    assert len(mine) == 1  # once, although every step and batch is outside
    assert f"layer '0': {share:.1%} of its inputs lie outside the DAC range [0, 1]" in mine[0]
    assert f"max {float(x.max()):.4g}" in mine[0]
    neg = x / 8 - 1
    with pytest.raises(ValueError, match=rf"input of {float(neg.min()):.4g} < 0 on an unsigned DAC "
                                         r"\(Spec.dac_signed=False\)"):
        _sim(model, (neg, y), spec)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*DAC range")
        _sim(model, _data(), spec)  # in range: no warning
        _sim(model, (x, y))  # ideal converters: nothing is clipped, nothing to say


class _Twice(nn.Linear):
    def forward(self, x):
        return 2 * super().forward(x)


class _Named(nn.Linear):
    """A subclass that only adds a name: it computes the plain product."""

    tag = "mine"


class _WithAux(nn.Sequential):
    """A Sequential whose forward skips ``aux``, a Conv1d holding weights."""

    def forward(self, x):
        for name, m in self.named_children():
            if name != "aux":
                x = m(x)
        return x


def test_subclasses_and_parametrized_layers():
    torch.manual_seed(0)
    model = _WithAux(_Named(16, 12), LIF(0.9, threshold=0.5), _Twice(12, 8),
                     nn.utils.parametrizations.weight_norm(nn.Linear(8, 4))).double()
    model.add_module("aux", nn.Conv1d(1, 1, 3).double())
    with pytest.warns(UserWarning, match=r"2 \(test_checks\._Twice\): its forward.*does not compute x W\^T \+ b"):
        hw = xbar.convert(model, xbar.Spec.ideal())
    rows = {r.name: r for r in hw.xbar_report}
    assert rows["0"].on_crossbars and rows["3"].on_crossbars
    assert not rows["2"].on_crossbars and not rows["aux"].on_crossbars
    assert "only nn.Linear and nn.Conv2d" in rows["aux"].detail
    assert "digital (ideal)" in str(hw.xbar_report)
    x = torch.rand(5, 16, dtype=torch.float64)
    xbar.reset_state(model)
    xbar.reset_state(hw)
    with torch.no_grad():
        np.testing.assert_allclose(hw(x).numpy(), model(x).numpy(), rtol=1e-10, atol=1e-12)
    # the parametrized layer was programmed with its effective weight g * v / |v|
    np.testing.assert_allclose(hw[3].weight.numpy(), model[3].weight.detach().numpy(), rtol=1e-12)


class _DeclaredOutOfOrder(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(16, 12), nn.Linear(12, 8), nn.Linear(8, 4)
        self.lif1, self.lif2 = LIF(0.9, threshold=0.5), LIF(0.9, threshold=0.5)

    def forward(self, x):
        return self.fc3(self.lif2(self.fc2(self.lif1(self.fc1(x)))))


def test_neurons_are_matched_by_execution_order_not_registration():
    torch.manual_seed(0)
    model = _DeclaredOutOfOrder().double()
    x, y = _data(dtype=torch.float64)
    ds = _sim(model, (x, y), xbar.Spec.ideal(device=xbar.Spec().device), t=4)
    assert dict(zip(ds.layer.values, ds.neuron.values)) == {"fc1": "lif1", "fc2": "lif2", "fc3": ""}
    assert np.isnan(ds.membrane_error.sel(layer="fc3").values).all()
    np.testing.assert_allclose(ds.neurons.values[:2], [12, 8])


def test_readouts_sum_max_last():
    model = _mlp(dtype=torch.float64)
    x, y = _data(dtype=torch.float64)
    xbar.reset_state(model)
    with torch.no_grad():
        outs = torch.stack([model(x) for _ in range(4)])
    expected = {"sum": outs.cumsum(0), "max": outs.cummax(0).values, "last": outs}
    for how, running in expected.items():
        ds = _sim(copy.deepcopy(model), (x, y), t=4, readout=how)
        want = [float((r.argmax(1) == y).double().mean()) for r in running]
        np.testing.assert_array_equal(ds.accuracy_ideal.values, want)
        np.testing.assert_array_equal(ds.accuracy.values[0], want)
        assert ds.attrs["readout"].startswith(how)
    with pytest.raises(ValueError, match="readout = 'mean' is not allowed"):
        _sim(model, (x, y), readout="mean")


def test_signed_inputs_need_a_signed_path():
    """Mean/std-normalised inputs: refused on an unsigned DAC with a converter on, read on
    a signed DAC and ADC, and exact with ideal converters whatever their sign."""
    torch.manual_seed(0)
    model = _mlp(dtype=torch.float64)
    x, y = _data(dtype=torch.float64)
    x = (x - 0.5) * 2  # in [-1, 1]
    with pytest.raises(ValueError, match="unsigned DAC"):
        xbar.convert(model, xbar.Spec.ideal(dac_bits=8))[0](x)
    with pytest.raises(ValueError, match="a signed DAC drives negative row voltages.*adc_signed=True"):
        xbar.Spec.ideal(adc_bits=8, dac_signed=True, adc_signed=False)
    assert xbar.Spec.ideal(adc_bits=8, dac_signed=True, subtraction="digital").signed_adc  # by default
    with pytest.raises(ValueError, match="dac_signed = 1 is not allowed: must be True or False"):
        xbar.Spec.ideal(dac_signed=1)
    # a signed 8-bit DAC: the error of each input is within half a step (range / 127)
    layer = xbar.convert(nn.Sequential(model[0]), xbar.Spec.ideal(dac_bits=8, dac_signed=True,
                                                                   calibration=None))
    step = 1.0 / 127
    with torch.no_grad():
        err = layer(x) - model[0](x)
    bound = step / 2 * model[0].weight.abs().sum(1)  # worst case, per output
    assert (err.abs() <= bound + 1e-12).all() and float(err.abs().max()) > 0
    # a signed ADC reads the negative currents; ideal converters are exact for any sign
    cal = (_data(16, seed=7, dtype=torch.float64)[0] - 0.5) * 2  # other samples, signed alike
    worst = dict(adc_percentile=None)  # these 40 samples reach 1.4x the calibration's largest product
    ds = _sim(model, (x, y), xbar.Spec.ideal(adc_bits=10, adc_signed=True, dac_signed=True, **worst), t=2,
              calibration_data=cal)
    assert float(ds.read_error.max()) < 0.02
    exact = _sim(model, (x, y), t=2)
    assert float(exact.read_error.max()) < 1e-12


def test_a_refused_simulation_leaves_the_model_as_it_was():
    model = _mlp().train()
    x, y = _data()
    hw = xbar.convert(model, xbar.Spec.ideal())
    with pytest.raises(ValueError, match="label 7 is not a class"):
        xbar.simulate(hw, model, (x, y + 4), 2, progress=False)
    assert model.training
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in hw.modules())


def test_errors_relative_to_an_ideal_product_of_zero_are_undefined():
    """No input reaches the first layer (all-zero samples): its read and layer errors are
    NaN, not 0 (perfect) nor inf; a layer that reads something has a finite error."""
    model = _mlp()
    x, y = _data()
    spec = xbar.Spec(device=presets["rram_hfo2"], adc_bits=6, calibration=None)
    ds = _sim(model, (torch.zeros_like(x), y), spec)
    assert np.isnan(ds.read_error.isel(layer=0)).all() and np.isnan(ds.layer_error.isel(layer=0)).all()
    ds = _sim(model, (x, y), spec)
    assert np.isfinite(ds.read_error.isel(layer=0)).all() and (ds.read_error.isel(layer=0) > 0).all()
