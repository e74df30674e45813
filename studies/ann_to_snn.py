"""ANN-to-SNN conversion: train a ReLU network, turn it into an integrate-and-fire SNN.

The ANN (:func:`build_ann`) has the architecture of the surrogate models (``mlp``,
``conv``, and the literature's ``vgg9``, ``vgg11``, ``resnet18`` for 3x32x32 images, with
:mod:`studies.models`' layouts) or a small VGG-style or residual conv net (``vgg``,
``resnet``), with average pooling instead of max pooling (an average of spike trains is
the spike train of an average).

Conversion (:func:`convert_ann`), rate coding with reset by subtraction:

- each activation becomes an IF neuron (:class:`studies.models.LIF` with ``beta = 1``)
  whose threshold is the activation's scale ``theta``: a high percentile of the ANN's
  activations on training images (99.9th by default: robust normalisation, Rueckauer et
  al., Frontiers in Neuroscience 2017), or the trained clipping level ``lambda`` of a
  clip-floor-shift activation;
- the next layer's weights are multiplied by the incoming ``theta`` (a spike stands for
  ``theta``), so every crossbar input after the first layer stays a spike;
- BatchNorm right after a conv or linear layer is folded into its weights and bias
  (exact in evaluation mode); any other BatchNorm stays a digital per-channel affine map
  applied at every timestep;
- a residual add (as in SEW-ResNet, Fang et al., NeurIPS 2021, but of currents) adds the
  block's input spikes times their ``theta``, digitally, before the block's last neuron;
  a projection shortcut (a 1x1 convolution and BatchNorm, where the block changes the
  shape) is a crossbar layer of its own on the block's input spikes, folded as any other.

Refinements that cut the timesteps a converted network needs, both from Bu et al., "Optimal
ANN-SNN conversion for high-accuracy and ultra-low-latency spiking neural networks", ICLR
2022:

- the quantisation clip-floor-shift (QCFS) activation during ANN training,
  ``lambda * clip(floor(x L / lambda + 1/2) / L, 0, 1)`` with ``L`` levels and a trained
  ``lambda`` (``levels`` in :class:`ConversionConfig`);
- an initial membrane potential of half the threshold (``init = 0.5``).

``weight_bits`` trains with weights fake-quantised to that many bits (symmetric, per layer,
straight-through gradient), for reduced-precision converted SNNs.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace

import torch
import torch.nn as nn
import torch.nn.functional as F

from devices import validation as v
from studies.data import Dataset, check_dataset, class_round_robin, dataset_tag, load_dataset
from studies.models import LIF, RESNET18_STAGES, VGG_PLANS, vgg_layers
from studies.train import (TrainingOptions, cache_dir, config_dict, config_key, evaluate, fit, load_cached,
                           save_cached, train_snn)

ANN_ARCHITECTURES = ("mlp", "conv", "vgg", "resnet", "vgg9", "vgg11", "resnet18")


class _RoundSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return torch.floor(x + 0.5)

    @staticmethod
    def backward(ctx, grad):
        return grad


class Activation(nn.Module):
    """ReLU (``levels=None``) or QCFS with ``levels`` steps and a trained clip ``lam``."""

    def __init__(self, levels: int | None = None, lam: float = 4.0) -> None:
        super().__init__()
        self.levels = levels
        self.lam = nn.Parameter(torch.tensor(float(lam))) if levels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.levels is None:
            return F.relu(x)
        q = _RoundSTE.apply(x * self.levels / self.lam)
        return self.lam * q.clamp(0, self.levels) / self.levels


class QuantLinear(nn.Linear):
    """A linear layer whose forward uses weights fake-quantised to ``bits``."""

    bits: int | None = None

    def forward(self, x):
        return F.linear(x, quantize_weight(self.weight, self.bits), self.bias)


class QuantConv2d(nn.Conv2d):
    bits: int | None = None

    def forward(self, x):
        return self._conv_forward(x, quantize_weight(self.weight, self.bits), self.bias)


def quantize_weight(w: torch.Tensor, bits: int | None) -> torch.Tensor:
    """Symmetric per-layer uniform quantisation to ``2**(bits-1) - 1`` levels each side,
    with a straight-through gradient; ``bits=None`` leaves ``w`` as it is."""
    if bits is None:
        return w
    top = 2 ** (bits - 1) - 1
    scale = w.detach().abs().max().clamp_min(1e-12) / top
    return w + (torch.round(w / scale).clamp(-top, top) * scale - w).detach()


class Residual(nn.Module):
    """``act(body(x) + shortcut(x))``: a residual block whose add precedes its last
    activation; the shortcut is the identity, or a projection (``nn.Sequential`` of a 1x1
    convolution and a BatchNorm) where the block changes the shape."""

    def __init__(self, body: nn.Sequential, act: nn.Module, shortcut: nn.Sequential | None = None) -> None:
        super().__init__()
        self.body, self.act, self.shortcut = body, act, shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + (x if self.shortcut is None else self.shortcut(x)))


class Scaled(nn.Module):
    """``factor * x``: the identity shortcut of a converted block (a spike stands for
    its ``theta``), digital."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.factor * x

    def extra_repr(self) -> str:
        return f"factor={self.factor:.4g}"


