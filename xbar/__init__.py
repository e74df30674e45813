"""What does the analog hardware compute, step by step?

    spec  = xbar.Spec(tile=(64, 64), device=devices.presets["pcm"], adc_bits=6)
    hw    = xbar.convert(trained_snn, spec, seed=0)
    xbar.calibrate(hw, trained_snn, x_train[:64], timesteps=8)    # per-tile gain and offset
    trace = xbar.simulate(hw, trained_snn, loader, timesteps=8)   # -> xarray.Dataset

Hardware-aware training (xbar.aware): ``with xbar.HardwareAware(snn, spec, seed=0) as hw:``
train as usual, calling ``hw.new_batch()`` before each batch.
"""

from xbar.aware import Aware, HardwareAware
from xbar.calibrate import calibrate
from xbar.circuit import effective_conductance, effective_matrix, first_order_matrix, solve_crossbar
from xbar.network import analog_layers, convert, crossbar_layers, layer_seeds
from xbar.layers import AnalogConv2d, AnalogLinear
from xbar.nirgraph import from_nir
from xbar.neurons import reset_state
from xbar.simulate import simulate
from xbar.spec import Spec
from xbar.tile import ProgrammedMatrix

__all__ = ["Spec", "Aware", "HardwareAware", "convert", "calibrate", "simulate", "from_nir", "reset_state", "AnalogLinear", "AnalogConv2d",
           "ProgrammedMatrix", "effective_conductance", "analog_layers",
           "crossbar_layers", "layer_seeds", "solve_crossbar", "effective_matrix", "first_order_matrix"]
