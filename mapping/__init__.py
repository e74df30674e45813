"""How does a weight matrix become conductances on fixed-size arrays?

Pure functions, with an exact inverse in the ideal case (:func:`unmap_layout`):

- :mod:`mapping.scale`: signed weights to conductances, as differential pairs
  (``G+ - G-``) or against an offset (reference) column;
- :mod:`mapping.quantize`: conductances to a device's programmable levels;
- :mod:`mapping.tiling`: a matrix into tiles of ``rows x cols`` and back;
- :mod:`mapping.layout`: all three together, a layer's weights to the conductance
  targets of its tiles and back;
- :mod:`mapping.conv`: conv layers as matrix products by unfolding.

Orientation: a crossbar matrix is ``(in_features, out_features)``: inputs drive rows
(wordlines), outputs are read on columns (bitlines).
"""

from mapping.conv import conv_matrix, fold_output, unfold_input
from mapping.layout import SCHEMES, WEIGHT_SCALES, TileLayout, layout_weights, unmap_layout
from mapping.quantize import quantize_levels
from mapping.scale import encode_differential, encode_offset, offset_reference
from mapping.tiling import tile_matrix, untile_matrix

__all__ = [
    "SCHEMES", "WEIGHT_SCALES", "TileLayout", "layout_weights", "unmap_layout", "quantize_levels",
    "encode_differential", "encode_offset", "offset_reference",
    "tile_matrix", "untile_matrix", "conv_matrix", "unfold_input", "fold_output",
]
