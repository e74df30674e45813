import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import devices
from devices import DeviceModel, presets


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("changes, field", [
    (dict(g_min=2e-4, g_max=1e-4), "g_min"),
    (dict(g_min=1e-4, g_max=1e-4), "g_min"),
    (dict(g_min=-1e-6), "g_min"),
    (dict(prog_sigma_rel=-0.1), "prog_sigma_rel"),
    (dict(prog_sigma_abs=-1e-7), "prog_sigma_abs"),
    (dict(read_sigma_rel=-0.01), "read_sigma_rel"),
    (dict(drift_nu_std=-0.01), "drift_nu_std"),
    (dict(levels=1), "levels"),
    (dict(p_stuck_low=1.5), "p_stuck_low"),
    (dict(p_stuck_low=0.6, p_stuck_high=0.6), "p_stuck_high"),
    (dict(g_max=float("nan")), "g_max"),
])
def test_bad_device_fields_are_named(changes, field):
    with pytest.raises(ValueError, match=rf"DeviceModel\.{field} = .* not allowed"):
        DeviceModel(**changes)


def test_presets_name_their_source():
    for name in ("rram_hfo2", "pcm"):
        assert presets[name].source
        assert presets[name].g_max > presets[name].g_min


def test_pcm_drift_matches_published_one_day_ratio():
    # Nandakumar et al. 2019: one day after programming G/G0 ~ 0.66 at g~=1, ~0.61 at g~=0.1.
    pcm = presets["pcm"]
    g0 = torch.tensor([1.0, 0.1], dtype=torch.float64) * pcm.g_max
    g0 = g0.expand(200_000, 2).contiguous()
    ratio = (devices.drift(g0, 86400.0, pcm, gen()) / g0).mean(0)
    assert ratio[0].item() == pytest.approx(0.66, abs=0.01)
    assert ratio[1].item() == pytest.approx(0.61, abs=0.01)


def test_drift_starts_at_programming_with_the_aihwkit_origin():
    """``((t + t0) / t0)^-nu``: no change at t = 0, and already drifting before t0 (the
    law without the offset froze every device until t0)."""
    from devices.physics import drift_factor

    pcm = presets["pcm"]
    g0 = torch.full((50_000,), pcm.g_max, dtype=torch.float64)
    assert torch.equal(devices.drift(g0, 0.0, pcm, gen()), g0)
    nu = devices.drift_nu(g0, pcm, gen())
    for t in (1.0, 10.0, 1000.0):
        torch.testing.assert_close(drift_factor(nu, t, pcm),
                                   ((t + pcm.drift_t0) / pcm.drift_t0) ** (-nu))
    assert float(drift_factor(nu, 10.0, pcm).mean()) < 0.99


def test_pcm_programming_std_matches_published_polynomial():
    pcm = presets["pcm"]
    for gn in (0.1, 0.5, 1.0):
        target = torch.full((200_000,), gn * pcm.g_max, dtype=torch.float64)
        g = devices.program(target, pcm, gen(1))
        expected = (0.26348 + 1.9650 * gn - 1.1731 * gn**2) * 1e-6  # uS, g_max = 25 uS
        assert g.std().item() == pytest.approx(expected, rel=0.02)


def test_rram_programming_std_matches_milo_fit():
    rram = presets["rram_hfo2"]
    for g_us in (60.0, 150.0, 220.0):
        target = torch.full((200_000,), g_us * 1e-6, dtype=torch.float64)
        g = devices.program(target, rram, gen(2))
        assert g.std().item() == pytest.approx((4.782321 - 0.009107 * g_us) * 1e-6, rel=0.02)


@settings(max_examples=20, deadline=None)
@given(p_low=st.floats(0, 0.4), p_high=st.floats(0, 0.4), seed=st.integers(0, 2**31))
def test_stuck_at_fault_rates(p_low, p_high, seed):
    model = DeviceModel(p_stuck_low=p_low, p_stuck_high=p_high)
    target = torch.full((40_000,), 0.5 * (model.g_min + model.g_max), dtype=torch.float64)
    g = devices.program(target, model, gen(seed))
    n = target.numel()
    for value, p in ((model.g_min, p_low), (model.g_max, p_high)):
        frac = (g == value).double().mean().item()
        assert abs(frac - p) <= 5 * math.sqrt(p * (1 - p) / n) + 1e-9


def test_ideal_device_programs_and_reads_exactly():
    model = presets["ideal"]
    target = torch.rand(50, 40, dtype=torch.float64) * model.g_max
    assert torch.equal(devices.program(target, model, gen()), target)
    assert torch.equal(devices.read(target, model, gen()), target)


def test_read_noise_is_fresh_each_read_and_has_the_stated_std():
    model = DeviceModel(read_sigma_rel=0.05)
    g = torch.full((100_000,), 5e-5, dtype=torch.float64)
    g_gen = gen(3)
    a, b = devices.read(g, model, g_gen), devices.read(g, model, g_gen)
    assert not torch.equal(a, b)
    assert (a / g - 1).std().item() == pytest.approx(0.05, rel=0.02)


def test_same_generator_seed_gives_identical_programming():
    model = presets["pcm"]
    target = torch.rand(64, 64, dtype=torch.float64) * model.g_max
    assert torch.equal(devices.program(target, model, gen(7)), devices.program(target, model, gen(7)))
    assert not torch.equal(devices.program(target, model, gen(7)), devices.program(target, model, gen(8)))
