"""``convert(model, spec, seed)``: a copy of a network with its Linear/Conv2d layers on crossbars."""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn as nn

from xbar.neurons import reset_state
from xbar.layers import AnalogConv2d, AnalogLinear, _Analog
from xbar.spec import Spec

_REPLACE = {nn.Linear: AnalogLinear, nn.Conv2d: AnalogConv2d}


def layer_seeds(seed: int, index: int) -> tuple[int, int]:
    """(programming seed, read-noise seed) of the ``index``-th crossbar layer, derived
    from the study seed with numpy's SeedSequence (independent streams)."""
    state = np.random.SeedSequence([seed, index]).generate_state(4, dtype=np.uint32)
    mask = (1 << 63) - 1
    return (int(state[0]) << 32 | int(state[1])) & mask, (int(state[2]) << 32 | int(state[3])) & mask


def crossbar_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The ``(name, module)`` pairs of the Linear/Conv2d layers that :func:`convert` maps."""
    return [(n, m) for n, m in model.named_modules() if type(m) in _REPLACE]


def analog_layers(hw: nn.Module) -> list[tuple[str, _Analog]]:
    """The ``(name, module)`` crossbar layers of a converted network."""
    return [(n, m) for n, m in hw.named_modules() if isinstance(m, _Analog)]


def _check(model: nn.Module, spec: Spec, seed: int, trials: int) -> list[tuple[str, nn.Module]]:
    if not isinstance(model, nn.Module):
        raise TypeError(f"convert: model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(spec, Spec):
        raise TypeError(f"convert: spec must be an xbar.Spec, got {type(spec).__name__}")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"convert: seed = {seed!r} is not allowed: must be an integer >= 0")
    if not isinstance(trials, int) or isinstance(trials, bool) or trials < 1:
        raise ValueError(f"convert: trials = {trials!r} is not allowed: must be an integer >= 1")
    layers = crossbar_layers(model)
    if not layers:
        raise ValueError(f"convert: model {type(model).__name__} has no nn.Linear or nn.Conv2d "
                         "layer to put on crossbars")
    for name, m in layers:
        for pname, p in (("weight", m.weight), ("bias", m.bias)):
            if p is not None and not torch.isfinite(p).all():
                raise ValueError(f"convert: layer {name!r} has non-finite (NaN or inf) values in "
                                 f"its {pname}: weights must be finite")
    return layers


def convert(model: nn.Module, spec: Spec, seed: int = 0, *, trials: int = 1) -> nn.Module:
    """Return a deep copy of ``model`` whose ``nn.Linear`` and ``nn.Conv2d`` layers are
    programmed crossbars (the original is untouched).

    Each layer's tiles are programmed once here, ``trials`` times (independent Monte
    Carlo programmings, carried in the batch: see :mod:`xbar.layers`), from seeds derived
    from ``seed`` and the layer's position.  The copy is in eval mode.  The neuron state of
    ``model`` is reset (as between two samples); its weights are not touched.
    """
    layers = _check(model, spec, seed, trials)
    reset_state(model)  # neuron state may hold autograd history, which cannot be copied
    hw = copy.deepcopy(model)
    by_name = dict(hw.named_modules())
    for index, (name, _) in enumerate(layers):
        original = by_name[name]
        analog = _REPLACE[type(original)](original, spec, trials=trials, seeds=layer_seeds(int(seed), index))
        parent_name, _, child = name.rpartition(".")
        setattr(by_name[parent_name] if parent_name else hw, child, analog)
    hw.xbar_spec = spec
    hw.xbar_trials = trials
    return hw.eval()
