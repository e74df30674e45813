"""The reference crossbar circuit, solved exactly (to a stated tolerance), and the
effective conductance matrix of programmed tiles (:func:`effective_conductance`).

With ideal wires the output currents are exactly ``I = v @ G``.  With linear devices the
circuit stays linear in ``v`` whatever the wire resistances, so a tile's effective
matrix is solved once per programmed state and every read is one matrix product.

Circuit (docs/design.md): wordline ``i`` is driven at its column-0 end by ``v_i``
through ``r_source``; neighbouring wordline nodes ``(i, j)``, ``(i, j+1)`` are joined by
``r_wire_row``; device ``(i, j)`` joins wordline node ``(i, j)`` to bitline node ``(i, j)``;
neighbouring bitline nodes ``(i, j)``, ``(i+1, j)`` are joined by ``r_wire_col``; bitline
``j`` leaves at row ``R-1`` through ``r_sink`` into a 0 V sense amplifier.  The output
``I_j`` is the current into that sense node.

Method, chosen by measurement (``benchmarks/bench_ir_drop.py``, 2 CPU cores):

``"direct"`` (default)
    block elimination.  Each wordline chain is eliminated exactly: its inverse comes in
    ``O(C^2)`` from the chain's forward and backward pivots, with no factorisation.  That
    leaves a bitline system that is block-tridiagonal over rows, with dense ``C x C``
    blocks and diagonal couplings (the bitline wires); block Thomas solves it, one dense
    ``C x C`` inverse per row (its Neumann series where two or three batched products
    bound its error, else Cholesky: :func:`_inverse`).  ``O(R C^3)`` per tile, batched
    over tiles and trials, every step one batched matrix operation.  For the effective
    matrix, input ``k`` enters at row ``k``, so only the inputs seen so far are carried
    down the rows (half the products), and the outputs need only the last rows (no
    back-substitution).  Measured on the tiles of the study's conv SNN (docs/speed.md):
    183 tiles/s at 64x64 against 17.7 for scipy's ``splu`` tile by tile (10.3x; ngspice
    0.008); 11.4x, 13.1x and 8.0x ``splu`` at 128x128, 256x256 and 512x512.  A sparse
    factorisation goes tile by tile, with no batching and fill-in in every factor.
``"pcg"``
    conjugate gradients on the symmetric positive-definite nodal matrix, preconditioned
    by exact solves of every wordline and bitline chain (Thomas algorithm).  It leaves out
    only the coupling through the devices, so it needs 6 to 15 iterations, but each one
    sweeps all ``2 R C`` unknowns for each right-hand side in sequential chain loops:
    7 tiles/s at 64x64.  Kept as an independent cross-check (the tests compare the two).

A zero ``r_source`` (``r_sink``) makes the driven (sensed) node a fixed potential,
eliminated symmetrically.  With every resistance zero the circuit is exactly ``v @ g``.

The circuit is linear in ``v``, so :func:`effective_matrix` solves it once for the ``R``
unit inputs: afterwards every read is one matrix product ``v @ G_eff``.
"""

from __future__ import annotations

import torch

from devices import physics
from devices import validation as val
from xbar import kernels


def check_resistances(r_wire_row, r_wire_col, r_source, r_sink, owner: str = "solve_crossbar") -> None:
    """The circuit's resistances (ohm): each >= 0, and zero wires only with every one zero."""
    for name, r in (("r_wire_row", r_wire_row), ("r_wire_col", r_wire_col),
                    ("r_source", r_source), ("r_sink", r_sink)):
        val.non_negative(owner, name, r)
    if (r_wire_row == 0) != (r_wire_col == 0) or (r_wire_row == 0 and (r_source or r_sink)):
        val.fail(owner, "r_wire_row", r_wire_row,
                 "zero wire resistance is supported only with every resistance zero (ideal wires); "
                 f"got r_wire_col={r_wire_col}, r_source={r_source}, r_sink={r_sink}: use a small "
                 "positive wire resistance")


