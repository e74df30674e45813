import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import devices
import xbar
from devices import DeviceModel, presets, program


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
    (dict(relaxation_times=(2.0, 1.0), relaxation_polys=((0.01,), (0.02,))), "relaxation_times"),
    (dict(relaxation_times=(1.0,), relaxation_polys=()), "relaxation_polys"),
    (dict(relaxation_times=(1.0,), relaxation_polys=((0.01,),), prog_sigma_poly=(0.01,)), "prog_sigma_poly"),
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


def test_the_neurram_relaxation_follows_aihwkits_fit_in_time():
    """rram_wan2022: the spread of the programmed conductances around their targets is
    aihwkit's ReRamWan2022NoiseModel polynomial at 1 s (programming) and after 1 and 2 days
    (4th order in g~, uS for g_max = 40 uS), linear in ln t between; each device keeps its
    draw, so its deviation at a day is the one at programming times the ratio of spreads."""
    from devices.physics import prog_sigma

    dev = presets["rram_wan2022"]
    target = torch.full((200_000,), 0.5 * dev.g_max, dtype=torch.float64)
    x = 0.5
    day = (0.701 + 22.086 * x - 50.773 * x**2 + 47.095 * x**3 - 16.458 * x**4) * 1e-6  # S, at 40 uS
    sec = (0.348 + 16.030 * x - 43.853 * x**2 + 45.393 * x**3 - 16.815 * x**4) * 1e-6
    assert float(prog_sigma(target[:1], dev, 86400.0)) == pytest.approx(day, rel=1e-9)
    assert float(prog_sigma(target[:1], dev, 0.0)) == pytest.approx(sec, rel=1e-9)
    hour = float(prog_sigma(target[:1], dev, 3600.0))
    f = math.log(3600.0) / math.log(86400.0)  # linear in ln t from 1 s
    assert hour == pytest.approx((1 - f) * sec + f * day, rel=1e-9)
    g0 = program(target, dev, torch.Generator().manual_seed(0))
    g1 = program(target, dev, torch.Generator().manual_seed(0), t=86400.0)
    assert float((g1 - target).std()) == pytest.approx(day, rel=0.01)
    torch.testing.assert_close(g1 - target, (g0 - target) * (day / sec), rtol=1e-9, atol=1e-15)
    with pytest.raises(ValueError, match="t_inference = 300000.0 .*relaxation data up to 172800 s"):
        xbar.Spec(device=dev, t_inference=3e5)


def test_pcm_drift_exponents_are_folded_to_their_magnitude():
    """aihwkit takes |nu|: without the fold a share Phi(-mu_nu / sigma_nu) of PCM devices
    would drift upward: 0.43% at g~ = 0.1 (mu_nu = 0.0601, sigma_nu = 0.0229), 1.7% at
    g~ = 0.01."""
    from devices.physics import drift_nu

    g0 = torch.full((400_000,), 0.1 * presets["pcm"].g_max, dtype=torch.float64)
    folded = drift_nu(g0, presets["pcm"], torch.Generator().manual_seed(1))
    signed = drift_nu(g0, presets["pcm"].replace(drift_nu_abs=False), torch.Generator().manual_seed(1))
    assert float(folded.min()) >= 0
    share = float((signed < 0).double().mean())
    assert share == pytest.approx(0.0043, abs=0.001)  # Phi(-0.0601 / 0.0229)
    torch.testing.assert_close(folded, signed.abs())


def test_a_state_dependent_spread_of_drift_alone_is_drift():
    dev = presets["ideal"].replace(drift_nu_std_log_slope=-0.01, drift_nu_std_clip=(0.0, 0.05))
    assert dev.has_drift
