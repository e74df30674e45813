"""The crossbar circuit: from programmed conductances to the matrix a read applies.

With ideal wires (no wire, source or sink resistance) the output currents are exactly
``I = v @ G``, so the effective conductance matrix is ``G`` itself.  With linear devices
the circuit stays linear in ``v`` whatever the wire resistances, so a tile's effective
matrix is solved once per programmed state (:func:`xbar.crossbar.effective_matrix`)
and every read is one matrix product.
"""

from __future__ import annotations

import torch

from xbar.crossbar import effective_matrix, first_order_matrix

_CHUNK_CELLS = 2**20  # bounds the solver's working memory: tiles per chunk x C x C


def effective_conductance(g: torch.Tensor, spec=None) -> torch.Tensor:
    """Effective conductances ``(..., rows, cols)`` of tiles ``g`` under ``spec``'s circuit.

    Solved in float64, in chunks of tiles, and returned in ``g``'s dtype."""
    if spec is None or not spec.has_ir_drop:
        return g
    flat = g.reshape(-1, *g.shape[-2:]).double()
    solve = effective_matrix if spec.ir_drop_model == "exact" else first_order_matrix
    chunks = [solve(part, r_wire_row=spec.r_wire_row, r_wire_col=spec.r_wire_col,
                    r_source=spec.r_source, r_sink=spec.r_sink)
              for part in flat.split(max(1, _CHUNK_CELLS // g.shape[-1] ** 2))]
    return torch.cat(chunks).reshape(g.shape).to(g.dtype)
