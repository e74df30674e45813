"""A layer's tiles and their read, written once for evaluation and training.

The pipeline of one crossbar layer, one module per concept:

- :mod:`xbar.tile.columns`: how the layer's columns sit on its tiles, the read columns
  and their decoding into outputs;
- :mod:`xbar.tile.programming`: devices programmed, drifted and seen through the wires;
- :mod:`xbar.tile.converters`: the DAC and the ADC (full scale, errors, codes);
- :mod:`xbar.tile.calibration`: the chip's digital gain and offset, and ADC ranges, fitted
  on its own reads;
- :mod:`xbar.tile.matrix`: :class:`ProgrammedMatrix`, the programmed layer that
  evaluation reads (Monte Carlo trials batched, read in chunks).

Hardware-aware training (:mod:`xbar.aware`) programs and reads through the same
functions, with gradients.
"""

from xbar.tile.matrix import ProgrammedMatrix

__all__ = ["ProgrammedMatrix"]
