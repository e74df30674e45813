"""The per-read noise's generator (xbar.kernels, xbar.streams), against the normal
distribution, and the codes an ADC reads through it against the discretized normal."""

import math

import numba
import numpy as np
import pytest
import torch
from scipy import stats

import xbar
from devices import presets
from xbar import kernels
from xbar.streams import NoiseStreams

N = 1 << 21


def normals(n=N, key=12345, offset=0, dtype=np.float64):
    out = np.empty((1, n), dtype)
    kernels.fill_normal(out, np.array([key], np.uint64), np.array([offset], np.uint64))
    return out[0]


def test_normals_have_the_normal_moments_and_histogram():
    """2M draws: mean 0 (sd 7e-4), variance 1 (sd 1e-3), skewness 0, excess kurtosis 0;
    200 equiprobable bins within chi-square's 1e-4 bound; tails as the normal's."""
    x = normals()
    assert abs(x.mean()) < 5 / math.sqrt(N)
    assert abs(x.var() - 1) < 5 * math.sqrt(2 / N)
    assert abs(stats.skew(x)) < 5 * math.sqrt(6 / N)
    assert abs(stats.kurtosis(x)) < 5 * math.sqrt(24 / N)
    edges = stats.norm.ppf(np.linspace(0, 1, 201))
    counts = np.histogram(x, edges)[0]
    chi2 = float(((counts - N / 200) ** 2 / (N / 200)).sum())
    assert chi2 < stats.chi2.isf(1e-4, 199), chi2
    for t in (2.0, 3.0, 4.0):  # the tails, where the ziggurat's slow paths decide
        p = 2 * stats.norm.sf(t)
        assert abs((np.abs(x) > t).mean() - p) < 5 * math.sqrt(p / N), t
    assert np.abs(x).max() < kernels._R + math.sqrt(2 * 52 * math.log(2))  # the ziggurat's support


def test_streams_are_independent_and_positions_are_a_counter():
    a, b = normals(key=1), normals(key=2)
    assert abs(np.corrcoef(a, b)[0, 1]) < 5 / math.sqrt(N)
    assert abs(np.corrcoef(a[:-1], a[1:])[0, 1]) < 5 / math.sqrt(N)  # consecutive positions
    # the n-th number depends on (key, n) only: a later start reads the same numbers
    np.testing.assert_array_equal(normals(1000, key=1, offset=500), a[500:1500])


def test_normals_are_the_same_whatever_the_thread_count():
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = normals(100_000, key=9)
        numba.set_num_threads(max(2, min(4, numba.config.NUMBA_NUM_THREADS)))
        more = normals(100_000, key=9)
    finally:
        numba.set_num_threads(threads)
    np.testing.assert_array_equal(one, more)
    np.testing.assert_array_equal(normals(1000, key=9, dtype=np.float32), one[:1000].astype(np.float32))


def strided(t):
    """``t`` ``(1, n)`` in a non-contiguous copy: the read's passes in torch, not native."""
    out = torch.empty(t.shape[1], 2, dtype=t.dtype)[:, 0][None]
    out.copy_(t)
    assert not out.is_contiguous()
    return out


def codes(u, sd, seed=77, fused=True, dtype=torch.float64):
    """The 4-bit signed codes (7 a side) of column sums ``u`` with noise sd ``sd`` (units
    of full scale), as a read makes them (:meth:`NoiseStreams.add_noise_`): the stream's
    normals, the ADC's clip and rounding; ``fused``: in one native pass, else in torch's."""
    u = torch.tensor(np.asarray(u), dtype=dtype)[None]  # a copy: the read is in place
    var = torch.full_like(u, sd**2)
    if not fused:
        u, var = strided(u), strided(var)
    return NoiseStreams(seed=seed, trials=1).add_noise_(u, var, range(1), (-1.0, 7))[0].numpy()


def test_the_fused_read_is_torch_passes_on_the_same_normals():
    """The native pass (noise, clip and rounding in float64) and torch's passes in the
    float width read the same numbers: float64 codes identical, float32 codes identical
    but for a rounding boundary met within float32's rounding (at most 1e-4 of the reads,
    one code off), and without the ADC the noisy sums equal to float32's rounding."""
    g = torch.Generator().manual_seed(3)
    u = (torch.rand(200_000, generator=g, dtype=torch.float64) * 2.4 - 1.2).numpy()
    sd = 0.3 / 7
    np.testing.assert_array_equal(codes(u, sd), codes(u, sd, fused=False))
    fused, passes = codes(u, sd, dtype=torch.float32), codes(u, sd, fused=False, dtype=torch.float32)
    off = fused != passes
    assert off.mean() <= 1e-4 and np.abs(fused - passes).max() <= 1
    u32 = torch.as_tensor(u, dtype=torch.float32)[None]
    var = torch.full_like(u32, sd**2)
    one = NoiseStreams(seed=5, trials=1).add_noise_(u32.clone(), var, range(1))
    other = NoiseStreams(seed=5, trials=1).add_noise_(strided(u32), strided(var), range(1))
    torch.testing.assert_close(one, other, rtol=1e-6, atol=1e-7)
    assert not torch.equal(one, u32)


