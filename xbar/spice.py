"""The references of the crossbar circuit: a SPICE netlist solved by ngspice in batch mode,
and an independent sparse nodal solve (scipy).

The circuit references of the solver tests and of ``benchmarks/bench_ir_drop.py``, and a
way to hand one tile to a circuit simulator: :func:`netlist` writes the circuit of
:mod:`xbar.circuit` (devices as linear resistors); :func:`run` solves it for one or more
input vectors in one ngspice process (``alter`` between operating points).  ngspice is
not a Python dependency: ``apt-get install ngspice``.  :func:`splu_effective` assembles
the same circuit's nodal matrix and factorises it with ``scipy.sparse.linalg.splu``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spl

NGSPICE = shutil.which("ngspice")


def netlist(g: np.ndarray, v: np.ndarray, *, r_wire_row: float, r_wire_col: float,
            r_source: float = 0.0, r_sink: float = 0.0, r_access: float = 0.0, gated: bool = False,
            nl2: np.ndarray | None = None, nl3: np.ndarray | None = None) -> str:
    """SPICE text of the circuit with conductances ``g`` ``(R, C)`` (S) for inputs ``v``
    ``(R,)`` or ``(N, R)`` (V): one operating point per input vector, each printing the
    ``C`` output currents.  Zero source/sink resistances become 0 V sources (shorts); a
    zero conductance is no device.  ``r_access`` > 0: each device in series with its
    access transistor's on-resistance (a resistor of its own, at a node of its own).
    ``gated``: the 1T1R array with the inputs on the gates: a row whose input is 0 has no
    devices (its transistors are off), so the input vector must be one (``(R,)``).
    ``nl2``, ``nl3`` ``(R, C)``: non-linear devices, each a behavioural current source
    ``I = g V + nl2 V^2 + nl3 V^3`` with ``V`` its wordline node less its bitline node
    (:func:`xbar.circuit.solve_nonlinear`; ``g`` is then the low-field conductance)."""
    g, v = np.asarray(g, dtype=float), np.atleast_2d(np.asarray(v, dtype=float))
    nonlinear = nl2 is not None or nl3 is not None
    if nonlinear:
        nl2 = np.zeros_like(g) if nl2 is None else np.asarray(nl2, dtype=float)
        nl3 = np.zeros_like(g) if nl3 is None else np.asarray(nl3, dtype=float)
        if r_access > 0:
            raise ValueError("netlist: a non-linear device in series with an access transistor is not "
                             "written yet: give r_access=0 or linear devices")
    R, C = g.shape
    if v.shape[-1] != R:
        raise ValueError(f"netlist: g has {R} rows but v has {v.shape[-1]} inputs")
    if gated and len(v) != 1:
        raise ValueError(f"netlist: a gated array's devices depend on its input: give one vector, not {len(v)}")
    lines = ["* xbar reference crossbar"]
    for i in range(R):
        lines.append(f"V{i} in{i} 0 DC {v[0, i]:.17g}")
        lines.append(f"RS{i} in{i} a{i}_0 {r_source:.17g}" if r_source > 0 else f"VS{i} in{i} a{i}_0 DC 0")
        lines += [f"RW{i}_{j} a{i}_{j} a{i}_{j + 1} {r_wire_row:.17g}" for j in range(C - 1)]
        for j in range(C):
            if g[i, j] <= 0 or (gated and v[0, i] == 0):
                continue
            if nonlinear:
                d = f"V(a{i}_{j},b{i}_{j})"
                lines.append(f"BD{i}_{j} a{i}_{j} b{i}_{j} I={g[i, j]:.17g}*{d}+{nl2[i, j]:.17g}*{d}*{d}"
                             f"+{nl3[i, j]:.17g}*{d}*{d}*{d}")
            elif r_access > 0:
                lines += [f"RD{i}_{j} a{i}_{j} t{i}_{j} {1.0 / g[i, j]:.17g}",
                          f"RT{i}_{j} t{i}_{j} b{i}_{j} {r_access:.17g}"]
            else:
                lines.append(f"RD{i}_{j} a{i}_{j} b{i}_{j} {1.0 / g[i, j]:.17g}")
    for j in range(C):
        lines += [f"RB{i}_{j} b{i}_{j} b{i + 1}_{j} {r_wire_col:.17g}" for i in range(R - 1)]
        # sense amplifier: a 0 V source whose current is the output
        if r_sink > 0:
            lines += [f"RK{j} b{R - 1}_{j} s{j} {r_sink:.17g}", f"VO{j} s{j} 0 DC 0"]
        else:
            lines.append(f"VO{j} b{R - 1}_{j} 0 DC 0")
    lines += [".options reltol=1e-9 abstol=1e-18 vntol=1e-12", ".control"]
    for n in range(len(v)):
        if n:
            lines += [f"alter V{i} dc={v[n, i]:.17g}" for i in range(R) if v[n, i] != v[n - 1, i]]
        lines.append("op")
        lines += [f"print i(VO{j})" for j in range(C)]
    lines += [".endc", ".end"]
    return "\n".join(lines) + "\n"


def run(g, v, **r) -> np.ndarray:
    """Output currents (A) into the sense nodes from ngspice: ``(C,)`` for ``v`` ``(R,)``,
    ``(N, C)`` for ``(N, R)``.  ``r``: the resistances and options of :func:`netlist`
    (a gated array: one ngspice run per input vector)."""
    if NGSPICE is None:
        raise RuntimeError("ngspice is not installed: apt-get install ngspice")
    g, v = np.asarray(g), np.asarray(v)
    if r.get("gated") and v.ndim == 2:
        return np.stack([run(g, row, **r) for row in v])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "xbar.cir"
        path.write_text(netlist(g, v, **r))
        out = subprocess.run([NGSPICE, "-b", str(path)], capture_output=True, text=True, timeout=3600)
    # SPICE reports the current flowing into the source's + terminal (node -> 0): that is
    # the current into the sense node.
    found = [float(m.group(1)) for m in
             re.finditer(r"i\(vo\d+\)\s*=\s*([-+0-9.eE]+)", out.stdout, re.IGNORECASE)]
    n, C = (1 if v.ndim == 1 else len(v)), g.shape[1]
    if len(found) != n * C:
        raise RuntimeError(f"ngspice gave {len(found)} of {n * C} currents:\n"
                           f"{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    currents = np.array(found).reshape(n, C)
    return currents[0] if v.ndim == 1 else currents


def nodal_matrix(g: np.ndarray, *, r_wire_row: float, r_wire_col: float, r_source: float,
                 r_sink: float) -> sp.csc_matrix:
    """The circuit's nodal matrix (wordline nodes, then bitline nodes, row-major), with
    resistive drivers and sense amplifiers (``r_source``, ``r_sink`` > 0: no fixed node)."""
    if min(r_wire_row, r_wire_col, r_source, r_sink) <= 0:
        raise ValueError("nodal_matrix: every resistance must be > 0 (no fixed nodes), got "
                         f"{r_wire_row=}, {r_wire_col=}, {r_source=}, {r_sink=}")
    g = np.asarray(g, dtype=float)
    R, C = g.shape
    n = R * C
    wl = np.arange(n).reshape(R, C)
    bl = wl + n
    edges = [(wl.ravel(), bl.ravel(), g.ravel()),
             (wl[:, :-1].ravel(), wl[:, 1:].ravel(), np.full(R * (C - 1), 1 / r_wire_row)),
             (bl[:-1, :].ravel(), bl[1:, :].ravel(), np.full((R - 1) * C, 1 / r_wire_col))]
    rows, cols, vals = [], [], []
    for p, q, c in edges:
        rows += [p, q, p, q]
        cols += [p, q, q, p]
        vals += [c, c, -c, -c]
    rows += [wl[:, 0], bl[-1, :]]
    cols += [wl[:, 0], bl[-1, :]]
    vals += [np.full(R, 1 / r_source), np.full(C, 1 / r_sink)]
    return sp.csc_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                         shape=(2 * n, 2 * n))


def splu_effective(g: np.ndarray, rows=None, **r: float) -> np.ndarray:
    """Rows ``rows`` (all by default) of ``G_eff`` of one tile, ``(len(rows), C)``: those
    unit inputs solved on :func:`nodal_matrix` (``r``: the four resistances), the currents
    into the sense amplifiers."""
    R, C = np.shape(g)
    rows = np.arange(R) if rows is None else np.asarray(rows)
    lu = spl.splu(nodal_matrix(g, **r))
    rhs = np.zeros((2 * R * C, len(rows)))
    rhs[rows * C, np.arange(len(rows))] = 1 / r["r_source"]
    x = lu.solve(rhs)
    return x[R * C + (R - 1) * C:].T / r["r_sink"]
