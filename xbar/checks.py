"""What the simulator checks of its inputs before it does any work.

Every refusal names what was wrong, the value, and what to do; nothing here guesses.
"""

from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np
import torch
import torch.nn as nn

_FLOATS = (torch.float32, torch.float64)


def check_count(who: str, name: str, value) -> None:
    """``value`` must be an integer >= 1 (timesteps, trials): a ValueError naming it."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{who}: {name} = {value!r} is not allowed: must be an integer >= 1")


def check_part(who: str, only, trials: int) -> range:
    """``only``: ``None`` (every trial) or a range of consecutive trials within ``0 ..
    trials - 1`` (a part of a Monte Carlo run); returned as a range."""
    if only is None:
        return range(trials)
    if not (isinstance(only, range) and only.step == 1 and 0 <= only.start < only.stop <= trials):
        raise ValueError(f"{who}: only = {only!r} is not allowed: must be a range of consecutive trials "
                         f"within range(0, {trials})")
    return only


def model_dtype(model: nn.Module, who: str) -> torch.dtype:
    """The floating dtype of ``model``'s parameters and buffers; float16/bfloat16 refused."""
    dtypes = {t.dtype for t in list(model.parameters()) + list(model.buffers()) if t.is_floating_point()}
    if not dtypes:
        return torch.get_default_dtype()
    bad = sorted(str(d) for d in dtypes if d not in _FLOATS)
    if bad:
        raise ValueError(f"{who}: the model holds {', '.join(bad)} tensors; xbar simulates in "
                         "float32 or float64: call model.float() (or .double()) first")
    if len(dtypes) > 1:
        raise ValueError(f"{who}: the model mixes {sorted(str(d) for d in dtypes)}: convert it "
                         "to one dtype (model.float() or model.double())")
    return dtypes.pop()


def _tensor(a, what: str) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        return a
    if isinstance(a, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(a))
    raise TypeError(f"simulate: {what} must be a torch.Tensor or a numpy array, got "
                    f"{type(a).__name__}")


def check_batch(x, y, dtype: torch.dtype, where: str = "") -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)`` as tensors: ``x`` float ``[N, ...]`` (cast to the model's dtype), ``y``
    integer class indices ``[N]``."""
    x, y = _tensor(x, f"x{where}"), _tensor(y, f"y{where}")
    if x.dim() < 1 or len(x) == 0:
        raise ValueError(f"simulate: x{where} has shape {tuple(x.shape)}: it must be [samples, ...] "
                         "with at least one sample")
    if not x.is_floating_point():
        raise ValueError(f"simulate: x{where} has dtype {x.dtype}: inputs must be floating point, "
                         "scaled to the DAC's range [0, Spec.input_range] (e.g. pixels / 255)")
    if y.dim() == 2 and y.shape[1] == 1:
        raise ValueError(f"simulate: labels y{where} have shape {tuple(y.shape)}: pass one class "
                         "index per sample, shape [N] (y.squeeze(1))")
    if y.dim() == 2:
        raise ValueError(f"simulate: labels y{where} have shape {tuple(y.shape)} (one-hot or "
                         "scores?): pass one class index per sample, shape [N] (y.argmax(1))")
    if y.dim() != 1:
        raise ValueError(f"simulate: labels y{where} have shape {tuple(y.shape)}: they must be "
                         "one class index per sample, shape [N]")
    if y.is_floating_point() or y.dtype == torch.bool or y.is_complex():
        raise ValueError(f"simulate: labels y{where} have dtype {y.dtype}: they must be integer "
                         "class indices (y.long())")
    if len(x) != len(y):
        raise ValueError(f"simulate: x{where} has {len(x)} samples but y{where} has {len(y)} "
                         "labels: they must have one label per sample (x is [samples, ...], "
                         "not [time, samples, ...]: give time-varying inputs with encoder=)")
    if y.numel() and int(y.min()) < 0:
        raise ValueError(f"simulate: labels y{where} hold {int(y.min())}: class indices must be >= 0")
    if not torch.isfinite(x).all():
        raise ValueError(f"simulate: x{where} holds NaN or inf values")
    return x.to(dtype), y.long()


def batches(data, dtype: torch.dtype, batch_size: int = 256) -> Iterable:
    """Checked ``(x, y)`` batches from one ``(x, y)`` pair (tuple or list of two tensors or
    arrays) or from an iterable of such pairs (a DataLoader)."""
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(
            isinstance(a, (torch.Tensor, np.ndarray)) for a in data):
        x, y = check_batch(*data, dtype)
        return [(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(x), batch_size)]
    if isinstance(data, (torch.Tensor, np.ndarray)):
        raise TypeError("simulate: data is a single array: pass (x, y), inputs and labels")
    if not isinstance(data, Iterable):
        raise TypeError(f"simulate: data must be an (x, y) pair or an iterable of (x, y) "
                        f"batches (a DataLoader), got {type(data).__name__}")
    return _checked(data, dtype)


def _checked(data: Iterable, dtype: torch.dtype) -> Iterator:
    for i, batch in enumerate(data):
        if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
            raise TypeError(f"simulate: batch {i} of data is a {type(batch).__name__}"
                            f"{f' of {len(batch)} items' if isinstance(batch, (tuple, list)) else ''}: "
                            "each batch must be an (x, y) pair")
        yield check_batch(*batch, dtype, where=f" (batch {i})")


def check_step_output(out, batch: int, y: torch.Tensor, mode: str) -> int:
    """The number of classes, after checking that one step's output is ``[batch, classes]``
    and that every label is a class index of it."""
    if not isinstance(out, torch.Tensor):
        raise ValueError(f"simulate: one step of the model returned {type(out).__name__}: it must "
                         "return a tensor [batch, classes] (or a tuple whose first element is one)")
    shape = tuple(out.shape)
    if out.dim() == 3 and shape[1] == batch and mode != "sequence":
        raise ValueError(f"simulate: one call of the model returned shape {shape}, which looks like "
                         f"[time, batch, classes]: its forward runs its own time loop (as in "
                         "snntorch's tutorials). xbar calls the model once per timestep and keeps "
                         "the neuron state in the neurons: write forward for one step (no loop; "
                         "snntorch neurons with init_hidden=True, or reset with "
                         "xbar.reset_state), and pass timesteps= to simulate")
    if out.dim() != 2 or shape[0] != batch:
        raise ValueError(f"simulate: one step of the model returned shape {shape} for a batch of "
                         f"{batch}: it must be [batch, classes] = [{batch}, classes]")
    top = int(y.max()) if y.numel() else 0
    if top >= shape[1]:
        raise ValueError(f"simulate: label {top} is not a class of the model's output, which has "
                         f"{shape[1]} classes (0..{shape[1] - 1})")
    return shape[1]
