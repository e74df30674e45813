"""``convert(model, spec, seed)``: a copy of a network with its Linear/Conv2d layers on crossbars.

Which layers go onto crossbars: every module that *is* an ``nn.Linear`` or
``nn.Conv2d`` (``isinstance``: subclasses such as SpingJelly's ``layer.Linear`` and
``layer.Conv2d``, parametrized layers such as ``weight_norm``'s, user subclasses) and
whose forward computes exactly ``x W^T + b`` (or the convolution) with its effective
weight, checked on a random input.  A subclass whose forward computes something else,
a grouped convolution, and every other module holding a weight matrix (``Conv1d``,
norse's recurrent cells, ...) stay digital, computed ideally, and the conversion report
says so and why; a warning names them.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from xbar.checks import check_count, check_part, model_dtype
from xbar.membrane import leak_hooks
from xbar.memory import keep_freed_memory, release_freed_memory
from xbar.layers import AnalogConv2d, AnalogLinear, _Analog, _conv_padding
from xbar.neurons import reset_state
from xbar.spec import Spec
from xbar.stepping import check_steppable


def layer_seeds(seed: int, index: int) -> tuple[int, int]:
    """(programming seed, read-noise seed) of the ``index``-th crossbar layer, derived
    from the study seed with numpy's SeedSequence (independent streams)."""
    state = np.random.SeedSequence([seed, index]).generate_state(4, dtype=np.uint32)
    mask = (1 << 63) - 1
    return (int(state[0]) << 32 | int(state[1])) & mask, (int(state[2]) << 32 | int(state[3])) & mask


def _probe_input(m: nn.Module, dtype: torch.dtype) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    if isinstance(m, nn.Linear):
        return torch.rand(3, m.in_features, generator=gen, dtype=dtype)
    extent = [d * (k - 1) + 1 + s for d, k, s in zip(m.dilation, m.kernel_size, m.stride)]
    return torch.rand(2, m.in_channels, *extent, generator=gen, dtype=dtype)


def _reference(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    if isinstance(m, nn.Linear):
        return F.linear(x, m.weight, m.bias)
    return F.conv2d(x, m.weight, m.bias, m.stride, _conv_padding(m), m.dilation)


def _unmapped_reason(m: nn.Module) -> str | None:
    """Why the Linear/Conv2d ``m`` cannot go onto crossbars as it is, or ``None``."""
    if isinstance(m, nn.Conv2d):
        if m.groups != 1:
            return f"grouped convolution (groups = {m.groups}); crossbars take groups = 1"
        if m.padding_mode != "zeros":
            return f"padding_mode = {m.padding_mode!r}; crossbars take 'zeros'"
        try:
            _conv_padding(m)
        except ValueError as err:
            return str(err)
    w = m.weight
    if not torch.isfinite(w).all() or (m.bias is not None and not torch.isfinite(m.bias).all()):
        return None  # refused by name in _check_layers
    x = _probe_input(m, w.dtype).to(w.device)
    sequence = getattr(m, "step_mode", None) == "m"  # SpikingJelly multi-step: [T, N, ...]
    with torch.no_grad():
        try:
            out = m(x.unsqueeze(0) if sequence else x)
        except Exception as err:  # noqa: BLE001 - any failure means we cannot vouch for it
            return f"its forward failed on a probe input ({type(err).__name__}: {err})"
        out = out[0] if sequence and isinstance(out, torch.Tensor) else out
        ref = _reference(m, x)
    if not isinstance(out, torch.Tensor) or out.shape != ref.shape or not torch.allclose(
            out, ref, rtol=1e-4, atol=1e-5 * float(ref.abs().max().clamp_min(1e-30))):
        kind = "x W^T + b" if isinstance(m, nn.Linear) else "the convolution of its weight"
        return (f"its forward ({type(m).__qualname__}) does not compute {kind} with its weight "
                "(checked on a random input)")
    return None


@dataclass(frozen=True)
class LayerRow:
    """One row of a conversion report."""

    name: str
    kind: str
    on_crossbars: bool
    detail: str


class ConversionReport(tuple):
    """The layers of a converted network: which went onto crossbars, which did not, why.

    A tuple of :class:`LayerRow`; ``str()`` gives a table."""

    def __str__(self) -> str:
        rows = [("layer", "type", "where", "detail")]
        rows += [(r.name, r.kind, "crossbars" if r.on_crossbars else "digital (ideal)", r.detail)
                 for r in self]
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)

    @property
    def left_ideal(self) -> list[LayerRow]:
        return [r for r in self if not r.on_crossbars]


def _kind(m: nn.Module) -> str:
    return f"{type(m).__module__.split('.')[0]}.{type(m).__qualname__}"


