"""Hardware-aware training: the crossbar of an :class:`xbar.Spec` in the forward pass.

:class:`HardwareAware` attaches to a network and, while attached, replaces the forward
of every layer that :func:`xbar.convert` puts on crossbars (each ``nn.Linear`` and
``nn.Conv2d``) by what the tiles of the spec would read, as a differentiable function of
the layer's weights and inputs.  The weights stay the network's own parameters: train
as usual (surrogate-gradient BPTT), call :meth:`HardwareAware.new_batch` before each
batch, and evaluate the trained network with ``xbar.convert`` like any other.

Each ingredient is switched on its own (:class:`Aware`), so that a study can tell which
one buys the accuracy; one that the spec does not have stays off:

``variation``
    the programmed state, programmed by evaluation's own function
    (:func:`xbar.tile.programming.program_tiles`): conductance levels, programming
    variation, stuck-at faults and drift, drawn again for every batch.  Gradient:
    through the programmed conductances (straight through the levels' rounding; none
    for a stuck device).  Bit-sliced weights (``Spec.cell_bits``) are the mapping, read
    whatever the ingredients (each slice's columns, shifted and added), their digits'
    rounding straight through (each slice a ``1 / slices`` share of the weight's
    gradient); a sliced spec has ``variation`` (its cells' levels) even on an ideal device.
    With analog neurons, their capacitors' and thresholds' spread, drawn with the
    programming, and their capacitors' leakage (:mod:`xbar.membrane`).
``read_noise``
    the static share drawn with the programming; the per-read share drawn at every read
    (every timestep), column noise exact in distribution as in evaluation, with its
    AR(1) correlation between the reads of one batch (:func:`xbar.tile.read.ar1`).
    Gradient: through the noise's standard deviation as well.
``adc``
    the DAC's rounding of the inputs and each tile-row's ADC, through evaluation's
    functions (:mod:`xbar.tile.converters`, :func:`xbar.tile.read.tile_row_read`): the
    full scale (the nominal tile's worst case; with ``calibration`` on, set from each
    read's column currents at ``Spec.adc_percentile`` as evaluation sets it from the
    calibration's), the converters' gain and offset errors (drawn with the programming)
    and noise (at every conversion), the clip and the rounding to codes.
    Gradient: straight through the rounding, zero beyond the clip.
``ir_drop``
    the effective conductances.  With ``Spec.ir_drop_model="exact"``: the programmed
    conductances times each device's attenuation in the nominal tile (the circuit solved
    on the targets, again every ``ir_refresh`` batches), exact at the nominal state;
    gradient through the conductances, the attenuation held.  With ``"first_order"``:
    :func:`xbar.circuit.first_order_matrix` of the programmed conductances, with its
    exact gradient.  With ``Spec.ir_drop_compensation``: evaluation's pre-distorted
    targets, their ratio to the mapped ones held.
``calibration``
    the ADC ranges (above), the digital offset (the read with every input off) and gain
    per output and tile-row that evaluation fits (:func:`xbar.tile.calibration.calibration_gain`),
    fitted on each read and held (no gradient through the fit): on its input vectors,
    at most :data:`xbar.tile.calibration.CAL_MAX_ROWS` of them drawn at random, as
    evaluation fits on at most that many.

How a read runs: a Linear layer's tile-rows are one batched product; a Conv2d's are one
convolution whose output channels are every tile-row's columns (each tile-row's weights
zero outside its own rows), so no input is unfolded.  A layer that reads the same input
tensor again within a batch (the first layer under direct encoding) reuses its column
sums, and without per-read noise its whole read.

With its random draws taken out, the training forward reads what evaluation reads, for
every option of the spec (``tests/test_read_path.py``, to float rounding).  Every random
draw comes from ``seed``: the programming from one generator per kind of draw
(:class:`xbar.streams.ProgrammingDraws`), the per-read noise from
the seeded streams of :mod:`xbar.streams` (on every core): the same seed and thread count
train the same network.
"""

from __future__ import annotations

