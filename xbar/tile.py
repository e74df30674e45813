"""A layer's crossbar matrix programmed onto tiles: Monte Carlo trials and tiles batched.

One :class:`ProgrammedMatrix` holds every tile of one layer for ``K`` trials (one trial
is one programming).  Programming variation, stuck-at faults, drift exponents and the
static share of the read noise are drawn once, here; the rest of the read noise is drawn
at every read.

Per-read noise, exact in distribution at one extra matrix product: the devices of a
column fluctuate independently, ``G_ij (1 + s_ij eps_ij)``, so the noise of column
current ``j`` is Gaussian with variance ``sum_i v_i^2 (s_ij G_ij)^2``: one product of
``v**2`` with the precomputed ``(s G)**2``, then one normal draw per column read, instead
of one draw per device per read (from each trial's own streams, on every core:
:mod:`xbar.noise`).  With a correlation ``rho`` between consecutive reads
(``DeviceModel.read_noise_correlation``), the normalised draw of each column and sample
follows an AR(1) process over the reads of one inference, ``e_t = rho e_{t-1} +
sqrt(1 - rho^2) xi_t``: exact when consecutive reads drive the same rows (as binary
spikes at a steady rate mostly do), and otherwise the correlation of the column noise
is ``rho`` times the overlap of the two reads' drives.

Calibration (``Spec.calibration``): after programming (and drift to ``t_inference``),
the chip reads known inputs, and each tile's outputs get a digital offset (what they read
with every input off) and gain (the least-squares gain that brings the reads closest to
the ideal products of the same inputs, :func:`calibration_gain`), per output and per tile-row (before the tile-rows' partial
sums are added).  The fit sees the chip's own
noisy, quantized reads (drawn from the programming's generator, so the read-noise
stream of the inference is untouched).  The gain folds into the stored matrices or the
ADC's digital scale: a calibrated read costs what a raw one does.

Monte Carlo trials are read in chunks (:meth:`ProgrammedMatrix.select_trials`, used by
:func:`xbar.simulate` and :func:`xbar.calibrate`): a read serves the trials selected,
from views of the buffers, so memory follows the chunk, not the number of trials.

Speed, without changing any number a read returns (up to float rounding):

- only the columns that are read are kept (unused columns of a partly filled tile carry
  no output), after the circuit has been solved with all of them;
- the DAC scale, the ADC full scale and the weight scale are folded into the stored
  matrices, so a read is: one product (plus one for noise), the ADC rounding in place,
  and the digital combination;
- with an ideal ADC, a differential pair is one column of ``G+ - G-`` with noise
  variance ``s+^2 + s-^2`` (the difference of two independent Gaussian column noises),
  and all tile-rows are summed inside the same product.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn as nn

from devices import drift, program, read_sigma_rel, static_read_noise
from mapping.layout import layout_weights
from xbar.crossbar import compensated_targets, effective_conductance
from xbar.converters import quantize_unit, to_codes_, top_code
from xbar.noise import NoiseStreams
from xbar.spec import Spec


def side_by_side(t: torch.Tensor) -> torch.Tensor:
    """``(..., n_c, R, C) -> (..., R, n_c * C)``: the tiles of a tile-row side by side."""
    *lead, n_c, r, c = t.shape
    return t.transpose(-3, -2).reshape(*lead, r, n_c * c)


def tile_row_parts(x: torch.Tensor, n_in: int, rows: int) -> list[tuple[torch.Tensor, slice]]:
    """Inputs ``x`` ``(..., N, n_in)`` as ``(inputs (..., k, N, r), tile-rows)`` pairs (views):
    the full tile-rows, then the partial last one with only its used rows, so that no
    product runs over the zero padding (conv1 of a 3x3 kernel uses 9 of 64 rows)."""
    full, last = divmod(n_in, rows)
    parts = []
    if full:
        parts.append((x[..., : full * rows].unflatten(-1, (full, rows)).movedim(-2, -3), slice(0, full)))
    if last:
        parts.append((x[..., full * rows :].unsqueeze(-3), slice(full, full + 1)))
    return parts


def by_tile_row(x: torch.Tensor, n_r: int, rows: int) -> torch.Tensor:
    """Input vectors ``(..., N, in)`` as each tile-row's inputs ``(..., n_r, N, rows)``,
    zero-padded to whole tile-rows (a view where they are whole already)."""
    pad = n_r * rows - x.shape[-1]
    return (torch.nn.functional.pad(x, (0, pad)) if pad else x).unflatten(-1, (n_r, rows)).transpose(-2, -3)


class _PairDifference(torch.autograd.Function):
    """``u[..., 0::2] - u[..., 1::2]`` (a differential pair's columns, side by side), with
    a backward that writes its gradient in one pass (slicing's backward zero-fills twice)."""

    @staticmethod
    def forward(ctx, u):
        return u[..., 0::2] - u[..., 1::2]

    @staticmethod
    def backward(ctx, grad):
        return torch.stack((grad, -grad), -1).flatten(-2)


def decode_reads(u: torch.Tensor, scheme: str, a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor:
    """Read columns -> outputs: ``u[a] - u[b]`` on the last axis, the pair's difference or
    the difference to the tile's reference column (``a is None``: already outputs)."""
    if a is None:
        return u
    if scheme == "differential":  # read columns are (G+, G-) pairs in output order
        return _PairDifference.apply(u)
    return u[..., a] - u[..., b]


def refuses_negative(spec: Spec) -> bool:
    """An unsigned DAC cannot drive a negative voltage; with ideal converters the read is
    exact for any sign, so only a path with a converter refuses negative inputs."""
    return not spec.dac_signed and (spec.dac_bits is not None or spec.adc_bits is not None)


def check_dac_input(x: torch.Tensor, spec: Spec) -> None:
    """Refuse a negative input where :func:`refuses_negative` (never clip it silently)."""
    if refuses_negative(spec) and float(x.detach().min()) < 0:
        raise ValueError(f"crossbar read: an input of {float(x.detach().min()):.4g} < 0 on an unsigned DAC "
                         f"(Spec.dac_signed=False), which would clip it: scale the inputs to "
                         f"[0, {spec.input_range:g}], or set Spec(dac_signed=True, adc_signed=True)")


def dac(x: torch.Tensor, spec: Spec) -> torch.Tensor:
    """The inputs as the DAC drives them: rounded to its codes (``x`` with an ideal DAC)."""
    if spec.dac_bits is None:
        return x
    return quantize_unit(x / spec.input_range, spec.dac_bits, spec.dac_signed) * spec.input_range


def read_columns(scheme: str, n_out: int, n_c: int, cols: int, per_tile: int):
    """Which physical columns (indices into ``n_c * cols``) are read, and for each output
    the positions, among the read columns, of its column ``a`` and of ``b`` with
    ``output = a - b`` (the G- column, or the tile's reference column)."""
    keep, a, b = [], [], []
    for c in range(n_c):
        used = min(per_tile, n_out - c * per_tile)
        base = c * cols
        if scheme == "differential":
            for j in range(used):
                a.append(len(keep))
                keep.append(base + 2 * j)
                b.append(len(keep))
                keep.append(base + 2 * j + 1)
        else:
            ref = len(keep) + used
            for j in range(used):
                a.append(len(keep))
                keep.append(base + j)
                b.append(ref)
            keep.append(base + cols - 1)
    return torch.tensor(keep), torch.tensor(a), torch.tensor(b)


def full_scale(g0: torch.Tensor, spec: Spec, n_in: int, analog_pairs: bool,
               outputs_per_tile: int) -> torch.Tensor | None:
    """Each tile's ADC full scale (A), ``(..., n_r, n_c)``, for tiles ``g0`` ``(..., n_r,
    n_c, R, C)`` of a layer of ``n_in`` inputs: ``adc_range`` times the largest column
    current with every row that an input drives at full scale (the rows of the last
    tile-row beyond the layer's inputs are padding, driven by nothing).  ``g0``: the
    effective conductances of the programmed state, IR drop included, so that the current
    is the one the column can draw (superposition: the all-on current is the sum of the
    effective conductances of the driven rows times ``v_read``).  ``None`` without an ADC."""
    if spec.adc_bits is None:
        return None
    n_r, rows = g0.shape[-4], g0.shape[-2]
    driven = torch.arange(n_r * rows, device=g0.device).reshape(n_r, rows) < n_in
    g0 = g0 * driven[:, None, :, None]
    if analog_pairs:  # one signed ADC reads G+ - G-: its largest magnitude either way
        diff = g0[..., 0 : 2 * outputs_per_tile : 2] - g0[..., 1 : 2 * outputs_per_tile : 2]
        cols = torch.maximum(diff.clamp_min(0).sum(-2), (-diff).clamp_min(0).sum(-2))
    else:
        cols = g0.sum(-2)
    i_fs = spec.adc_range * spec.v_read * cols.amax(-1)
    return i_fs.clamp_min(torch.finfo(g0.dtype).tiny)


class ProgrammedMatrix(nn.Module):
    """Crossbar matrix ``w`` ``(in, out)`` programmed on tiles, ``trials`` times.

    ``g_tiles`` holds the effective conductances (S), ``(K, n_r, n_c, R, C)``; the
    buffers used by a read are derived from it once, at programming.
    """

    def __init__(self, w: torch.Tensor, spec: Spec, *, trials: int, program_seed: int,
                 read_seed: int) -> None:
        super().__init__()
        dev = spec.device
        layout = layout_weights(w.detach(), dev.g_min, dev.g_max, dev.levels, spec.tile, spec.mapping)
        self.spec, self.shape, self.scheme = spec, layout.shape, layout.scheme
        self.outputs_per_tile = layout.outputs_per_tile
        self.n_r, self.n_c = layout.grid
        self.rows, self.cols = layout.tile
        self.trials = trials
        self.read_seed = read_seed
        # weight units per ampere of column-difference current, for inputs in input units
        self.out_scale = layout.w_per_siemens * spec.input_range / spec.v_read
        if spec.ir_drop_compensation is not None and spec.has_ir_drop:
            self.out_scale /= spec.ir_drop_compensation
        self.noise = NoiseStreams(read_seed, trials)  # per-read noise, per trial (xbar.noise)
        self.active: slice | None = None  # the trials a read serves (None: all; select_trials)
        self._ar: dict = {}  # the AR(1) state of the per-read noise, per read site
        self.rho = dev.read_noise_correlation

        gen = torch.Generator(device=w.device).manual_seed(program_seed)
        nominal, w_per_siemens = layout.targets, layout.w_per_siemens
        if spec.ir_drop_compensation is not None and spec.has_ir_drop:
            nominal, held, residual = compensated_targets(nominal, spec, dev.g_min, dev.g_max)
            w_per_siemens = w_per_siemens / spec.ir_drop_compensation
            if held > 0:
                warnings.warn(f"IR-drop compensation of a {self.shape[0]}x{self.shape[1]} layer: "
                              f"{100 * held:.1f}% of the devices would need more than g_max and are "
                              f"held there; the effective matrix misses its target by {residual:.3g} "
                              f"(RMS, in units of the weight window): lower "
                              f"Spec.ir_drop_compensation (now {spec.ir_drop_compensation:g}) for "
                              f"more headroom, or use smaller tiles", stacklevel=2)
        targets = nominal.unsqueeze(0).expand(trials, *layout.targets.shape).contiguous()
        g0 = program(targets, dev, gen)  # (K, n_r, n_c, R, C)
        g = drift(g0, spec.t_inference, dev, gen) if spec.t_inference > 0 else g0
        g = static_read_noise(g, g0, dev, spec.t_inference, gen)
        self.register_buffer("g_tiles", effective_conductance(g, spec))
        s2 = None
        if dev.has_read_noise and dev.read_noise_static < 1:
            # First order with IR drop: each device's relative read noise on its entry of
            # the effective matrix (exactly the device-level noise with ideal wires).
            rel = torch.where(g0 > 0, read_sigma_rel(g0, dev, spec.t_inference), torch.zeros_like(g0))
            s2 = (1 - dev.read_noise_static) * (rel * self.g_tiles) ** 2
        keep, a, b = read_columns(self.scheme, self.shape[1], self.n_c, self.cols, self.outputs_per_tile)
        # Analog subtraction: each pair's currents are subtracted before one signed ADC.
        self.analog_pairs = spec.subtraction == "analog" and spec.adc_bits is not None
        self.register_buffer("read_tiles", keep[0::2] // self.cols if self.analog_pairs else keep // self.cols)
        # The tile (column block) of each output.
        self.register_buffer("output_tiles", torch.arange(self.shape[1], device=w.device) // self.outputs_per_tile)
        # One product over all tile-rows, unless each tile-row is read on its own: by its
        # ADC, or for a per-tile calibration of outputs decoded against a shared reference.
        self.merged = spec.adc_bits is None and (self.scheme == "differential" or not self.needs_calibration)
        if self.merged:
            self._setup_merged(w_per_siemens, s2, keep, a, b)
        else:
            # The ADC is sized for the currents the programmed state can draw through its
            # wires (drift and static noise come later and are not known to the designer).
            g0_circuit = self.g_tiles if g is g0 or spec.adc_bits is None else effective_conductance(g0, spec)
            self._setup_blocks(full_scale(g0_circuit, spec, self.shape[0], self.analog_pairs,
                                         self.outputs_per_tile), w_per_siemens, s2, keep, a, b)
        self._draw_adc_errors(gen)
        self.register_buffer("cal_bias", None)
        self.register_buffer("w_target", w.detach().to(self.g_tiles.dtype))  # what calibration fits to
        self.calibrated = False
        if spec.calibration == "vectors" and not spec.is_ideal:
            self.fit_calibration(self._calibration_vectors(gen), gen)
        self._cal_gen = gen
        self.recording: list | None = None  # a list while xbar.calibrate records the inputs
        self.rows_per_read = CAL_ROWS_PER_READ  # inputs sampled per read while recording
        self.keep_recording = True  # False: sample (the same draws) but keep nothing

    @property
    def needs_calibration(self) -> bool:
        """The spec asks for calibration and there is something to correct."""
        return self.spec.calibration is not None and not self.spec.is_ideal

    @property
    def awaits_data(self) -> bool:
        """Calibrated from data (``Spec.calibration="data"``) and not yet fitted."""
        return self.spec.calibration == "data" and self.needs_calibration and not self.calibrated

    def _draw_adc_errors(self, gen: torch.Generator) -> None:
        """Each ADC's gain error (a factor) and offset (in units of its full scale), per
        tile-row and read column, drawn once per programming; ``None`` where the spec has
        none (no draw: the other streams are unchanged)."""
        spec, like = self.spec, self.g_read
        shape = (self.trials, self.n_r, 1, like.shape[-1])

        def draw(std):
            return torch.randn(shape, generator=gen, device=like.device, dtype=like.dtype) * std

        gain = 1 + draw(spec.adc_gain_error) if spec.adc_gain_error > 0 else None
        offset = (draw(spec.adc_offset_error / top_code(spec.adc_bits, spec.adc_signed))
                  if spec.adc_offset_error > 0 else None)
        self.register_buffer("adc_gain", gain)
        self.register_buffer("adc_offset", offset)

    def _adc_errors(self, u: torch.Tensor, blocks: slice, gen: torch.Generator | None) -> torch.Tensor:
        """In place: column currents ``u`` (units of full scale) as the ADC sees them, with
        its gain error, offset and input-referred noise (per conversion, from ``gen`` in a
        calibration, else from the read stream)."""
        if self.adc_gain is not None:
            u.mul_(self._trials(self.adc_gain)[:, blocks])
        if self.adc_offset is not None:
            u.add_(self._trials(self.adc_offset)[:, blocks])
        if self.spec.adc_noise > 0:
            u.add_(self._normal(u, gen), alpha=self.spec.adc_noise / top_code(self.spec.adc_bits, self.spec.adc_signed))
        return u

    def _setup_merged(self, w_per_siemens, s2, keep, a, b) -> None:
        """Ideal ADC: ``y = x @ g`` in weight units, every tile-row in one product."""
        k, m = self.trials, self.n_r * self.rows
        g = side_by_side(self.g_tiles).reshape(k, m, -1)[..., keep][:, : self.shape[0]]
        s2 = None if s2 is None else side_by_side(s2).reshape(k, m, -1)[..., keep][:, : self.shape[0]]
        if self.scheme == "differential":  # merge each pair: exact for ideal ADCs
            g = g[..., a] - g[..., b]
            s2 = None if s2 is None else s2[..., a] + s2[..., b]
            a = b = None
        self.register_buffer("g_read", (g * w_per_siemens).contiguous())
        self.register_buffer("s2_read", None if s2 is None else (s2 * w_per_siemens**2).contiguous())
        self.register_buffer("out_fs", None)
        self.register_buffer("col_a", a)
        self.register_buffer("col_b", b)

    def _setup_blocks(self, i_fs, w_per_siemens, s2, keep, a, b) -> None:
        """Each tile-row read on its own.  With an ADC, ``u = x @ g`` is the column current
        in units of the tile's full scale ``i_fs``; without, it is in weight units."""
        spec = self.spec
        if i_fs is None:
            scale = torch.full((1, 1, 1, 1, 1), w_per_siemens, dtype=self.g_tiles.dtype)
        else:
            scale = (spec.v_read / spec.input_range) / i_fs[..., None, None]  # (K, n_r, n_c, 1, 1)
        g = side_by_side(self.g_tiles * scale)[..., keep]
        s2 = None if s2 is None else side_by_side(s2 * scale**2)[..., keep]
        if self.analog_pairs:  # read columns are (G+, G-) pairs in output order
            g = g[..., 0::2] - g[..., 1::2]
            s2 = None if s2 is None else s2[..., 0::2] + s2[..., 1::2]
            a = b = None
        self.register_buffer("g_read", g.contiguous())
        self.register_buffer("s2_read", None if s2 is None else s2.contiguous())
        if i_fs is None:
            fs = torch.ones(self.trials, self.n_r, self.shape[1], dtype=self.g_tiles.dtype)
        else:
            # Digital side: codes -> amperes -> weight units, per output and tile-row.
            fs = (i_fs[..., self.output_tiles] / top_code(spec.adc_bits, spec.adc_signed)
                  * (w_per_siemens * spec.input_range / spec.v_read))
        self.register_buffer("out_fs", fs.unsqueeze(2).contiguous())  # (K, n_r, 1, out)
        self.register_buffer("col_a", a)
        self.register_buffer("col_b", b)

    def conductances(self) -> torch.Tensor:
        """Effective conductances as tiles ``(K, n_r, n_c, R, C)`` (S)."""
        return self.g_tiles

    def select_trials(self, start: int | None = None, stop: int | None = None) -> None:
        """Reads serve trials ``start .. stop - 1`` only (a chunk of the Monte Carlo
        trials, to bound memory); no arguments: all of them again.  Each trial keeps its
        own noise streams, so a trial reads the same whatever chunk it is in."""
        if start is None:
            self.active = None
        elif not 0 <= start < stop <= self.trials:
            raise ValueError(f"select_trials: trials {start}..{stop - 1} are not within 0..{self.trials - 1}")
        else:
            self.active = slice(start, stop)
        self._ar = {}

    @property
    def active_trials(self) -> range:
        return range(self.trials) if self.active is None else range(self.active.start, self.active.stop)

    def _trials(self, t: torch.Tensor | None) -> torch.Tensor | None:
        """Buffer ``t`` (trials first; or ``None``) for the trials a read serves: a view."""
        return t if self.active is None or t is None else t[self.active]

    def _normal(self, like: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
        """Standard normals shaped like ``like``: from ``gen`` in a calibration, else from
        each trial's read-noise streams."""
        if gen is not None:
            return torch.empty_like(like).normal_(generator=gen)
        return self.noise.normal(like, self.active_trials)

    def reset_read_noise(self) -> None:
        """Restart the read-noise streams from their seeds."""
        self.noise.restart()
        self._ar = {}

    def new_inference(self) -> None:
        """The next read starts a new inference: no correlation with the reads before."""
        self._ar = {}

    def _add_noise(self, i: torch.Tensor, x: torch.Tensor, s2: torch.Tensor, site: str,
                   gen: torch.Generator | None = None) -> torch.Tensor:
        """Column noise, in place: std from one product of ``x**2`` with the variances; with
        ``gen`` given (calibration), white and from ``gen``."""
        std = torch.matmul(x * x, s2).sqrt_()
        eps = self._normal(i, gen)
        if self.rho and gen is None:
            prev = self._ar.get(site)
            if prev is not None and prev.shape == eps.shape:
                eps = prev.mul_(self.rho).add_(eps, alpha=(1 - self.rho**2) ** 0.5)
            self._ar[site] = eps
        return i.addcmul_(std, eps)

    def _decode(self, i: torch.Tensor) -> torch.Tensor:
        return decode_reads(i, self.scheme, self.col_a, self.col_b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(K, N, in)`` inputs -> ``(K, N, out)`` in weight units (``x @ w``)."""
        check_dac_input(x, self.spec)
        x = dac(x, self.spec)
        if self.recording is not None:
            rows = _sample_rows(x, self._cal_gen, self.rows_per_read)
            if self.keep_recording:
                self.recording.append(rows if rows.shape[1] < x.shape[1] else rows.clone())
        elif self.awaits_data:
            raise RuntimeError("crossbar read: this layer waits for its calibration from data "
                               "(Spec.calibration='data'): run xbar.calibrate(hw, x, timesteps) on a "
                               "few samples first (xbar.simulate does, on its data's first samples), "
                               "or use Spec(calibration='vectors') or Spec(calibration=None) (raw)")
        if self.merged:
            y = self._merged_read(x)
        else:
            y = self._blocks_read(x).sum(1)
        return y if self.cal_bias is None else y + self._trials(self.cal_bias)

    def _merged_read(self, x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        i = torch.matmul(x, self._trials(self.g_read))
        if self.s2_read is not None:
            i = self._add_noise(i, x, self._trials(self.s2_read), "merged", gen)
        return self._decode(i)

    def _blocks_read(self, x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        """Each tile-row's decoded output ``(K, n_r, N, out)`` in weight units: the full
        tile-rows, then the partial last one with only its used rows (no product over the
        zero padding: conv1 of a 3x3 kernel uses 9 of 64 rows)."""
        # The full tile-rows are a transposed view: made contiguous for the product.
        parts = [self._block_read(xt.contiguous() if xt.shape[-1] == self.rows else xt, blocks, gen)
                 for xt, blocks in tile_row_parts(x, x.shape[-1], self.rows)]
        return parts[0] if len(parts) == 1 else torch.cat(parts, 1)

    def _block_read(self, xt: torch.Tensor, blocks: slice, gen: torch.Generator | None) -> torch.Tensor:
        """Read tile-rows ``blocks`` with inputs ``xt`` ``(K, n, N, r)`` (``r`` used rows):
        product, column noise, ADC per column (if any), digital decoding and scale."""
        r = xt.shape[-1]
        u = torch.matmul(xt, self._trials(self.g_read)[:, blocks, :r])  # column currents / full scale
        if self.s2_read is not None:
            u = self._add_noise(u, xt, self._trials(self.s2_read)[:, blocks, :r], f"block{blocks.start}", gen)
        if self.spec.adc_bits is not None:
            u = to_codes_(self._adc_errors(u, blocks, gen), self.spec.adc_bits, self.spec.adc_signed)
        return self._decode(u) * self._trials(self.out_fs)[:, blocks]

    def _set_adc_ranges(self, x: torch.Tensor) -> None:
        """Each tile's ADC full scale at the ``Spec.adc_percentile``-th percentile of the
        column currents (magnitudes) that the inputs ``x`` ``(K, N, in)`` draw in it,
        instead of the worst case: fewer codes go to currents that never come."""
        g_read, out_fs = self._trials(self.g_read), self._trials(self.out_fs)  # views: set in place
        s2_read = None if self.s2_read is None else self._trials(self.s2_read)
        # (K, n_r, N, read columns), in units of the full scale
        u = (by_tile_row(x, self.n_r, self.rows) @ g_read).abs()
        tile_of = self.read_tiles  # the tile (column block) of each read column
        for c in range(self.n_c):
            cols = (tile_of == c).nonzero().squeeze(1)
            level = torch.quantile(u[..., cols].flatten(2).double(), self.spec.adc_percentile / 100, dim=-1)
            level = torch.where(level > 0, level * self.spec.adc_range, torch.ones_like(level)).to(u.dtype)
            g_read[..., cols] /= level[..., None, None]
            if s2_read is not None:
                s2_read[..., cols] /= level[..., None, None] ** 2
            out_fs[..., self.output_tiles == c] *= level[..., None, None]

    def _calibration_vectors(self, gen: torch.Generator) -> torch.Tensor:
        """Known inputs ``(K, CAL_VECTORS, in)``: binary, at full scale (exact on any DAC), each
        with its own activity drawn uniformly in ``(0, 1)``, so that the fit spans sparse
        and dense reads; signed (random signs) when the DAC is."""
        like = self.g_tiles
        rate = torch.rand(CAL_VECTORS, 1, generator=gen, device=like.device, dtype=like.dtype)
        u = torch.rand(CAL_VECTORS, self.shape[0], generator=gen, device=like.device, dtype=like.dtype)
        x = (u < rate).to(like.dtype) * self.spec.input_range
        if self.spec.dac_signed:
            sign = torch.rand(x.shape, generator=gen, device=like.device, dtype=like.dtype) < 0.5
            x = torch.where(sign, -x, x)
        return x.unsqueeze(0).expand(self.trials, *x.shape)

    def _tile_row_reads(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Each tile-row's decoded reads ``(K, n_r, N, out)`` of inputs ``x`` ``(K, N, in)``."""
        if not self.merged:
            return self._blocks_read(x, gen)
        tile_row = torch.arange(x.shape[-1], device=x.device) // self.rows  # read each alone
        return torch.stack([self._merged_read(x * (tile_row == r).to(x.dtype), gen)
                            for r in range(self.n_r)], 1)

    def fit_calibration(self, x: torch.Tensor, gen: torch.Generator | None = None) -> None:
        """Read inputs ``x`` ``(K, N, in)`` (each trial its own) and fit, per output and
        tile-row, a digital offset (minus the mean read with every input off) and gain (the
        least-squares gain of the reads onto the ideal products, :func:`calibration_gain`); both
        folded into the read (see the module docstring).
        The reads' noise comes from ``gen`` (default: the programming's generator), never
        from the inference's read-noise streams.  The trials are fitted in chunks
        (:data:`CAL_FIT_ELEMENTS`), so memory does not grow with their number."""
        if self.calibrated:
            raise RuntimeError("ProgrammedMatrix: already calibrated; program a new one to recalibrate")
        if self.active is not None:
            raise RuntimeError("ProgrammedMatrix: calibration fits every trial: select_trials() first")
        gen = gen or self._cal_gen
        x = x.to(self.g_tiles.dtype)
        x = _sample_rows(x, gen, CAL_MAX_ROWS)  # a random subset bounds the fit's memory
        per_trial = x.shape[1] * self.n_r * max(self.g_read.shape[-1], self.shape[0])
        step = max(1, CAL_FIT_ELEMENTS // per_trial)
        bias = []
        try:
            for start in range(0, self.trials, step):
                self.select_trials(start, min(self.trials, start + step))
                bias.append(self._fit_trials(x[self.active], gen))
        finally:
            self.select_trials()
        self.cal_bias = torch.cat(bias)  # (K, 1, out)
        self.calibrated = True

    def _fit_trials(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Fit the trials selected (``self.active``) on their inputs ``x``; the gains go
        into their buffers, and their offsets ``(k, 1, out)`` are returned."""
        if self.spec.adc_percentile is not None:
            self._set_adc_ranges(x)
        m = x.shape[-1]
        rows = self.n_r * self.rows
        w_pad = torch.zeros(rows, self.w_target.shape[1], dtype=x.dtype, device=x.device)
        w_pad[:m] = self.w_target
        t = by_tile_row(x, self.n_r, self.rows) @ w_pad.reshape(self.n_r, self.rows, -1)  # (k, n_r, N, out): ideal sums
        y = self._tile_row_reads(x, gen)  # (k, n_r, N, out)
        # All inputs off, averaged over a few reads (noise): the offset.
        y0 = self._tile_row_reads(torch.zeros_like(x[:, :CAL_ZERO_READS]), gen).mean(2, keepdim=True)
        out_fs = self._trials(self.out_fs)
        lsb = None if self.spec.adc_bits is None else out_fs.squeeze(2)  # one code, per output
        gain = calibration_gain(y - y0, t, lsb, self.output_tiles)
        offset = -gain * y0.squeeze(2)
        if self.merged:
            row_gain = gain.repeat_interleave(self.rows, 1)[:, :m]  # (k, in, out)
            self._trials(self.g_read).mul_(row_gain)
            if self.s2_read is not None:
                self._trials(self.s2_read).mul_(row_gain**2)
        else:
            out_fs.mul_(gain.unsqueeze(2))
        return offset.sum(1, keepdim=True)


# Known vectors read per calibration: the gain's relative error from read noise falls as
# one over the square root of this.
CAL_VECTORS = 512
# Inputs kept per read while recording a calibration batch (a random subset of its rows),
# and at most in one fit.
CAL_ROWS_PER_READ = 512
# Reads with every input off, averaged into each output's offset.
CAL_ZERO_READS = 64
CAL_MAX_ROWS = 4096
# Numbers per tensor of a calibration fit (trials x inputs x tile-rows x read columns), at
# most: the trials are fitted in chunks of this size (a 5-trial study fits in one).
CAL_FIT_ELEMENTS = 2**25
# Samples (trials x batch) that a read of the network serves at once, by default: bounds
# the memory of the inference and the calibration whatever the number of trials (the
# default study's conv SNN reads 1,000 samples at once: 5 trials of 200 images).
CHUNK_SAMPLES = 1024


def trial_chunks(trials: int, batch: int, per_chunk: int | None = None) -> list[slice]:
    """The trials ``0 .. trials - 1`` in chunks of ``per_chunk`` (default: as many as keep
    ``chunk x batch`` within :data:`CHUNK_SAMPLES`)."""
    step = max(1, CHUNK_SAMPLES // max(1, batch)) if per_chunk is None else per_chunk
    return [slice(a, min(trials, a + step)) for a in range(0, trials, step)]


def _sample_rows(x: torch.Tensor, gen: torch.Generator, most: int) -> torch.Tensor:
    """At most ``most`` of the ``N`` inputs of a read ``(K, N, in)``, at random (``x``
    itself when it has no more)."""
    n = x.shape[1]
    if n <= most:
        return x.detach()
    pick = torch.randperm(n, generator=gen, device=gen.device)[:most].to(x.device)
    return x[:, pick].detach()


def calibration_gain(y: torch.Tensor, t: torch.Tensor, lsb: torch.Tensor | None = None,
          tile_of: torch.Tensor | None = None) -> torch.Tensor:
    """The digital gain ``g`` ``(K, n_r, out)`` for offset-free reads ``y`` of ideal
    products ``t`` (vectors on axis 2): the least-squares ``g`` of ``t ~ g y`` through the
    origin, ``sum(t y) / sum(y^2)``, the gain that brings the calibration reads closest to
    the ideal products (mean square), so a calibrated read is never further from them
    than the raw one on the calibration data.  A crossbar reads 0 for no input, so the
    line has no intercept (a constant on every read is a bias that the membranes of an
    SNN integrate at every step).  Where the reads are an attenuation ``a`` and an error
    ``e`` uncorrelated with the products, ``g = a / (a^2 + E e^2 / E t^2)``: exactly
    ``1/a`` without error, less where the error is large, which does not amplify an error
    as much as the signal (measured on 128x128 tiles with IR drop, where the unbiased
    ``1/a`` cost up to 8 points against raw: docs/hardware.md#calibration).  ``g`` is
    capped at 10.

    An output's own gain is fitted where its products' RMS spans at least
    :data:`RESOLVED_CODES` ADC codes (``lsb``: one code per output and tile-row, in the
    units of ``t``): below, its reads are mostly rounding (a sparse output whose products
    fall within one code reads 0 whatever they are).  Such an output takes the gain of its
    tile (``tile_of``: the tile of each output; default one tile), fitted over all the
    tile's outputs, when those span enough codes together: a tile's columns share its
    wires, so their attenuations are alike, and an output left at gain 1 beside corrected
    neighbours would be scaled unlike them (measured: that mismatch between the classes of
    an output layer cost 8 points).  Where the tile does not resolve either, the output
    takes the gain fitted over every tile of the layer (all tiles are the same circuit),
    when the products that carry that fit (weighted by their square, as the fit weighs
    them) span enough codes: sparse inputs leave most tile-rows under 4 codes, and a
    layer whose few resolved tile-rows were boosted while the rest stayed at 1 lost 1.3
    points against the raw chip (the converted MLP on 64x64 tiles at 2.5 ohm/cell); with
    the layer's gain it gained 1.7.  Outputs with no products keep gain 1."""
    t2 = t * t
    tt, ty, yy = t2.mean(2), (t * y).mean(2), (y * y).mean(2)
    has = (tt > 0) & (yy > 0)

    def fit(ty, yy):
        return (ty / yy.clamp_min(torch.finfo(y.dtype).tiny)).clamp(0.0, 10.0)

    if lsb is None:
        return torch.where(has, fit(ty, yy), torch.ones_like(tt))
    own = has & (tt >= (RESOLVED_CODES * lsb) ** 2)
    if tile_of is None:
        tile_of = torch.zeros(tt.shape[-1], dtype=torch.long, device=tt.device)
    n_tiles = int(tile_of.max()) + 1

    def tiles(a):  # (K, n_r, out) -> sums over each tile's outputs (K, n_r, tiles)
        return a.new_zeros(*a.shape[:-1], n_tiles).index_add_(-1, tile_of, a)

    def layer(a):  # (K, n_r, out) -> sums over every tile of the layer, (K, 1, 1)
        return a.sum((1, 2), keepdim=True)

    # The layer's fit weighs each read by its product squared, so it rests on the large
    # products: resolved when those (the t^2-weighted mean square, in codes) span enough.
    c2, c4 = tt / lsb**2, (t2 * t2).mean(2) / lsb**4
    layer_ok = layer(c4) >= RESOLVED_CODES**2 * layer(c2)
    fallback = torch.where(layer_ok & has, fit(layer(ty), layer(yy)).expand_as(tt), torch.ones_like(tt))
    pooled_ok = (tiles(tt) >= RESOLVED_CODES**2 * tiles(lsb**2))[..., tile_of]
    shared = torch.where(pooled_ok & has, fit(tiles(ty), tiles(yy))[..., tile_of], fallback)
    return torch.where(own, fit(ty, yy), shared)


# The RMS of a tile-row's ideal products, in ADC codes, below which its gain is not
# fitted (see calibration_gain).
RESOLVED_CODES = 4.0
