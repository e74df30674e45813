"""The hardware specification: one frozen, validated dataclass."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace

from devices import DeviceModel, presets
from devices import validation as v
from mapping.layout import SCHEMES, WEIGHT_SCALES
from xbar.circuit import check_resistances

# Wire resistance per cell (ohm): the default of IBM aihwkit's IR-drop model,
# ``IOParameters.ir_drop_g_ratio = 1 / (0.35 ohm * 5 uS)`` (docs/hardware.md).
R_WIRE_AIHWKIT = 0.35

# The percentile of the calibration reads' column currents at which the ADC ranges are
# set by default: chosen by measurement (python -m studies.adc_ranges, docs/hardware.md#adc-ranges).
ADC_PERCENTILE = 99.9

# What Spec.calibration may be, besides None (the raw hardware).
CALIBRATIONS = ("data", "vectors")

# How the inputs meet the array (Spec.array).
ARRAYS = ("connected", "gated")

# How a non-binary input meets the rows (Spec.input_scheme): one read at its DAC code's
# voltage, or one binary read per bit of the code, each converted or their charges
# integrated before one conversion.
INPUT_SCHEMES = ("amplitude", "bit_serial", "bit_integrated")

# What reads a layer's columns (Spec.neuron): an ADC per column at every step and a digital
# neuron, or an analog neuron integrating the column current on its membrane capacitor.
NEURONS = ("digital", "analog")

# The largest relative spread of an analog neuron's capacitor or threshold: at 0.2 a
# negative draw is 5 standard deviations away (one in 3.5 million neurons).
MAX_NEURON_SIGMA = 0.2

# The devices' current-voltage curve in the read (Spec.iv).
IVS = ("linear", "device")

# The gated array's access transistor, by default: its on-resistance a quarter of the
# device's lowest resistance (1 / g_max), NeuroSim's sizing rule for 1T1R cells
# (resistanceAccess = resistanceOn * IR_DROP_TOLERANCE, IR_DROP_TOLERANCE = 0.25, in
# DNN_NeuroSim V1.4's Param.cpp and constant.h).
ACCESS_SHARE = 0.25

# The most bits of weight magnitude a bit-sliced weight may have (cell_bits * weight_slices):
# a float32 read resolves 24 bits, and the shift-and-add of its slices needs headroom.
MAX_WEIGHT_BITS = 16


@dataclass(frozen=True)
class Spec:
    """What the analog hardware is.

    tile
        ``(rows, cols)`` of one crossbar array; inputs drive rows, outputs are read on
        columns.  A layer larger than one tile spans several; partial sums of tiles
        stacked along the rows are added digitally after each tile's ADC.
    device
        the :class:`devices.DeviceModel` of every cell.
    mapping
        ``"differential"`` (two columns per output, G+ - G-) or ``"offset"`` (one column
        per output and one reference column per tile).
    weight_scale
        ``"layer"`` (default): one weight scale per layer, its largest |w| at the full
        conductance window, the digital side multiplying every output by the same
        factor; ``"column"``: one per output column, each output's largest |w| at the
        full window and a digital factor per output (IBM aihwkit's
        ``weight_scaling_columnwise``): outputs with small weights use more of the
        window, above the devices' absolute noise and level steps.
    cell_bits, weight_slices
        bit-sliced weights (:mod:`mapping.slicing`): each weight quantized to ``weight_slices``
        digits of ``cell_bits`` bits, sign and magnitude, each digit on its own differential
        pair of cells at ``2**cell_bits`` levels, each slice's columns read by their own ADCs
        and the digitized slices shifted and added (Sandia CrossSim's balanced bit-sliced
        core; NeuroSim's ``cellBit``).  ``cell_bits=None`` (default): one pair per weight at
        the device's own levels.  ``weight_slices=1`` with ``cell_bits``: one pair of
        ``2**cell_bits``-level cells.  Needs the differential mapping; on a device with
        levels, the cell's levels must be among them.
    adc_bits, adc_range, adc_signed
        per-column ADC.  ``adc_bits=None``: an ideal ADC (no quantization, no clipping).
        Its full scale: set at calibration from the calibration reads
        (``adc_percentile``), or the worst case: ``adc_range`` times the largest column
        current a tile can draw, ``v_read * max_j sum_i G_ij`` with every row that an input
        drives at full scale, ``G`` the effective conductances of the nominal tile (the
        targets through the wires, IR drop included), as a designer sizes it without
        knowing the programmed devices.  Unipolar (``adc_signed=False``): currents are
        clipped to ``[0, I_fs]`` and rounded to ``2**bits`` levels; signed: ``[-I_fs,
        I_fs]``, ``2**bits - 1`` levels symmetric about 0.  Currents beyond the range
        saturate.  ``adc_signed=None`` (default): signed where analog subtraction or a
        signed DAC needs it, unipolar otherwise (:attr:`signed_adc`).
    subtraction
        how a differential pair becomes an output: ``"analog"`` (the two currents are
        subtracted on the chip and one signed ADC digitizes the difference, as NeuRRAM,
        Wan et al., Nature 2022, and IBM's HERMES PCM chip, Le Gallo et al., Nature
        Electronics 2023, read their differential weights; worst-case full scale = the
        largest difference either way with every driven row at full scale; needs the
        differential mapping and a signed ADC) or ``"digital"`` (each column has its ADC,
        and the codes are subtracted).  ``None`` (default): analog with the differential
        mapping, digital with the offset mapping (:attr:`analog_subtraction`).
    adc_percentile
        a number in ``(0, 100]`` (default 99.9): when the crossbar is calibrated,
        each tile's (or column's, ``adc_range_scope``) full scale is set at this percentile
        of the column current magnitudes that the calibration inputs drew, times
        ``adc_range``, as designers set ranges from calibration data; currents beyond it
        saturate.  Chosen by measurement (docs/hardware.md#adc-ranges).  ``None``: the
        worst case above.  The raw chip (``calibration=None``) has no calibration reads to
        set ranges from: its ranges are the worst case.
    adc_noise, adc_gain_error, adc_offset_error
        the converters' own errors (all 0 by default; each needs ``adc_bits``), in the
        form of IBM aihwkit's tile model (``IOParameters.out_noise`` and the per-output
        ``v_offset_std``) and of the per-column offsets that NeuRRAM (Wan et al., Nature
        2022, Fig. 4) records at calibration and cancels: ``adc_noise`` is the std of a
        Gaussian input-referred noise drawn at every conversion, in LSB;
        ``adc_gain_error`` the std of each column's relative gain error and
        ``adc_offset_error`` the std of each column's offset (in LSB), both drawn once
        per programming.  No preset sets them: take them from the characterisation of
        the chip you model.  Calibration removes the offsets (read with every input off)
        and, with analog subtraction, the gain errors (tested), not the noise; with
        digital subtraction the two ADCs of a pair differ in gain, and a gain per output
        corrects that only in part.  A unipolar ADC clips a negative
        offset at zero current, where no read sees it (use ``adc_signed=True`` to
        calibrate offsets of either sign).
    adc_nonlinearity, adc_nonlinearity_std
        the ADC's integral non-linearity (0 by default; needs ``adc_bits``), in the
        S-shaped form of IBM aihwkit's ``IOParameters.out_nonlinearity``: a column
        current ``u`` (in units of full scale) is read as ``u / (1 + n |u|)``, ``n =
        adc_nonlinearity * |1 + adc_nonlinearity_std * N(0, 1)|`` drawn per ADC once per
        programming (1 halves a full-scale current).  Calibration's gain takes up the
        average slope, not the bend.
    dac_bits, dac_signed, input_range, v_read
        the DAC turns an input ``x`` into a row voltage ``v = x / input_range * v_read``
        (V).  ``dac_bits=None``: ideal DAC (exact, no clipping); otherwise ``x`` is
        clipped to ``[0, input_range]`` (``[-input_range, input_range]`` when
        ``dac_signed``) and rounded to ``2**bits`` levels.  Binary spikes with
        ``input_range=1`` are exact for any ``dac_bits``.  With a converter on
        (``dac_bits`` or ``adc_bits`` set), an unsigned DAC refuses negative inputs
        (a :class:`ValueError` at the read), rather than clipping them silently; a signed
        DAC needs a signed ADC, since negative row voltages give negative column
        currents.
    input_scheme
        how a non-binary input meets the rows.  ``"amplitude"`` (default): one read, each row
        at its DAC code's voltage.  ``"bit_serial"``: one read per bit of the code's
        magnitude (``dac_bits``, or ``dac_bits - 1`` signed), each row at ``±v_read`` where
        that bit is set, each read digitized by the ADCs on its own and the reads shifted
        and added (NeuroSim's bit-serial inputs; CrossSim's input bit slicing): every device
        at the read voltage or 0, ``dac_bits`` times the reads and conversions.
        ``"bit_integrated"``: the same binary reads, their charges integrated with binary
        weights on a capacitor before one conversion (NeuRRAM's multi-bit inputs, sampled
        and integrated bit by bit in its neurons): ``dac_bits`` times the reads, one
        conversion; each bit's read its own noise and, where each read is its own circuit,
        its own solve.  Binary inputs (spikes) are read once either way.  Both need
        ``dac_bits``.
    neuron, neuron_gain_sigma, neuron_threshold_sigma, neuron_leakage
        what reads a layer's columns.  ``"digital"`` (default): each column's ADC at every
        timestep, the neuron integrating the codes digitally.  ``"analog"``: each output's
        current charges its neuron's membrane capacitor, leak, threshold and reset in
        analog and a comparator's spike out, with no ADC (``adc_bits`` must be ``None``);
        each neuron's capacitor and threshold spread by the relative standard deviations
        ``neuron_gain_sigma`` and ``neuron_threshold_sigma``, drawn per chip, and every
        membrane losing the share ``neuron_leakage`` of itself per step to its
        capacitor's leakage (all 0 by default: ideal parts; :mod:`xbar.membrane`).
    t_inference
        seconds between programming and inference, for drift (0: no drift).
    t_calibration
        seconds between programming and calibration (``None``, default: calibrated at
        ``t_inference``, i.e. recalibrated just before the inference, which a deployed
        chip rarely is).  Set (at most ``t_inference``; 0 is right after programming), the
        calibration's reads, ADC ranges, gains and offsets are those of the chip at
        ``t_calibration``, and the devices then go on drifting (and relaxing) with the
        same draws until ``t_inference``, with nothing re-fitted.  Needs a calibration.
    drift_compensation
        ``None`` (default) or ``"global"``: at inference each layer's calibrated outputs
        are multiplied by one factor per programming, the mean output magnitude of a fixed
        reference batch read at calibration over that of the same batch read now, as IBM
        aihwkit's ``GlobalDriftCompensation`` and the HERMES chip (Le Gallo et al., Nature
        Electronics 2023) correct the global conductance decay of PCM.  The reference is
        :data:`xbar.tile.calibration.CAL_REFERENCE_ROWS` of the calibration inputs (aihwkit
        reads one all-ones vector, whose currents a range set from sparse calibration
        reads would clip).  Needs ``t_calibration``.
    r_wire_row, r_wire_col, r_source, r_sink
        the circuit (ohms): wire resistance per cell along a wordline and a bitline, the
        drivers' and the sense amplifiers' resistance (see :mod:`xbar.circuit`).
        Defaults: 0.35 ohm per cell on both lines, the wire resistance of IBM aihwkit's
        IR-drop model (``IOParameters.ir_drop_g_ratio``), with ideal drivers and sense
        amplifiers (0 ohm), as in that model.  Each programmed tile's effective
        conductance matrix is solved once (exact IR drop) and every read stays one
        product; read noise is then applied to the effective matrix to first order.
        All 0 (:meth:`Spec.ideal`): ideal wires, ``I = v @ G`` exactly.
    ir_drop_compensation
        ``None`` (default) or a share ``c`` in ``(0, 1]`` of the conductance window for
        the weights: each tile is programmed with targets pre-distorted so that its
        nominal effective matrix (the circuit solved on them, without variation) is the
        mapped weights scaled by ``c``, the rest of the window being headroom for the
        pre-distortion, as IR-drop-aware mapping does
        (:func:`xbar.circuit.compensated_targets`; the digital side divides ``c`` out).
        Devices that would need more than ``g_max`` stay there, with a warning giving the
        share and the residual.  Not with quantized levels (it programs off-level
        conductances).  Costs a few circuit solves per layer at programming.
    calibration
        after programming, each tile's outputs get a digital gain and offset per output,
        fitted to the chip's own reads (see :mod:`xbar.tile.calibration`), as deployed chips
        calibrate.  ``"data"`` (default): the reads of a calibration batch, a few training
        samples run through the network (:func:`xbar.calibrate`, or
        ``simulate(..., calibration_data=)``; ``simulate`` refuses uncalibrated crossbars and
        never fits on the samples it evaluates); ``"vectors"``: known random binary vectors,
        at programming; ``None``: the raw hardware.  A spec
        with no non-ideality is never calibrated (there is nothing to correct).
    ir_drop_model
        ``"exact"`` (the solved circuit) or ``"first_order"`` (a one-pass model, exact to
        first order in the resistances, for sweeps that need no exactness; see
        :func:`xbar.circuit.first_order_matrix`).
    array, r_access
        how the inputs meet the array.  ``"connected"`` (default): every device is
        connected and a row without input is driven at 0 V (a passive array, or a 1T1R
        array with every word line on, as NeuRRAM reads it): one linear circuit, solved
        once per programming.  ``"gated"``: a 1T1R array whose inputs drive the access
        transistors' gates: a row without input is disconnected (its devices carry no
        current and load no bitline), each device in series with its transistor's
        on-resistance ``r_access`` (ohm; ``None``: a quarter of the device's lowest
        resistance, ``0.25 / g_max``, NeuroSim's sizing rule); with wires, each read's
        circuit is solved exactly (:func:`xbar.circuit.solve_gated`).
    iv
        the devices' current-voltage curve in the read.  ``"linear"`` (default): ``I = G
        V``.  ``"device"``: the device model's published non-linear curve
        (``DeviceModel.iv_nl2_poly``, ``iv_nl3_poly``; the ``rram_hfo2`` preset has one),
        each device programmed to its target chord ``I / V`` at ``v_read`` (program-verify
        reads there), so a device at ``v_read`` carries exactly its target current and one
        at a lower voltage (an analog input, or the drop along the wires) less or more.
        Every read is its own circuit, solved by Newton's method
        (:func:`xbar.circuit.solve_nonlinear`); ``v_read`` must lie within the curve's
        range (``iv_v_max``).  With the connected array only, for now.
    """

    tile: tuple[int, int] = (64, 64)
    device: DeviceModel = field(default_factory=lambda: presets["ideal"])
    mapping: str = "differential"
    weight_scale: str = "layer"
    cell_bits: int | None = None
    weight_slices: int = 1
    adc_bits: int | None = None
    adc_range: float = 1.0
    adc_percentile: float | None = ADC_PERCENTILE
    adc_range_scope: str | None = None
    subtraction: str | None = None
    adc_signed: bool | None = None
    adc_noise: float = 0.0
    adc_gain_error: float = 0.0
    adc_offset_error: float = 0.0
    adc_nonlinearity: float = 0.0
    adc_nonlinearity_std: float = 0.0
    dac_bits: int | None = None
    dac_signed: bool = False
    input_scheme: str = "amplitude"
    neuron: str = "digital"
    neuron_gain_sigma: float = 0.0
    neuron_threshold_sigma: float = 0.0
    neuron_leakage: float = 0.0
    input_range: float = 1.0
    v_read: float = 0.2
    t_inference: float = 0.0
    t_calibration: float | None = None
    drift_compensation: str | None = None
    r_wire_row: float = R_WIRE_AIHWKIT
    r_wire_col: float = R_WIRE_AIHWKIT
    r_source: float = 0.0
    r_sink: float = 0.0
    ir_drop_model: str = "exact"
    ir_drop_compensation: float | None = None
    calibration: str | None = "data"
    array: str = "connected"
    r_access: float | None = None
    iv: str = "linear"

    def __post_init__(self) -> None:
        o = "Spec"
        if (not isinstance(self.tile, tuple) or len(self.tile) != 2
                or not all(isinstance(n, int) and not isinstance(n, bool) for n in self.tile)
                or min(self.tile) < 1):
            v.fail(o, "tile", self.tile, "must be (rows, cols), two integers >= 1")
        if not isinstance(self.device, DeviceModel):
            v.fail(o, "device", self.device, "must be a devices.DeviceModel")
        v.one_of(o, "mapping", self.mapping, SCHEMES)
        v.one_of(o, "weight_scale", self.weight_scale, WEIGHT_SCALES)
        if self.mapping == "offset" and self.device.levels is not None and self.device.levels < 3:
            v.fail(o, "mapping", self.mapping, f"the offset mapping needs a device with at least "
                   f"3 levels (a zero weight and a step each way); device {self.device.name!r} has "
                   f"{self.device.levels}: use mapping='differential'")
        min_cols = 2
        if self.tile[1] < min_cols:
            v.fail(o, "tile", self.tile, f"the {self.mapping} mapping needs cols >= {min_cols}")
        v.int_at_least(o, "adc_bits", self.adc_bits, 1, optional=True)
        v.int_at_least(o, "dac_bits", self.dac_bits, 1, optional=True)
        if not isinstance(self.dac_signed, bool):
            v.fail(o, "dac_signed", self.dac_signed, "must be True or False")
        if self.adc_signed is not None and not isinstance(self.adc_signed, bool):
            v.fail(o, "adc_signed", self.adc_signed, "must be True or False, or None (signed where analog "
                   "subtraction or a signed DAC needs it)")
        if self.dac_signed and self.adc_signed is False and self.adc_bits is not None:
            v.fail(o, "dac_signed", self.dac_signed, "a signed DAC drives negative row voltages, "
                   "whose negative column currents a unipolar ADC would clip: set adc_signed=True")
        v.positive(o, "adc_range", self.adc_range)
        if self.ir_drop_compensation is not None:
            c = self.ir_drop_compensation
            if isinstance(c, bool) or not isinstance(c, (int, float)) or not 0 < c <= 1:
                v.fail(o, "ir_drop_compensation", c, "must be a share of the conductance window in "
                       "(0, 1] (e.g. 0.5: half for the weights, half headroom), or None")
            if self.device.levels is not None:
                v.fail(o, "ir_drop_compensation", c, f"pre-distorted targets fall between the "
                       f"{self.device.levels} levels of device {self.device.name!r}: use a "
                       "continuous device or no compensation")
        if self.subtraction is not None:
            v.one_of(o, "subtraction", self.subtraction, ("digital", "analog"))
        if self.subtraction == "analog" and (self.mapping != "differential" or self.adc_signed is False):
            v.fail(o, "subtraction", self.subtraction, "analog subtraction reads the signed difference "
                   "of a differential pair with one signed ADC: it needs mapping='differential' and "
                   "adc_signed=True")
        if self.adc_percentile is not None:
            p = self.adc_percentile
            if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 < p <= 100:
                v.fail(o, "adc_percentile", p, "must be a percentile in (0, 100], or None for the "
                       "worst-case full scale")
        if self.adc_range_scope is not None:
            v.one_of(o, "adc_range_scope", self.adc_range_scope, ("tile", "column"))
        if self.adc_range_scope == "column" and (self.adc_percentile is None or self.mapping != "differential"):
            v.fail(o, "adc_range_scope", self.adc_range_scope, "a range per column is set from calibration "
                   "reads of a differential pair: it needs adc_percentile and mapping='differential'")
        for name in ("adc_noise", "adc_gain_error", "adc_offset_error", "adc_nonlinearity", "adc_nonlinearity_std"):
            value = getattr(self, name)
            v.non_negative(o, name, value)
            if value > 0 and self.adc_bits is None:
                v.fail(o, name, value, "is an error of the ADC: it needs adc_bits (an ideal ADC, "
                       "adc_bits=None, has none)")
        if self.adc_nonlinearity_std > 0 and self.adc_nonlinearity == 0:
            v.fail(o, "adc_nonlinearity_std", self.adc_nonlinearity_std, "spreads adc_nonlinearity over the "
                   "ADCs: set adc_nonlinearity > 0 too")
        v.one_of(o, "input_scheme", self.input_scheme, INPUT_SCHEMES)
        if self.input_scheme != "amplitude" and self.dac_bits is None:
            v.fail(o, "input_scheme", self.input_scheme, "reads one bit of each input's DAC code at a "
                   "time: set dac_bits (the bits read, e.g. 8)")
        v.positive(o, "input_range", self.input_range)
        v.positive(o, "v_read", self.v_read)
        v.non_negative(o, "t_inference", self.t_inference)
        if self.device.relaxes and self.t_inference > self.device.relaxation_times[-1]:
            v.fail(o, "t_inference", self.t_inference, f"device {self.device.name!r} has relaxation data up "
                   f"to {self.device.relaxation_times[-1]:g} s after programming only: read it within that time")
        self._check_times(o)
        v.one_of(o, "ir_drop_model", self.ir_drop_model, ("exact", "first_order"))
        if self.calibration is not None:
            if self.calibration not in CALIBRATIONS:
                v.fail(o, "calibration", self.calibration, f"must be one of {list(CALIBRATIONS)}, or None for the raw hardware")
        check_resistances(self.r_wire_row, self.r_wire_col, self.r_source, self.r_sink, owner=o)
        self._check_slicing(o)
        self._check_neuron(o)
        self._check_array(o)
        self._check_iv(o)
        self._check_per_read(o)

    def _check_iv(self, o: str) -> None:
        """``iv``: a device with a curve, a read voltage within it, and the circuits it is solved in."""
        v.one_of(o, "iv", self.iv, IVS)
        if self.iv == "linear":
            return
        with_curve = [name for name, d in presets.items() if d.nonlinear]
        if not self.device.nonlinear:
            v.fail(o, "iv", self.iv, f"device {self.device.name!r} has no current-voltage curve "
                   f"(DeviceModel.iv_nl2_poly, iv_nl3_poly): use iv='linear' or a device with one "
                   f"(presets: {with_curve})")
        if self.v_read > self.device.iv_v_max:
            v.fail(o, "v_read", self.v_read, f"is beyond the {self.device.iv_v_max:g} V to which device "
                   f"{self.device.name!r}'s I-V curve was measured: lower v_read, or use iv='linear'")
        if self.array != "connected":
            v.fail(o, "iv", self.iv, "non-linear devices are solved in the connected array only, for now: "
                   "use array='connected' or iv='linear'")

    def _check_per_read(self, o: str) -> None:
        """What a circuit solved for each read (:attr:`circuit_per_read`: a gated array with
        wires, non-linear devices) has no model of: the first-order IR drop and IR-drop
        compensation, both written for one linear circuit per programming."""
        if not self.circuit_per_read:
            return
        if self.array == "gated":
            what, why, undo = "a gated array", " (a first-order model of it erred by 17-27% at 2.5 ohm/cell: " \
                "docs/hardware.md)", "array='connected'"
        else:
            what, why, undo = "non-linear devices", "", "iv='linear'"
        if self.has_ir_drop and self.ir_drop_model != "exact":
            v.fail(o, "ir_drop_model", self.ir_drop_model, f"with {what} each read is solved exactly{why}: "
                   "use ir_drop_model='exact'")
        if self.ir_drop_compensation is not None:
            v.fail(o, "ir_drop_compensation", self.ir_drop_compensation, "pre-distorts the targets for one "
                   f"linear circuit per programming; with {what} the circuit changes with every read: use "
                   f"{undo} or no compensation")

    def _check_slicing(self, o: str) -> None:
        """``cell_bits`` and ``weight_slices``: a cell's levels among the device's, signed
        digits on differential pairs, and no off-level pre-distortion."""
        v.int_at_least(o, "cell_bits", self.cell_bits, 1, optional=True)
        v.int_at_least(o, "weight_slices", self.weight_slices, 1)
        if self.cell_bits is None:
            if self.weight_slices > 1:
                v.fail(o, "weight_slices", self.weight_slices, "slices a weight over cells of cell_bits "
                       "bits each: set cell_bits (e.g. 2 for 4-level cells)")
            return
        b = 2**self.cell_bits
        if self.cell_bits * self.weight_slices > MAX_WEIGHT_BITS:
            v.fail(o, "weight_slices", self.weight_slices, f"with cell_bits={self.cell_bits} gives "
                   f"{self.cell_bits * self.weight_slices}-bit weight magnitudes; at most {MAX_WEIGHT_BITS} "
                   "are simulated (float32 reads resolve 24 bits)")
        if self.mapping != "differential":
            v.fail(o, "cell_bits", self.cell_bits, "bit-sliced weights put each signed digit on a "
                   "differential pair: use mapping='differential'")
        levels = self.device.levels
        if levels is not None and (b > levels or (levels - 1) % (b - 1)):
            v.fail(o, "cell_bits", self.cell_bits, f"a cell of {b} evenly spaced levels is not among the "
                   f"{levels} levels of device {self.device.name!r}: choose cell_bits with 2**cell_bits - 1 "
                   f"dividing {levels - 1}, or a continuous device")
        if self.ir_drop_compensation is not None:
            v.fail(o, "ir_drop_compensation", self.ir_drop_compensation, f"pre-distorted targets fall "
                   f"between the {b} levels of a cell (cell_bits={self.cell_bits}): use no compensation")

    def _check_neuron(self, o: str) -> None:
        """``neuron`` and its analog parts' spreads."""
        v.one_of(o, "neuron", self.neuron, NEURONS)
        if self.neuron == "analog" and self.adc_bits is not None:
            v.fail(o, "neuron", self.neuron, f"an analog neuron integrates its column current on the "
                   f"membrane capacitor, with no ADC: set adc_bits=None (now {self.adc_bits})")
        for name in ("neuron_gain_sigma", "neuron_threshold_sigma"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= MAX_NEURON_SIGMA:
                v.fail(o, name, value, f"must be a relative standard deviation in [0, {MAX_NEURON_SIGMA:g}] "
                       "(beyond it a neuron's capacitor or threshold would come out negative)")
            if value > 0 and self.neuron != "analog":
                v.fail(o, name, value, "is a spread of the analog neurons' parts: set neuron='analog'")
        leak = self.neuron_leakage
        if isinstance(leak, bool) or not isinstance(leak, (int, float)) or not 0 <= leak < 1:
            v.fail(o, "neuron_leakage", leak, "must be the share of the membrane lost per step, in [0, 1)")
        if leak > 0 and self.neuron != "analog":
            v.fail(o, "neuron_leakage", leak, "is the analog neurons' capacitor leakage: set neuron='analog'")

    @property
    def sliced(self) -> bool:
        """Weights on cells of ``cell_bits`` bits, over ``weight_slices`` pairs each."""
        return self.cell_bits is not None

    def _check_array(self, o: str) -> None:
        """``array`` and ``r_access``."""
        v.one_of(o, "array", self.array, ARRAYS)
        if self.r_access is not None:
            v.non_negative(o, "r_access", self.r_access)
            if self.array != "gated":
                v.fail(o, "r_access", self.r_access, "is the access transistor of a gated 1T1R array: "
                       "set array='gated' (the connected array's devices have no series transistor here)")

    def _check_times(self, o: str) -> None:
        """``t_calibration`` and ``drift_compensation`` against ``t_inference`` and the calibration."""
        t = self.t_calibration
        if t is not None:
            if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 <= t <= self.t_inference:
                v.fail(o, "t_calibration", t, f"must be seconds after programming in [0, t_inference = "
                       f"{self.t_inference:g}] (calibrated before the inference), or None (calibrated at "
                       "t_inference)")
            if self.calibration is None:
                v.fail(o, "t_calibration", t, "is when the chip is calibrated: it needs a calibration "
                       "('data' or 'vectors'); the raw chip (calibration=None) has none")
        if self.drift_compensation is not None:
            v.one_of(o, "drift_compensation", self.drift_compensation, ("global",))
            if t is None:
                v.fail(o, "drift_compensation", self.drift_compensation, "corrects the drift between the "
                       "calibration and the inference: set t_calibration (0: calibrated at programming)")

    @property
    def ages_after_calibration(self) -> bool:
        """Calibrated at ``t_calibration``, then read at a later ``t_inference``, by devices
        that change in between."""
        return (self.t_calibration is not None and self.t_calibration < self.t_inference
                and self.calibration is not None and not self.is_ideal and self.device.ages)

    @property
    def calibration_spec(self) -> "Spec":
        """The chip as it is calibrated: at ``t_calibration`` (itself where it does not age)."""
        if not self.ages_after_calibration:
            return self
        return replace(self, t_inference=self.t_calibration, drift_compensation=None)

    @classmethod
    def ideal(cls, **changes) -> "Spec":
        """No non-ideality at all (ideal device, converters and wires), then ``changes``:
        the starting point for studying one effect alone."""
        return cls(**{"r_wire_row": 0.0, "r_wire_col": 0.0, **changes})

    @property
    def is_ideal(self) -> bool:
        """No non-ideality at all: the analog network must equal the ideal one."""
        return (self.device.is_ideal and self.device.levels is None and not self.sliced and self.adc_bits is None
                and self.dac_bits is None and not (self.device.has_drift and self.t_inference > 0)
                and not self.has_ir_drop and self.access_resistance == 0 and self.iv == "linear"
                and not (self.neuron_gain_sigma or self.neuron_threshold_sigma or self.neuron_leakage))

    @property
    def access_resistance(self) -> float:
        """The gated array's access transistor on-resistance (ohm): ``r_access``, or by
        default :data:`ACCESS_SHARE` of the device's lowest resistance; 0 for the connected
        array."""
        if self.array != "gated":
            return 0.0
        return ACCESS_SHARE / self.device.g_max if self.r_access is None else float(self.r_access)

    @property
    def circuit_per_read(self) -> bool:
        """Each read's circuit is its own, solved for its inputs: a gated array with wires
        (without, a gated read is the product with each device in series with its
        transistor), or non-linear devices (``iv="device"``)."""
        return (self.array == "gated" and self.has_ir_drop) or self.iv == "device"

    @property
    def ranges_from_calibration(self) -> bool:
        """The ADC ranges are set from the calibration reads (``adc_percentile``): an ADC,
        a calibration and a percentile; otherwise they are the worst case."""
        return self.adc_bits is not None and self.calibration is not None and self.adc_percentile is not None

    @property
    def range_scope(self) -> str:
        """Which ADCs share a range set from calibration reads: ``adc_range_scope``, or by
        default each column with the differential mapping and each tile with the offset
        mapping."""
        if self.adc_range_scope is not None:
            return self.adc_range_scope
        return "column" if self.mapping == "differential" else "tile"

    @property
    def analog_subtraction(self) -> bool:
        """A differential pair's currents are subtracted on the chip and one signed ADC reads
        the difference: ``subtraction="analog"``, or by default with the differential
        mapping and an ADC."""
        if self.subtraction is not None:
            return self.subtraction == "analog" and self.adc_bits is not None
        return self.mapping == "differential" and self.adc_bits is not None

    @property
    def signed_adc(self) -> bool:
        """The ADC reads both signs: ``adc_signed``, or by default where analog subtraction
        or a signed DAC needs it."""
        if self.adc_signed is not None:
            return self.adc_signed
        return self.analog_subtraction or self.dac_signed

    @property
    def has_ir_drop(self) -> bool:
        """Any resistance in the circuit: wires on either line, drivers or sense amplifiers."""
        return any(r > 0 for r in (self.r_wire_row, self.r_wire_col, self.r_source, self.r_sink))

    def replace(self, **changes) -> "Spec":
        return replace(self, **changes)

    def to_attrs(self) -> dict:
        """Flat ``{name: number or string}`` for netCDF attributes (``spec_*``)."""
        out = {}
        for key, value in asdict(self).items():
            if key == "device":
                for dk, dv in value.items():
                    out[f"spec_device_{dk}"] = _attr(dv)
            else:
                out[f"spec_{key}"] = _attr(value)
        # What the defaults (None) resolve to: the chip as it was read.
        for name in ("analog_subtraction", "signed_adc", "range_scope", "ranges_from_calibration",
                     "access_resistance"):
            out[f"spec_{name}"] = _attr(getattr(self, name))
        return out


def _attr(value):
    if value is None:
        return "None"
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (tuple, list)):
        return json.dumps(list(value))
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return value
