"""Spiking networks: single-step LIF neurons with a surrogate gradient, and the
architectures of the studies: an MLP and a small conv net for the embedded digits, and
the networks of the crossbar-SNN literature for 3x32x32 images (CIFAR-10/100): VGG9 as
SpikeSim's (Moitra et al., TCAD 2023), VGG11 and ResNet-18 in their CIFAR variants
(kuangliu/pytorch-cifar's layouts, each ReLU a LIF).  These run on any image size
(28x28 digits included): their poolings round up, ResNet-18 pools adaptively.

A network takes one timestep per call and keeps its neuron state inside; the input is
the image itself at every step (direct encoding: the first layer sees analog pixel
values, every later layer sees binary spikes).  The output layer has no neuron: its
currents, summed over the steps, are the class scores.
"""

from __future__ import annotations

from typing import Callable

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


def _conv_bn(c_in: int, c_out: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_out)]


def _conv_bn_lif(c_in: int, c_out: int, beta: float, stride: int = 1) -> list[nn.Module]:
    return [*_conv_bn(c_in, c_out, stride), LIF(beta)]


def vgg_layers(in_shape: tuple[int, ...], n_classes: int, plan: tuple, head: tuple[int, ...], *,
               conv: Callable[[int, int], list], act: Callable[[], nn.Module], pool: Callable[[], nn.Module],
               linear: Callable[[int, int], nn.Module]) -> nn.Sequential:
    """A VGG's layers: for each channel count of ``plan`` the modules ``conv(c_in, c_out)``
    (a 3x3 convolution and its BatchNorm) and ``act()``, for each ``"M"`` a 2x2 ``pool()``
    that rounds up (so that the plan fits images smaller than 32x32: 28 -> 14 -> 7 -> 4
    ...); then the fully connected ``head``, ``linear(n_in, width)`` and ``act()`` each,
    and the output layer ``linear(n, n_classes)``.  The surrogate networks here and the
    ANNs of :mod:`studies.ann_to_snn` differ only in these parts."""
    c, h, w = in_shape
    layers: list[nn.Module] = []
    for item in plan:
        if item == "M":
            layers.append(pool())
            h, w = -(-h // 2), -(-w // 2)
        else:
            layers += [*conv(c, item), act()]
            c = item
    layers.append(nn.Flatten())
    n = c * h * w
    for width in head:
        layers += [linear(n, width), act()]
        n = width
    layers.append(linear(n, n_classes))
    return nn.Sequential(*layers)


def _vgg(in_shape: tuple[int, ...], n_classes: int, plan: tuple, head: tuple[int, ...],
         beta: float) -> nn.Sequential:
    """:func:`vgg_layers` with LIF neurons and max pooling: max pooling of spikes keeps
    every crossbar input binary."""
    return vgg_layers(in_shape, n_classes, plan, head,
                      conv=_conv_bn, act=lambda: LIF(beta),
                      pool=lambda: nn.MaxPool2d(2, ceil_mode=True), linear=nn.Linear)


# The VGG layouts, (convolutions and poolings, fully connected widths before the output),
# shared by the surrogate networks here and the ANNs of studies.ann_to_snn.
VGG_PLANS = {
    # SpikeSim's VGG9 (Moitra et al., TCAD 2023)
    "vgg9": ((64, 64, "M", 128, 128, "M", 256, 256, 256, "M"), (1024,)),
    # VGG11 for CIFAR (kuangliu/pytorch-cifar)
    "vgg11": ((64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"), ()),
}
# ResNet-18 for CIFAR: the channels of its four stages of two basic blocks (stride 2 from the second).
RESNET18_STAGES = (64, 128, 256, 512)


def vgg9(in_shape: tuple[int, ...], n_classes: int, beta: float = 0.9) -> nn.Sequential:
    """SpikeSim's VGG9: conv 64-64-pool-128-128-pool-256-256-256-pool, fc 1024, fc classes."""
    return _vgg(in_shape, n_classes, *VGG_PLANS["vgg9"], beta)


def vgg11(in_shape: tuple[int, ...], n_classes: int, beta: float = 0.9) -> nn.Sequential:
    """VGG11 for CIFAR: conv 64-pool-128-pool-256-256-pool-512-512-pool-512-512-pool, fc classes."""
    return _vgg(in_shape, n_classes, *VGG_PLANS["vgg11"], beta)


class BasicBlock(nn.Module):
    """ResNet's basic block, spiking: ``LIF(bn2(conv2(LIF(bn1(conv1(x))))) + shortcut(x))``,
    the shortcut a 1x1 convolution (and BatchNorm) where the shape changes.  The sum of
    two spike-driven currents goes into the second LIF, so every crossbar input stays a
    spike."""

    def __init__(self, c_in: int, c_out: int, stride: int, beta: float) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.lif1 = LIF(beta)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(c_out))
        self.lif2 = LIF(beta)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.lif1(self.bn1(self.conv1(x)))
        return self.lif2(self.bn2(self.conv2(out)) + self.shortcut(x))


def resnet18(in_shape: tuple[int, ...], n_classes: int, beta: float = 0.9) -> nn.Sequential:
    """ResNet-18 for CIFAR: conv 3x3 64 (no max pooling), four stages of two basic blocks
    (64, 128, 256, 512 channels; stride 2 from the second), average pooling to 1x1, fc
    classes.  The pooled spike rates (multiples of 1/16 at 32x32) drive the last layer."""
    c = in_shape[0]
    layers: list[nn.Module] = _conv_bn_lif(c, 64, beta)
    c_in = 64
    for i, c_out in enumerate(RESNET18_STAGES):
        for j in range(2):
            layers.append(BasicBlock(c_in, c_out, 2 if i > 0 and j == 0 else 1, beta))
            c_in = c_out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, n_classes)]
    return nn.Sequential(*layers)


