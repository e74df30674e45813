"""The crossbar circuit: from programmed conductances to the matrix a read applies.

With ideal wires (no wire, source or sink resistance) the output currents are exactly
``I = v @ G``, so the effective conductance matrix is ``G`` itself.  With linear devices
the circuit stays linear in ``v`` whatever the wire resistances, so a tile computes its
effective matrix once per programmed state and every read is one matrix product; the
exact nodal solve of the reference circuit plugs in here (issue "Exact IR drop").
"""

from __future__ import annotations

import torch


def effective_conductance(g: torch.Tensor) -> torch.Tensor:
    """Effective conductance ``(..., rows, cols)`` of tiles ``g`` with ideal wires: ``g``."""
    return g