class SpikingResidual(nn.Module):
    """The converted block: ``neuron(body(s) + shortcut(s))``, the add done digitally;
    the shortcut :class:`Scaled` by the input's ``theta``, or the folded projection."""

    def __init__(self, body: nn.Sequential, neuron: LIF, shortcut: nn.Module) -> None:
        super().__init__()
        self.body, self.neuron, self.shortcut = body, neuron, shortcut

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return self.neuron(self.body(s) + self.shortcut(s))


class ChannelAffine(nn.Module):
    """A BatchNorm that could not be folded: ``x * scale + shift`` per channel, digital."""

    def __init__(self, bn: nn.BatchNorm2d | nn.BatchNorm1d) -> None:
        super().__init__()
        scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
        self.register_buffer("scale", scale)
        self.register_buffer("shift", bn.bias.detach() - bn.running_mean * scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return x * self.scale.view(shape) + self.shift.view(shape)


def _lin(n_in, n_out, bits):
    layer = QuantLinear(n_in, n_out)
    layer.bits = bits
    return layer


def _conv(c_in, c_out, bits, bias=True, kernel=3, stride=1):
    layer = QuantConv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=bias)
    layer.bits = bits
    return layer


def _ann_resnet18(in_shape, n_classes, act, bits) -> nn.Sequential:
    """:func:`studies.models.resnet18`'s layout with ``act``: a 3x3 stem, four stages of two
    basic blocks, projection shortcuts where the shape changes, average pooling, fc."""
    def block(c_in, c_out, stride):
        body = nn.Sequential(_conv(c_in, c_out, bits, bias=False, stride=stride), nn.BatchNorm2d(c_out), act(),
                             _conv(c_out, c_out, bits, bias=False), nn.BatchNorm2d(c_out))
        shortcut = None
        if stride != 1 or c_in != c_out:
            shortcut = nn.Sequential(_conv(c_in, c_out, bits, bias=False, kernel=1, stride=stride),
                                     nn.BatchNorm2d(c_out))
        return Residual(body, act(), shortcut)

    layers: list[nn.Module] = [_conv(in_shape[0], 64, bits, bias=False), nn.BatchNorm2d(64), act()]
    c_in = RESNET18_STAGES[0]
    for i, c_out in enumerate(RESNET18_STAGES):
        for j in range(2):
            layers.append(block(c_in, c_out, 2 if i > 0 and j == 0 else 1))
            c_in = c_out
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), _lin(c_in, n_classes, bits))