ARCHITECTURES = {"mlp": mlp, "conv": conv_net, "vgg9": vgg9, "vgg11": vgg11, "resnet18": resnet18}


def build(arch: str, in_shape: tuple[int, ...], n_classes: int) -> nn.Sequential:
    if arch not in ARCHITECTURES:
        raise ValueError(f"arch = {arch!r} is not allowed: must be one of {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[arch](in_shape, n_classes)


def set_spiking_thresholds(model: nn.Module, x: torch.Tensor, timesteps: int, rate: float = 0.1) -> list[float]:
    """Give an untrained network spikes in every layer: each LIF's threshold, in the order
    they run, set to the ``1 - rate`` quantile of the currents it receives on ``x`` over
    ``timesteps`` steps (the LIFs before it already set), so that it fires on the order of
    ``rate`` of its neurons per step (more: the membrane integrates).  For benchmarks and seed-scale studies of networks
    without trained weights (``x``: inputs of their own, never the evaluated samples).
    Returns the thresholds."""
    if not 0.0 < rate < 1.0:
        raise ValueError(f"set_spiking_thresholds: rate = {rate!r} is not allowed: must be in (0, 1)")
    lifs = [m for m in model.modules() if isinstance(m, LIF)]
    seen: list[torch.Tensor] = []
    model.eval()
    for lif in lifs:
        seen.clear()
        handle = lif.register_forward_pre_hook(lambda m, inputs: seen.append(inputs[0].detach().flatten()))
        try:
            with torch.no_grad():
                for m in lifs:
                    m.reset()
                for _ in range(timesteps):
                    model(x)
        finally:
            handle.remove()
        currents = torch.cat(seen)
        sample = currents[torch.randperm(len(currents), generator=torch.Generator().manual_seed(0))[:1_000_000]]
        # off the sampled values by a relative 2**-10, so that no current sits exactly at the
        # threshold (where a float rounding of the analog sum would flip the spike)
        lif.threshold = max(float(torch.quantile(sample.double(), 1 - rate)) * (1 + 2**-10), 1e-6)
    for m in lifs:
        m.reset()
    return [m.threshold for m in lifs]
