"""Spiking networks: single-step LIF neurons with a surrogate gradient, and two
architectures (an MLP and a small conv net).

A network takes one timestep per call and keeps its neuron state inside; the input is
the image itself at every step (direct encoding: the first layer sees analog pixel
values, every later layer sees binary spikes).  The output layer has no neuron: its
currents, summed over the steps, are the class scores.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from devices import validation as v


class SpikeFn(torch.autograd.Function):
    """Heaviside spike; fast-sigmoid surrogate gradient ``1 / (1 + slope |u|)^2``
    (SuperSpike, Zenke & Ganguli, Neural Computation 2018)."""

    @staticmethod
    def forward(ctx, u: torch.Tensor, slope: float) -> torch.Tensor:
        ctx.save_for_backward(u)
        ctx.slope = slope
        return (u >= 0).to(u.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (u,) = ctx.saved_tensors
        return grad / (1 + ctx.slope * u.abs()) ** 2, None


class LIF(nn.Module):
    """Leaky integrate-and-fire, one step per call: ``mem = beta * mem + x``; a spike when
    ``mem >= threshold``, then reset by subtraction.  ``reset()`` clears the state; the
    membrane starts at ``init * threshold``.  ``beta = 1`` is integrate-and-fire."""

    def __init__(self, beta: float = 0.9, threshold: float = 1.0, slope: float = 5.0,
                 init: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"LIF.beta = {beta!r} is not allowed: must be in [0, 1]")
        v.positive("LIF", "threshold", threshold)
        if not 0.0 <= init < 1.0:
            raise ValueError(f"LIF.init = {init!r} is not allowed: must be in [0, 1)")
        self.beta, self.threshold, self.slope, self.init = beta, float(threshold), slope, init
        self.mem: torch.Tensor | None = None
        # A list while training with a membrane margin: each step's potential before the
        # spike, in thresholds from the threshold, ``(mem - threshold) / threshold``.
        self.record: list | None = None

    def reset(self) -> None:
        self.mem = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.is_grad_enabled():
            return self._infer(x)
        mem = x + self.init * self.threshold if self.mem is None else self.beta * self.mem + x
        if self.record is not None:
            self.record.append((mem - self.threshold) / self.threshold)
        spk = SpikeFn.apply(mem - self.threshold, self.slope)
        self.mem = mem - spk * self.threshold
        return spk

    def _infer(self, x: torch.Tensor) -> torch.Tensor:
        """The same numbers, bit for bit, with fewer temporaries: ``mem - thr >= 0`` is
        ``mem >= thr`` in floating point, and ``spk * thr`` is exactly 0 or ``thr``."""
        mem = x + self.init * self.threshold if self.mem is None else (self.mem * self.beta).add_(x)
        spk = (mem >= self.threshold).to(mem.dtype)
        self.mem = mem.sub_(spk * self.threshold)
        return spk

    def extra_repr(self) -> str:
        return f"beta={self.beta}, threshold={self.threshold:.4g}, init={self.init}"


def mlp(in_shape: tuple[int, ...], n_classes: int, hidden: tuple[int, ...] = (256, 128),
        beta: float = 0.9) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Flatten()]
    n = int(torch.tensor(in_shape).prod())
    for h in hidden:
        layers += [nn.Linear(n, h), LIF(beta)]
        n = h
    layers.append(nn.Linear(n, n_classes))
    return nn.Sequential(*layers)


def conv_net(in_shape: tuple[int, ...], n_classes: int, channels: tuple[int, int] = (16, 32),
             hidden: int = 128, beta: float = 0.9) -> nn.Sequential:
    """conv3x3-LIF-maxpool2, conv3x3-LIF-maxpool2, fc-LIF, fc.  Max pooling of spikes keeps
    every crossbar input binary."""
    c, h, w = in_shape
    c1, c2 = channels
    flat = c2 * (h // 4) * (w // 4)
    return nn.Sequential(
        nn.Conv2d(c, c1, 3, padding=1), LIF(beta), nn.MaxPool2d(2),
        nn.Conv2d(c1, c2, 3, padding=1), LIF(beta), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(flat, hidden), LIF(beta), nn.Linear(hidden, n_classes),
    )


ARCHITECTURES = {"mlp": mlp, "conv": conv_net}


def build(arch: str, in_shape: tuple[int, ...], n_classes: int) -> nn.Sequential:
    if arch not in ARCHITECTURES:
        raise ValueError(f"arch = {arch!r} is not allowed: must be one of {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[arch](in_shape, n_classes)