def _plan(model: nn.Module) -> tuple[list[tuple[str, nn.Module]], ConversionReport]:
    """The layers :func:`convert` maps, and the report of every weight-holding module."""
    mapped, rows, inside = [], [], set()
    for name, m in model.named_modules():
        if not isinstance(m, (nn.Linear, nn.Conv2d)):
            continue
        inside.add(name)
        reason = _unmapped_reason(m)
        if reason is None:
            mapped.append((name, m))
            shape = f"{m.in_features}->{m.out_features}" if isinstance(m, nn.Linear) else \
                f"{m.in_channels}->{m.out_channels}, kernel {tuple(m.kernel_size)}"
            rows.append(LayerRow(name, _kind(m), True, shape))
        else:
            rows.append(LayerRow(name, _kind(m), False, reason))
    for name, m in model.named_modules():
        if name in inside or any(name.startswith(n + ".") for n in inside if n):
            continue
        own = [f"{pn} {tuple(p.shape)}" for pn, p in m.named_parameters(recurse=False) if p.dim() >= 2]
        if own:
            what = ", ".join(own)
            rows.append(LayerRow(name, _kind(m), False,
                                 f"holds {what}; only nn.Linear and nn.Conv2d go onto crossbars"))
    order = {n: i for i, (n, _) in enumerate(model.named_modules())}
    return mapped, ConversionReport(sorted(rows, key=lambda r: order[r.name]))


def crossbar_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The ``(name, module)`` pairs of the layers that :func:`convert` puts on crossbars."""
    return _plan(model)[0]


def analog_layers(hw: nn.Module) -> list[tuple[str, _Analog]]:
    """The ``(name, module)`` crossbar layers of a converted network."""
    return [(n, m) for n, m in hw.named_modules() if isinstance(m, _Analog)]


def _check(model: nn.Module, spec: Spec, seed: int, trials: int) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"convert: model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(spec, Spec):
        raise TypeError(f"convert: spec must be an xbar.Spec, got {type(spec).__name__}")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"convert: seed = {seed!r} is not allowed: must be an integer >= 0")
    check_count("convert", "trials", trials)
    check_steppable(model, "convert")
    model_dtype(model, "convert")


def _check_layers(layers, report: ConversionReport, model: nn.Module) -> None:
    if not layers:
        why = "; ".join(f"{r.name}: {r.detail}" for r in report.left_ideal)
        raise ValueError(f"convert: model {type(model).__name__} has no layer that can go onto "
                         f"crossbars (nn.Linear or nn.Conv2d computing its plain product)"
                         f"{': ' + why if why else ''}")
    for name, m in layers:
        for pname, p in (("weight", m.weight), ("bias", m.bias)):
            if p is not None and not torch.isfinite(p).all():
                raise ValueError(f"convert: layer {name!r} has non-finite (NaN or inf) values in "
                                 f"its {pname}: weights must be finite")


def convert(model: nn.Module, spec: Spec, seed: int = 0, *, trials: int = 1,
            progress: bool = False, only: range | None = None) -> nn.Module:
    """Return a deep copy of ``model`` whose ``nn.Linear`` and ``nn.Conv2d`` layers are
    programmed crossbars (the original is untouched).

    Each layer's tiles are programmed once here, ``trials`` times (independent Monte
    Carlo programmings, carried in the batch: see :mod:`xbar.layers`), from seeds derived
    from ``seed`` and the layer's position.  The copy is in eval mode.  The neuron state of
    ``model`` is reset (as between two samples); its weights are not touched.

    ``hw.xbar_report`` (a :class:`ConversionReport`; ``print`` it) lists every layer
    holding weights: on crossbars, or left digital (computed ideally) and why.  Layers
    left digital are also named in a warning.  ``progress``: a progress bar over the layers.

    ``only``: program only these of the ``trials`` (a ``range``), a part of a Monte Carlo
    run to spread over machines: each is programmed, calibrated and read as in the whole
    run (every programming draw is made for all ``trials``, and each trial's per-read
    noise and calibration draws come from streams of its own), so that the parts'
    results, joined along ``trial`` (:func:`xbar.simulate` numbers them from
    ``only.start``), are the whole run's.
    """
    _check(model, spec, seed, trials)
    check_part("convert", only, trials)
    keep_freed_memory()
    layers, report = _plan(model)
    _check_layers(layers, report, model)
    reset_state(model)  # neuron state may hold autograd history, which cannot be copied
    hw = copy.deepcopy(model)
    by_name = dict(hw.named_modules())
    what = f"{trials} trials" if only is None else f"trials {only.start}-{only.stop - 1} of {trials}"
    for index, (name, original) in enumerate(tqdm(layers, desc=f"program {what}", unit="layer",
                                                  disable=not progress, leave=False)):
        twin = by_name[name]
        kind = AnalogLinear if isinstance(original, nn.Linear) else AnalogConv2d
        analog = kind(twin, spec, trials=trials, seeds=layer_seeds(int(seed), index), only=only)
        parent_name, _, child = name.rpartition(".")
        setattr(by_name[parent_name] if parent_name else hw, child, analog)
    if report.left_ideal:
        warnings.warn("convert: these layers stay digital (computed ideally), not on crossbars:\n  "
                      + "\n  ".join(f"{r.name} ({r.kind}): {r.detail}" for r in report.left_ideal),
                      stacklevel=2)
    leak_hooks(hw, spec, skip=[m for m in hw.modules() if isinstance(m, _Analog)])  # analog neurons' leakage
    hw.xbar_spec = spec
    hw.xbar_trials = trials if only is None else len(only)
    hw.xbar_first_trial = 0 if only is None else only.start
    hw.xbar_report = report
    release_freed_memory()  # programming's temporaries, in sizes the reads do not reuse
    return hw.eval()
