"""Driving a network one timestep per call, the way its library expects.

Three ways, chosen from the model itself:

``"single"``    ``out = model(x)``: xbar's own networks, snntorch, SpikingJelly in
                single-step mode (``step_mode='s'``).
``"sequence"``  SpikingJelly in multi-step mode (``step_mode='m'`` on any module): each
                step is a sequence of length 1, ``model(x[None])[0]``; the neurons keep
                their state between calls, so this equals one multi-step call on the
                whole sequence.
``"state"``     norse: the forward takes ``(x, state)`` and returns ``(out, state)``
                (``SequentialState``, a single cell); the state is kept here between
                steps and cleared by :meth:`Stepper.reset`.

A module that takes a whole sequence per call (snntorch ``LeakyParallel``, norse
``LIF``, SpikingJelly ``PSN``) cannot be driven step by step: it is refused, with what
to use instead (:func:`check_steppable`).
"""

from __future__ import annotations

import inspect
from typing import Callable

import torch
import torch.nn as nn

from xbar.neurons import multi_step_reason


def check_steppable(model: nn.Module, who: str) -> None:
    """Refuse a model holding a module that takes a whole sequence per call."""
    for name, m in model.named_modules():
        reason = multi_step_reason(m)
        if reason is not None:
            raise ValueError(f"{who}: module {name or type(model).__name__!r}: {reason}")


def step_mode(model: nn.Module) -> str:
    """``"sequence"``, ``"state"`` or ``"single"`` (see the module docstring)."""
    if any(getattr(m, "step_mode", None) == "m" for m in model.modules()):
        return "sequence"
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return "single"
    return "state" if "state" in params else "single"


# How the outputs of steps 1..t give the prediction at step t (xbar.simulate's readout).
READOUTS = ("sum", "max", "last")


def readout_step(acc: torch.Tensor | None, out: torch.Tensor, how: str) -> torch.Tensor:
    """The readout after one more step: ``acc`` (``None`` before the first) and the
    step's output ``out`` combined as ``how`` says (one of :data:`READOUTS`)."""
    if acc is None or how == "last":
        return out
    return acc + out if how == "sum" else torch.maximum(acc, out)


def first_output(out):
    """The step's output: the first element of a tuple (snntorch's ``(spk, mem)``)."""
    return out[0] if isinstance(out, (tuple, list)) and out else out


class Stepper:
    """Calls ``model`` one timestep at a time, keeping what its library returns."""

    def __init__(self, model: nn.Module, reset: Callable[[nn.Module], None]) -> None:
        self.model, self._reset = model, reset
        self.mode = step_mode(model)
        self.state = None

    def reset(self) -> None:
        self._reset(self.model)
        self.state = None

    def __call__(self, x: torch.Tensor):
        if self.mode == "state":
            out = self.model(x, self.state)
            if not (isinstance(out, tuple) and len(out) == 2):
                raise ValueError(f"simulate: {type(self.model).__name__}.forward takes a 'state' "
                                 "argument, so it is driven as a norse module, but it did not "
                                 f"return (output, state): it returned {type(out).__name__}")
            out, self.state = out
            return first_output(out)
        if self.mode == "sequence":
            out = first_output(self.model(x.unsqueeze(0)))
            if not isinstance(out, torch.Tensor) or out.dim() < 1 or out.shape[0] != 1:
                shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                raise ValueError("simulate: the model is in SpikingJelly's multi-step mode, so "
                                 "each step is fed as a sequence of length 1 ([1, batch, ...]), "
                                 f"but its output has shape {shape}, not [1, batch, classes]")
            return out[0]
        return first_output(self.model(x))


class DataFlow:
    """Which crossbar layers each neuron's input depends on, in one step: each layer's
    output is replaced by a marked copy (a leaf of the autograd graph, same values), and a
    neuron's inputs are followed back through their autograd graph to the marks, not past
    another neuron's spikes."""

    def __init__(self) -> None:
        self.marks: dict[int, str] = {}  # id of a marked leaf -> its layer
        self.keep: list = []  # the marked leaves and neuron outputs, alive while ids are used
        self.stops: set[int] = set()  # the autograd nodes of neurons' spikes
        self.fed_by: dict[str, set[str]] = {}

    def mark(self, name: str, out):
        if (not isinstance(out, torch.Tensor) or not out.is_floating_point() or torch.is_inference_mode_enabled()
                or out.is_inference()):  # no autograd graph to follow: the order rule
            return None
        leaf = out.detach().requires_grad_()
        self.marks[id(leaf)] = name
        self.keep.append(leaf)
        return leaf.clone()  # not a leaf itself: in-place operations after it stay allowed

    def neuron_ran(self, name: str, inputs, out) -> None:
        found = self.fed_by.setdefault(name, set())
        found |= self.reached(t for t in inputs if isinstance(t, torch.Tensor))
        spikes = out[0] if isinstance(out, (tuple, list)) else out
        if isinstance(spikes, torch.Tensor) and spikes.grad_fn is not None:
            self.stops.add(id(spikes.grad_fn))
            self.keep.append(spikes)

    def reached(self, tensors) -> set[str]:
        stack = [t.grad_fn for t in tensors if t.grad_fn is not None]
        seen, layers = set(), set()
        while stack:
            fn = stack.pop()
            if fn is None or id(fn) in seen or id(fn) in self.stops:
                continue
            seen.add(id(fn))
            variable = getattr(fn, "variable", None)  # an AccumulateGrad: a leaf
            if variable is not None and id(variable) in self.marks:
                layers.add(self.marks[id(variable)])
            stack.extend(f for f, _ in fn.next_functions)
        return layers