import math
import types
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from devices import validation as v
from mapping.conv import conv_matrix, input_windows
from mapping.layout import layout_weights
from mapping.slicing import combine_slices
from xbar.circuit import compensated_targets, effective_conductance, first_order_matrix
from xbar.layers import _conv_padding
from xbar.membrane import leak_hooks, neuron_gains
from xbar.memory import keep_freed_memory
from xbar.network import crossbar_layers
from xbar.spec import Spec
from xbar.streams import NoiseStreams, ProgrammingDraws
from xbar.tile.calibration import (CAL_MAX_ROWS, CAL_ZERO_READS, calibration_gain, percentile_levels,
                                   range_groups)
from xbar.tile.columns import by_tile_row, crossbar_columns, read_column_tiles, read_columns, read_matrices
from xbar.tile.converters import (AdcErrors, add_planes, bit_planes, check_dac_input, code_weight, dac,
                                  converted_planes, draw_adc_errors, full_scale_units, noise_square)
from xbar.tile.programming import designed_full_scale, program_tiles
from xbar.tile.read import ar1, circuit_currents, tile_row_read

INGREDIENTS = ("variation", "read_noise", "adc", "ir_drop", "calibration")

# The version of what the training forward pass computes: part of the cache key of every
# hardware-aware model (studies.train.config_key).  Raise it when a change alters the
# numbers it trains on (2: calibration fitted on sampled windows, ADC in code units; 3:
# evaluation's read functions, column currents in units of full scale).
FORWARD_VERSION = 3


def is_ingredient_list(names) -> bool:
    """``names``, a tuple or list, names ingredients, each once (what ``--aware`` and a
    sweep's ``model.aware`` take)."""
    return (isinstance(names, (tuple, list)) and all(n in INGREDIENTS for n in names)
            and len(set(names)) == len(names))


@dataclass(frozen=True)
class Aware:
    """Which of the spec's non-idealities the training forward pass sees (all by
    default), and how often the IR-drop attenuation is solved again (in batches)."""

    variation: bool = True
    read_noise: bool = True
    adc: bool = True
    ir_drop: bool = True
    calibration: bool = True
    ir_refresh: int = 50

    def __post_init__(self) -> None:
        for name in INGREDIENTS:
            if not isinstance(getattr(self, name), bool):
                v.fail("Aware", name, getattr(self, name), "must be True or False")
        v.int_at_least("Aware", "ir_refresh", self.ir_refresh, 1)

    @classmethod
    def only(cls, *names: str, **options) -> "Aware":
        """Every ingredient off but ``names``."""
        unknown = [n for n in names if n not in INGREDIENTS]
        if unknown:
            raise ValueError(f"Aware.only: {unknown} are not ingredients: must be among {list(INGREDIENTS)}")
        return cls(**{n: n in names for n in INGREDIENTS}, **options)

    def active(self, spec: Spec) -> tuple[str, ...]:
        """The ingredients switched on here that ``spec`` has."""
        dev = spec.device
        present = {
            "variation": bool(dev.levels is not None or spec.sliced or spec.neuron_gain_sigma
                              or spec.neuron_threshold_sigma or spec.neuron_leakage or dev.prog_sigma_rel or dev.prog_sigma_abs
                              or any(dev.prog_sigma_poly) or dev.p_stuck_low or dev.p_stuck_high
                              or (dev.has_drift and spec.t_inference > 0)),
            "read_noise": dev.has_read_noise,
            "adc": spec.adc_bits is not None or spec.dac_bits is not None,
            # the circuit: wires, transistors, the devices' I-V curve
            "ir_drop": spec.has_ir_drop or spec.access_resistance > 0 or spec.iv != "linear",
            "calibration": spec.calibration is not None and not spec.is_ideal,
        }
        return tuple(n for n in INGREDIENTS if getattr(self, n) and present[n])


def _straight_through(x: torch.Tensor, forward: torch.Tensor) -> torch.Tensor:
    """``forward`` in the forward pass, the gradient of ``x`` in the backward pass."""
    return x + (forward - x).detach()


