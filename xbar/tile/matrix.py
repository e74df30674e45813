"""A layer's crossbar matrix programmed onto tiles: Monte Carlo trials and tiles batched.

One :class:`ProgrammedMatrix` holds every tile of one layer for ``K`` trials (one trial
is one programming, :func:`xbar.tile.programming.programmed_devices`, seen through the
circuit trial by trial).  Programming
variation, stuck-at faults, drift exponents and the static share of the read noise are
drawn once, there; the rest of the read noise is drawn at every read.

Per-read noise, exact in distribution at one extra matrix product: the devices of a
column fluctuate independently, ``G_ij (1 + s_ij eps_ij)``, so the noise of column
current ``j`` is Gaussian with variance ``sum_i v_i^2 (s_ij G_ij)^2``: one product of
``v**2`` with the precomputed ``(s G)**2``, then one normal draw per column read, instead
of one draw per device per read (from each trial's own streams, on every core:
:mod:`xbar.streams`).  With a correlation ``rho`` between consecutive reads
(``DeviceModel.read_noise_correlation``), the normalised draw of each column and sample
follows an AR(1) process over the reads of one inference (:func:`xbar.tile.read.ar1`):
exact when consecutive reads drive the same rows (as binary spikes at a steady rate
mostly do), and otherwise the correlation of the column noise is ``rho`` times the
overlap of the two reads' drives.

Calibration (``Spec.calibration``, :mod:`xbar.tile.calibration`): the fitted gain folds
into the stored matrices or the ADC's digital scale, so a calibrated read costs what a
raw one does.

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

import numpy as np

import torch
import torch.nn as nn

from mapping.layout import layout_weights
from mapping.slicing import combine_slices
from xbar.checks import check_part
from xbar.memory import KEPT_PAGES_FROM, MEMORY_GB, READ_SHARE, fresh_pages, spans
from xbar.circuit import compensated_targets, effective_conductance, every_row_driven
from xbar.spec import Spec
from xbar.streams import NoiseStreams, ProgrammingDraws
from xbar.tile.calibration import (CAL_MAX_ROWS, CAL_REFERENCE_ROWS, CAL_ROWS_PER_READ, CAL_ZERO_READS, CAL_FIT_ELEMENTS,
                                   CAL_FIT_TENSORS,
                                   calibration_vectors, gain_from_moments, percentile_levels, range_groups,
                                   moments_about, read_sums, sample_rows)
from xbar.tile.columns import by_tile_row, crossbar_columns, read_column_tiles, read_columns, read_matrices, side_by_side, tile_row_parts
from xbar.tile.converters import (AdcErrors, add_planes, bit_planes, check_dac_input, code_weight, dac,
                                  converted_planes, draw_adc_errors, full_scale_units, integrated_planes, magnitude_bits,
                                  noise_square, top_code)
from xbar.tile.programming import designed_full_scale, programmed_devices, seen_through
from xbar.tile.read import ar1, circuit_currents, tile_row_read


class ProgrammedMatrix(nn.Module):
    """Crossbar matrix ``w`` ``(in, out)`` programmed on tiles, ``trials`` times.

    ``g_tiles`` holds the effective conductances (S), ``(K, n_r, n_c, R, C)``; the
    buffers used by a read are derived from it once, at programming.
    """

    def __init__(self, w: torch.Tensor, spec: Spec, *, trials: int, program_seed: int,
                 read_seed: int, only: range | None = None) -> None:
        super().__init__()
        dev = spec.device
        # The columns the tiles carry: the weights, or their bit slices (shifted and added
        # after the read: forward); a slice's digits are on its cells' levels already.
        matrix, column_max, self.slices = crossbar_columns(w, spec)
        layout = layout_weights(matrix, dev.g_min, dev.g_max, None if spec.sliced else dev.levels, spec.tile,
                                spec.mapping, spec.weight_scale, column_max)
        self.spec, self.shape, self.scheme = spec, layout.shape, layout.scheme
        self.outputs_per_tile = layout.outputs_per_tile
        self.n_r, self.n_c = layout.grid
        self.rows, self.cols = layout.tile
        # Trials ``only`` of ``trials`` (a part of a Monte Carlo run, as the whole programs
        # and reads them: every draw made for all, each trial's noise from its own streams).
        only = check_part("ProgrammedMatrix", only, trials)
        self.all_trials, self._part = trials, slice(only.start, only.stop)
        self.trials = trials = len(only)
        self.read_seed = read_seed
        # weight units per ampere of column-difference current, for inputs in input units
        # (per output, ``(out,)``, with per-column weight scales)
        self.out_scale = layout.w_per_output * spec.input_range / spec.v_read
        if spec.ir_drop_compensation is not None and spec.has_ir_drop:
            self.out_scale /= spec.ir_drop_compensation
        self.noise = NoiseStreams(read_seed, only)  # per-read noise, per trial (xbar.streams)
        self.adc_noise = NoiseStreams(read_seed, only, kind=1)  # the ADCs' conversion noise
        self.cal_noise = NoiseStreams(program_seed, only, kind=2)  # the same two while calibrating
        self.cal_adc_noise = NoiseStreams(program_seed, only, kind=3)
        self.active: slice | None = None  # the trials a read serves (None: all; select_trials)
        self._ar: dict = {}  # the AR(1) state of the per-read noise, per read site
        self.rho = dev.read_noise_correlation

        draws = ProgrammingDraws.from_seed(program_seed, w.device)  # one generator per kind of draw
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
        # Programmed as the chip is at its calibration (at t_calibration, then aged to
        # t_inference with the same draws: advance_to_inference), else at t_inference.
        self.program_seed, self._nominal = program_seed, nominal
        keep, a, b = read_columns(self.scheme, self.shape[1], self.n_c, self.cols, self.outputs_per_tile)
        # Analog subtraction: each pair's currents are subtracted before one signed ADC.
        self.analog_pairs = spec.analog_subtraction
        self.register_buffer("read_tiles", read_column_tiles(keep, self.cols, self.analog_pairs))
        # The tile (column block) of each output.
        self.register_buffer("output_tiles", torch.arange(self.shape[1], device=w.device) // self.outputs_per_tile)
        # One product over all tile-rows, unless each tile-row is read on its own: by its
        # ADC, or for a per-tile calibration of outputs decoded against a shared reference.
        # (An offset mapping's outputs share their tile's reference column: with a scale
        # per output, they are scaled after the decoding, on the tile-row reads.)
        # Where each read is its own circuit (a gated array, non-linear devices): per tile-row.
        self.per_read = spec.circuit_per_read
        self.merged = spec.adc_bits is None and not self.per_read and (self.scheme == "differential" or (
            not self.needs_calibration and layout.column_scale is None))
        self._keep, self._column_scale = keep, layout.column_scale
        # weight units per siemens of each output's column difference
        self._w_per_siemens = w_per_siemens if layout.column_scale is None else w_per_siemens * layout.column_scale
        i_fs = None
        if self.merged:
            self._pair_columns = (a, b)  # the read columns of each pair
        else:
            # The ADC is sized for the currents the nominal tiles draw through their wires
            # (the programmed devices, their drift and static noise are not known to the
            # designer).  Where calibration sets the ranges (Spec.ranges_from_calibration),
            # that size is only the unit the reads are scaled in until then (they set the
            # range in it, and no read is converted before): the nominal tiles' own
            # currents, without the circuit's solve (one trial's programming time).
            circuit = ((lambda g: g) if spec.ranges_from_calibration
                       else (lambda g: every_row_driven(g, spec)))
            i_fs = designed_full_scale(nominal, spec, circuit, self.shape[0], self.analog_pairs,
                                       self.outputs_per_tile)
            i_fs = None if i_fs is None else i_fs.expand(trials, *i_fs.shape)
            # read units per siemens: in units of the tile's full scale, or of the layer's weights
            self._scale = (torch.full((1, 1, 1, 1, 1), w_per_siemens, dtype=nominal.dtype, device=w.device)
                           if i_fs is None else full_scale_units(i_fs, spec))
        g_tiles, g_read, s2_read = self._program(spec.calibration_spec, draws)
        self.register_buffer("g_tiles", g_tiles)
        if self.merged:
            self._setup_merged(g_read, s2_read, a, b)
        else:
            self._setup_blocks(i_fs, g_read, s2_read, a, b)
        self._draw_adc_errors(draws.adc)
        self.register_buffer("cal_bias", None)
        self.register_buffer("w_target", matrix.to(self.g_tiles.dtype))  # what calibration fits to
        # What calibration multiplied into g_read (ranges, gains), kept for the chip's aging;
        # the drift compensation's reference batch, its level at calibration, and its factor.
        self.register_buffer("g_factor", None)
        self.register_buffer("ref_inputs", None)
        self.register_buffer("ref_level", None)
        self.register_buffer("drift_gain", None)
        self.fitted = np.zeros(trials, dtype=bool)  # the trials calibrated
        self.aged = not spec.ages_after_calibration  # at t_inference already
        self.draws = draws
        if spec.calibration == "vectors" and not spec.is_ideal:
            self.fit_calibration(calibration_vectors(self.shape[0], spec, trials, draws.calibration, self.g_tiles))
        self.recording: list | None = None  # a list while xbar.calibrate records the inputs
        self.rows_per_read = CAL_ROWS_PER_READ  # inputs sampled per read while recording
        # What the reads since programming (or reset_counts) cost: input vectors read (a
        # bit-serial input one per bit), tile reads and ADC conversions, summed over trials.
        self.reset_counts()
        self.keep_recording = True  # False: sample (the same draws) but keep nothing

    @property
    def part(self) -> slice:
        """Which of the run's ``all_trials`` trials this matrix holds."""
        return self._part

    @property
    def needs_calibration(self) -> bool:
        """The spec asks for calibration and there is something to correct."""
        return self.spec.calibration is not None and not self.spec.is_ideal

    @property
    def calibrated(self) -> bool:
        """Every trial fitted."""
        return bool(self.fitted.all())

    @property
    def awaits_data(self) -> bool:
        """Calibrated from data (``Spec.calibration="data"``) and not yet fitted, for a trial selected."""
        return (self.spec.calibration == "data" and self.needs_calibration
                and not self.fitted[self.active_trials.start:self.active_trials.stop].all())

    def _draw_adc_errors(self, gen: torch.Generator) -> None:
        """Each ADC's gain error, offset and non-linearity, per tile-row and read column,
        drawn once per programming (:func:`xbar.tile.converters.draw_adc_errors`)."""
        errors = draw_adc_errors(self.spec, (self.all_trials, self.n_r, 1, self.g_read.shape[-1]), gen, self.g_read)
        for name, value in zip(("adc_gain", "adc_offset", "adc_nonlinearity"), errors):
            self.register_buffer(name, None if value is None else value[self._part].contiguous())

    def _adc_errors(self, blocks: slice) -> AdcErrors:
        """The ADC errors of the trials a read serves and of tile-rows ``blocks``."""
        errors = AdcErrors(self.adc_gain, self.adc_offset, self.adc_nonlinearity)
        return errors.map(lambda t: self._trials(t)[:, blocks])

    def _program(self, spec: Spec, draws: ProgrammingDraws):
        """The layer's tiles programmed for every trial as ``spec``'s chip is at its
        ``t_inference``: ``(g_tiles, g_read, s2_read)``, the effective conductances and
        the matrices a read multiplies (:meth:`_read_matrices`).  Every draw is made for all
        the trials (:func:`xbar.tile.programming.programmed_devices`), so that a part of
        them programs as the whole does; then each trial of the part is seen through the
        circuit and made into its read matrices on its own, so that the temporaries are
        one trial's, not the part's."""
        g, g0 = programmed_devices(self._nominal.unsqueeze(0), spec, draws,
                                   shape=(self.all_trials, *self._nominal.shape))
        if self.trials < self.all_trials:  # the part's own copies: the other trials' draws freed now
            same = g0 is g
            g = g[self._part].clone()
            g0 = g if same else g0[self._part].clone()
        out: list | None = None
        for k in range(self.trials):
            state = seen_through(g[k : k + 1], g0[k : k + 1], spec, lambda t: effective_conductance(t, spec))
            parts = (state.g_eff, *self._read_matrices(state.g_eff, state.s2, slice(k, k + 1)))
            if out is None:
                out = [None if p is None else p.new_empty(self.trials, *p.shape[1:]) for p in parts]
            for buffer, p in zip(out, parts):
                if buffer is not None:
                    buffer[k : k + 1] = p
        return tuple(out)

    def _read_matrices(self, g: torch.Tensor, s2: torch.Tensor | None, trials: slice):
        """The matrices a read multiplies, from the effective conductances ``g`` and the
        per-read noise variances ``s2`` of the tiles ``(k, n_r, n_c, R, C)`` of the part's
        ``trials``: merged (every tile-row in one, ``(k, in, read columns)`` in weight units,
        a differential pair one column of ``G+ - G-``: exact for ideal ADCs), or per tile-row
        ``(k, n_r, R, read columns)`` in read units (:func:`xbar.tile.columns.read_matrices`)."""
        if not self.merged:
            scale = self._scale if self._scale.shape[0] == 1 else self._scale[trials]
            return read_matrices(g, s2, scale, self._keep, self.analog_pairs)
        k, m = g.shape[0], self.n_r * self.rows
        g = side_by_side(g).reshape(k, m, -1)[..., self._keep][:, : self.shape[0]]
        s2 = None if s2 is None else side_by_side(s2).reshape(k, m, -1)[..., self._keep][:, : self.shape[0]]
        if self.scheme == "differential":
            a, b = self._pair_columns
            g = g[..., a] - g[..., b]
            s2 = None if s2 is None else s2[..., a] + s2[..., b]
        return g * self._w_per_siemens, None if s2 is None else s2 * self._w_per_siemens**2

    def _setup_merged(self, g_read, s2_read, a, b) -> None:
        """Ideal ADC: ``y = x @ g_read`` in weight units, every tile-row in one product."""
        if self.scheme == "differential":
            a = b = None
        self.register_buffer("g_read", g_read)
        self.register_buffer("s2_read", s2_read)
        self.register_buffer("out_fs", None)
        self.register_buffer("col_a", a)
        self.register_buffer("col_b", b)

    def _setup_blocks(self, i_fs, g_read, s2_read, a, b) -> None:
        """Each tile-row read on its own.  With an ADC, ``u = x @ g_read`` is the column
        current in units of the tile's full scale ``i_fs``; without, it is in weight units of
        the layer's scale.  The decoded outputs are multiplied by ``out_fs``: weight units per
        code, or the per-column weight scales."""
        if self.analog_pairs:
            a = b = None
        self.register_buffer("g_read", g_read)
        self.register_buffer("s2_read", s2_read)
        if i_fs is None:
            fs = torch.ones(self.trials, self.n_r, self.shape[1], dtype=g_read.dtype, device=g_read.device)
            if self._column_scale is not None:
                fs = fs * self._column_scale.to(fs.dtype)
        else:  # the digital side: codes -> weight units, per output and tile-row
            fs = code_weight(i_fs, self.output_tiles, self.spec, self._w_per_siemens)
        self.register_buffer("out_fs", fs.unsqueeze(2).contiguous())  # (K, n_r, 1, out)
        self.register_buffer("col_a", a)
        self.register_buffer("col_b", b)
        # A per-read circuit's factor per read column: what calibration divides into g_read's
        # columns (the ADC ranges), applied to the currents each read's circuit gives.
        self.register_buffer("col_gain", torch.ones(self.trials, self.n_r, 1, g_read.shape[-1], dtype=g_read.dtype,
                                                    device=g_read.device) if self.per_read else None)

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

    def _normal(self, like: torch.Tensor, calibrating: bool, adc: bool = False) -> torch.Tensor:
        """Standard normals shaped like ``like`` for the column noise (``adc``: the ADCs'
        noise): from each trial's calibration streams while ``calibrating``, else from its
        read-noise streams."""
        if calibrating:
            return (self.cal_adc_noise if adc else self.cal_noise).normal(like, self.active_trials)
        return (self.adc_noise if adc else self.noise).normal(like, self.active_trials)

    def reset_read_noise(self) -> None:
        """Restart the read-noise streams from their seeds."""
        self.noise.restart()
        self.adc_noise.restart()
        self._ar = {}

    def new_inference(self) -> None:
        """The next read starts a new inference: no correlation with the reads before."""
        self._ar = {}

    def _add_noise_(self, u: torch.Tensor, x: torch.Tensor, s2: torch.Tensor | None, site: str,
                    calibrating: bool, errors: AdcErrors | None = None) -> bool:
        """The per-read noise of column sums ``u`` of inputs ``x``, added to ``u`` in place:
        its standard deviation from one product of ``x**2`` with the variances ``s2``, times
        standard normals laid out as ``u``, AR(1) over the reads of an inference at read site
        ``site``; while ``calibrating``, white and from the calibration's streams.  Where
        the read goes on to an ADC with no ``errors`` of its own and no noise (``errors``
        given), and the noise is white, the ADC's clip and rounding are made in the same
        pass (:meth:`NoiseStreams.add_noise_`).  Returns whether ``u`` holds codes now.
        Nothing without ``s2``."""
        if s2 is None:
            return False
        var = torch.matmul(noise_square(x, self.spec), s2)
        if self.rho and not calibrating:
            eps = self._ar[site] = ar1(self._ar.get(site), self._normal(u, calibrating), self.rho)
            u.addcmul_(var.sqrt_(), eps)
            return False
        codes = None
        if errors is not None and not errors.any and self.spec.adc_noise == 0:
            codes = (-1.0 if self.spec.signed_adc else 0.0, top_code(self.spec.adc_bits, self.spec.signed_adc))
        streams = self.cal_noise if calibrating else self.noise
        streams.add_noise_(u, var, self.active_trials, codes)
        return codes is not None

    def read_bytes(self) -> int:
        """Bytes one input row of one trial takes at the peak of a read: the input and its
        tile-row copy, then per read column of every tile-row its current, noise standard
        deviation, normals and ADC temporaries (four), and the decoded outputs; with
        bit-serial inputs, all of it per bit (the most a non-binary input reads).  What
        :func:`xbar.memory.chunking` sizes the trials and batches by."""
        elt = self.g_read.element_size()
        n_in, n_out = self.shape
        tile_rows = 1 if self.merged else self.n_r
        solves = 8 * self.n_r * self.n_c * (self.rows + 3 * self.cols) if self.per_read else 0  # float64 solves
        planes = magnitude_bits(self.spec) if self.spec.input_scheme == "bit_serial" else 1
        return planes * (elt * (2 * n_in + 4 * tile_rows * self.g_read.shape[-1] + (tile_rows + 1) * n_out) + solves)

    def _driven(self, x: torch.Tensor) -> torch.Tensor:
        check_dac_input(x, self.spec)
        return dac(x, self.spec)

    def _serial(self, x: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Driven inputs ``x`` ``(K, N, in)`` as the reads that drive them: itself, or with
        bit-serial inputs one binary read per bit, ``(K, planes * N, in)`` plane-major
        (:func:`xbar.tile.converters.bit_planes`); and the number of planes."""
        planes = converted_planes(x, self.spec)
        if planes == 1:
            return x, 1
        return bit_planes(x, planes, self.spec).transpose(0, 1).flatten(1, 2), planes

    def reads_per_input(self, x: torch.Tensor) -> int:
        """The input rows one input vector of ``x`` is read as: 1, or its bit planes, each
        converted on its own (``Spec.input_scheme="bit_serial"``)."""
        return converted_planes(dac(x, self.spec), self.spec)

    def _count(self, x: torch.Tensor) -> None:
        """Add a read of the input rows ``x`` ``(K, N, in)`` to :attr:`counts`: each one read
        and converted, or with bits integrated (``"bit_integrated"``), one read per bit and
        one conversion."""
        vectors = x.shape[0] * x.shape[1]
        reads = vectors * integrated_planes(x, self.spec)
        self.counts["reads"] += reads
        self.counts["tile_reads"] += reads * self.n_r * self.n_c
        if self.spec.adc_bits is not None:
            self.counts["conversions"] += vectors * self.n_r * self.g_read.shape[-1]

    def reset_counts(self) -> None:
        """Start :attr:`counts` again from 0."""
        self.counts = {"reads": 0, "tile_reads": 0, "conversions": 0}

    def _record(self, x: torch.Tensor) -> None:
        """Sample calibration rows of the driven inputs ``x`` (from the calibration
        generator), kept in ``recording`` if ``keep_recording``."""
        rows = sample_rows(x, self.draws.calibration, self.rows_per_read)
        if self.keep_recording:
            with fresh_pages(KEPT_PAGES_FROM):  # kept across the pass: not between the reads' gaps
                self.recording.append(rows.clone())

    def draw_past(self, n: int) -> None:
        """Draw what recording a read of ``n`` inputs per trial draws, keeping nothing (the
        calibration generator then stands where a read would have left it)."""
        if n > self.rows_per_read:
            torch.randperm(n, generator=self.draws.calibration, device=self.draws.calibration.device)

    def record(self, x: torch.Tensor) -> None:
        """What a read while recording keeps of ``x`` ``(K, N, in)``, without the read
        (:func:`xbar.calibrate`: the layer being fitted, whose outputs nothing then uses)."""
        self._record(self._serial(self._driven(x))[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(K, N, in)`` inputs -> ``(K, N, out)`` in weight units (``x @ w``); with
        bit-sliced weights, the slices' outputs shifted and added."""
        x, planes = self._serial(self._driven(x))
        if self.recording is not None:
            self._record(x)
        elif self.awaits_data:
            raise RuntimeError("crossbar read: this layer waits for its calibration from data "
                               "(Spec.calibration='data'): run xbar.calibrate(hw, x, timesteps) on a "
                               "few training samples first (or pass simulate(..., calibration_data=...)), "
                               "or use Spec(calibration='vectors') or Spec(calibration=None) (raw)")
        if self.merged:
            y = self._merged_read(x)
        else:
            y = self._blocks_read(x).sum(1)
        if self.cal_bias is not None:
            y = y + self._trials(self.cal_bias)
        if self.recording is None:
            self._count(x)
        if planes > 1:  # the bit-serial reads shifted and added
            y = add_planes(y.unflatten(1, (planes, -1)).movedim(1, 0), self.spec)
        return combine_slices(y, self.slices)

    def _merged_read(self, x: torch.Tensor, calibrating: bool = False) -> torch.Tensor:
        u = torch.matmul(x, self._trials(self.g_read))
        self._add_noise_(u, x, self._trials(self.s2_read), "merged", calibrating)
        return tile_row_read(u, None, None, self.spec, adc=False, a=self.col_a, b=self.col_b, inplace=True)

    def _blocks_read(self, x: torch.Tensor, calibrating: bool = False, first: int = 0) -> torch.Tensor:
        """Each tile-row's decoded output ``(K, n_r, N, out)`` in weight units: the full
        tile-rows, then the partial last one with only its used rows (no product over the
        zero padding: conv1 of a 3x3 kernel uses 9 of 64 rows).  ``x`` may be the inputs of
        the tile-rows from ``first`` on only."""
        # The full tile-rows are a transposed view: made contiguous for the product.
        parts = [self._block_read(xt.contiguous() if xt.shape[-1] == self.rows else xt,
                                  slice(first + blocks.start, first + blocks.stop), calibrating)
                 for xt, blocks in tile_row_parts(x, x.shape[-1], self.rows)]
        return parts[0] if len(parts) == 1 else torch.cat(parts, 1)

    def _block_read(self, xt: torch.Tensor, blocks: slice, calibrating: bool) -> torch.Tensor:
        """Read tile-rows ``blocks`` with inputs ``xt`` ``(K, n, N, r)`` (``r`` used rows):
        product, column noise, ADC per column (if any), digital decoding and scale
        (:func:`xbar.tile.read.tile_row_read`)."""
        r = xt.shape[-1]
        if self.per_read:
            u = self._circuit_currents(xt, blocks)
        else:
            u = torch.matmul(xt, self._trials(self.g_read)[:, blocks, :r])  # column currents / full scale
        s2 = None if self.s2_read is None else self._trials(self.s2_read)[:, blocks, :r]
        adc, errors = self.spec.adc_bits is not None, self._adc_errors(blocks)
        coded = self._add_noise_(u, xt, s2, f"block{blocks.start}", calibrating, errors if adc else None)
        y = tile_row_read(u, None, None, self.spec, adc=adc and not coded, a=self.col_a, b=self.col_b, errors=errors,
                          normal=lambda like: self._normal(like, calibrating, adc=True), inplace=True)
        return y * self._trials(self.out_fs)[:, blocks]

    def _circuit_currents(self, xt: torch.Tensor, blocks: slice) -> torch.Tensor:
        """What ``x @ g_read`` is where each read is its own circuit: each read solved
        (:func:`xbar.tile.read.circuit_currents`, float64) on the devices of tile-rows ``blocks``
        (``g_tiles``) for inputs ``xt`` ``(K, n, N, r)`` (the rows past ``r`` undriven, their
        wires still there), then scaled and taken to the read columns as
        :func:`read_matrices` takes conductances, times the calibration's factor per read
        column: ``(K, n, N, read columns)``."""
        g = self._trials(self.g_tiles)[:, blocks]  # (K, n, n_c, R, C)
        pad = self.rows - xt.shape[-1]
        v = torch.nn.functional.pad(xt, (0, pad)) if pad else xt
        i = circuit_currents(g.unsqueeze(3), v.unsqueeze(2), self.spec)
        scale = self._scale if self._scale.shape[0] == 1 else self._trials(self._scale)
        scale = scale if scale.shape[1] == 1 else scale[:, blocks]
        u, _ = read_matrices(i.to(g.dtype), None, scale, self._keep, self.analog_pairs)  # (K, n, N, read columns)
        return u.mul_(self._trials(self.col_gain)[:, blocks]).contiguous()

    def _set_adc_ranges(self, x: torch.Tensor, rows: slice) -> None:
        """The ADC full scales of tile-rows ``rows`` at the ``Spec.adc_percentile``-th
        percentile of the column currents that the inputs ``x`` ``(K, N, in)`` draw in them
        (:func:`xbar.tile.calibration.percentile_levels`), instead of the worst case: fewer
        codes go to currents that never come."""
        g_read, out_fs = self._trials(self.g_read)[:, rows], self._trials(self.out_fs)[:, rows]  # views: set in place
        s2_read = None if self.s2_read is None else self._trials(self.s2_read)[:, rows]
        xt = self._tile_row_inputs(x, rows)
        u = (self._circuit_currents(xt, rows) if self.per_read else xt @ g_read).abs()  # (K, rows, N, read columns)
        columns, outputs, n_groups = range_groups(self.spec, self.analog_pairs, self.read_tiles, self.output_tiles)
        level = percentile_levels(u, columns, n_groups, self.spec)  # (K, rows, groups)
        per_column = level[..., columns].unsqueeze(2)
        g_read /= per_column
        if self.g_factor is not None:
            self._trials(self.g_factor)[:, rows].div_(per_column)
        if s2_read is not None:
            s2_read /= per_column**2
        out_fs *= level[..., outputs].unsqueeze(2)
        if self.per_read:
            self._trials(self.col_gain)[:, rows].div_(per_column)

    def _tile_row_inputs(self, x: torch.Tensor, rows: slice) -> torch.Tensor:
        """The inputs ``x`` ``(K, N, in)`` of tile-rows ``rows``, ``(K, rows, N, self.rows)``
        (zero-padded in a partial last tile-row)."""
        return by_tile_row(x[..., rows.start * self.rows : rows.stop * self.rows], rows.stop - rows.start, self.rows)

    def _tile_row_reads(self, x: torch.Tensor, rows: slice | None = None) -> torch.Tensor:
        """The decoded reads ``(K, rows, N, out)`` of tile-rows ``rows`` (default: all) of
        inputs ``x`` ``(K, N, in)``, each tile-row on its own."""
        rows = rows or slice(0, self.n_r)
        if not self.merged:
            return self._blocks_read(x[..., rows.start * self.rows : rows.stop * self.rows], True, rows.start)
        tile_row = torch.arange(x.shape[-1], device=x.device) // self.rows  # read each alone
        return torch.stack([self._merged_read(x * (tile_row == r).to(x.dtype), calibrating=True)
                            for r in range(rows.start, rows.stop)], 1)

    def _fit_elements(self, memory_gb: float) -> int:
        """Numbers per tensor of a fit: :data:`CAL_FIT_TENSORS` such tensors within
        :data:`xbar.memory.READ_SHARE` of ``memory_gb``, at most :data:`CAL_FIT_ELEMENTS`."""
        room = int(READ_SHARE * memory_gb * 2**30 // (CAL_FIT_TENSORS * self.g_read.element_size()))
        return max(1, min(CAL_FIT_ELEMENTS, room))

    def _fit_numbers(self, x: torch.Tensor) -> int:
        """Numbers per trial and tile-row of a fit's largest tensors on inputs ``x`` ``(k,
        N, in)``: each of the ``N`` inputs' read columns or outputs."""
        return x.shape[1] * max(self.g_read.shape[-1], self.shape[1])

    def _fit_parts(self, x: torch.Tensor, elements: int) -> list[slice]:
        """The tile-rows of a fit of inputs ``x`` ``(k, N, in)`` in parts whose tensors
        hold at most ``elements`` numbers (one tile-row at least)."""
        return spans(self.n_r, max(1, elements // (x.shape[0] * self._fit_numbers(x))))

    def fit_calibration(self, x: torch.Tensor, *, age: bool = True, memory_gb: float = MEMORY_GB) -> None:
        """Read inputs ``x`` ``(k, N, in)`` of the trials selected (:meth:`select_trials`;
        all by default), each trial its own, and fit, per output and
        tile-row, a digital offset (minus the mean read with every input off) and gain (the
        least-squares gain of the reads onto the ideal products, :func:`calibration_gain`); both
        folded into the read (see the module docstring).
        The reads' noise comes from the calibration's own generators
        (:class:`xbar.streams.ProgrammingDraws`), never from the inference's read-noise
        streams.  The trials are fitted in chunks, and a trial's tile-rows in parts where
        one trial is larger, within :data:`xbar.memory.READ_SHARE` of ``memory_gb``
        (:meth:`_fit_elements`), so memory does not grow with their number or the layer's
        size; the fits are the same whatever the chunks, and a group of trials fitted on
        its own (:func:`xbar.calibrate` fits a few at a time) is fitted as among all, where
        the calibration generator stands where it stood for all (it draws the rows fitted).
        The matrix is ``calibrated`` once every trial is.
        With ``Spec.t_calibration`` the chip is calibrated as it is then, and aged to
        ``t_inference`` afterwards (:meth:`advance_to_inference`; ``age=False`` leaves
        that to the caller: :func:`xbar.calibrate` ages every layer once all are fitted,
        so that each layer is calibrated on the inputs the chip gives at calibration)."""
        group = self.active_trials
        if self.fitted[group.start:group.stop].any():
            raise RuntimeError("ProgrammedMatrix: already calibrated; program a new one to recalibrate")
        if x.shape[0] != len(group):
            raise ValueError(f"fit_calibration: x holds {x.shape[0]} trials' inputs, for the {len(group)} "
                             "trials selected")
        x = x.to(self.g_tiles.dtype)
        x = sample_rows(x, self.draws.calibration, CAL_MAX_ROWS)  # a random subset bounds the fit's memory
        if not self.aged and self.g_factor is None:  # what the fit multiplies into g_read, for t_inference
            shape = self.g_read.shape if self.merged else (*self.g_read.shape[:2], 1, self.g_read.shape[-1])
            self.g_factor = torch.ones(shape, dtype=self.g_read.dtype, device=self.g_read.device)
        if self.cal_bias is None:
            self.cal_bias = torch.zeros(self.trials, 1, self.shape[1], dtype=self.g_read.dtype,
                                        device=self.g_read.device)
        elements = self._fit_elements(memory_gb)
        before = self.active
        try:
            for ks in spans(len(group), max(1, elements // (self.n_r * self._fit_numbers(x)))):
                self.select_trials(group.start + ks.start, group.start + ks.stop)
                self.cal_bias[self.active] = self._fit_trials(x[ks], elements)
            self.select_trials(group.start, group.stop)
            if self.spec.drift_compensation is not None and not self.aged:
                self._keep_reference(x[:, :CAL_REFERENCE_ROWS])
        finally:
            self.active, self._ar = before, {}
        self.fitted[group.start:group.stop] = True
        if age and self.calibrated:
            self.advance_to_inference()

    def _keep_reference(self, x: torch.Tensor) -> None:
        """The drift compensation's reference batch ``x`` ``(k, rows, in)`` of the trials
        selected, and its level read now."""
        group = self.active
        if self.ref_inputs is None:
            self.ref_inputs = torch.zeros(self.trials, *x.shape[1:], dtype=x.dtype, device=x.device)
            self.ref_level = torch.zeros(self.trials, 1, 1, dtype=self.g_read.dtype, device=x.device)
        self.ref_inputs[group] = x
        self.ref_level[group] = self._reference_level()

    def _reference_level(self) -> torch.Tensor:
        """Each selected trial's mean output magnitude ``(k, 1, 1)`` on the reference batch
        ``ref_inputs``, calibrated (the noise from the calibration's generators)."""
        group, levels = self.active_trials, []
        before = self.active
        try:
            for ks in trial_chunks(len(group), self.ref_inputs.shape[1]):
                self.select_trials(group.start + ks.start, group.start + ks.stop)
                y = self._tile_row_reads(self.ref_inputs[self.active]).sum(1) + self._trials(self.cal_bias)
                levels.append(y.abs().mean((1, 2), keepdim=True))
        finally:
            self.active, self._ar = before, {}
        return torch.cat(levels)

    def advance_to_inference(self) -> None:
        """The chip calibrated at ``Spec.t_calibration``, as it reads at ``t_inference``:
        its devices programmed again from the same draws (so the same devices, drifted
        and relaxed further, with the static read noise of ``t_inference``), through the
        same circuit, with the calibration's ranges, gains and offsets kept as fitted;
        with ``drift_compensation``, the factor of the reference batch read now.
        Nothing to do where the chip does not age after its calibration."""
        if self.aged:
            return
        if not self.calibrated:
            raise RuntimeError("ProgrammedMatrix.advance_to_inference: calibrate first (the chip ages "
                               "after its calibration at Spec.t_calibration)")
        self.g_tiles, g, s2 = self._program(self.spec, ProgrammingDraws.from_seed(self.program_seed, self.g_tiles.device))
        self.g_read = g.mul_(self.g_factor)
        self.s2_read = None if s2 is None else s2.mul_(self.g_factor**2)
        self.aged = True
        if self.ref_inputs is not None:
            self.drift_gain = self.ref_level / self._reference_level()  # (K, 1, 1)
            self._fold_output_gain(self.drift_gain)

    def _fold_output_gain(self, gain: torch.Tensor) -> None:
        """Every output of trial k multiplied by ``gain[k]`` ``(K, 1, 1)``, folded into the
        read (the merged matrices, or the digital scale after the ADCs) and the offsets, so
        that the read costs what it did."""
        if self.merged:  # a linear read: the matrix, and the noise's variance
            self.g_read.mul_(gain)
            if self.s2_read is not None:
                self.s2_read.mul_(gain**2)
        else:
            self.out_fs.mul_(gain.unsqueeze(1))
        self.cal_bias.mul_(gain)

    def _fit_trials(self, x: torch.Tensor, elements: int) -> torch.Tensor:
        """Fit the trials selected (``self.active``) on their inputs ``x``; the gains go
        into their buffers, and their offsets ``(k, 1, out)`` are returned.  The tile-rows
        are read in parts (:meth:`_fit_parts`), each once, its raw sums against the ideal
        products kept (:func:`read_sums`), then the reads with every input off, about whose
        mean (the offset) the sums are taken (:func:`moments_about`): the fit is the same
        whatever the parts, in bounded memory."""
        parts = self._fit_parts(x, elements)
        if self.spec.ranges_from_calibration:
            for rows in parts:
                self._set_adc_ranges(x, rows)
        sums = []
        for rows in parts:
            sums.append(read_sums(self._tile_row_reads(x, rows), self._ideal_sums(x, rows))[0])
        # All inputs off, averaged over a few reads (noise): the offset.
        y0 = self._tile_row_reads(torch.zeros_like(x[:, :CAL_ZERO_READS])).mean(2, keepdim=True)
        moments = moments_about(torch.cat(sums, 2), x.shape[1], y0.squeeze(2))
        out_fs = self._trials(self.out_fs)
        lsb = None if self.spec.adc_bits is None else out_fs.squeeze(2)  # one code, per output
        gain = gain_from_moments(moments, lsb, self.output_tiles).to(self.g_read.dtype)
        offset = -gain * y0.squeeze(2)
        if self.merged:
            row_gain = gain.repeat_interleave(self.rows, 1)[:, :x.shape[-1]]  # (k, in, out)
            self._trials(self.g_read).mul_(row_gain)
            if self.g_factor is not None:
                self._trials(self.g_factor).mul_(row_gain)
            if self.s2_read is not None:
                self._trials(self.s2_read).mul_(row_gain**2)
        else:
            out_fs.mul_(gain.unsqueeze(2))
        return offset.sum(1, keepdim=True)

    def _ideal_sums(self, x: torch.Tensor, rows: slice) -> torch.Tensor:
        """The ideal partial sums ``(k, rows, N, out)`` of tile-rows ``rows`` of inputs
        ``x`` ``(k, N, in)``: what calibration fits the reads to."""
        n = rows.stop - rows.start
        w = self.w_target[rows.start * self.rows : rows.stop * self.rows]
        w_pad = torch.zeros(n * self.rows, w.shape[1], dtype=x.dtype, device=x.device)
        w_pad[: w.shape[0]] = w
        return self._tile_row_inputs(x, rows) @ w_pad.reshape(n, self.rows, -1)


# Samples (trials x batch) that a read of the network serves at once, by default: bounds
# the memory of the inference and the calibration whatever the number of trials (the
# default study's conv SNN reads 1,000 samples at once: 5 trials of 200 images).
CHUNK_SAMPLES = 1024


def trial_chunks(trials: int, batch: int, per_chunk: int | None = None) -> list[slice]:
    """The trials ``0 .. trials - 1`` in chunks of ``per_chunk`` (default: as many as keep
    ``chunk x batch`` within :data:`CHUNK_SAMPLES`)."""
    return spans(trials, max(1, CHUNK_SAMPLES // max(1, batch)) if per_chunk is None else per_chunk)
