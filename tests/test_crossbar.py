"""The crossbar circuit solver: against ngspice, and its physical invariants."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import spice
from xbar.crossbar import effective_matrix, solve_crossbar


def _random(seed, R, C, binary):
    rng = np.random.default_rng(seed)
    g = rng.uniform(1e-6, 1e-4, (R, C))
    v = (rng.random(R) < 0.5) * 0.2 if binary else rng.uniform(0, 0.2, R)
    return g, v


@pytest.mark.parametrize("R, C", [(8, 8), (32, 32), (16, 40)])
@pytest.mark.parametrize("binary", [True, False])
@pytest.mark.parametrize("r", [
    dict(r_wire_row=0.35, r_wire_col=0.35, r_source=0.0, r_sink=0.0),   # aihwkit's per-cell default
    dict(r_wire_row=10.0, r_wire_col=10.0, r_source=100.0, r_sink=50.0),
])
def test_agrees_with_ngspice(tmp_path, R, C, binary, r):
    assert spice.NGSPICE, "ngspice is not installed: apt-get install ngspice (the .ci/run script does)"
    g, v = _random(R * 1000 + C, R, C, binary)
    ref = spice.run(g, v, tmp_path, **r)
    ours = solve_crossbar(torch.tensor(g), torch.tensor(v), **r).numpy()
    assert np.abs(ours - ref).max() < 1e-5 * np.abs(ref).max()
    assert np.abs(ours - v @ g).max() > 1e-5 * np.abs(ref).max()  # IR drop is really there


shapes = st.tuples(st.integers(1, 12), st.integers(1, 12))
resist = st.tuples(st.floats(0.01, 100), st.floats(0.01, 100), st.sampled_from([0.0, 1.0, 100.0]),
                   st.sampled_from([0.0, 1.0, 100.0]))


def _case(seed, shape, batch=()):
    gen = torch.Generator().manual_seed(seed)
    g = 1e-6 + 1e-4 * torch.rand(*batch, *shape, generator=gen, dtype=torch.float64)
    return g, gen


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31), shape=shapes)
def test_zero_resistance_is_exactly_the_ideal_product(seed, shape):
    g, gen = _case(seed, shape, (3,))
    v = torch.rand(3, shape[0], generator=gen, dtype=torch.float64)
    out = solve_crossbar(g, v, r_wire_row=0.0, r_wire_col=0.0)
    assert torch.equal(out, (v.unsqueeze(-2) @ g).squeeze(-2))


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31), shape=shapes, r=resist)
def test_linear_in_v_and_effective_matrix_reproduces_the_solve(seed, shape, r):
    kw = dict(r_wire_row=r[0], r_wire_col=r[1], r_source=r[2], r_sink=r[3])
    g, gen = _case(seed, shape, (2,))
    v1 = torch.rand(2, shape[0], generator=gen, dtype=torch.float64) - 0.3
    v2 = torch.rand(2, shape[0], generator=gen, dtype=torch.float64)
    i1, i2 = solve_crossbar(g, v1, **kw), solve_crossbar(g, v2, **kw)
    i12 = solve_crossbar(g, 2.0 * v1 - 0.5 * v2, **kw)
    scale = float((i1.abs().max() + i2.abs().max()))
    torch.testing.assert_close(i12, 2.0 * i1 - 0.5 * i2, rtol=0, atol=1e-9 * scale)
    g_eff = effective_matrix(g, **kw)
    torch.testing.assert_close((v1.unsqueeze(-2) @ g_eff).squeeze(-2), i1, rtol=0, atol=1e-9 * scale)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31), shape=shapes, r=st.floats(0.01, 50), factor=st.floats(1.5, 10))
def test_more_wire_resistance_never_increases_an_output(seed, shape, r, factor):
    """With ideal drivers and sense amplifiers (r_source = r_sink = 0) and v >= 0."""
    g, gen = _case(seed, shape)
    v = torch.rand(shape[0], generator=gen, dtype=torch.float64)
    low = solve_crossbar(g, v, r_wire_row=r, r_wire_col=r)
    high = solve_crossbar(g, v, r_wire_row=r * factor, r_wire_col=r * factor)
    assert (high <= low * (1 + 1e-12)).all() and (low <= (v @ g) * (1 + 1e-12)).all()


def test_with_a_resistive_driver_a_near_column_can_gain_current():
    """Not a solver artefact but the circuit: in a 1 x 2 array with r_source > 0, more row-wire
    resistance starves column 1, less current crosses r_source, the near node rises and
    column 0 draws more. The invariant above needs ideal drivers."""
    g = torch.tensor([[5e-5, 5e-5]], dtype=torch.float64)
    v = torch.tensor([0.2], dtype=torch.float64)
    low = solve_crossbar(g, v, r_wire_row=1.0, r_wire_col=1.0, r_source=1000.0)
    high = solve_crossbar(g, v, r_wire_row=100.0, r_wire_col=1.0, r_source=1000.0)
    assert high[0] > low[0] and high[1] < low[1] and high.sum() < low.sum()


def test_conservation_of_current():
    """Every ampere the drivers push in leaves through the sense amplifiers."""
    g, gen = _case(3, (10, 7))
    v = torch.rand(10, generator=gen, dtype=torch.float64)
    r = dict(r_wire_row=5.0, r_wire_col=5.0, r_source=20.0, r_sink=10.0)
    out = solve_crossbar(g, v, **r)
    # driver current: (v_i - a_i0) / r_source; recover a_i0 from the solve's internals
    from xbar.crossbar import _Circuit, _pcg
    c = _Circuit(g, r["r_wire_row"], r["r_wire_col"], r["r_source"], r["r_sink"])
    a, _ = _pcg(c, v, 1e-13, 2000)
    injected = ((v - a[:, 0]) / r["r_source"]).sum()
    torch.testing.assert_close(out.sum(), injected, rtol=1e-9, atol=0)


def test_bad_resistances_are_named():
    g = torch.rand(4, 4, dtype=torch.float64) * 1e-4
    v = torch.rand(4, dtype=torch.float64)
    with pytest.raises(ValueError, match="r_wire_row = -1.0"):
        solve_crossbar(g, v, r_wire_row=-1.0, r_wire_col=1.0)
    with pytest.raises(ValueError, match="only with every resistance zero"):
        solve_crossbar(g, v, r_wire_row=0.0, r_wire_col=1.0)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31), shape=shapes, r=resist)
def test_direct_and_iterative_solvers_agree(seed, shape, r):
    kw = dict(r_wire_row=r[0], r_wire_col=r[1], r_source=r[2], r_sink=r[3])
    g, gen = _case(seed, shape, (2,))
    v = torch.rand(3, 2, shape[0], generator=gen, dtype=torch.float64)
    direct = solve_crossbar(g, v, **kw)
    iterative = solve_crossbar(g, v, method="pcg", **kw)
    assert direct.shape == (3, 2, shape[1])
    # PCG stops at a 1e-12 residual, which bounds the current error to ~1e-7 of the largest
    torch.testing.assert_close(direct, iterative, rtol=0, atol=1e-7 * float(direct.abs().max()))
