"""How the simulator sees spiking neurons, for xbar's own networks and for snntorch,
SpikingJelly and norse models.

A spiking network is driven one timestep per call.  The simulator needs four things of
it, found here without naming any library's neuron classes one by one:

``reset_state(model)``
    clears the state between samples: ``reset()`` on every module that has one (xbar's
    neurons, SpikingJelly's memory modules), else ``reset_mem()`` (snntorch).
``neuron_reading(module, output)``
    whether a module that has just run is a neuron, and then its spikes and membrane.
    A neuron is a module that keeps a membrane tensor (``mem``: xbar, snntorch; ``v``:
    SpikingJelly, whose state lives in ``_memories``) or returns one in a state
    (norse: ``(z, state)`` with ``state.v``, possibly nested, as in ``LIFRefracCell``).
    Its spikes are its output, or the first element of a tuple output (snntorch's
    ``(spk, mem)``, norse's ``(z, state)``), of the membrane's shape or pooled from it
    inside the module (snntorch's ``SConv2dLSTM(max_pool=2)``: spikes ``[N, C, H/2,
    W/2]`` of a membrane ``[N, C, H, W]``).
``threshold(module)``
    ``threshold`` (xbar, snntorch; ``delta_threshold`` for snntorch's ``DeltaLeaky``),
    ``v_threshold`` (SpikingJelly) or ``p.v_th`` (norse); ``None`` for neurons without
    one (leaky integrators).
``multi_step_reason(module)``
    why a module cannot be driven one step per call (it takes a whole sequence), or
    ``None``.
"""

from __future__ import annotations

import torch
import torch.nn as nn

_MEM_ATTRS = ("mem", "v")


def reset_state(model: nn.Module) -> None:
    """Clear the neuron state of every module of ``model`` (between two samples)."""
    for m in model.modules():
        for attr in ("reset", "reset_mem"):
            fn = getattr(m, attr, None)
            if callable(fn):
                fn()
                break


def _state_membrane(state) -> torch.Tensor | None:
    """``v`` of a norse state (a namedtuple), searched depth first through nested states."""
    if not hasattr(state, "_fields"):
        return None
    v = getattr(state, "v", None)
    if isinstance(v, torch.Tensor):
        return v
    for part in state:
        found = _state_membrane(part)
        if found is not None:
            return found
    return None


def _attr_membrane(module: nn.Module) -> torch.Tensor | None:
    memories = getattr(module, "_memories", None)  # SpikingJelly's MemoryModule
    for a in _MEM_ATTRS:
        if a in vars(module) or a in module._buffers or (memories is not None and a in memories):
            t = getattr(module, a, None)
            if isinstance(t, torch.Tensor):
                return t
    return None


def kept_membrane(module: nn.Module, args: tuple) -> torch.Tensor | None:
    """The membrane ``module`` holds between steps as it is called with ``args``: its own
    (xbar, snntorch, SpikingJelly), or that of the state it is handed (norse's ``(x,
    state)``); ``None`` for a module that keeps none, or before its first step."""
    if len(args) > 1:
        membrane = _state_membrane(args[1])
        if membrane is not None:
            return membrane
    return _attr_membrane(module)


def neuron_reading(module: nn.Module, output) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(spikes, membrane)`` of ``module`` right after it returned ``output``, or
    ``None`` when it is not a neuron (no membrane tensor kept or returned)."""
    spikes = output[0] if isinstance(output, (tuple, list)) and output else output
    if not isinstance(spikes, torch.Tensor):
        return None
    membrane = None
    if isinstance(output, (tuple, list)) and len(output) == 2:
        membrane = _state_membrane(output[1])  # norse
    if membrane is None:
        membrane = _attr_membrane(module)
    if membrane is None:
        return None
    if spikes.dim() == membrane.dim() + 1 and spikes.shape[0] == 1:
        spikes = spikes[0]  # SpikingJelly multi-step, driven with sequences of length 1
    if membrane.shape != spikes.shape and not _pooled(spikes, membrane):
        return None
    return spikes, membrane


def _pooled(spikes: torch.Tensor, membrane: torch.Tensor) -> bool:
    """Spikes pooled inside the neuron (snntorch's ``SConv2dLSTM(max_pool=...)``): the same
    samples and channels as the membrane, each spatial size a divisor of the membrane's."""
    return (spikes.dim() == membrane.dim() >= 3 and spikes.shape[:2] == membrane.shape[:2]
            and all(0 < s < m and m % s == 0 for s, m in zip(spikes.shape[2:], membrane.shape[2:])))


def _param_threshold(p):
    """``v_th`` of norse parameters, searched through nested ones (``p.lif.v_th``)."""
    found = getattr(p, "v_th", None)
    if found is not None or not hasattr(p, "_fields"):
        return found
    for part in p:
        found = _param_threshold(part)
        if found is not None:
            return found
    return None


def threshold(module: nn.Module) -> float | torch.Tensor | None:
    """The firing threshold (a number, or a tensor broadcasting against the membrane)."""
    candidates = [getattr(module, a, None) for a in ("delta_threshold", "threshold", "v_threshold")]
    candidates.append(_param_threshold(getattr(module, "p", None)))
    for t in candidates:
        if isinstance(t, bool) or t is None:
            continue
        if isinstance(t, (int, float)) and t > 0:
            return float(t)
        if isinstance(t, torch.Tensor) and t.numel() >= 1 and bool((t > 0).all()):
            return float(t.detach()) if t.numel() == 1 else t.detach()
    return None


# Modules that take a whole sequence per call (time as the first dimension), by the
# qualified name of the class or of a base class, with what to use instead.
_SEQUENCE_MODULES = {
    "snntorch._neurons.leakyparallel.LeakyParallel": "snntorch.Leaky",
    "snntorch._neurons.stateleaky.StateLeaky": "snntorch.Leaky",
    "snntorch._neurons.associative.AssociativeLeaky": "snntorch.Leaky",
    "norse.torch.module.snn.SNN": "its *Cell version (for example norse.torch.LIFCell)",
    "norse.torch.module.snn.SNNRecurrent": "its *RecurrentCell version",
    "norse.torch.module.lift.Lift": "the lifted module itself",
    "spikingjelly.activation_based.neuron.psn.PSN": "a neuron that keeps a membrane (IFNode, LIFNode)",
    "spikingjelly.activation_based.neuron.psn.MaskedPSN": "a neuron that keeps a membrane (IFNode, LIFNode)",
    "spikingjelly.activation_based.neuron.dsr.DSRIFNode": "IFNode",
    "spikingjelly.activation_based.neuron.dsr.DSRLIFNode": "LIFNode",
    "spikingjelly.activation_based.neuron.lif_variants.GatedLIFNode": "LIFNode",
}


def multi_step_reason(module: nn.Module) -> str | None:
    """Why ``module`` cannot run one timestep per call, or ``None``."""
    for cls in type(module).__mro__:
        instead = _SEQUENCE_MODULES.get(f"{cls.__module__}.{cls.__qualname__}")
        if instead is not None:
            return (f"{type(module).__module__}.{type(module).__name__} takes a whole sequence "
                    f"per call (time as the first dimension), but xbar drives a network one "
                    f"timestep per call: use {instead} instead")
    return None
