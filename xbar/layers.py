"""Crossbar-backed ``nn.Module``s: drop-in replacements for ``nn.Linear`` and ``nn.Conv2d``.

Monte Carlo trials ride in the batch: a module programmed with ``trials = K`` takes a
batch of ``K * B`` samples laid out trial-major (samples ``k*B .. k*B + B - 1`` are read
by trial ``k``'s programming).  With ``K = 1`` they are used like the layers they replace.
``only``: a part of the ``K`` trials, programmed and read as the whole run does them
(:func:`xbar.convert`).
The bias is added digitally after the ADC (with analog neurons, a current into the
membrane: :mod:`xbar.membrane`).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from mapping.conv import conv_matrix, conv_output_size, fold_output, unfold_input
from xbar.membrane import neuron_gains
from xbar.spec import Spec
from xbar.streams import ProgrammingDraws
from xbar.tile import ProgrammedMatrix


class _Analog(nn.Module):
    """Shared state: the programmed matrix, the float weights, the recording hook."""

    def _setup(self, original: nn.Module, matrix_w: torch.Tensor, spec: Spec, trials: int,
               seeds: tuple[int, int], only: range | None) -> None:
        weight, bias = original.weight, original.bias
        self.spec = spec
        self.register_buffer("weight", weight.detach().clone())
        if hasattr(original, "step_mode"):  # SpikingJelly's, kept for its step-mode tools
            self.step_mode = original.step_mode
        self.register_buffer("bias", None if bias is None else bias.detach().clone())
        self.matrix = ProgrammedMatrix(matrix_w.detach(), spec, trials=trials,
                                       program_seed=seeds[0], read_seed=seeds[1], only=only)
        self.trials = self.matrix.trials
        self._neuron_gains: dict = {}  # analog neurons' gains, per output shape (xbar.membrane)
        # When True, each forward also stores the ideal output for the same input, and the
        # output map of the bias alone (the output of a zero input), ``[1, ...]``.
        self.record_ideal = False
        self.last_ideal: torch.Tensor | None = None
        self.last_bias: torch.Tensor | None = None

    def _neurons(self, y: torch.Tensor) -> torch.Tensor:
        """What the analog neurons make of the layer's output ``y`` ``(K * B, ...)``, its read
        and bias: each neuron's gain (:func:`xbar.membrane.neuron_gains`), drawn once per
        chip for every trial of the run and output shape; ``y`` itself for digital
        neurons or ideal analog ones."""
        m = self.matrix
        shape = tuple(y.shape[1:])
        if shape not in self._neuron_gains:
            gen = ProgrammingDraws.from_seed(m.program_seed, y.device).neurons
            gains = neuron_gains((m.all_trials, *shape), self.spec, gen, y.dtype)
            self._neuron_gains[shape] = None if gains is None else gains[m.part]
        gains = self._neuron_gains[shape]
        if gains is None:
            return y
        k = len(m.active_trials)
        gains = gains[m.active_trials.start : m.active_trials.stop]
        return (y.reshape(k, -1, *shape) * gains.unsqueeze(1)).reshape(y.shape)

    def _trial_view(self, x: torch.Tensor) -> torch.Tensor:
        k = len(self.matrix.active_trials)
        if x.shape[0] % k:
            raise ValueError(f"{type(self).__name__}: batch of {x.shape[0]} samples is not a "
                             f"multiple of the {k} trials it serves (batches are trial-major)")
        return x.reshape(k, -1, x.shape[-1])

    @property
    def time_first(self) -> bool:
        """A SpikingJelly multi-step layer: it takes ``[T, N, ...]`` (the simulator feeds T = 1)."""
        return getattr(self, "step_mode", None) == "m"

    def _one_step(self, x: torch.Tensor) -> torch.Tensor:
        """Drop the time dimension of a multi-step layer's ``[1, N, ...]`` input."""
        if not self.time_first:
            return x
        if x.shape[0] != 1:
            raise ValueError(f"{type(self).__name__}: a multi-step input of {x.shape[0]} timesteps; "
                             "crossbar layers are driven one timestep per call ([1, N, ...])")
        return x[0]

    def record(self, x: torch.Tensor) -> None:
        """Record the inputs a read of ``x`` would (``matrix.record``), without the read
        (:func:`xbar.calibrate`: the layer being fitted)."""
        self.matrix.record(self._trial_view(self._read_rows(self._one_step(x))))

    def record_then_ideal(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`record`, then the ideal output instead of a read (:func:`xbar.calibrate`,
        the layer being fitted in a feed-forward network, whose outputs only reach layers
        that run ideal)."""
        self.record(x)
        y = self.ideal_forward(self._one_step(x))
        return y.unsqueeze(0) if self.time_first else y

    def ideal_drawing_past(self, x: torch.Tensor) -> torch.Tensor:
        """The ideal output of ``x``, drawing past what recording its read would draw when
        the matrix records (:func:`xbar.calibrate`: the layers after the one being fitted)."""
        step = self._one_step(x)
        if self.matrix.recording is not None:
            self.matrix.draw_past(self._rows_per_trial(step) * self.matrix.reads_per_input(step))
        y = self.ideal_forward(step)
        return y.unsqueeze(0) if self.time_first else y

    def reads_per_sample(self, x: torch.Tensor) -> int:
        """Crossbar reads (input rows) one sample of the input ``x`` makes."""
        step = self._one_step(x)
        return self._read_count(step) // step.shape[0]

    def _rows_per_trial(self, x: torch.Tensor) -> int:
        return self._read_count(x) // len(self.matrix.active_trials)

    def _maybe_record(self, x: torch.Tensor) -> None:
        self.last_ideal = self.ideal_forward(x) if self.record_ideal else None
        with_bias = self.record_ideal and self.bias is not None
        self.last_bias = self.ideal_forward(torch.zeros_like(x[:1])) if with_bias else None


class AnalogLinear(_Analog):
    """``y = x W^T + b`` computed on programmed crossbar tiles."""

    def __init__(self, linear: nn.Linear, spec: Spec, *, trials: int = 1,
                 seeds: tuple[int, int] = (0, 1), only: range | None = None) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self._setup(linear, linear.weight.t(), spec, trials, seeds, only)

    def ideal_forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)

    def _read_rows(self, x: torch.Tensor) -> torch.Tensor:
        """The crossbar inputs of ``x``, one row per read."""
        return x

    def _read_count(self, x: torch.Tensor) -> int:
        return x.numel() // x.shape[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        step = self._one_step(x)
        self._maybe_record(step)
        y = self.matrix(self._trial_view(step)).reshape(*step.shape[:-1], self.out_features)
        y = self._neurons(y if self.bias is None else y + self.bias)
        return y.unsqueeze(0) if self.time_first else y

    def extra_repr(self) -> str:
        m = self.matrix
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"tiles={m.n_r}x{m.n_c} of {m.rows}x{m.cols}, trials={self.trials}")


def _conv_padding(conv: nn.Conv2d) -> tuple[int, int]:
    if conv.padding == "valid":
        return (0, 0)
    if conv.padding == "same":
        total = [d * (k - 1) for d, k in zip(conv.dilation, conv.kernel_size)]
        if any(t % 2 for t in total):
            raise ValueError(f"Conv2d padding='same' with kernel {conv.kernel_size} and dilation "
                             f"{conv.dilation} is asymmetric: use explicit integer padding")
        return tuple(t // 2 for t in total)
    return tuple(conv.padding)


class AnalogConv2d(_Analog):
    """A 2-D convolution computed on crossbars by unfolding: one crossbar read per output
    pixel, rows = ``C_in * kh * kw``, columns = ``C_out``."""

    def __init__(self, conv: nn.Conv2d, spec: Spec, *, trials: int = 1,
                 seeds: tuple[int, int] = (0, 1), only: range | None = None) -> None:
        super().__init__()
        if conv.groups != 1:
            raise ValueError(f"Conv2d groups = {conv.groups} is not supported: only groups=1")
        if conv.padding_mode != "zeros":
            raise ValueError(f"Conv2d padding_mode = {conv.padding_mode!r} is not supported: "
                             "only 'zeros'")
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.kernel_size, self.stride = conv.kernel_size, conv.stride
        self.dilation, self.padding = conv.dilation, _conv_padding(conv)
        self._setup(conv, conv_matrix(conv.weight), spec, trials, seeds, only)

    def ideal_forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.time_first:
            return self._conv(self._one_step(x)).unsqueeze(0)
        return self._conv(x)

    def _read_rows(self, x: torch.Tensor) -> torch.Tensor:
        """The unfolded input: one row per output pixel of every sample, ``(B * L, C kh kw)``."""
        cols = unfold_input(x, self.kernel_size, self.dilation, self.padding, self.stride)
        return cols.reshape(-1, cols.shape[-1])

    def _read_count(self, x: torch.Tensor) -> int:
        h, w = conv_output_size(x.shape[-2], x.shape[-1], self.kernel_size, self.dilation, self.padding,
                                self.stride)
        return x.shape[0] * h * w

    def _conv(self, x: torch.Tensor) -> torch.Tensor:
        self._maybe_record(x)
        out_hw = conv_output_size(x.shape[-2], x.shape[-1], self.kernel_size, self.dilation,
                                  self.padding, self.stride)
        cols = self._read_rows(x)
        b, l = x.shape[0], out_hw[0] * out_hw[1]
        y = self.matrix(self._trial_view(cols))
        y = fold_output(y.reshape(b, l, self.out_channels), out_hw)
        return self._neurons(y if self.bias is None else y + self.bias.view(1, -1, 1, 1))

    def extra_repr(self) -> str:
        m = self.matrix
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, tiles={m.n_r}x{m.n_c} of "
                f"{m.rows}x{m.cols}, trials={self.trials}")