def _blocked_conv_weight(mat: torch.Tensor, n_in: int, kernel: tuple[int, int, int]) -> torch.Tensor:
    """Tile-row matrices ``(n_r, R, cols)`` of a conv layer (rows: the ``n_in`` unfolded
    inputs, padded) as one conv weight ``(n_r * cols, C, kh, kw)``, each tile-row's
    columns zero outside its own rows: one convolution reads every tile-row apart."""
    n_r, rows, cols = mat.shape
    full = mat.reshape(n_r * rows, cols)[:n_in]
    if n_r > 1:
        owner = torch.arange(n_in, device=mat.device) // rows
        full = full * (owner == torch.arange(n_r, device=mat.device)[:, None]).to(mat.dtype)[..., None]
    return full.reshape(n_r, *kernel, cols).permute(0, 4, 1, 2, 3).reshape(n_r * cols, *kernel)


class _LayerModel:
    """One layer's tiles: programmed once per batch, read at every timestep.

    A read's column currents are laid out ``(*samples, n_r, columns)``: ``(N, n_r, cols)``
    for a Linear layer (a view of one batched product per tile-row), ``(B, H, W, n_r,
    cols)`` for a Conv2d (a view of one convolution whose output channels are every
    tile-row's columns)."""

    def __init__(self, spec: Spec, on: tuple[str, ...], module: nn.Module, draws: ProgrammingDraws,
                 streams: NoiseStreams, adc_streams: NoiseStreams, ir_refresh: int) -> None:
        self.spec, self.on, self.draws, self.ir_refresh = spec, on, draws, ir_refresh
        self.streams, self.adc_streams = streams, adc_streams
        self.n_in, self.n_out = _matrix(module).shape
        self.slices = spec.weight_slices if spec.sliced else 1
        self.n_out *= self.slices  # the columns read: every slice's (shifted and added after)
        self.conv = None
        if isinstance(module, nn.Conv2d):
            self.conv = dict(kernel=(module.in_channels, *module.kernel_size), stride=module.stride,
                             padding=_conv_padding(module), dilation=module.dilation)
        self.analog_pairs = spec.analog_subtraction and "adc" in on
        # Each read its own circuit (Spec.circuit_per_read): solved for the forward values.
        self.per_read = spec.circuit_per_read and "ir_drop" in on
        self.batches = 0
        self.atten: torch.Tensor | None = None
        self.comp_ratio: torch.Tensor | None = None  # IR-drop compensation, held
        self.compensated: torch.Tensor | None = None
        self.state: dict | None = None  # the programmed read matrices of this batch
        self.prev_eps: torch.Tensor | None = None  # AR(1) state of the per-read noise
        self.last: tuple | None = None  # the last read's input and products (a static input)
        self.last_out: torch.Tensor | None = None  # and its output, where it has no per-read noise

    def new_batch(self) -> None:
        self.state, self.prev_eps, self.last, self.last_out = None, None, None, None
        self.batches += 1

    def _attenuation(self, nominal: torch.Tensor) -> torch.Tensor:
        """Each device's effective / programmed conductance in the nominal tile (no
        gradient), solved on the first batch and again every ``ir_refresh`` batches."""
        if self.atten is None or (self.batches - 1) % self.ir_refresh == 0:
            eff = effective_conductance(nominal, self.spec)
            self.atten = torch.where(nominal > 0, eff / nominal.clamp_min(torch.finfo(nominal.dtype).tiny),
                                     torch.ones_like(nominal))
        return self.atten

    def _compensation(self, nominal: torch.Tensor) -> torch.Tensor:
        """Each device's IR-drop-compensated target over its mapped one (no gradient), for
        the nominal targets as evaluation pre-distorts them
        (:func:`xbar.circuit.compensated_targets`), solved with the attenuation; the
        compensated targets in ``self.compensated``."""
        if self.comp_ratio is None or (self.batches - 1) % self.ir_refresh == 0:
            dev = self.spec.device
            self.compensated = compensated_targets(nominal, self.spec, dev.g_min, dev.g_max)[0]
            self.comp_ratio = torch.where(nominal > 0, self.compensated / nominal.clamp_min(
                torch.finfo(nominal.dtype).tiny), torch.ones_like(nominal))
        return self.comp_ratio

    def _circuit(self, nominal: torch.Tensor):
        """Conductances -> effective conductances, as training sees the wires: the
        first-order model itself (differentiable), or each device's attenuation in the
        nominal tile held (exact at the nominal state); the identity without IR drop."""
        spec = self.spec
        if "ir_drop" not in self.on:
            return lambda g: g
        if spec.ir_drop_model == "first_order":
            wires = dict(r_wire_row=spec.r_wire_row, r_wire_col=spec.r_wire_col, r_source=spec.r_source,
                         r_sink=spec.r_sink)
            return lambda g: first_order_matrix(g, **wires)
        atten = self._attenuation(nominal)
        return lambda g: g * atten

    def _program(self, w: torch.Tensor) -> dict:
        """The read matrices of ``w`` ``(in, out)`` (with its gradient) on fresh devices:
        column currents in units of the ADC's full scale per unit input where there is an
        ADC (as evaluation reads them), weight units without."""
        spec, dev, on, draws = self.spec, self.spec.device, self.on, self.draws
        # The columns the tiles carry: the weights, or their bit slices' digits (straight
        # through: each slice's gradient a 1/slices share of the weight's).
        matrix, column_max, slices = crossbar_columns(w, spec)
        # continuous targets, the gradient's path (with slices, each a 1/slices share of the weight)
        layout = layout_weights(w.repeat(1, slices) / slices if spec.sliced else w, dev.g_min, dev.g_max, None,
                                spec.tile, spec.mapping, spec.weight_scale, column_max)
        t = layout.targets
        q = layout if dev.levels is None and not spec.sliced else layout_weights(
            matrix, dev.g_min, dev.g_max, None if spec.sliced else dev.levels, spec.tile, spec.mapping,
            spec.weight_scale, column_max)
        nominal = q.targets.detach()
        w_per_siemens = q.w_per_siemens
        if ("variation" in on and dev.levels is not None) or spec.sliced:  # the levels, straight through
            t = _straight_through(t, nominal)
        if spec.ir_drop_compensation is not None and spec.has_ir_drop and "ir_drop" in on:
            # evaluation's pre-distorted targets, the ratio to the mapped ones held
            t, nominal = t * self._compensation(nominal), self.compensated
            w_per_siemens = w_per_siemens / spec.ir_drop_compensation
        circuit = self._circuit(nominal)
        state = program_tiles(t, spec, draws, circuit, variation="variation" in on, read_noise="read_noise" in on)
        n_r, n_c, rows, cols = nominal.shape
        keep, a, b = read_columns(q.scheme, self.n_out, n_c, cols, q.outputs_per_tile)
        keep = None if len(keep) == n_c * cols else keep.to(w.device)  # None: every column is read
        a, b = a.to(w.device), b.to(w.device)
        output_tiles = torch.arange(self.n_out, device=w.device) // q.outputs_per_tile
        i_fs = None
        if "adc" in on and spec.adc_bits is not None:
            i_fs = designed_full_scale(nominal, spec, circuit, self.n_in, self.analog_pairs, q.outputs_per_tile)
            scale = full_scale_units(i_fs, spec)  # column currents in units of full scale
        else:
            scale = w_per_siemens
        g_read, s2_read = read_matrices(state.g_eff, state.s2, scale, keep, self.analog_pairs)
        if self.analog_pairs:
            a = b = None
        column_scale = None if q.column_scale is None else q.column_scale.detach()
        if i_fs is None:  # weight units of the layer's scale; per-column scales after the decoding
            out_fs = torch.ones(n_r, self.n_out, dtype=w.dtype, device=w.device)
            out_fs = out_fs if column_scale is None else out_fs * column_scale
            adc_errors = AdcErrors()
        else:
            per_output = w_per_siemens if column_scale is None else w_per_siemens * column_scale
            out_fs = code_weight(i_fs, output_tiles, spec, per_output).detach()
            # the converters' own errors, drawn after the programming as evaluation draws them
            adc_errors = draw_adc_errors(spec, (n_r, g_read.shape[-1]), draws.adc, g_read)
        kept = torch.arange(n_c * cols, device=w.device) if keep is None else keep
        read_tiles = read_column_tiles(kept, cols, self.analog_pairs)
        if self.conv is not None:  # one convolution reads every tile-row
            g_read = _blocked_conv_weight(g_read, self.n_in, self.conv["kernel"])
            s2_read = None if s2_read is None else _blocked_conv_weight(s2_read, self.n_in, self.conv["kernel"])
        w_pad = F.pad(matrix, (0, 0, 0, n_r * rows - self.n_in)).reshape(n_r, rows, self.n_out)
        # With an ADC, out_fs is one code per output and tile-row: the calibration's lsb.
        return {"g": g_read, "s2": s2_read, "a": a, "b": b, "out_fs": out_fs, "n_r": n_r, "rows": rows,
                "w": w_pad, "tiles": output_tiles, "adc": i_fs is not None,
                "adc_errors": adc_errors, "read_tiles": read_tiles, "n_c": n_c,
                "devices": state.g_eff.detach() if self.per_read else None, "scale": scale, "keep": keep}

    def _products(self, x: torch.Tensor, mat: torch.Tensor) -> torch.Tensor:
        """Every tile-row's column sums of inputs ``x`` through ``mat``: ``(*samples, n_r,
        cols)``."""
        st = self.state
        if self.conv is not None:
            c = self.conv
            u = F.conv2d(x, mat, None, c["stride"], c["padding"], c["dilation"])  # (B, n_r * cols, H, W)
            # Channels last, so that the columns are the innermost axis in memory as in
            # every tensor the read meets (noise, gradients): a mismatch of layouts makes
            # each element-wise pass several times slower.
            u = u.contiguous(memory_format=torch.channels_last)
            return u.permute(0, 2, 3, 1).unflatten(-1, (st["n_r"], -1))
        n_r, rows = st["n_r"], st["rows"]
        xt = by_tile_row(x, n_r, rows)
        return torch.bmm(xt, mat).transpose(0, 1).contiguous()  # columns innermost, as for a conv

    def _read_sums(self, x: torch.Tensor):
        """The DAC's inputs, the column sums of a read and their per-read noise's standard
        deviation (or ``None``).  A layer that reads the same input again within a batch
        (the first layer of a network whose input is static) reuses them: the devices are
        the same, only the per-read noise is drawn again."""
        if self._same_input(x):
            return self.last[2:]
        st, spec, raw = self.state, self.spec, x
        planes = 1
        if "adc" in self.on:
            check_dac_input(x, spec)
            if spec.dac_bits is not None:
                x = _straight_through(x, dac(x, spec))
            planes = converted_planes(x.detach(), spec)
            if planes > 1:  # one binary read per bit, stacked on the samples; each straight through
                x = (bit_planes(x.detach(), planes, spec) + (x - x.detach())).flatten(0, 1)
        u = self._products(x, st["g"])
        if self.per_read:  # each read's own circuit forward; the gradient of the devices' product
            u = _straight_through(u, self._circuit_sums(x.detach()).to(u.dtype))
        std = None
        if st["s2"] is not None:
            x2 = x * x if spec.input_scheme != "bit_integrated" else _straight_through(x * x, noise_square(x.detach(), spec))
            std = self._products(x2, st["s2"]).clamp_min(torch.finfo(u.dtype).tiny).sqrt()
        self.last, self.last_out = (raw, raw._version, x, u, std, planes), None
        return x, u, std, planes

    def _circuit_sums(self, x: torch.Tensor) -> torch.Tensor:
        """The column sums of ``x`` where each read is its own circuit, laid out as
        :meth:`_products`': every read's input vector (a conv's windows) on every tile,
        solved by evaluation's :func:`xbar.tile.read.circuit_currents`, then scaled and taken to
        the read columns as :func:`xbar.tile.columns.read_matrices` takes conductances."""
        st = self.state
        if self.conv is None:
            samples, rows = x.shape[:-1], x.reshape(-1, self.n_in)
        else:
            c = self.conv
            windows = input_windows(x, c["kernel"][1:], c["dilation"], c["padding"], c["stride"])
            samples, rows = windows.shape[:3], windows.reshape(-1, self.n_in)
        xt = by_tile_row(rows, st["n_r"], st["rows"])  # (n_r, N, R)
        with torch.no_grad():
            i = circuit_currents(st["devices"].unsqueeze(2), xt.unsqueeze(1), self.spec)  # (n_r, n_c, N, C)
            u, _ = read_matrices(i.to(x.dtype), None, st["scale"], st["keep"], self.analog_pairs)  # (n_r, N, cols)
        return u.transpose(0, 1).reshape(*samples, u.shape[0], u.shape[-1])

    def _same_input(self, x: torch.Tensor) -> bool:
        """``x`` is the last read's input, unchanged."""
        return self.last is not None and self.last[0] is x and self.last[1] == x._version

    def _noise(self, like: torch.Tensor) -> torch.Tensor:
        """Standard normals laid out as ``like``, AR(1) over the reads of a batch."""
        flat = self.streams.normal(like.new_empty(1, like.numel()), range(1))[0]
        eps = flat.as_strided(like.shape, like.stride())  # like: a dense view
        self.prev_eps = ar1(self.prev_eps, eps, self.spec.device.read_noise_correlation)
        return self.prev_eps

    def read(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """``x`` through the tiles of ``w`` ``(in, out)``, in weight units: ``(N, in) -> (N,
        out)`` for a Linear layer, ``(B, C, H, W) -> (B, out, H', W')`` for a Conv2d."""
        spec = self.spec
        if self.state is None:
            self.state = self._program(w)
        st = self.state
        if self.last_out is not None and self._same_input(x):  # no per-read noise: the same read
            return self.last_out
        x, u, std, planes = self._read_sums(x)
        calibrating = "calibration" in self.on
        pick = self._pick(u.shape[:-2]) if calibrating else None
        out_fs = st["out_fs"]  # (n_r, out): weight units per code
        if st["adc"] and calibrating and spec.ranges_from_calibration:  # the ranges, set from this read
            u, std, out_fs = self._ranges(u, std, out_fs, pick)
        y = tile_row_read(u, std, None if std is None else self._noise(u), spec, adc=st["adc"], a=st["a"], b=st["b"],
                          errors=st["adc_errors"], normal=self._normal)
        # (*samples, n_r, out): codes (or weight units)
        if "calibration" in self.on:
            y0 = self._zero_read()
            if y0 is not None:  # the calibration's offset: what the outputs read with every input off
                y = y - y0
            out_fs = out_fs * self._gain(x.detach(), y.detach(), out_fs, pick)
        out = y.squeeze(-2) * out_fs[0] if st["n_r"] == 1 else (y * out_fs).sum(-2)
        if planes > 1:  # the bit-serial reads shifted and added
            out = add_planes(out.unflatten(0, (planes, -1)), spec)
        out = combine_slices(out, self.slices)
        out = out if self.conv is None else out.permute(0, 3, 1, 2)
        if std is None and spec.adc_noise == 0:
            self.last_out = out
        return out

    def neurons(self, y: torch.Tensor) -> torch.Tensor:
        """The analog neurons' gains on the layer's output ``y`` ``(N, ...)`` (its read and
        bias), drawn with the programming, once per batch and output shape, as evaluation
        draws them (:func:`xbar.membrane.neuron_gains`); ``y`` itself without them."""
        if "variation" not in self.on:
            return y
        drawn = self.state.setdefault("neuron_gains", {})
        shape = tuple(y.shape[1:])
        if shape not in drawn:
            drawn[shape] = neuron_gains((1, *shape), self.spec, self.draws.neurons, y.dtype)
        gains = drawn[shape]
        return y if gains is None else y * gains

    def _pick(self, samples: torch.Size):
        """At most :data:`xbar.tile.calibration.CAL_MAX_ROWS` of a read's input vectors, at
        random, as evaluation's fits sample them (``None``: all of them)."""
        n = math.prod(samples)
        if n <= CAL_MAX_ROWS:
            return None
        gen = self.draws.calibration
        return torch.unravel_index(torch.randperm(n, generator=gen, device=gen.device)[:CAL_MAX_ROWS], samples)

    def _ranges(self, u: torch.Tensor, std: torch.Tensor | None, out_fs: torch.Tensor, pick):
        """The ADC ranges at ``Spec.adc_percentile`` of this read's column currents (its
        sampled vectors, :func:`xbar.tile.calibration.percentile_levels`, as evaluation
        sets them from the calibration's reads): the currents and their noise in units of
        the new full scales, and the digital scale ``out_fs`` for them."""
        st = self.state
        sums = (u.reshape(-1, *u.shape[-2:]) if pick is None else u[pick]).detach().abs()
        columns, outputs, n_groups = range_groups(self.spec, self.analog_pairs, st["read_tiles"], st["tiles"])
        level = percentile_levels(sums.transpose(0, 1)[None], columns, n_groups, self.spec)[0]
        per_column = level[:, columns]  # (n_r, read columns)
        return (u / per_column, None if std is None else std / per_column, out_fs * level[:, outputs])

    def _zero_read(self) -> torch.Tensor | None:
        """The decoded read ``(n_r, out)`` with every input off, averaged over
        :data:`xbar.tile.calibration.CAL_ZERO_READS` reads (the ADCs' noise from the
        calibration's own generator, as evaluation's calibration draws it); ``None`` where the
        converters have no offset or noise (it reads 0)."""
        st, spec = self.state, self.spec
        if not st["adc"] or (st["adc_errors"].offset is None and spec.adc_noise == 0):
            return None
        if "y0" not in st:
            like = st["out_fs"]
            zeros = like.new_zeros(CAL_ZERO_READS, st["n_r"], st["read_tiles"].numel())
            y0 = tile_row_read(zeros, None, None, spec, adc=True, a=st["a"], b=st["b"], errors=st["adc_errors"],
                               normal=lambda t: torch.empty_like(t).normal_(generator=self.draws.calibration_adc))
            st["y0"] = y0.mean(0)
        return st["y0"]

    def _normal(self, like: torch.Tensor) -> torch.Tensor:
        """Standard normals laid out as ``like``, from the ADCs' own per-read streams."""
        flat = self.adc_streams.normal(like.new_empty(1, like.numel()), range(1))[0]
        return flat.view(like.shape) if like.is_contiguous() else flat.as_strided(like.shape, like.stride())

    def _gain(self, x: torch.Tensor, y: torch.Tensor, out_fs: torch.Tensor, pick) -> torch.Tensor:
        """The calibration's gain per tile-row and output ``(n_r, out)``, fitted on this
        read's offset-free reads ``y`` (codes; ``out_fs``: weight units per code) of its
        sampled input vectors (:func:`xbar.tile.calibration.calibration_gain`), as
        evaluation fits it."""
        st = self.state
        if self.conv is None:
            rows = x if pick is None else x[pick]
        else:
            c = self.conv
            windows = input_windows(x, c["kernel"][1:], c["dilation"], c["padding"], c["stride"])
            rows = (windows.flatten(0, 2) if pick is None else windows[pick]).reshape(-1, self.n_in)
        reads = (y.reshape(-1, *y.shape[-2:]) if pick is None else y[pick]).transpose(0, 1)  # (n_r, S, out)
        n_r, r = st["n_r"], st["rows"]
        ideal = torch.bmm(by_tile_row(rows, n_r, r), st["w"])
        lsb = out_fs[None] if st["adc"] else None
        return calibration_gain((reads * out_fs[:, None])[None], ideal[None], lsb, st["tiles"])[0]


class HardwareAware:
    """The crossbar of ``spec`` in the forward pass of ``model`` (see the module
    docstring); a context manager that attaches on entry and detaches on exit.

    ``aware`` picks the ingredients; with none active (all off, or an ideal spec) the
    network runs untouched, so training is bit for bit the standard one.
    """

    def __init__(self, model: nn.Module, spec: Spec, aware: Aware | None = None, seed: int = 0) -> None:
        if not isinstance(spec, Spec):
            raise TypeError(f"HardwareAware: spec must be an xbar.Spec, not {type(spec).__name__}")
        aware = Aware() if aware is None else aware
        if not isinstance(aware, Aware):
            raise TypeError(f"HardwareAware: aware must be an xbar.Aware, not {type(aware).__name__}")
        v.int_at_least("HardwareAware", "seed", seed, 0)
        if spec.ages_after_calibration or spec.drift_compensation is not None:
            v.fail("HardwareAware", "spec.t_calibration", spec.t_calibration,
                   "training fits its calibration on the read it makes, at t_inference; a chip "
                   "calibrated earlier (t_calibration < t_inference, drift_compensation) is evaluated "
                   "only: train with spec.replace(t_calibration=None, drift_compensation=None) and "
                   "evaluate with the full spec")
        self.model, self.spec, self.aware = model, spec, aware
        self.active = aware.active(spec)
        found = crossbar_layers(model)
        if not found:
            raise ValueError("HardwareAware: model has no nn.Linear or nn.Conv2d layer to put on crossbars")
        programming, reads = np.random.SeedSequence(seed).generate_state(2, dtype=np.uint64) >> 1
        self.draws = ProgrammingDraws.from_seed(int(programming), found[0][1].weight.device)
        streams = NoiseStreams(int(reads), 1)  # per-read noise on every core, as in evaluation
        adc_streams = NoiseStreams(int(reads), 1, kind=1)
        self.layers = []
        for name, m in found:
            self.layers.append((name, m, _LayerModel(spec, self.active, m, self.draws, streams, adc_streams,
                                                     aware.ir_refresh)))
        self._attached = False
        self._hooks: list = []

    def new_batch(self) -> None:
        """Fresh devices for the next batch: programming drawn again, read-noise state
        cleared.  Call before each batch's forward pass."""
        for _, _, layer in self.layers:
            layer.new_batch()

    def attach(self) -> "HardwareAware":
        if self.active and not self._attached:
            keep_freed_memory()  # a read's large temporaries, reused rather than faulted in again
            for _, m, layer in self.layers:
                m.forward = _forward(m, layer)  # the instance's own, in place of its class's
            if "variation" in self.active:  # the analog neurons' leakage (xbar.membrane)
                self._hooks = leak_hooks(self.model, self.spec, skip=[m for _, m, _ in self.layers])
            self._attached = True
        return self

    def detach(self) -> None:
        if self._attached:
            for _, m, _ in self.layers:
                del m.forward
            for hook in self._hooks:
                hook.remove()
            self._hooks = []
        self._attached = False

    def __enter__(self) -> "HardwareAware":
        return self.attach()

    def __exit__(self, *exc) -> None:
        self.detach()


def _matrix(m: nn.Module) -> torch.Tensor:
    """The crossbar matrix ``(in, out)`` of a Linear or Conv2d (with its gradient)."""
    return m.weight.t() if isinstance(m, nn.Linear) else conv_matrix(m.weight)


def _forward(m: nn.Module, layer: _LayerModel):
    """``m``'s forward on its tiles, bound to ``m`` (a copy of ``m`` made while attached
    would read the devices programmed for ``m``: it refuses to run)."""
    def forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self is not m:
            raise RuntimeError("a copy of a layer made while xbar.HardwareAware was attached reads the "
                               "original's devices: copy the network after HardwareAware.detach()")
        if isinstance(m, nn.Linear):
            y = layer.read(x.reshape(-1, x.shape[-1]), _matrix(m)).reshape(*x.shape[:-1], m.out_features)
            return layer.neurons(y if m.bias is None else y + m.bias)
        if x.dim() != 4:
            raise ValueError(f"hardware-aware Conv2d: input of shape {tuple(x.shape)}: must be (N, C, H, W)")
        y = layer.read(x, _matrix(m))
        return layer.neurons(y if m.bias is None else y + m.bias.view(1, -1, 1, 1))
    return types.MethodType(forward, m)


__all__ = ["Aware", "HardwareAware", "INGREDIENTS"]