def discretized_normal(mean, sd, top):
    """P(code = c) for c in -top..top: the normal's mass between c -/+ 1/2, the clipped
    codes taking their tails."""
    c = np.arange(-top, top + 1)
    upper = np.where(c == top, np.inf, c + 0.5)
    lower = np.where(c == -top, -np.inf, c - 0.5)
    return c, stats.norm.cdf((upper - mean) / sd) - stats.norm.cdf((lower - mean) / sd)


@pytest.mark.parametrize("z,sd", [
    (2.3, 0.05),    # noise small against a step
    (2.5, 0.05),    # on a rounding boundary
    (-1.2, 0.6),    # noise of a step: several codes
    (6.8, 0.4),     # at the clip
])
@pytest.mark.parametrize("fused", [True, False])
def test_noisy_codes_follow_the_discretized_normal(z, sd, fused):
    """The codes' histogram against the discretized normal's probabilities (chi-square at
    1e-4 over the codes with an expected count of at least 5) and their mean and variance
    against its moments; ``z`` and ``sd`` in steps (LSB), 7 codes a side."""
    top, n = 7, 400_000
    got = codes(np.full(n, z / top), sd / top, fused=fused)
    c, p = discretized_normal(z, sd, top)
    counts = np.array([(got == ci).sum() for ci in c])
    assert counts.sum() == n
    keep = p * n >= 5
    rest = n * p[~keep].sum()
    assert counts[~keep].sum() <= rest + 5 * math.sqrt(rest) + 5
    chi2 = float(((counts[keep] - n * p[keep]) ** 2 / (n * p[keep])).sum())
    assert chi2 < stats.chi2.isf(1e-4, max(1, keep.sum() - 1)), (chi2, counts[keep], n * p[keep])
    mean, var = float((c * p).sum()), float((c**2 * p).sum() - (c * p).sum() ** 2)
    assert abs(got.mean() - mean) < 5 * math.sqrt(var / n) + 1e-12
    if var > 1e-3:
        assert abs(got.var() / var - 1) < 5 * math.sqrt(2 / n) * 2


def test_noise_streams_draw_each_trial_from_its_own_position():
    """A trial reads the same numbers alone or beside others; a restart repeats them."""
    streams = NoiseStreams(seed=4, trials=3)
    both = streams.normal(torch.empty(3, 50, 7), range(3))
    streams.restart()
    alone = [streams.normal(torch.empty(1, 50, 7), range(k, k + 1)) for k in range(3)]
    torch.testing.assert_close(torch.cat(alone), both, rtol=0, atol=0)
    again = streams.normal(torch.empty(1, 50, 7), range(1, 2))  # trial 1 moved on
    assert not torch.equal(again, both[1:2])


def test_a_read_with_per_read_noise_at_an_adc_has_the_closed_form_code_variance():
    """One crossbar column read by a 4-bit signed ADC (7 codes a side) through the whole
    read path: over 40,000 reads the code's variance is the
    discretized normal's with the column noise's closed-form sd, sigma sqrt(sum_i G_i^2),
    which is here 0.16 of a step."""
    dev = presets["ideal"].replace(read_sigma_rel=0.15)
    lin = torch.nn.Linear(16, 1, bias=False).double()
    with torch.no_grad():
        lin.weight.copy_(torch.linspace(0.1, 1.0, 16)[None])
    spec = xbar.Spec.ideal(tile=(16, 2), device=dev, adc_bits=4, calibration=None)
    hw = xbar.AnalogLinear(lin, spec)
    m = hw.matrix
    assert not m.merged
    x = torch.full((40_000, 16), 0.55, dtype=torch.float64)  # mid-range: 3.85 codes
    with torch.no_grad():
        y = hw(x)[:, 0]
    lsb = float(m.out_fs.flatten()[0])
    code = y / lsb
    g = m.g_read[0, 0, :16, 0]  # read units (full scales) per unit input
    s2 = m.s2_read[0, 0, :16, 0]
    top = 7
    mean, sd = 0.55 * float(g.sum()) * top, 0.55 * math.sqrt(float(s2.sum())) * top
    assert abs(mean - 3.85) < 1e-9
    c, p = discretized_normal(mean, sd, top)
    var = float((c**2 * p).sum() - (c * p).sum() ** 2)
    assert 0.1 < sd < 1.0, sd
    assert abs(float(code.var()) / var - 1) < 0.05, (float(code.var()), var)
    assert abs(float(code.mean()) - float((c * p).sum())) < 5 * math.sqrt(var / len(code))
