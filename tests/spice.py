"""Netlists of the reference crossbar circuit, run by ngspice in batch mode (test helper)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np

NGSPICE = shutil.which("ngspice")


def netlist(g: np.ndarray, v: np.ndarray, r_wire_row: float, r_wire_col: float,
            r_source: float, r_sink: float) -> str:
    """SPICE text of the circuit; zero source/sink resistances become 0 V sources/shorts."""
    R, C = g.shape
    lines = ["* xbar reference crossbar"]
    for i in range(R):
        lines.append(f"V{i} in{i} 0 DC {v[i]:.17g}")
        if r_source > 0:
            lines.append(f"RS{i} in{i} a{i}_0 {r_source:.17g}")
        else:
            lines.append(f"VS{i} in{i} a{i}_0 DC 0")
        for j in range(C - 1):
            lines.append(f"RW{i}_{j} a{i}_{j} a{i}_{j + 1} {r_wire_row:.17g}")
        for j in range(C):
            lines.append(f"RD{i}_{j} a{i}_{j} b{i}_{j} {1.0 / g[i, j]:.17g}")
    for j in range(C):
        for i in range(R - 1):
            lines.append(f"RB{i}_{j} b{i}_{j} b{i + 1}_{j} {r_wire_col:.17g}")
        # sense amplifier: a 0 V source whose current is the output
        if r_sink > 0:
            lines.append(f"RK{j} b{R - 1}_{j} s{j} {r_sink:.17g}")
            lines.append(f"VO{j} s{j} 0 DC 0")
        else:
            lines.append(f"VO{j} b{R - 1}_{j} 0 DC 0")
    lines += [".options reltol=1e-9 abstol=1e-18 vntol=1e-12", ".op", ".control", "op"]
    lines += [f"print i(VO{j})" for j in range(C)]
    lines += [".endc", ".end"]
    return "\n".join(lines) + "\n"


def run(g, v, workdir: Path, **r) -> np.ndarray:
    """Output currents (A) into the sense nodes, from ngspice."""
    path = Path(workdir) / "xbar.cir"
    path.write_text(netlist(np.asarray(g), np.asarray(v), **r))
    out = subprocess.run([NGSPICE, "-b", str(path)], capture_output=True, text=True, timeout=600)
    values = {int(m.group(1)): float(m.group(2)) for m in
              re.finditer(r"i\(vo(\d+)\)\s*=\s*([-+0-9.eE]+)", out.stdout, re.IGNORECASE)}
    C = np.asarray(g).shape[1]
    if len(values) != C:
        raise RuntimeError(f"ngspice gave {len(values)} of {C} currents:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    # SPICE reports the current flowing into the source's + terminal (node -> 0): that is
    # the current into the sense node.
    return np.array([values[j] for j in range(C)])
