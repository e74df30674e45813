"""How the simulator sees spiking neurons and resets a network, for any SNN library.

A spiking network keeps its neuron state inside its modules between calls (one call =
one timestep).  The simulator needs two things of it:

- ``reset_state(model)`` clears the state between samples: it calls ``reset()`` on
  every module that has one (xbar's own neurons, SpikingJelly's memory modules) and
  ``reset_mem()`` where that exists (snntorch).
- a *neuron* is a module with a membrane tensor attribute ``mem`` (xbar, snntorch) or
  ``v`` (SpikingJelly); its forward output is its spikes; ``threshold`` (or
  ``v_threshold``) is used to express membrane divergence in units of threshold.
"""

from __future__ import annotations

import torch
import torch.nn as nn

_MEM_ATTRS = ("mem", "v")
_THRESHOLD_ATTRS = ("threshold", "v_threshold")


def reset_state(model: nn.Module) -> None:
    for m in model.modules():
        for attr in ("reset", "reset_mem"):
            fn = getattr(m, attr, None)
            if callable(fn):
                fn()
                break


def _is_neuron(m: nn.Module) -> bool:
    return any(a in vars(m) or a in getattr(m, "_buffers", {}) for a in _MEM_ATTRS)


def is_neuron(m: nn.Module) -> bool:
    return _is_neuron(m)


def membrane(m: nn.Module) -> torch.Tensor | None:
    for a in _MEM_ATTRS:
        t = getattr(m, a, None)
        if isinstance(t, torch.Tensor):
            return t
    return None


def threshold(m: nn.Module) -> float:
    for a in _THRESHOLD_ATTRS:
        t = getattr(m, a, None)
        if isinstance(t, (int, float)) and t > 0:
            return float(t)
        if isinstance(t, torch.Tensor) and t.numel() == 1 and float(t) > 0:
            return float(t)
    return 1.0