def build_ann(arch: str, in_shape: tuple[int, ...], n_classes: int, levels: int | None = None,
              weight_bits: int | None = None) -> nn.Sequential:
    """A ReLU (or QCFS) network; ``mlp``, ``conv``, ``vgg9``, ``vgg11`` and ``resnet18``
    mirror :mod:`studies.models`."""
    c, h, w = in_shape
    act = lambda: Activation(levels)  # noqa: E731
    if arch in VGG_PLANS:  # average pooling (rounding up) where the surrogate network pools by maximum
        return vgg_layers(in_shape, n_classes, *VGG_PLANS[arch],
                          conv=lambda a, b: [_conv(a, b, weight_bits, bias=False), nn.BatchNorm2d(b)], act=act,
                          pool=lambda: nn.AvgPool2d(2, ceil_mode=True), linear=lambda a, b: _lin(a, b, weight_bits))
    if arch == "resnet18":
        return _ann_resnet18(in_shape, n_classes, act, weight_bits)
    if arch == "mlp":
        return nn.Sequential(nn.Flatten(), _lin(c * h * w, 256, weight_bits), act(),
                             _lin(256, 128, weight_bits), act(), _lin(128, n_classes, weight_bits))
    if arch == "conv":
        return nn.Sequential(_conv(c, 16, weight_bits), act(), nn.AvgPool2d(2),
                             _conv(16, 32, weight_bits), act(), nn.AvgPool2d(2), nn.Flatten(),
                             _lin(32 * (h // 4) * (w // 4), 128, weight_bits), act(),
                             _lin(128, n_classes, weight_bits))
    if arch == "vgg":
        def block(a, b):
            return [_conv(a, b, weight_bits, bias=False), nn.BatchNorm2d(b), act()]
        return nn.Sequential(*block(c, 32), *block(32, 32), nn.AvgPool2d(2),
                             *block(32, 64), *block(64, 64), nn.AvgPool2d(2), nn.Flatten(),
                             _lin(64 * (h // 4) * (w // 4), 128, weight_bits), act(),
                             _lin(128, n_classes, weight_bits))
    if arch == "resnet":
        def res(ch):
            body = nn.Sequential(_conv(ch, ch, weight_bits, bias=False), nn.BatchNorm2d(ch), act(),
                                 _conv(ch, ch, weight_bits, bias=False), nn.BatchNorm2d(ch))
            return Residual(body, act())
        return nn.Sequential(_conv(c, 16, weight_bits, bias=False), nn.BatchNorm2d(16), act(), res(16),
                             nn.AvgPool2d(2), _conv(16, 32, weight_bits, bias=False), nn.BatchNorm2d(32),
                             act(), res(32), nn.AvgPool2d(2), nn.Flatten(),
                             _lin(32 * (h // 4) * (w // 4), n_classes, weight_bits))
    raise ValueError(f"arch = {arch!r} is not allowed: must be one of {list(ANN_ARCHITECTURES)}")


# --- thresholds -------------------------------------------------------------------------

@torch.no_grad()
def activation_thresholds(ann: nn.Module, x: torch.Tensor, percentile: float = 99.9,
                          max_values: int = 2_000_000) -> dict[str, float]:
    """``theta`` of every :class:`Activation` (by module name): ``lam`` for QCFS, else the
    ``percentile`` of its outputs on ``x`` (a strided subsample of at most ``max_values``)."""
    acts = {name: m for name, m in ann.named_modules() if isinstance(m, Activation)}
    seen: dict[str, torch.Tensor] = {}
    hooks = [m.register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, o.detach()))
             for name, m in acts.items() if m.levels is None]
    ann.eval()
    ann(x)
    for h in hooks:
        h.remove()
    out = {}
    for name, m in acts.items():
        if m.levels is not None:
            out[name] = float(m.lam.abs())
            continue
        flat = seen[name].flatten()
        flat = flat[:: max(1, len(flat) // max_values)]
        out[name] = max(float(torch.quantile(flat.double(), percentile / 100.0)), 1e-6)
    return out


# --- conversion --------------------------------------------------------------------------

def _fold(layer: nn.Module, bn: nn.Module | None, scale_in: float) -> nn.Module:
    """A plain ``nn.Linear``/``nn.Conv2d`` with the (quantised) weights times ``scale_in``
    and the following BatchNorm folded in."""
    w = quantize_weight(layer.weight.detach(), getattr(layer, "bits", None)) * scale_in
    b = layer.bias.detach() if layer.bias is not None else torch.zeros(w.shape[0], dtype=w.dtype, device=w.device)
    if bn is not None:
        k = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
        w = w * k.view(-1, *([1] * (w.dim() - 1)))
        b = (b - bn.running_mean) * k + bn.bias.detach()
    like = {"dtype": w.dtype, "device": w.device}  # the ANN's float width: a float64 ANN stays float64
    if isinstance(layer, nn.Conv2d):
        out = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, stride=layer.stride,
                        padding=layer.padding, dilation=layer.dilation, groups=layer.groups, **like)
    else:
        out = nn.Linear(layer.in_features, layer.out_features, **like)
    with torch.no_grad():
        out.weight.copy_(w)
        out.bias.copy_(b)
    return out


def _convert_seq(seq: nn.Sequential, theta: dict[str, float], prefix: str, scale_in: float,
                 init: float) -> tuple[nn.Sequential, float]:
    mods = list(seq.named_children())
    out, i = [], 0
    while i < len(mods):
        name, m = mods[i]
        full = f"{prefix}{name}"
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nxt = mods[i + 1][1] if i + 1 < len(mods) else None
            bn = nxt if isinstance(nxt, (nn.BatchNorm1d, nn.BatchNorm2d)) else None
            out.append(_fold(m, bn, scale_in))
            scale_in = 1.0  # currents are now in activation units
            i += 2 if bn is not None else 1
            continue
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            out.append(ChannelAffine(m))
        elif isinstance(m, Activation):
            out.append(LIF(beta=1.0, threshold=theta[full], init=init))
            scale_in = theta[full]
        elif isinstance(m, Residual):
            body, _ = _convert_seq(m.body, theta, f"{full}.body.", scale_in, init)
            shortcut = (Scaled(scale_in) if m.shortcut is None
                        else _convert_seq(m.shortcut, theta, f"{full}.shortcut.", scale_in, init)[0])
            t = theta[f"{full}.act"]
            out.append(SpikingResidual(body, LIF(beta=1.0, threshold=t, init=init), shortcut))
            scale_in = t
        elif isinstance(m, (nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Flatten, nn.Identity, nn.Dropout)):
            out.append(copy.deepcopy(m))
        else:
            raise ValueError(f"convert_ann: layer {full!r} ({type(m).__name__}) has no spiking "
                             "counterpart: use Linear, Conv2d, BatchNorm, Activation, AvgPool2d, "
                             "AdaptiveAvgPool2d, Flatten or Residual")
        i += 1
    return nn.Sequential(*out), scale_in


def convert_ann(ann: nn.Sequential, x_calib: torch.Tensor, percentile: float = 99.9,
                init: float = 0.5) -> nn.Sequential:
    """The IF SNN of ``ann`` (one timestep per call; outputs summed over steps are the
    class scores), thresholds from activations on ``x_calib``."""
    theta = activation_thresholds(ann, x_calib, percentile)
    snn, _ = _convert_seq(ann, theta, "", 1.0, init)
    return snn.eval()


# --- training and cache -------------------------------------------------------------------

@dataclass(frozen=True)
class FineTune(TrainingOptions):
    """A few epochs of surrogate-gradient BPTT on the converted SNN, through ``timesteps``
    steps at a small learning rate; hardware-aware and with robustness options as
    :class:`studies.train.TrainingOptions` says."""

    epochs: int = 2
    timesteps: int = 16
    batch_size: int = 64
    lr: float = 1e-4
    seed: int = 0

    def __post_init__(self) -> None:
        o = "FineTune"
        v.int_at_least(o, "epochs", self.epochs, 1)
        v.int_at_least(o, "timesteps", self.timesteps, 1)
        v.int_at_least(o, "batch_size", self.batch_size, 1)
        v.positive(o, "lr", self.lr)
        v.int_at_least(o, "seed", self.seed, 0)
        self.check_options(o)


@dataclass(frozen=True)
class ConversionConfig:
    """How a converted SNN is made: the ANN's training, the conversion, and an optional
    fine-tuning of the SNN (``fine_tune``).  Changing any field retrains (the cache is
    keyed by all of them)."""

    dataset: str = "mnist5k"
    arch: str = "conv"
    levels: int | None = None
    weight_bits: int | None = None
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    seed: int = 0
    percentile: float = 99.9
    init: float = 0.5
    calibration: int = 1000
    fine_tune: FineTune | None = None

    def __post_init__(self) -> None:
        o = "ConversionConfig"
        if self.fine_tune is not None and not isinstance(self.fine_tune, FineTune):
            v.fail(o, "fine_tune", self.fine_tune, "must be a studies.ann_to_snn.FineTune, or None")
        check_dataset(o, self.dataset)
        v.one_of(o, "arch", self.arch, ANN_ARCHITECTURES)
        v.int_at_least(o, "levels", self.levels, 1, optional=True)
        v.int_at_least(o, "weight_bits", self.weight_bits, 2, optional=True)
        v.int_at_least(o, "epochs", self.epochs, 1)
        v.int_at_least(o, "batch_size", self.batch_size, 1)
        v.positive(o, "lr", self.lr)
        v.int_at_least(o, "seed", self.seed, 0)
        if not 50.0 <= self.percentile <= 100.0:
            v.fail(o, "percentile", self.percentile, "must be in [50, 100]")
        if not 0.0 <= self.init < 1.0:
            v.fail(o, "init", self.init, "must be in [0, 1)")
        v.int_at_least(o, "calibration", self.calibration, 1)

    def key(self) -> str:
        return config_key(self)


def convert_trained(ann: nn.Sequential, data: Dataset, config: ConversionConfig | None = None) -> nn.Sequential:
    """The trained ``ann`` converted as ``config`` says (default :class:`ConversionConfig`'s
    fields), its activation scales from ``config.calibration`` training images of every
    class in turn: the training sets are stored by class, so the first 1,000 of mnist5k
    are the digits 0, 1 and 2 only."""
    config = config or ConversionConfig()
    return convert_ann(ann, data.x_train[class_round_robin(data.y_train)[: config.calibration]],
                       config.percentile, config.init)


def _new_ann(config: ConversionConfig, data: Dataset) -> nn.Sequential:
    with torch.random.fork_rng():
        torch.manual_seed(config.seed)
        return build_ann(config.arch, data.image_shape, data.n_classes, config.levels, config.weight_bits)


@torch.no_grad()
def ann_accuracy(ann: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 500) -> float:
    ann.eval()
    hits = sum(int((ann(x[i : i + batch_size]).argmax(-1) == y[i : i + batch_size]).sum())
               for i in range(0, len(x), batch_size))
    return hits / len(x)


def train_ann(config: ConversionConfig, data: Dataset, progress: bool = True) -> nn.Sequential:
    """Adam with a one-cycle learning rate, cross-entropy, ``epochs`` passes."""
    return fit(_new_ann(config, data), data, lambda m, x, y: F.cross_entropy(m(x), y),
               epochs=config.epochs, batch_size=config.batch_size, lr=config.lr, seed=config.seed,
               desc=f"train ANN {config.arch} on {config.dataset}", progress=progress)


def load_or_convert(config: ConversionConfig, timesteps: int | None = 32, progress: bool = True,
                    data: Dataset | None = None) -> tuple[nn.Sequential, nn.Sequential, dict]:
    """``(snn, ann, info)``: the ANN from the cache if it holds one for exactly ``config``
    (else trained and saved there with its configuration), converted.  ``info`` has the
    configuration, the ANN's test accuracy and the SNN's after ``timesteps`` steps (not
    measured with ``timesteps=None``)."""
    data = data or load_dataset(config.dataset)
    ann_config = replace(config, fine_tune=None)  # the ANN does not depend on the fine-tuning
    path = cache_dir() / f"ann-{config.arch}-{dataset_tag(config.dataset)}-{ann_config.key()}.pt"
    ann = _new_ann(config, data)
    saved = load_cached(path, ann_config)
    if saved is not None:
        ann.load_state_dict(saved["state_dict"])
    else:
        ann = train_ann(config, data, progress)
        save_cached(path, ann_config, ann, {"config": config_dict(ann_config)})
    cached = saved is not None
    ann.eval()
    snn = convert_trained(ann, data, config)
    if config.fine_tune is not None:
        snn = _fine_tuned(snn, config, data, progress)
    info = {"config": config_dict(config), "ann_test_accuracy": ann_accuracy(ann, data.x_test, data.y_test),
            "snn_test_accuracy": (None if timesteps is None
                                  else evaluate(snn, data.x_test, data.y_test, timesteps)),
            "snn_timesteps": timesteps, "path": str(path), "cached": cached}
    return snn, ann, info


def _fine_tuned(snn: nn.Sequential, config: ConversionConfig, data: Dataset, progress: bool) -> nn.Sequential:
    """The converted ``snn`` fine-tuned as ``config.fine_tune`` says: from the cache if it
    holds it for exactly ``config``, else trained and saved there."""
    tune = config.fine_tune
    path = cache_dir() / f"snn-{config.arch}-{dataset_tag(config.dataset)}-{config.key()}.pt"
    saved = load_cached(path, config)
    if saved is not None:
        snn.load_state_dict(saved["state_dict"])
        return snn.eval()
    kind = "hardware-aware " if tune.hardware is not None else ""
    snn = train_snn(snn, data, tune, tune.timesteps, tune.epochs,
                    desc=f"fine-tune {kind}converted {config.arch}", progress=progress)
    save_cached(path, config, snn, {"config": config_dict(config)})
    return snn.eval()
