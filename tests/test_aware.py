"""Hardware-aware training's forward pass (xbar.aware): against evaluation's tiles, and
its gradients against finite differences."""

import pytest
import torch
import torch.nn as nn

import xbar
from devices import presets
from xbar.aware import INGREDIENTS

RRAM = presets["rram_hfo2"]


def linear(n_in: int, n_out: int, seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(n_in, n_out).double()


def spikes(n: int, m: int, rate: float = 0.3, seed: int = 1) -> torch.Tensor:
    return (torch.rand(n, m, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) < rate).double()


def aware_out(lin: nn.Module, x: torch.Tensor, spec: xbar.Spec, aware: xbar.Aware, seed: int = 3) -> torch.Tensor:
    with xbar.HardwareAware(lin, spec, aware, seed=seed) as hw:
        hw.new_batch()
        return lin(x)


def test_no_ingredient_leaves_the_network_untouched():
    lin, x = linear(40, 8), spikes(16, 40)
    spec = xbar.Spec(tile=(16, 8), device=RRAM, adc_bits=4)
    hw = xbar.HardwareAware(lin, spec, xbar.Aware.only())
    assert hw.active == ()
    with hw:
        assert torch.equal(lin(x), nn.functional.linear(x, lin.weight, lin.bias))
        assert "forward" not in vars(lin)  # its own forward, untouched
    assert xbar.HardwareAware(lin, xbar.Spec.ideal(tile=(16, 8))).active == ()


def test_the_tiles_alone_give_the_ideal_product():
    """Ingredients asked for that the spec lacks stay off; the mapped tiles of an ideal
    device with an ideal ADC are the weights (zero wire resistance: the ideal product)."""
    lin, x = linear(70, 9), spikes(20, 70)
    spec = xbar.Spec.ideal(tile=(16, 8), adc_bits=None, device=RRAM.replace(prog_sigma_poly=(0.0, 0.0),
                                                                            read_sigma_rel=0.0))
    layer = xbar.HardwareAware(lin, spec).layers[0][2]
    with torch.no_grad():
        y = layer.read(x, lin.weight.t())
    torch.testing.assert_close(y, x @ lin.weight.t(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("subtraction", ["digital", "analog"])
def test_without_random_ingredients_training_reads_what_evaluation_reads(subtraction):
    """ADC, DAC and exact IR drop with no variation or noise: the training forward is the
    evaluation's raw read (same full scale, same effective matrix at the nominal state)."""
    lin = linear(50, 12)
    x = torch.rand(30, 50, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    device = RRAM.replace(prog_sigma_poly=(0.0, 0.0), read_sigma_rel=0.0)
    spec = xbar.Spec(tile=(32, 16), device=device, adc_bits=5, dac_bits=6, r_wire_row=2.5, r_wire_col=2.5,
                     adc_signed=subtraction == "analog", subtraction=subtraction, calibration=None)
    assert xbar.Aware().active(spec) == ("adc", "ir_drop")
    with torch.no_grad():
        expected = xbar.AnalogLinear(lin, spec)(x)
        got = aware_out(lin, x, spec, xbar.Aware())
    lsb = float(xbar.AnalogLinear(lin, spec).matrix.out_fs.max())
    assert float((got - expected).abs().max()) < 1e-6 * lsb  # equal up to float rounding
    with torch.no_grad():
        assert float((got - nn.functional.linear(x, lin.weight, lin.bias)).abs().max()) > lsb  # not ideal


def test_read_noise_has_the_variance_evaluation_draws():
    """Per-read noise alone: the output's variance over many reads of the same input is
    the column variance of evaluation, sum_i x_i^2 (s_ij G_ij)^2 for both columns of a pair."""
    lin = linear(24, 4)
    x = spikes(1, 24, rate=0.5).expand(4000, 24)
    spec = xbar.Spec.ideal(tile=(32, 8), device=RRAM.replace(prog_sigma_poly=(0.0, 0.0), read_sigma_rel=0.05))
    with torch.no_grad():
        y = aware_out(lin, x, spec, xbar.Aware.only("read_noise"))
        m = xbar.AnalogLinear(lin, spec.replace(calibration=None)).matrix
        expected = x[:1] ** 2 @ m.s2_read[0]
    torch.testing.assert_close(y.var(0), expected[0], rtol=0.1, atol=0)  # 4000 reads: 2.2% std


def test_read_noise_follows_its_ar1_correlation_over_the_reads_of_a_batch():
    lin = linear(24, 4)
    x = spikes(1, 24, rate=0.5).expand(4000, 24)
    rho = 0.8
    spec = xbar.Spec.ideal(tile=(32, 8), device=RRAM.replace(prog_sigma_poly=(0.0, 0.0), read_sigma_rel=0.05,
                                                             read_noise_correlation=rho))
    with torch.no_grad(), xbar.HardwareAware(lin, spec, xbar.Aware.only("read_noise"), seed=2) as hw:
        hw.new_batch()
        ideal = nn.functional.linear(x, lin.weight, lin.bias)
        e1, e2 = lin(x) - ideal, lin(x) - ideal
        hw.new_batch()
        e3 = lin(x) - ideal
    corr = ((e1 * e2).mean(0) / (e1.std(0) * e2.std(0)))
    torch.testing.assert_close(corr, torch.full_like(corr, rho), rtol=0, atol=0.05)
    fresh = ((e2 * e3).mean(0) / (e2.std(0) * e3.std(0)))
    assert float(fresh.abs().max()) < 0.06  # a new batch starts a new inference


def test_programming_is_drawn_again_for_every_batch_and_fixed_within_it():
    lin, x = linear(40, 8), spikes(16, 40)
    spec = xbar.Spec.ideal(tile=(16, 8), device=RRAM)
    with torch.no_grad(), xbar.HardwareAware(lin, spec, xbar.Aware.only("variation"), seed=4) as hw:
        hw.new_batch()
        a, b = lin(x), lin(x)
        hw.new_batch()
        c = lin(x)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    with torch.no_grad():
        ideal = nn.functional.linear(x, lin.weight, lin.bias)
    assert float((a - ideal).norm() / ideal.norm()) < 0.2


def test_the_same_seed_draws_the_same_hardware():
    lin, x = linear(40, 8), spikes(16, 40)
    spec = xbar.Spec(tile=(16, 8), device=RRAM.replace(read_sigma_rel=0.03), adc_bits=6)
    with torch.no_grad():
        assert torch.equal(aware_out(lin, x, spec, xbar.Aware(), seed=7), aware_out(lin, x, spec, xbar.Aware(), seed=7))
        assert not torch.equal(aware_out(lin, x, spec, xbar.Aware(), seed=7), aware_out(lin, x, spec, xbar.Aware(), seed=8))


@pytest.mark.parametrize("ingredient", ["variation", "read_noise", "ir_drop"])
def test_gradients_flow_through_each_smooth_ingredient(ingredient):
    """Finite differences of the forward (its draws fixed by the seed) against autograd,
    for the weights and the inputs.  A fixed weight larger than the rest sets the layer's
    conductance scale (held in training: the mapping's w_max); IR drop by the first-order
    model, whose gradient training takes exactly."""
    lin = linear(20, 3)
    x = torch.rand(6, 20, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    spec = xbar.Spec(tile=(8, 4), device=RRAM.replace(read_sigma_rel=0.05), r_wire_row=2.5, r_wire_col=2.5,
                     ir_drop_model="first_order", calibration=None)
    anchor = torch.zeros(1, 20, dtype=torch.float64)
    anchor[0, 0] = 1.0  # |w| <= 0.23 elsewhere

    def f(weight, inputs):
        m = nn.Linear(20, 4, bias=False).double()
        del m.weight
        m.weight = torch.cat([weight, anchor])
        return aware_out(m, inputs, spec, xbar.Aware.only(ingredient), seed=11)[:, :3]

    w = lin.weight.detach().clone().requires_grad_(True)
    xi = x.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(f, (w, xi), eps=1e-7, atol=1e-6, rtol=1e-4)


def test_the_adc_passes_the_gradient_straight_through_its_rounding():
    """ADC alone (worst-case full scale: nothing clips): the gradient of the quantized
    read is the ideal product's, x^T c, exactly."""
    lin = linear(40, 6)
    x = torch.rand(10, 40, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    c = torch.randn(10, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    spec = xbar.Spec.ideal(tile=(16, 8), adc_bits=4)
    y = aware_out(lin, x, spec, xbar.Aware.only("adc"))
    assert float((y - nn.functional.linear(x, lin.weight, lin.bias)).detach().abs().max()) > 1e-3  # it rounds
    (y * c).sum().backward()
    torch.testing.assert_close(lin.weight.grad, c.t() @ x, rtol=1e-10, atol=1e-10)


def test_calibration_scales_the_read_and_its_gradient_by_the_gain_it_holds():
    """One tile-row, IR drop and calibration: the calibrated read is the raw read times
    a gain per output, and so is its gradient (the gain is held)."""
    lin = linear(16, 4)
    x = spikes(64, 16, rate=0.5)
    c = torch.randn(64, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    spec = xbar.Spec(tile=(16, 8), device=RRAM.replace(prog_sigma_poly=(0.0, 0.0), read_sigma_rel=0.0),
                     r_wire_row=2.5, r_wire_col=2.5)
    raw = aware_out(lin, x, spec, xbar.Aware.only("ir_drop")) - lin.bias
    cal = aware_out(lin, x, spec, xbar.Aware.only("ir_drop", "calibration")) - lin.bias
    gain = (cal / raw).detach()
    torch.testing.assert_close(gain, gain[:1].expand_as(gain))
    assert float(gain.min()) > 1.0  # IR drop attenuates; calibration restores
    ideal = nn.functional.linear(x, lin.weight)
    assert float((cal - ideal).norm()) < 0.5 * float((raw - ideal).norm())
    g_cal = torch.autograd.grad((cal * c).sum(), lin.weight)[0]
    g_raw = torch.autograd.grad((raw * c * gain).sum(), lin.weight)[0]
    torch.testing.assert_close(g_cal, g_raw)


@pytest.mark.parametrize("options", [{}, {"mapping": "offset"}, {"subtraction": "analog", "adc_signed": True},
                                     {"dac_bits": 5}])
def test_conv_layers_read_through_their_tiles(options):
    """A conv layer's one convolution over every tile-row (two here, the second partial)
    reads what evaluation's unfolded tiles read, for each mapping, subtraction and DAC."""
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 5, 3, padding=1, stride=2).double()
    x = torch.rand(4, 3, 9, 9, dtype=torch.float64)
    device = RRAM.replace(prog_sigma_poly=(0.0, 0.0), read_sigma_rel=0.0)
    spec = xbar.Spec(tile=(16, 8), device=device, adc_bits=5, r_wire_row=2.5, r_wire_col=2.5, calibration=None,
                     **options)
    with torch.no_grad():
        expected = xbar.AnalogConv2d(conv, spec)(x)
        got = aware_out(conv, x, spec, xbar.Aware())
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-9)


def test_bad_options_are_refused_with_the_field():
    with pytest.raises(ValueError, match="ir_refresh"):
        xbar.Aware(ir_refresh=0)
    with pytest.raises(ValueError, match="adc"):
        xbar.Aware(adc="yes")
    with pytest.raises(ValueError, match="not ingredients"):
        xbar.Aware.only("drift")
    with pytest.raises(TypeError, match="xbar.Spec"):
        xbar.HardwareAware(linear(4, 2), "rram")
    assert set(INGREDIENTS) == {"variation", "read_noise", "adc", "ir_drop", "calibration"}


def test_training_forward_refuses_negative_inputs_on_an_unsigned_dac():
    lin = linear(8, 2)
    spec = xbar.Spec.ideal(tile=(8, 4), adc_bits=4)
    with pytest.raises(ValueError, match="unsigned DAC"):
        aware_out(lin, -torch.ones(2, 8, dtype=torch.float64), spec, xbar.Aware())


def test_a_static_input_is_read_once_per_batch_unless_it_changes():
    """The first layer of a direct-encoded network reads the same tensor at every step: its
    column sums are reused within a batch; an input changed in place is read again."""
    lin, x = linear(40, 8), spikes(16, 40)
    spec = xbar.Spec.ideal(tile=(16, 8), device=RRAM)
    with torch.no_grad(), xbar.HardwareAware(lin, spec, xbar.Aware.only("variation"), seed=4) as hw:
        assert "forward" in vars(lin)
        hw.new_batch()
        a = lin(x)
        x.mul_(0.5)
        b = lin(x)
        c = lin(x.clone())
    assert "forward" not in vars(lin)
    torch.testing.assert_close(b, c)
    torch.testing.assert_close(b - lin.bias, 0.5 * (a - lin.bias))  # linear in the input


def test_conv_calibration_fits_on_a_sample_of_the_windows_and_corrects_the_attenuation():
    """A conv layer with more output pixels than a fit takes (CAL_MAX_ROWS): the gain comes
    from a random sample of the windows and brings the read closer to the ideal."""
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 6, 3, padding=1).double()
    x = (torch.rand(24, 8, 16, 16, dtype=torch.float64) < 0.4).double()
    assert 24 * 16 * 16 > xbar.tile.calibration.CAL_MAX_ROWS
    spec = xbar.Spec(tile=(32, 16), device=RRAM.replace(prog_sigma_poly=(0.0, 0.0), read_sigma_rel=0.0),
                     r_wire_row=2.5, r_wire_col=2.5)
    with torch.no_grad():
        ideal = nn.functional.conv2d(x, conv.weight, padding=1)
        raw = aware_out(conv, x, spec, xbar.Aware.only("ir_drop")) - conv.bias.view(1, -1, 1, 1)
        cal = aware_out(conv, x, spec, xbar.Aware.only("ir_drop", "calibration")) - conv.bias.view(1, -1, 1, 1)
    raw_err, cal_err = float((raw - ideal).norm() / ideal.norm()), float((cal - ideal).norm() / ideal.norm())
    assert raw_err > 0.02  # the wires attenuate
    assert cal_err < 0.5 * raw_err


def test_conv_gradients_are_the_same_run_to_run():
    """The same seed and thread count train the same network: a conv layer's gradients,
    offset mapping, bit for bit (the strided unfold's backward once added in a varying
    order)."""
    spec = xbar.Spec(tile=(64, 64), device=RRAM.replace(read_sigma_rel=0.05), adc_bits=5, mapping="offset",
                     r_wire_row=1.0, r_wire_col=1.0)
    x = (torch.rand(32, 16, 14, 14, generator=torch.Generator().manual_seed(0)) < 0.3).float()
    grads = []
    for _ in range(3):
        torch.manual_seed(0)
        conv = nn.Conv2d(16, 32, 3, padding=1)
        xi = x.clone().requires_grad_(True)
        with xbar.HardwareAware(conv, spec, seed=5) as hw:
            hw.new_batch()
            conv(xi).square().sum().backward()
        grads.append((conv.weight.grad, xi.grad))
    for w, g in grads[1:]:
        assert torch.equal(w, grads[0][0]) and torch.equal(g, grads[0][1])


def test_conv_read_noise_has_the_variance_evaluation_draws():
    """Per-read noise through the convolution path (one convolution for every tile-row's
    columns, channels last): every output pixel of a spatially constant input reads the
    same window, so its variance over the batch's pixels is evaluation's column variance."""
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3).double()
    v = torch.tensor([1.0, 0.0, 0.5], dtype=torch.float64)
    x = v.view(1, 3, 1, 1).expand(100, 3, 12, 12).contiguous()  # 100 x 10 x 10 reads of one window
    spec = xbar.Spec.ideal(tile=(16, 8), device=RRAM.replace(prog_sigma_poly=(0.0, 0.0), read_sigma_rel=0.05))
    with torch.no_grad():
        y = aware_out(conv, x, spec, xbar.Aware.only("read_noise"))
        m = xbar.AnalogConv2d(conv, spec.replace(calibration=None)).matrix
        window = v.repeat_interleave(9)[None]  # the unfolded input, (C, kh, kw) order
        expected = (window**2 @ m.s2_read[0])[0]  # (in, out): merged reads, pairs summed
    got = y.permute(1, 0, 2, 3).reshape(4, -1).var(1)
    torch.testing.assert_close(got, expected, rtol=0.1, atol=0)  # 10,000 reads: 1.4% std


def test_a_copy_made_while_attached_refuses_to_read():
    import copy

    lin, x = linear(40, 8), spikes(16, 40)
    spec = xbar.Spec.ideal(tile=(16, 8), device=RRAM)
    with xbar.HardwareAware(lin, spec, xbar.Aware.only("variation")) as hw:
        hw.new_batch()
        twin = copy.deepcopy(lin)
        with pytest.raises(RuntimeError, match="after HardwareAware.detach"):
            twin(x)
        lin(x)  # the original reads


def test_the_adc_passes_no_gradient_beyond_its_clip():
    """A full scale far below every column current: every read clips to the top code, so
    the read is constant in the weights and its gradient is zero (the mask of the clip,
    which a read that clips nothing skips: the test above)."""
    lin = linear(40, 6)
    x = torch.rand(10, 40, generator=torch.Generator().manual_seed(0), dtype=torch.float64) + 0.5
    c = torch.randn(10, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    spec = xbar.Spec.ideal(tile=(16, 8), adc_bits=4, adc_range=1e-3, dac_signed=False)
    y = aware_out(lin, x.clamp(max=1.0), spec, xbar.Aware.only("adc"))
    (y * c).sum().backward()
    assert float(lin.weight.grad.abs().max()) == 0.0
