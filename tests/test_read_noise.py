"""The time structure of read noise, against closed forms: white noise averages out over
timesteps as 1/T, static noise not at all, AR(1) noise as its closed form."""

import math

import pytest
import torch
import torch.nn as nn

import devices
import xbar
from devices import DeviceModel, presets

N_IN, N_OUT, SIGMA = 24, 6, 0.05


def layer(trials=1, **noise):
    lin = nn.Linear(N_IN, N_OUT, bias=False).double()
    with torch.no_grad():
        lin.weight.copy_(torch.randn(N_OUT, N_IN, generator=torch.Generator().manual_seed(0),
                                     dtype=torch.float64))
    dev = DeviceModel(g_min=1e-6, g_max=1e-4, read_sigma_rel=SIGMA, **noise)
    spec = xbar.Spec.ideal(tile=(32, 32), device=dev, calibration=None)
    return lin, xbar.AnalogLinear(lin, spec, trials=trials)


def theory_variance(hw):
    """Variance of one read's error per output, in weight units: the two columns of a pair
    are independent, each ``sum_i x_i^2 (s G_ij)^2`` with ``x = 1``."""
    m = hw.matrix
    g = m.conductances()[0, 0, 0][:N_IN, : 2 * N_OUT]
    w_per_siemens = m.out_scale * m.spec.v_read / m.spec.input_range
    col = (SIGMA * g) ** 2
    return w_per_siemens**2 * (col[:, 0::2] + col[:, 1::2]).sum(0)


def time_averaged_errors(lin, hw, steps, n):
    """Errors of ``n`` independent inferences (the batch), each averaged over ``steps`` reads."""
    x = torch.ones(n * hw.trials, N_IN, dtype=torch.float64)
    hw.matrix.new_inference()
    with torch.no_grad():
        reads = torch.stack([hw(x) for _ in range(steps)])
        return (reads - lin(x)).mean(0), reads


def ar1_factor(rho, steps):
    """Var(mean of T AR(1) draws) / Var(one draw) = (T + 2 sum_k (T - k) rho^k) / T^2."""
    return (steps + 2 * sum((steps - k) * rho**k for k in range(1, steps))) / steps**2


@pytest.mark.parametrize("steps", [1, 4, 16])
def test_white_read_noise_averages_out_as_one_over_t(steps):
    lin, hw = layer()
    err, _ = time_averaged_errors(lin, hw, steps, 8000)
    ratio = err.var(0) / (theory_variance(hw) / steps)
    assert float((ratio - 1).abs().max()) < 0.1, ratio  # 8,000 samples: 1.6% sd


@pytest.mark.parametrize("rho", [0.5, 0.9])
def test_correlated_read_noise_matches_the_ar1_closed_form(rho):
    steps = 8
    lin, hw = layer(read_noise_correlation=rho)
    err, reads = time_averaged_errors(lin, hw, steps, 8000)
    ratio = err.var(0) / (theory_variance(hw) * ar1_factor(rho, steps))
    assert float((ratio - 1).abs().max()) < 0.1, ratio
    # and each read alone keeps the full variance (the process is stationary)
    with torch.no_grad():
        one = (reads[-1] - lin(torch.ones(1, N_IN, dtype=torch.float64))).var(0) / theory_variance(hw)
    assert float((one - 1).abs().max()) < 0.1, one


def test_a_new_inference_starts_uncorrelated():
    lin, hw = layer(read_noise_correlation=0.9)
    x = torch.ones(8000, N_IN, dtype=torch.float64)
    with torch.no_grad():
        first = hw(x) - lin(x)
        hw.matrix.new_inference()
        second = hw(x) - lin(x)
    corr = ((first - first.mean(0)) * (second - second.mean(0))).mean(0) / (first.std(0) * second.std(0))
    assert float(corr.abs().max()) < 0.05, corr


def test_static_read_noise_does_not_average_out():
    """All the noise static: every read of a programming is the same, so averaging over
    steps removes nothing, and across programmings the error has the full variance."""
    steps = 16
    lin, hw = layer(trials=3000, read_noise_static=1.0)
    err, reads = time_averaged_errors(lin, hw, steps, 1)
    assert torch.equal(reads[0], reads[-1])
    ratio = err.var(0) / theory_variance(layer()[1])  # conductances without the static draw
    assert float((ratio - 1).abs().max()) < 0.12, ratio  # 3,000 programmings: 2.6% sd


def test_half_static_noise_splits_the_variance():
    steps = 16
    lin, hw = layer(trials=3000, read_noise_static=0.5)
    err, _ = time_averaged_errors(lin, hw, steps, 1)
    ratio = err.var(0) / (theory_variance(layer()[1]) * (0.5 + 0.5 / steps))
    assert float((ratio - 1).abs().max()) < 0.12, ratio


def test_pcm_read_noise_follows_aihwkits_time_law():
    """sigma(t) / sigma(0) = sqrt(ln((t + t0 + t_read) / (2 t_read)) / ln((t0 + t_read) / (2 t_read)))
    with t0 = 20 s, t_read = 250 ns (aihwkit's PCMLikeNoiseModel); at t = 0 the factor is 4.18."""
    pcm = presets["pcm"]
    g = torch.tensor([1e-6, 5e-6, 25e-6], dtype=torch.float64)
    at = {t: devices.read_sigma(g, pcm, t) for t in (0.0, 3600.0, 86400.0 * 365)}
    for t in (3600.0, 86400.0 * 365):
        expected = math.sqrt(math.log((t + 20 + 250e-9) / 5e-7) / math.log((20 + 250e-9) / 5e-7))
        torch.testing.assert_close(at[t] / at[0.0], torch.full_like(g, expected), rtol=1e-12, atol=0)
    assert abs(pcm.read_time_factor(0.0) - 4.1838) < 1e-4
    torch.testing.assert_close(at[0.0][-1], torch.tensor(0.0088 * 4.1838 * 25e-6, dtype=torch.float64),
                               rtol=1e-3, atol=0)
    assert pcm.read_noise_static == 1.0


def test_rram_read_noise_is_one_percent_of_the_window_per_read():
    """Wan et al. (Nature 2022), as aihwkit applies it: sigma = 0.01 g_max whatever G, white."""
    rram = presets["rram_hfo2"]
    g = torch.tensor([50e-6, 120e-6, 225e-6], dtype=torch.float64)
    torch.testing.assert_close(devices.read_sigma(g, rram), torch.full_like(g, 0.01 * 225e-6),
                               rtol=1e-12, atol=0)
    assert rram.read_noise_static == 0 and rram.read_noise_correlation == 0


@pytest.mark.parametrize("field,value", [("read_noise_static", 1.5), ("read_noise_static", -0.1),
                                         ("read_noise_correlation", 1.0), ("read_noise_t_read", -1.0)])
def test_device_refuses_bad_noise_structure(field, value):
    with pytest.raises(ValueError, match=rf"DeviceModel\.{field} = "):
        DeviceModel(**{field: value})