class _Circuit:
    """Conductances of one batch of tiles ``g`` ``(..., R, C)`` and the preconditioner."""

    def __init__(self, g: torch.Tensor, r_wire_row, r_wire_col, r_source, r_sink) -> None:
        self.g = g
        R, C = g.shape[-2:]
        self.R, self.C = R, C
        self.gr, self.gc = 1.0 / r_wire_row, 1.0 / r_wire_col
        self.src_fixed, self.sink_fixed = r_source == 0, r_sink == 0
        self.gs = 0.0 if self.src_fixed else 1.0 / r_source
        self.gk = 0.0 if self.sink_fixed else 1.0 / r_sink
        z = torch.zeros_like(g)
        # Fixed nodes: wordline (i, 0) at v_i when r_source = 0; bitline (R-1, j) at 0 V
        # when r_sink = 0.
        self.fix_a, self.fix_b = z.bool(), z.bool()
        if self.src_fixed:
            self.fix_a[..., :, 0] = True
        if self.sink_fixed:
            self.fix_b[..., R - 1, :] = True
        deg_row = torch.full((C,), 2.0, dtype=g.dtype, device=g.device)
        deg_row[0] = deg_row[-1] = 1.0
        if C == 1:
            deg_row[0] = 0.0
        deg_col = torch.full((R,), 2.0, dtype=g.dtype, device=g.device)
        deg_col[0] = deg_col[-1] = 1.0
        if R == 1:
            deg_col[0] = 0.0
        self.diag_a = g + self.gr * deg_row
        self.diag_a[..., :, 0] += self.gs
        self.diag_b = g + self.gc * deg_col[:, None]
        self.diag_b[..., R - 1, :] += self.gk
        self.diag_a = torch.where(self.fix_a, torch.ones_like(g), self.diag_a)
        self.diag_b = torch.where(self.fix_b, torch.ones_like(g), self.diag_b)
        # Off-diagonals of the chains, zero where an end is a fixed node.
        off_a = torch.full_like(g[..., :, 1:], -self.gr)
        self.off_a = off_a.masked_fill(self.fix_a[..., :, 1:] | self.fix_a[..., :, :-1], 0.0)
        off_b = torch.full_like(g[..., 1:, :], -self.gc)
        self.off_b = off_b.masked_fill(self.fix_b[..., 1:, :] | self.fix_b[..., :-1, :], 0.0)
        self._lines = None  # chain factors of the PCG preconditioner, built on first use

    def apply(self, a: torch.Tensor, b: torch.Tensor):
        """Nodal matrix times ``(a, b)``; fixed nodes are identity rows decoupled from the rest."""
        a0 = a.masked_fill(self.fix_a, 0.0)
        b0 = b.masked_fill(self.fix_b, 0.0)
        ya = self.g * (a0 - b0)
        yb = self.g * (b0 - a0)
        da = a0[..., :, 1:] - a0[..., :, :-1]
        ya[..., :, 1:] += self.gr * da
        ya[..., :, :-1] -= self.gr * da
        db = b0[..., 1:, :] - b0[..., :-1, :]
        yb[..., 1:, :] += self.gc * db
        yb[..., :-1, :] -= self.gc * db
        ya[..., :, 0] += self.gs * a0[..., :, 0]
        yb[..., self.R - 1, :] += self.gk * b0[..., self.R - 1, :]
        ya = torch.where(self.fix_a, a, ya)
        yb = torch.where(self.fix_b, b, yb)
        return ya, yb

    def precondition(self, ra: torch.Tensor, rb: torch.Tensor):
        if self._lines is None:
            self._lines = (_thomas_factor(self.diag_a, self.off_a),
                           _thomas_factor(self.diag_b.transpose(-1, -2), self.off_b.transpose(-1, -2)))
        line_a, line_b = self._lines
        za = _thomas_solve(line_a, ra)
        zb = _thomas_solve(line_b, rb.transpose(-1, -2)).transpose(-1, -2)
        return za, zb

    def rhs(self, v: torch.Tensor):
        """Right-hand side for drive voltages ``v`` ``(..., R)``."""
        shape = torch.broadcast_shapes(v.shape[:-1] + (self.R, self.C), self.g.shape)
        ba = torch.zeros(shape, dtype=self.g.dtype, device=self.g.device)
        bb = torch.zeros_like(ba)
        if self.src_fixed:
            # Symmetric elimination of the fixed wordline ends: their pull moves to the RHS.
            ba[..., :, 0] = v
            if self.C > 1:
                ba[..., :, 1] += self.gr * v
            bb[..., :, 0] += self.g[..., :, 0] * v
            if self.sink_fixed:  # that bitline node is itself fixed at 0 V
                bb[..., self.R - 1, 0] = 0.0
        else:
            ba[..., :, 0] = self.gs * v
        return ba, bb

    def output(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Current into each sense node ``(..., C)`` from full node voltages ``(..., R, C)``."""
        last = self.R - 1
        return self.sense_current(self.g[..., last, :] * (a[..., last, :] - b[..., last, :]), b[..., last, :],
                                  b[..., last - 1, :] if self.R > 1 else None)

    def sense_current(self, i_last, b_last, b_prev):
        """What the neighbours of each sense node push into it: the last-row device's
        current ``i_last`` from its wordline node, and the bitline wire from the row above
        (none when ``R == 1``)."""
        return i_last if b_prev is None else i_last + self.gc * (b_prev - b_last)

    def wire_currents(self, a: torch.Tensor, b: torch.Tensor, v: torch.Tensor):
        """The current leaving each node through its wires, driver and sense amplifier, for
        full node voltages ``(a, b)`` (fixed nodes at their values) and drives ``v``: the
        nodal equations but for the devices."""
        fa, fb = torch.zeros_like(a), torch.zeros_like(b)
        da = self.gr * (a[..., :, 1:] - a[..., :, :-1])
        fa[..., :, :-1] -= da
        fa[..., :, 1:] += da
        db = self.gc * (b[..., 1:, :] - b[..., :-1, :])
        fb[..., :-1, :] -= db
        fb[..., 1:, :] += db
        fa[..., :, 0] += self.gs * (a[..., :, 0] - v)
        fb[..., self.R - 1, :] += self.gk * b[..., self.R - 1, :]
        return fa, fb


def _thomas_factor(diag: torch.Tensor, off: torch.Tensor):
    """Factors of symmetric tridiagonal systems along the last axis."""
    n = diag.shape[-1]
    denom = torch.empty_like(diag)
    cp = torch.zeros_like(diag)
    denom[..., 0] = diag[..., 0]
    for k in range(1, n):
        cp[..., k - 1] = off[..., k - 1] / denom[..., k - 1]
        denom[..., k] = diag[..., k] - off[..., k - 1] * cp[..., k - 1]
    return denom, cp, off


def _thomas_solve(factors, r: torch.Tensor) -> torch.Tensor:
    denom, cp, off = factors
    n = r.shape[-1]
    y = torch.empty_like(r)
    y[..., 0] = r[..., 0] / denom[..., 0]
    for k in range(1, n):
        y[..., k] = (r[..., k] - off[..., k - 1] * y[..., k - 1]) / denom[..., k]
    for k in range(n - 2, -1, -1):
        y[..., k] = y[..., k] - cp[..., k] * y[..., k + 1]
    return y


def _pcg(circuit: _Circuit, ba: torch.Tensor, bb: torch.Tensor, tol: float, max_iter: int):
    """The node voltages ``(a, b)`` for right-hand sides ``(ba, bb)``, by conjugate
    gradients to a relative residual ``tol``."""
    a, b = torch.zeros_like(ba), torch.zeros_like(bb)
    ra, rb = ba.clone(), bb.clone()
    za, zb = circuit.precondition(ra, rb)
    pa, pb = za.clone(), zb.clone()
    dims = (-2, -1)
    rz = (ra * za).sum(dims) + (rb * zb).sum(dims)
    b_norm = torch.sqrt((ba**2).sum(dims) + (bb**2).sum(dims)).clamp_min(torch.finfo(ba.dtype).tiny)
    for _ in range(max_iter):
        qa, qb = circuit.apply(pa, pb)
        pq = (pa * qa).sum(dims) + (pb * qb).sum(dims)
        alpha = (rz / torch.where(pq == 0, torch.ones_like(pq), pq))[..., None, None]
        a, b = a + alpha * pa, b + alpha * pb
        ra, rb = ra - alpha * qa, rb - alpha * qb
        res = torch.sqrt((ra**2).sum(dims) + (rb**2).sum(dims)) / b_norm
        if float(res.max()) < tol:
            break
        za, zb = circuit.precondition(ra, rb)
        rz_new = (ra * za).sum(dims) + (rb * zb).sum(dims)
        beta = (rz_new / torch.where(rz == 0, torch.ones_like(rz), rz))[..., None, None]
        pa, pb = za + beta * pa, zb + beta * pb
        rz = rz_new
    else:
        raise RuntimeError(f"solve_crossbar: no convergence in {max_iter} iterations "
                           f"(relative residual {float(res.max()):.2e} > tol {tol:.1e})")
    return a, b


def solve_crossbar(g: torch.Tensor, v: torch.Tensor, *, r_wire_row: float, r_wire_col: float,
                   r_source: float = 0.0, r_sink: float = 0.0, method: str = "direct",
                   tol: float = 1e-12, max_iter: int = 2000) -> torch.Tensor:
    """Bitline output currents (A), ``(..., C)``, of crossbars with conductances ``g``
    ``(R, C)`` or ``(..., R, C)`` (S) driven by voltages ``v`` ``(..., R)`` (V); batch
    dimensions broadcast.  Resistances in ohms; all zero gives exactly ``v @ g``.
    ``method``: ``"direct"`` (block elimination, exact up to round-off) or ``"pcg"``
    (iterative; ``tol`` is the relative residual of the nodal equations where it stops)."""
    check_resistances(r_wire_row, r_wire_col, r_source, r_sink)
    if g.shape[-2] != v.shape[-1]:
        raise ValueError(f"solve_crossbar: g has {g.shape[-2]} rows but v has {v.shape[-1]} inputs")
    if method not in ("direct", "pcg"):
        raise ValueError(f"solve_crossbar: method = {method!r} is not allowed: 'direct' or 'pcg'")
    if r_wire_row == 0:
        return (v.unsqueeze(-2) @ g).squeeze(-2)
    R, C = g.shape[-2:]
    k = g.dim() - 2
    lead = torch.broadcast_shapes(v.shape[:-1], g.shape[:-2])
    extra, batch = lead[: len(lead) - k], lead[len(lead) - k :]
    g = g.expand(*batch, R, C)
    v = v.to(g.dtype).expand(*lead, R)
    circuit = _Circuit(g, r_wire_row, r_wire_col, r_source, r_sink)
    if method == "pcg":
        return circuit.output(*_pcg(circuit, *circuit.rhs(v), tol, max_iter))
    # Right-hand sides as matrix columns: (*batch, R, C, X).
    ba, bb = circuit.rhs(v.reshape(-1, *batch, R))
    out = _direct(circuit, ba.movedim(0, -1), bb.movedim(0, -1)).movedim(-1, 0)  # (X, *batch, C)
    return out.reshape(*extra, *batch, C)


def effective_matrix(g: torch.Tensor, *, r_wire_row: float, r_wire_col: float,
                     r_source: float = 0.0, r_sink: float = 0.0, method: str = "direct",
                     tol: float = 1e-12, max_iter: int = 2000) -> torch.Tensor:
    """``G_eff`` ``(..., R, C)`` with ``solve_crossbar(g, v) == v @ G_eff`` for every ``v``:
    the circuit solved once for each of the ``R`` unit inputs."""
    R = g.shape[-2]
    if method == "direct" and r_wire_row > 0:
        check_resistances(r_wire_row, r_wire_col, r_source, r_sink)
        circuit = _Circuit(g, r_wire_row, r_wire_col, r_source, r_sink)
        ba, bb = circuit.rhs(torch.ones(g.shape[:-1], dtype=g.dtype, device=g.device))
        return _direct(circuit, ba, bb, unit=True).transpose(-1, -2)
    eye = torch.eye(R, dtype=g.dtype, device=g.device)
    unit = eye.reshape(R, *([1] * (g.dim() - 2)), R)  # (R_in, 1.., R)
    i = solve_crossbar(g, unit, r_wire_row=r_wire_row, r_wire_col=r_wire_col, r_source=r_source,
                       r_sink=r_sink, method=method, tol=tol, max_iter=max_iter)  # (R_in, ..., C)
    return i.movedim(0, -2)


class _ChainInverses:
    """Inverses of symmetric tridiagonal matrices (the wordline chains) in ``O(n^2)`` each,
    with no factorisation: from the forward pivots ``f`` and backward pivots ``f'``,
    ``(W^-1)_kk = 1 / (f_k + f'_k - d_k)`` and, for ``j < k``,
    ``(W^-1)_jk = (W^-1)_kk * prod_{m=j..k-1} (-o_m / f_m)`` (back substitution of
    ``W x = e_k`` above row ``k``).  The off-diagonals ``o`` are <= 0, so every factor lies in
    ``[0, 1)``; with ``L`` the cumulative log sums of the factors, a product is
    ``exp(L_k - L_j)``, formed as the outer product ``exp(-L_j) exp(L_k)`` (``2 n``
    exponentials a chain, not ``n^2``) where ``L`` stays above :data:`_LOG_OUTER` (no
    overflow), else as exponentials of the differences.  A zero factor (a link cut at a
    fixed node) zeroes every product across it."""

    def __init__(self, diag: torch.Tensor, off: torch.Tensor) -> None:
        n = diag.shape[-1]
        fwd, bwd = diag.clone(), diag.clone()
        for m in range(1, n):
            fwd[..., m] -= off[..., m - 1] ** 2 / fwd[..., m - 1]
        for m in range(n - 2, -1, -1):
            bwd[..., m] -= off[..., m] ** 2 / bwd[..., m + 1]
        self.dinv = 1.0 / (fwd + bwd - diag)
        q = -off / fwd[..., :-1]
        cut = q <= 0
        start = torch.zeros_like(diag[..., :1])
        self.log_prod = torch.cat([start, torch.where(cut, 0.0, q.log()).cumsum(-1)], -1)
        self.cuts = torch.cat([start, cut.to(diag.dtype).cumsum(-1)], -1)
        k = torch.arange(n, device=diag.device)
        self.upper = k[:, None] <= k[None, :]
        self.outer = bool(self.log_prod.min() > _LOG_OUTER)
        if self.outer:
            self.up, self.down = self.log_prod.exp(), self.log_prod.neg().exp()

    def row(self, i: int | None = None) -> torch.Tensor:
        """The inverse of chain ``i`` (axis ``-2`` of the pivots), ``(..., n, n)``; without
        ``i``, of every chain, ``(..., m, n, n)``."""
        at = (Ellipsis,) if i is None else (Ellipsis, i, slice(None))
        cuts, dinv = self.cuts[at], self.dinv[at]
        linked = self.upper & (cuts.unsqueeze(-1) == cuts.unsqueeze(-2))  # [j, k]: j <= k, no cut
        if self.outer:
            t = self.down[at].unsqueeze(-1) * (self.up[at] * dinv).unsqueeze(-2)
            t = t.masked_fill_(~linked, 0.0)
        else:
            log_prod = self.log_prod[at]
            expo = log_prod.unsqueeze(-2) - log_prod.unsqueeze(-1)  # [j, k] = L_k - L_j
            t = torch.where(linked, expo, -torch.inf).exp() * dinv.unsqueeze(-2)
        out = t + t.transpose(-1, -2)
        out.diagonal(dim1=-2, dim2=-1).sub_(dinv)
        return out


# The lowest cumulative log factor of a chain for which its inverse is an outer product
# of exponentials: exp(600) and exp(-600) are well within float64's range.
_LOG_OUTER = -600.0


# The Neumann series of a bitline block's inverse is used where its truncation error is
# bounded by this (relative; about the rounding of a 64x64 Cholesky inverse) within
# _NEUMANN_PRODUCTS batched products; elsewhere the block is inverted by Cholesky.
_NEUMANN_TOL = 1e-14
_NEUMANN_PRODUCTS = 3


def _neumann_terms(bound: float) -> int | None:
    """The fewest terms ``m`` of ``sum_j (-K)^j``, ``j < m + 1``, whose remainder is at most
    :data:`_NEUMANN_TOL` where ``||K|| <= bound`` (``bound^(m+1) / (1 - bound)``); ``None``
    where more than ``_NEUMANN_PRODUCTS + 1`` terms would be needed (or ``bound`` is not
    finite)."""
    if not bound < 0.5:
        return None
    for m in range(1, _NEUMANN_PRODUCTS + 2):
        if bound ** (m + 1) / (1.0 - bound) <= _NEUMANN_TOL:
            return m
    return None


def _pivot_inverse(s: torch.Tensor, diag_b: torch.Tensor, p_prev: torch.Tensor | None,
                   e: torch.Tensor | None) -> torch.Tensor:
    """``P_i^-1``, the inverse of row ``i``'s block-Thomas pivot of the bitline system,
    ``P_i = diag(diag_b) - G W_i^-1 G - E P_(i-1)^-1 E``, from ``s = G W_i^-1 G`` (overwritten)
    and the previous row's ``P_(i-1)^-1`` and bitline couplings ``e`` (``None`` for the
    first row)."""
    s.neg_().diagonal(dim1=-2, dim2=-1).add_(diag_b)
    if p_prev is not None:
        s.addcmul_(p_prev, e.unsqueeze(-1) * e, value=-1.0)
    return _inverse(s)


def _inverse(m: torch.Tensor) -> torch.Tensor:
    """Batched inverses of the (symmetric positive-definite) bitline blocks.

    A block is its diagonal ``D`` (the bitline wires' conductances, and the devices') and
    a small dense part (the devices' couplings through the wordlines, 3e-4 of ``D`` at
    most on HfO2's 64x64 tiles at 0.35 ohm/cell): with ``K = D^-1/2 M D^-1/2 - I``,
    ``M^-1 = D^-1/2 (I - K + K^2 - ...) D^-1/2``.  Where the infinity norm of ``K`` (a
    bound of its spectral radius) bounds the truncated series' error within
    :data:`_NEUMANN_TOL` in at most :data:`_NEUMANN_PRODUCTS` batched products, that is
    the inverse (two products at that bound: half Cholesky's time, which is LAPACK's
    per-block factorisation and inversion).  Elsewhere (long or resistive wires), by
    Cholesky; not LU (``torch.linalg.inv_ex``): with MKL on more than one thread, batches
    of 256x256 or larger blocks came back wrong with no error code (3% off at 2 threads,
    torch 2.13) or raised from ``lu_solve``; Cholesky is exact there and 0.6-1.1x LU's
    time below."""
    d = torch.diagonal(m, dim1=-2, dim2=-1)
    if bool((d > 0).all()):
        scale = d.rsqrt()
        k = m * scale.unsqueeze(-1) * scale.unsqueeze(-2)
        k.diagonal(dim1=-2, dim2=-1).sub_(1.0)
        terms = _neumann_terms(float(k.abs().sum(-1).max()))
        if terms is not None:
            k3 = k.reshape(-1, *k.shape[-2:])
            t = k3  # t_j = K - K^2 + ... + (-1)^(j+1) K^j, by Horner: t_(j+1) = K - K t_j
            for _ in range(terms - 1):
                t = torch.baddbmm(k3, k3, t, alpha=-1.0)
            inv = t.neg_() if terms > 1 else t.neg()
            inv.diagonal(dim1=-2, dim2=-1).add_(1.0)
            return inv.view(k.shape).mul_(scale.unsqueeze(-1)).mul_(scale.unsqueeze(-2))
    chol, info = torch.linalg.cholesky_ex(m)
    if bool((info != 0).any()):
        raise RuntimeError("solve_crossbar: a block of the nodal elimination is not positive "
                           "definite (non-finite or negative conductances?)")
    return torch.cholesky_inverse(chol)


def _direct(c: _Circuit, ba: torch.Tensor, bb: torch.Tensor, unit: bool = False) -> torch.Tensor:
    """Block elimination: every wordline chain exactly (``W_i^-1``, :class:`_ChainInverses`),
    then the bitline system, block-tridiagonal over rows with diagonal couplings
    ``E_i = diag(off_b[i])``, by block Thomas: ``P_i = S_i - E P_{i-1}^-1 E``.

    ``ba``, ``bb``: right-hand sides as columns, ``(*batch, R, C, X)``; or, with ``unit``,
    the ``R`` unit inputs at once, given as ``(*batch, R, C)`` for ``v = 1`` (the right-hand
    side is row-local, so row ``i`` of it is input ``i``'s).  Input ``k`` enters at row ``k``
    only, so after row ``i`` only the first ``i + 1`` columns are non-zero and only those are
    carried.  The outputs need only the last two bitline rows and the last wordline: there
    is no back-substitution.  Returns the output currents ``(*batch, C, X)``."""
    R = c.R
    chains = _ChainInverses(c.diag_a, c.off_a)
    g_mask = c.g.masked_fill(c.fix_a | c.fix_b, 0.0)  # device couplings between free nodes
    # The bitline couplings are the circuit's structure, the same in every tile: E_i E_i^T.
    e_rows = c.off_b[(0,) * (c.off_b.dim() - 2)]  # (R - 1, C)
    X = R if unit else ba.shape[-1]
    p_inv = y = prev = None
    for i in range(R):
        w, gm = chains.row(i), g_mask[..., i, :].unsqueeze(-1)
        if unit:
            f = torch.zeros(*w.shape[:-1], X, dtype=w.dtype, device=w.device)
            f[..., i] = bb[..., i, :] + gm[..., 0] * (w @ ba[..., i, :].unsqueeze(-1))[..., 0]
        else:
            f = bb[..., i, :, :] + gm * (w @ ba[..., i, :, :])
        # G W^-1 G, in place of W^-1 (but the last row's: the outputs need it)
        s = (w if i < R - 1 else w.clone()).mul_(gm).mul_(gm.transpose(-1, -2))
        e = e_rows[i - 1] if i else None
        if i:
            n = i if unit else X  # the columns carried so far
            f[..., :n].sub_(e.unsqueeze(-1) * (p_inv @ y[..., :n]))
        prev = (p_inv, y)
        p_inv, y = _pivot_inverse(s, c.diag_b[..., i, :], p_inv, e), f
    b_last = p_inv @ y
    if unit:
        last_in = torch.zeros_like(b_last)
        last_in[..., R - 1] = ba[..., R - 1, :]
    else:
        last_in = ba[..., R - 1, :, :]
    a_last = w @ (last_in + g_mask[..., R - 1, :].unsqueeze(-1) * b_last)
    b_prev = None
    if R > 1:
        p_prev, y_prev = prev
        b_prev = p_prev @ (y_prev - c.off_b[..., R - 2, :].unsqueeze(-1) * b_last)
    # Fixed nodes hold their values here, so this is the current into each sense node.
    return c.sense_current(c.g[..., R - 1, :].unsqueeze(-1) * (a_last - b_last), b_last, b_prev)


def solve_gated(g: torch.Tensor, v: torch.Tensor, *, r_wire_row: float, r_wire_col: float,
                r_source: float = 0.0, r_sink: float = 0.0, r_access: float = 0.0,
                chunk: int = 512) -> torch.Tensor:
    """Bitline output currents (A), ``(..., C)``, of 1T1R crossbars whose inputs drive the
    access transistors' gates: row ``i``'s devices conduct where ``v_i != 0`` (a spike on
    its gate, the row's line at ``v_i``), each through its transistor's on-resistance
    ``r_access`` in series; a row without input is disconnected (its devices carry no
    current and load no bitline).  ``g`` ``(R, C)`` or ``(..., R, C)`` (S), ``v`` ``(...,
    R)`` (V), batch dimensions broadcast as in :func:`solve_crossbar`; resistances in ohms.

    Each read is its own linear circuit, solved exactly (to round-off): only the ``k``
    connected rows (and the last, the bitlines' sense end) keep nodes; between two of
    them a bitline is ``gap * r_wire_col`` of wire, and above the first it carries no
    current.  Each bitline's chain of ``k`` nodes is inverted in ``O(k^2)``
    (:class:`_ChainInverses`) and eliminated onto its column's wordline nodes, leaving a
    system block-tridiagonal over the ``C`` columns with dense ``k x k`` blocks, solved by
    block Thomas forward and back: ``O(C k^3)`` a read.  On the CPU in float64, one
    native task per read (:func:`xbar.kernels.gated_reads`); else batched in torch over
    reads and tiles, in chunks of ``chunk`` reads with alike ``k``.  With every row driven
    it is :func:`solve_crossbar`'s circuit (``r_access = 0``), and with ideal wires
    ``v @ g'`` over the connected rows, ``g' = g / (1 + g r_access)``
    (:func:`access_series`)."""
    check_resistances(r_wire_row, r_wire_col, r_source, r_sink, "solve_gated")
    val.non_negative("solve_gated", "r_access", r_access)
    if g.shape[-2] != v.shape[-1]:
        raise ValueError(f"solve_gated: g has {g.shape[-2]} rows but v has {v.shape[-1]} inputs")
    R, C = g.shape[-2:]
    lead = torch.broadcast_shapes(v.shape[:-1], g.shape[:-2])
    v = v.to(g.dtype).expand(*lead, R).reshape(-1, R)
    if g.device.type == "cpu" and g.dtype == torch.float64 and not (g.requires_grad or v.requires_grad) \
            and r_wire_row > 0:
        # One native task per read (xbar.kernels.gated_reads), each tile indexed, not copied.
        tiles = torch.arange(g[..., 0, 0].numel()).reshape(g.shape[:-2]).expand(lead).reshape(-1)
        out = torch.empty(len(v), C, dtype=g.dtype)
        kernels.follow_torch_threads()
        kernels.gated_reads(g.reshape(-1, R, C).contiguous().numpy(), tiles.contiguous().numpy(),
                            v.contiguous().numpy(), float(r_access), float(r_wire_row), float(r_wire_col),
                            float(r_source), float(r_sink), out.numpy())
        return out.reshape(*lead, C)
    g = g.expand(*lead, R, C).reshape(-1, R, C)
    on = v != 0
    gp = torch.where(on.unsqueeze(-1), access_series(g, r_access), torch.zeros((), dtype=g.dtype, device=g.device))
    if r_wire_row == 0:
        return (v.unsqueeze(-2) @ gp).squeeze(-2).reshape(*lead, C)
    # Reads with alike numbers of connected rows together: a chunk's blocks are its largest k.
    order = on.sum(1).argsort()
    out = torch.empty(len(v), C, dtype=g.dtype, device=g.device)
    for start in range(0, len(v), chunk):
        part = order[start : start + chunk]
        out[part] = _gated_reads(gp[part], v[part], on[part], r_wire_row, r_wire_col, r_source, r_sink)
    return out.reshape(*lead, C)


def _gated_reads(gp: torch.Tensor, v: torch.Tensor, on: torch.Tensor, r_row: float, r_col: float,
                 r_source: float, r_sink: float) -> torch.Tensor:
    """:func:`solve_gated` for ``B`` reads: branch conductances ``gp`` ``(B, R, C)`` (0 where
    a row is off), drives ``v`` ``(B, R)``, connected rows ``on`` ``(B, R)``; ``(B, C)``."""
    B, R, C = gp.shape
    dev = dict(dtype=gp.dtype, device=gp.device)
    # The nodes kept: the connected rows and the last row, padded above to k with rows that
    # carry nothing (index -1: no device, no drive, a dangling bitline end).
    keep = on.clone()
    keep[:, R - 1] = True
    k = int(keep.sum(1).max())
    rows = torch.where(keep, torch.arange(R, device=gp.device), -1).topk(k, dim=1).values.flip(1)  # (B, k)
    real = rows >= 0
    at = rows.clamp_min(0)
    gk = torch.gather(gp, 1, at.unsqueeze(-1).expand(B, k, C)) * real.unsqueeze(-1)  # (B, k, C)
    vk = torch.gather(v, 1, at) * real  # (B, k)
    h = 1.0 / ((rows[:, 1:] - rows[:, :-1]).clamp_min(1).to(gp.dtype) * r_col)  # (B, k - 1), node m to m + 1
    # Bitline chains of the free nodes (the last is fixed at 0 V where r_sink = 0), per column.
    nb = k if r_sink > 0 else k - 1
    gt = gk.transpose(1, 2)  # (B, C, k)
    b_inv = None
    if nb:
        diag = gt[..., :nb].clone()
        above = torch.zeros(B, nb, **dev)
        above[:, 1:] = h[:, : nb - 1]
        below = torch.zeros(B, nb, **dev)
        below[:, : min(nb, k - 1)] = h[:, : min(nb, k - 1)]
        diag += (above + below).unsqueeze(1)
        if r_sink > 0:
            diag[..., nb - 1] += 1.0 / r_sink
        off = (-h[:, : nb - 1]).unsqueeze(1).expand(B, C, nb - 1)
        b_inv = _ChainInverses(diag, off).row()  # (B, C, nb, nb)
    # Each column's wordline block once its bitline is eliminated: S_j = diag(g' + wires) - G' B^-1 G'.
    deg = torch.full((C,), 2.0, **dev)
    deg[0] = deg[-1] = 1.0
    if C == 1:
        deg[0] = 0.0
    s = torch.diag_embed(gt + (deg / r_row).view(1, C, 1))  # (B, C, k, k)
    if r_source > 0:
        s[:, 0].diagonal(dim1=-2, dim2=-1).add_(1.0 / r_source)
    if nb:
        gf = gt[..., :nb]
        s[..., :nb, :nb] -= gf.unsqueeze(-1) * b_inv * gf.unsqueeze(-2)
    # Block Thomas over the columns; column 0's wordline nodes are the drives where r_source = 0.
    first = 0 if r_source > 0 else 1
    alpha = torch.zeros(B, C, k, **dev)
    if first:
        alpha[:, 0] = vk
    if first < C:
        gr = 1.0 / r_row
        f = (vk / r_source) if r_source > 0 else gr * vk
        p_inv, y = [], []
        for j in range(first, C):
            p = s[:, j] if j == first else s[:, j] - gr * gr * p_inv[-1]
            yj = f if j == first else gr * (p_inv[-1] @ y[-1].unsqueeze(-1)).squeeze(-1)
            p_inv.append(_inverse(p))
            y.append(yj)
        a = None
        for j in range(C - 1, first - 1, -1):
            rhs = y[j - first] if a is None else y[j - first] + gr * a
            a = (p_inv[j - first] @ rhs.unsqueeze(-1)).squeeze(-1)
            alpha[:, j] = a
    # The outputs: the current into each sense node, from the last free bitline node (B, C).
    beta = (b_inv[..., nb - 1, :] * gt[..., :nb] * alpha[..., :nb]).sum(-1) if nb else None
    if r_sink > 0:
        return beta / r_sink
    current = gt[..., k - 1] * alpha[..., k - 1]  # the last row's device, straight into the sense node
    return current if beta is None else current + h[:, k - 2].unsqueeze(-1) * beta


def solve_nonlinear(g0: torch.Tensor, v: torch.Tensor, *, nl2: torch.Tensor, nl3: torch.Tensor,
                    r_wire_row: float, r_wire_col: float, r_source: float = 0.0, r_sink: float = 0.0,
                    chord: torch.Tensor | None = None, tol: float = 1e-10, max_iter: int = 100,
                    chunk: int = 1 << 20) -> torch.Tensor:
    """Bitline output currents (A), ``(..., C)``, of crossbars of non-linear devices: device
    ``(i, j)`` carries ``I = g0 V + nl2 V^2 + nl3 V^3`` at ``V`` volts across it (wordline
    node less bitline node; :class:`devices.DeviceModel`'s I-V curve), ``g0``, ``nl2``,
    ``nl3`` ``(R, C)`` or ``(..., R, C)``, driven by ``v`` ``(..., R)`` (V) on
    :func:`solve_crossbar`'s circuit; batch dimensions broadcast.  With ideal wires every
    device sees its row's drive: ``v @ g0 + v^2 @ nl2 + v^3 @ nl3``.

    Otherwise Newton's chord method on the nodal equations: the Jacobian held at the linear
    circuit of ``chord`` (each device's conductance ``I / V`` where it was verified, by
    default at the largest drive), factorised once per tile and shared by all its reads
    (:class:`_Factored`), from that circuit's solution; each step moves every node by the
    solve of the devices' currents off their chords, until the error left in any
    device's voltage, bounded from the last two steps' contraction, is within ``tol``
    times the largest drive.  The steps contract by 1e-3 (HfO2, 64x64 tiles, 0.35
    ohm/cell) to 1e-2 (128x128, 2.5 ohm/cell): two to four steps.  ``nl2 = nl3 = 0`` is :func:`solve_crossbar`.  Works in
    ``g0``'s dtype (float64 advised), ``chunk`` node voltages at a time."""
    check_resistances(r_wire_row, r_wire_col, r_source, r_sink, "solve_nonlinear")
    if g0.shape[-2] != v.shape[-1]:
        raise ValueError(f"solve_nonlinear: g0 has {g0.shape[-2]} rows but v has {v.shape[-1]} inputs")
    if not (g0.shape == nl2.shape == nl3.shape) or (chord is not None and chord.shape != g0.shape):
        raise ValueError(f"solve_nonlinear: g0 {tuple(g0.shape)}, nl2 {tuple(nl2.shape)}, nl3 "
                         f"{tuple(nl3.shape)} (and chord) must have one shape")
    v = v.to(g0.dtype)
    if r_wire_row == 0:
        return sum(((v**k).unsqueeze(-2) @ c).squeeze(-2) for k, c in ((1, g0), (2, nl2), (3, nl3)))
    R, C = g0.shape[-2:]
    if chord is None:
        top = float(v.abs().max())
        chord = g0 + top * (nl2 + top * nl3)
    lead = torch.broadcast_shapes(v.shape[:-1], g0.shape[:-2])
    n_tiles = g0[..., 0, 0].numel()
    # The reads grouped by tile: (tiles, reads per tile, R).
    tiles = torch.arange(n_tiles, device=g0.device).reshape(g0.shape[:-2]).expand(lead).reshape(-1)
    order = tiles.argsort(stable=True)
    per_tile = len(tiles) // n_tiles
    v_flat = v.expand(*lead, R).reshape(-1, R)
    vt = v_flat[order].reshape(n_tiles, per_tile, R)
    coef = [c.reshape(-1, R, C) for c in (g0, nl2, nl3, chord)]
    out = torch.empty(n_tiles, per_tile, C, dtype=g0.dtype, device=g0.device)
    reads = max(1, min(per_tile, chunk // (R * C)))
    t_step = max(1, chunk // (R * C * reads))
    for t in range(0, n_tiles, t_step):
        tt = slice(t, t + t_step)
        factored = _Factored(_Circuit(coef[3][tt], r_wire_row, r_wire_col, r_source, r_sink))
        for m in range(0, per_tile, reads):
            mm = slice(m, m + reads)
            out[tt, mm] = _chord_reads(factored, [c[tt] for c in coef[:3]], vt[tt, mm], tol, max_iter)
    result = torch.empty_like(out.reshape(-1, C))
    result[order] = out.reshape(-1, C)
    return result.reshape(*lead, C)


class _Factored:
    """The linear circuit of tiles, factorised for any right-hand side: each row's wordline
    chain inverse ``W_i^-1`` and the inverse of its block-Thomas pivot of the bitline
    system ``P_i^-1``, ``(T, R, C, C)`` each (as :func:`_direct` forms them, all kept)."""

    def __init__(self, c: _Circuit) -> None:
        self.c = c
        R = c.R
        self.w = _ChainInverses(c.diag_a, c.off_a).row()  # (T, R, C, C)
        self.gm = c.g.masked_fill(c.fix_a | c.fix_b, 0.0)  # device couplings between free nodes
        self.e = c.off_b[(0,) * (c.off_b.dim() - 2)]  # (R - 1, C): the bitline couplings, every tile's
        self.p = torch.empty_like(self.w)
        for i in range(R):
            gm = self.gm[:, i]
            s = self.w[:, i] * gm.unsqueeze(-1) * gm.unsqueeze(-2)
            self.p[:, i] = _pivot_inverse(s, c.diag_b[:, i], self.p[:, i - 1] if i else None,
                                          self.e[i - 1] if i else None)

    def solve(self, ba: torch.Tensor, bb: torch.Tensor):
        """Node voltages ``(a, b)`` ``(T, R, C, X)`` for right-hand sides ``(ba, bb)`` of the
        same shape (fixed nodes: their values)."""
        R = self.c.R
        gm = self.gm.unsqueeze(-1)
        y = torch.empty_like(bb)
        for i in range(R):
            y[:, i] = bb[:, i] + gm[:, i] * (self.w[:, i] @ ba[:, i])
            if i:
                y[:, i] -= self.e[i - 1].unsqueeze(-1) * (self.p[:, i - 1] @ y[:, i - 1])
        b = torch.empty_like(bb)
        b[:, R - 1] = self.p[:, R - 1] @ y[:, R - 1]
        for i in range(R - 2, -1, -1):
            b[:, i] = self.p[:, i] @ (y[:, i] - self.e[i].unsqueeze(-1) * b[:, i + 1])
        a = self.w @ (ba + gm * b)
        return a, b


def _device_current(coef, d: torch.Tensor) -> torch.Tensor:
    g0, n2, n3 = coef
    return d * (g0 + d * (n2 + d * n3))


def _chord_reads(factored: _Factored, coef, v: torch.Tensor, tol: float, max_iter: int) -> torch.Tensor:
    """:func:`solve_nonlinear` for ``m`` reads of each of ``T`` tiles: ``coef`` ``(g0, nl2,
    nl3)`` ``(T, R, C)``, drives ``v`` ``(T, m, R)``; the output currents ``(T, m, C)``."""
    c, R = factored.c, factored.c.R
    g0, n2, n3 = (x.unsqueeze(-1) for x in coef)  # (T, R, C, 1): the reads last
    dg = g0 - c.g.unsqueeze(-1)  # low-field less chord
    ba, bb = c.rhs(v.movedim(1, 0))  # (m, T, R, C)
    ba, bb = ba.movedim(0, -1).contiguous(), bb.movedim(0, -1).contiguous()  # (T, R, C, m)
    a, b = factored.solve(ba, bb)
    d = a - b
    scale = float(v.abs().max().clamp_min(torch.finfo(v.dtype).tiny))
    last = None
    for _ in range(max_iter):
        # Each device's current off its chord, d (g0 - g + d (nl2 + d nl3)), moved to the right.
        off = n3 * d
        off.add_(n2).mul_(d).add_(dg).mul_(d)
        ra, rb = ba - off, bb + off
        if c.src_fixed:
            ra[:, :, 0] = ba[:, :, 0]
        if c.sink_fixed:
            rb[:, R - 1] = bb[:, R - 1]
        a, b = factored.solve(ra, rb)
        d_next = a - b
        step = float(d.sub_(d_next).abs_().max())
        d = d_next
        # The error left is at most step * rho / (1 - rho), rho the contraction of the last step.
        rho = None if last is None or last == 0 else step / last
        if step == 0 or (rho is not None and rho < 0.5 and step * rho / (1 - rho) <= tol * scale):
            break
        last = step
    else:
        raise RuntimeError(f"solve_nonlinear: the chord method did not converge in {max_iter} steps "
                           f"(last step {step:.2e} V): the devices' slopes are too far from their chords "
                           "at the voltages the wires leave them")
    i_last = _device_current((g0[:, R - 1], n2[:, R - 1], n3[:, R - 1]), d[:, R - 1])  # (T, C, m)
    out = c.sense_current(i_last, b[:, R - 1], b[:, R - 2] if R > 1 else None)
    return out.transpose(-1, -2)


def first_order_matrix(g: torch.Tensor, *, r_wire_row: float, r_wire_col: float,
                       r_source: float = 0.0, r_sink: float = 0.0) -> torch.Tensor:
    """A one-pass approximation of :func:`effective_matrix`, exact to first order in the
    resistances: no solve, a few cumulative sums.

    Row ``i`` of the effective matrix is the circuit's answer to input ``i`` alone; then
    wordline ``i`` carries, through segment ``k``, the currents of its devices at columns
    ``>= k``, and bitline ``j`` carries only device ``(i, j)``'s current.  To first order,
    the voltage across device ``(i, j)`` per volt of input falls by
    ``r_source * sum_j' g_ij' + r_wire_row * sum_{k=1..j} sum_{j'>=k} g_ij'`` on the wordline and
    by ``g_ij * d(i)`` on the bitline, with ``d(k) = (R - 1 - k) * r_wire_col + r_sink``; and
    the bitline, at ``g_ij * d(max(i, i'))`` per volt, leaks through every other device
    ``(i', j)`` into that device's undriven wordline (a sneak path), a further loss of
    ``g_ij * sum_{i' != i} g_i'j * d(max(i, i'))``.  The error is second order
    (``tests/test_circuit.py`` states it); clipped at 0 S for very large drops."""
    check_resistances(r_wire_row, r_wire_col, r_source, r_sink)
    R = g.shape[-2]
    beyond = g.flip(-1).cumsum(-1).flip(-1)  # sum_{j' >= k} g_ij'
    wl = r_source * beyond[..., :1] + r_wire_row * (beyond.cumsum(-1) - beyond[..., :1])
    # Resistance from bitline row k to its sense amplifier, d(k) = (R-1-k) r_col + r_sink.
    d = (torch.arange(R - 1, -1, -1, dtype=g.dtype, device=g.device) * r_wire_col + r_sink).unsqueeze(-1)
    # Bitline j sits at g_ij * d(max(i, i')) per volt.  Every other device (i', j) leaks that
    # potential into its own (undriven, 0 V) wordline, away from the sense amp (a sneak
    # path); the i' = i term, g_ij * d(i), is the device's own bitline drop.  Both at once:
    above = g.cumsum(-2) * d  # rows i' <= i, at the potential of row i
    gd = g * d
    below = gd.flip(-2).cumsum(-2).flip(-2) - gd  # rows i' > i: sum g_i'j d(i')
    return (g * (1.0 - wl - above - below)).clamp_min(0.0)


_CHUNK_CELLS = 2**20  # bounds the solver's working memory: tiles per chunk x C x C


def effective_conductance(g: torch.Tensor, spec=None) -> torch.Tensor:
    """Effective conductances ``(..., rows, cols)`` of tiles ``g`` under ``spec``'s circuit:
    what a read multiplies.  A gated array's devices are in series with their access
    transistors (:func:`access_series`).  Where each read's circuit is its own
    (``Spec.circuit_per_read``: a gated array with wires, non-linear devices), this is
    only the devices (:func:`read_currents` solves each read).

    Solved in float64, in chunks of tiles (each written into the result, in ``g``'s
    dtype, as it is solved: memory does not grow with the number of trials)."""
    if spec is not None and spec.array == "gated":
        g = access_series(g, spec.access_resistance)
    if spec is not None and spec.circuit_per_read:
        return g
    if spec is None or not spec.has_ir_drop:
        return g
    flat = g.reshape(-1, *g.shape[-2:])
    out = torch.empty_like(flat)
    solve = effective_matrix if spec.ir_drop_model == "exact" else first_order_matrix
    step = max(1, _CHUNK_CELLS // g.shape[-1] ** 2)
    for start in range(0, len(flat), step):
        part = flat[start : start + step].double()
        out[start : start + step] = solve(part, r_wire_row=spec.r_wire_row, r_wire_col=spec.r_wire_col,
                                          r_source=spec.r_source, r_sink=spec.r_sink)
    return out.reshape(g.shape)


def read_currents(g: torch.Tensor, x: torch.Tensor, spec) -> torch.Tensor:
    """What ``x @ g`` is where each read's circuit is its own (``Spec.circuit_per_read``):
    the output currents of tiles ``g`` ``(..., R, C)`` (what :func:`effective_conductance`
    returns: devices, in series with their transistors in a gated array) for inputs ``x``
    ``(..., R)`` (input units), per unit of input: a gated array's reads by
    :func:`solve_gated`, non-linear devices' by :func:`solve_nonlinear` at the DAC's
    voltages ``x v_read / input_range``, each device's chord at ``v_read`` being ``g``
    (:func:`devices.physics.low_field`).  Float64."""
    r = dict(r_wire_row=spec.r_wire_row, r_wire_col=spec.r_wire_col, r_source=spec.r_source, r_sink=spec.r_sink)
    g, x = g.double(), x.double()
    if spec.iv == "linear":
        return solve_gated(g, x, **r)
    volts = spec.v_read / spec.input_range
    top = float(x.abs().max()) * volts if x.numel() else 0.0
    if top > spec.device.iv_v_max:
        raise ValueError(f"crossbar read: an input drives {top:.3g} V, beyond the {spec.device.iv_v_max:g} V to "
                         f"which device {spec.device.name!r}'s I-V curve was measured (inputs up to "
                         f"{float(x.abs().max()):.3g} at {volts:.3g} V per unit): scale the inputs into "
                         f"[0, input_range = {spec.input_range:g}], set dac_bits (the DAC clips), or use iv='linear'")
    g0 = physics.low_field(g, spec.v_read, spec.device)
    _, nl2, nl3 = physics.iv_coefficients(g0, spec.device)
    return solve_nonlinear(g0, x * volts, nl2=nl2, nl3=nl3, chord=g, **r) / volts


def access_series(g: torch.Tensor, r_access: float) -> torch.Tensor:
    """Each device in series with its access transistor of on-resistance ``r_access``
    (ohm): ``g / (1 + g r_access)``."""
    return g if r_access == 0 else g / (1.0 + g * r_access)


def every_row_driven(g: torch.Tensor, spec) -> torch.Tensor:
    """The effective conductances of tiles ``g`` read with every row driven: what sizes a
    worst-case ADC range.  For a gated array, every transistor on: the connected circuit
    of the devices in series with their transistors.  For non-linear devices, the linear
    circuit of their chords at ``v_read`` (a designer's estimate: the drop along the wires
    moves each device off its chord)."""
    if spec.array == "gated":
        return effective_conductance(access_series(g, spec.access_resistance),
                                     spec.replace(array="connected", r_access=None))
    return effective_conductance(g, spec.replace(iv="linear"))


def compensated_targets(targets: torch.Tensor, spec, g_min: float, g_max: float,
                        iterations: int = 8) -> tuple[torch.Tensor, float, float]:
    """Programming targets ``(..., rows, cols)`` (S) pre-distorted for IR drop, as
    IR-drop-aware mapping programs them: with ``c = spec.ir_drop_compensation``, the
    effective conductances of the returned targets (the circuit solved on them, nominal:
    no variation) are ``g_min + c (T - g_min)``, a uniform scale of every weight by ``c``
    (the digital side divides it out), the window above it being the headroom that the
    pre-distortion fills.  Fixed point of ``G <- clip(G * goal / G_eff(G), g_min, g_max)``
    from ``G = goal``.  Returns the targets, the share of devices held at ``g_max`` (the
    drop they cannot undo) and the RMS residual ``|G_eff - goal|`` over the window."""
    c = spec.ir_drop_compensation
    goal = g_min + c * (targets - g_min)
    g = goal
    for _ in range(iterations):
        eff = effective_conductance(g, spec)
        ratio = torch.where(eff > 0, goal / eff.clamp_min(torch.finfo(g.dtype).tiny), torch.ones_like(g))
        g = (g * ratio).clamp(g_min, g_max)
    residual = float(((effective_conductance(g, spec) - goal) / (c * (g_max - g_min))).pow(2).mean().sqrt())
    return g, float((g >= g_max).double().mean()), residual
