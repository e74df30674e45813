"""The crossbar circuit solver: against ngspice, and its physical invariants."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from xbar import spice
from xbar.circuit import effective_matrix, solve_crossbar, solve_gated


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
def test_agrees_with_ngspice(R, C, binary, r):
    assert spice.NGSPICE, "ngspice is not installed: apt-get install ngspice (the .ci/run script does)"
    g, v = _random(R * 1000 + C, R, C, binary)
    ref = spice.run(g, v, **r)
    ours = solve_crossbar(torch.tensor(g), torch.tensor(v), **r).numpy()
    assert np.abs(ours - ref).max() < 1e-5 * np.abs(ref).max()
    assert np.abs(ours - v @ g).max() > 1e-5 * np.abs(ref).max()  # IR drop is really there


@pytest.mark.parametrize("r", [
    dict(r_wire_row=0.35, r_wire_col=0.35, r_source=0.0, r_sink=0.0),
    dict(r_wire_row=5.0, r_wire_col=2.0, r_source=20.0, r_sink=0.0),
    dict(r_wire_row=2.0, r_wire_col=5.0, r_source=0.0, r_sink=20.0),
])
def test_effective_matrix_agrees_with_ngspice_unit_inputs(r):
    """The effective matrix is the circuit's answer to each unit input: ngspice solves all
    ``R`` of them in one run (``alter`` between operating points)."""
    assert spice.NGSPICE, "ngspice is not installed: apt-get install ngspice (the .ci/run script does)"
    g, _ = _random(7, 24, 20, False)
    ref = spice.run(g, np.eye(24), **r)  # (R, C)
    ours = effective_matrix(torch.tensor(g), **r).numpy()
    assert np.abs(ours - ref).max() < 1e-5 * np.abs(ref).max()


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
    from xbar.circuit import _Circuit, _pcg
    c = _Circuit(g, r["r_wire_row"], r["r_wire_col"], r["r_source"], r["r_sink"])
    a, _ = _pcg(c, *c.rhs(v), 1e-13, 2000)
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
    iterative = solve_crossbar(g, v, method="pcg", tol=1e-13, **kw)
    assert direct.shape == (3, 2, shape[1])
    # At its default residual of 1e-12 PCG is off by up to 1.4e-7 of the largest current on
    # badly conditioned circuits (0.03 ohm wordlines, 7 ohm bitlines); at 1e-13 by 4e-13.
    torch.testing.assert_close(direct, iterative, rtol=0, atol=1e-9 * float(direct.abs().max()))


def test_first_order_read_noise_against_full_resolves():
    """Read noise with IR drop is applied to the effective matrix to first order
    (sigma_rel * G_eff per entry).  Against 2000 full re-solves with independently read
    conductances (32 x 32, 5% relative read noise, binary inputs), measured: at
    0.35 ohm/cell (1.6% IR drop) the per-column std is within 3.3% (the sampling error of
    2000 draws), at 2.5 ohm/cell with 10 ohm drivers and sinks (14% IR drop) within 8%;
    the mean moves by < 0.2%.  At 25 ohm/cell (63% IR drop) the first-order std is ~25%
    too low: the treatment is for moderate IR drop."""
    import devices
    from devices import DeviceModel

    gen = torch.Generator().manual_seed(0)
    dev = DeviceModel(g_min=1e-6, g_max=1e-4, read_sigma_rel=0.05)
    g = 1e-6 + 1e-4 * torch.rand(32, 32, generator=gen, dtype=torch.float64)
    v = 0.2 * (torch.rand(32, generator=gen, dtype=torch.float64) < 0.5).double()
    for r_wire, r_end, bound in ((0.35, 0.0, 0.06), (2.5, 10.0, 0.12)):
        kw = dict(r_wire_row=r_wire, r_wire_col=r_wire, r_source=r_end, r_sink=r_end)
        g_eff = effective_matrix(g, **kw)
        predicted = torch.sqrt((v**2) @ ((0.05 * g_eff) ** 2))
        out = solve_crossbar(devices.read(g.expand(2000, 32, 32), dev, gen), v, **kw)
        assert ((out.std(0) - predicted) / predicted).abs().max() < bound
        assert ((out.mean(0) - v @ g_eff) / (v @ g_eff)).abs().max() < 0.005


@pytest.mark.parametrize("n", [16, 32, 64])
def test_first_order_mode_error_is_second_order_in_the_ir_drop(n):
    """Measured: the one-pass model's error (max, relative to the largest entry) is about the
    square of the IR drop, e.g. 64x64 at 0.35 ohm/cell: 7% drop, 0.46% error."""
    from xbar.circuit import first_order_matrix

    g = 1e-6 + 1e-4 * torch.rand(n, n, generator=torch.Generator().manual_seed(n), dtype=torch.float64)
    errors = []
    for r_wire in (0.35, 0.175):
        kw = dict(r_wire_row=r_wire, r_wire_col=r_wire)
        exact = effective_matrix(g, **kw)
        drop = float((g - exact).abs().max() / g.abs().max())
        err = float((first_order_matrix(g, **kw) - exact).abs().max() / exact.abs().max())
        assert err < 1.5 * drop**2 and drop > 1e-3
        errors.append(err)
    assert errors[1] < 0.35 * errors[0]  # halving r quarters the error


@pytest.mark.parametrize("shape", [(256, 256), (256, 512)])
def test_large_tiles_on_two_threads_agree_with_a_sparse_nodal_solve(shape):
    """The exact solve on tiles of 256 rows, batched, under 2 torch threads (where MKL's
    batched LU inverse returned wrong blocks with no error, or raised), against scipy's
    splu of each tile's nodal matrix for nine of the inputs (the sparse solve of all 256
    takes 10-30 s a tile)."""
    R, C = shape
    g = 1e-6 + 1e-4 * torch.rand(2, R, C, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    r = dict(r_wire_row=0.35, r_wire_col=0.35, r_source=10.0, r_sink=10.0)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        ours = effective_matrix(g, **r).numpy()
    finally:
        torch.set_num_threads(threads)
    rows = np.linspace(0, R - 1, 9).astype(int)  # nine inputs, first to last row
    for tile, got in zip(g.numpy(), ours):
        ref = spice.splu_effective(tile, rows, **r)
        assert np.abs(got[rows] - ref).max() < 1e-7 * np.abs(ref).max()


def test_neumann_terms_are_the_fewest_within_the_tolerance():
    """The series' length from its remainder's bound ``b^(m+1) / (1 - b) <= 1e-14``: one
    term at 1e-8, two at 1e-6, three at 3e-4 (HfO2's 64x64 tiles at 0.35 ohm/cell), four at
    1.5e-3; Cholesky (``None``) beyond four, and for a bound that is not a number."""
    from xbar.circuit import _neumann_terms

    assert [_neumann_terms(b) for b in (1e-8, 1e-6, 3e-4, 1.5e-3, 5e-3, 0.6, float("nan"))] == \
        [1, 2, 3, 4, None, None, None]


@pytest.mark.parametrize("r_wire", [0.35, 2.5])
def test_the_bitline_blocks_series_inverse_is_choleskys_to_float64s_rounding(r_wire, monkeypatch):
    """HfO2 RRAM's conductances (50-225 uS) on 64x64 tiles: at 0.35 ohm/cell every bitline
    block is inverted by its Neumann series (Cholesky is not called), at 2.5 ohm/cell the
    late rows' blocks by Cholesky; either way the effective matrix is the one solved with
    every block inverted by Cholesky, to 1e-12 of its largest entry (measured: 3.2e-13 at
    0.35 ohm/cell, of which the two solves' rounding alone is 1.8e-13: a series of 20
    terms gives that)."""
    import xbar.circuit as circuit

    g = 50e-6 + 175e-6 * torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    r = dict(r_wire_row=r_wire, r_wire_col=r_wire)
    calls = []
    cholesky = torch.linalg.cholesky_ex
    monkeypatch.setattr(torch.linalg, "cholesky_ex", lambda m: calls.append(1) or cholesky(m))
    ours = effective_matrix(g, **r)
    assert (len(calls) == 0) == (r_wire == 0.35), len(calls)
    monkeypatch.setattr(circuit, "_NEUMANN_TOL", 0.0)  # every block by Cholesky
    ref = effective_matrix(g, **r)
    assert len(calls) >= 63
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-12 * float(ref.abs().max()))


def _spikes(gen, shape, rate):
    return (torch.rand(shape, generator=gen, dtype=torch.float64) < rate).to(torch.float64) * 0.2


@pytest.mark.parametrize("r_access", [0.0, 2e3])
@pytest.mark.parametrize("r", [
    dict(r_wire_row=0.35, r_wire_col=0.35, r_source=0.0, r_sink=0.0),
    dict(r_wire_row=10.0, r_wire_col=4.0, r_source=100.0, r_sink=50.0),
])
def test_gated_array_agrees_with_ngspice(r, r_access):
    """The 1T1R array with spikes on the gates: each read's circuit (rows without a spike
    have no devices; each device in series with its transistor, a resistor of its own in
    the netlist) against ngspice, one run per pattern, on 16x12 RRAM-like tiles (50-225
    uS) with 0-100% of the rows driven: to 1e-6 of the largest current."""
    assert spice.NGSPICE, "ngspice is not installed: apt-get install ngspice (the .ci/run script does)"
    gen = torch.Generator().manual_seed(5)
    g = 50e-6 + 175e-6 * torch.rand(16, 12, generator=gen, dtype=torch.float64)
    v = torch.stack([_spikes(gen, (16,), rate) for rate in (0.0, 0.1, 0.3, 0.6, 1.0)])
    v[1, 15] = 0.2  # a spike on the last row, whose bitline nodes are the sense ends
    ours = solve_gated(g, v, r_access=r_access, **r).numpy()
    ref = spice.run(g.numpy(), v.numpy(), gated=True, r_access=r_access, **r)
    assert np.abs(ours - ref).max() < 1e-6 * np.abs(ref).max()
    assert (ours[0] == 0).all()  # no spike, no current
    passive = solve_crossbar(g / (1 + g * r_access), v, **r).numpy()  # every device connected
    assert np.abs(passive[1:4] - ref[1:4]).max() > 1e-4 * np.abs(ref).max()  # the schemes differ, beyond 1e-6


@pytest.mark.parametrize("rate", [0.05, 0.3])
def test_gated_array_agrees_with_a_sparse_nodal_solve(rate):
    """64x64 HfO2-like tiles at 2.5 ohm/cell with 10 ohm drivers and sinks, 1 kohm access
    transistors: each read against scipy's splu of that read's own nodal matrix (the
    connected devices only, each with its transistor in series), to 1e-9."""
    gen = torch.Generator().manual_seed(6)
    g = 50e-6 + 175e-6 * torch.rand(64, 64, generator=gen, dtype=torch.float64)
    v = _spikes(gen, (4, 64), rate)
    r = dict(r_wire_row=2.5, r_wire_col=2.5, r_source=10.0, r_sink=10.0)
    ours = solve_gated(g, v, r_access=1e3, **r).numpy()
    for row, got in zip(v.numpy(), ours):
        gp = (g / (1 + g * 1e3)).numpy() * (row != 0)[:, None]
        lu = spice.spl.splu(spice.nodal_matrix(gp, **r))
        rhs = np.zeros(2 * gp.size)
        rhs[np.arange(64) * 64] = row / r["r_source"]
        ref = lu.solve(rhs)[64 * 64 + 63 * 64:] / r["r_sink"]
        assert np.abs(got - ref).max() <= 1e-9 * np.abs(ref).max()


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31), shape=shapes, r=resist, r_access=st.sampled_from([0.0, 1.0, 1e3]),
       rate=st.floats(0.0, 1.0))
def test_gated_array_is_the_full_circuit_with_the_rows_off_removed(seed, shape, r, r_access, rate):
    """Exact limits of the gated solve, batched over tiles and reads: it is
    :func:`solve_crossbar`'s circuit with the devices of the rows off removed (conductance
    0) and each device in series with its transistor (``g / (1 + g r_access)``), so with
    every row driven and no transistor it is the all-connected array; with ideal wires it
    is ``v @ g'`` over the rows driven.  Both paths: the native one (a task per read) and
    torch's batched one (taken where the inputs carry a graph)."""
    kw = dict(r_wire_row=r[0], r_wire_col=r[1], r_source=r[2], r_sink=r[3])
    g, gen = _case(seed, shape, (2,))
    v = _spikes(gen, (3, 2, shape[0]), rate)
    v[0] = torch.rand(2, shape[0], generator=gen, dtype=torch.float64) + 0.1  # every row driven
    gp = g / (1 + g * r_access)
    ours = solve_gated(g, v, r_access=r_access, **kw)  # native, one task per read
    batched = solve_gated(g, v.clone().requires_grad_(), r_access=r_access, **kw).detach()  # torch's path
    ref = solve_crossbar(gp * (v != 0).unsqueeze(-1), v, **kw)
    for got in (ours, batched):
        torch.testing.assert_close(got, ref, rtol=0, atol=1e-10 * float(ref.abs().max().clamp_min(1e-30)))
    torch.testing.assert_close(solve_gated(g, v[0], **kw), solve_crossbar(g, v[0], **kw), rtol=1e-10, atol=0.0)
    ideal = solve_gated(g, v, r_wire_row=0.0, r_wire_col=0.0, r_access=r_access)
    torch.testing.assert_close(ideal, ((v != 0).unsqueeze(-1) * gp * v.unsqueeze(-1)).sum(-2), rtol=1e-12, atol=0.0)


def test_gated_solve_names_a_bad_input():
    g = torch.full((4, 3), 1e-4, dtype=torch.float64)
    with pytest.raises(ValueError, match="r_access"):
        solve_gated(g, torch.ones(4), r_wire_row=1.0, r_wire_col=1.0, r_access=-1.0)
    with pytest.raises(ValueError, match="4 rows but v has 3"):
        solve_gated(g, torch.ones(3), r_wire_row=1.0, r_wire_col=1.0)
