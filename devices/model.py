"""The device model: one frozen, validated dataclass whose fields document the physics.

Conventions (SI units): conductances in siemens, times in seconds.  ``g~ = g / g_max`` is
the normalised conductance that state-dependent laws are written in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from devices import validation as v


@dataclass(frozen=True)
class DeviceModel:
    """A memristive device for inference: programming, read and retention behaviour.

    Conductance window
        ``g_min``, ``g_max`` (S): the lowest and highest programmable conductance;
        ``0 <= g_min < g_max``.
    Levels
        ``levels``: number of evenly spaced programmable conductances in
        ``[g_min, g_max]`` (>= 2), or ``None`` for a continuous (analog) device.
    Programming variation (device-to-device, drawn once per programming)
        ``G = target + sigma_prog(target) * N(0, 1)``, clipped at 0 S, with
        ``sigma_prog = prog_sigma_rel * target + prog_sigma_abs
        + g_max * sum_k prog_sigma_poly[k] * g~**k`` (state-dependent part as a
        polynomial in ``g~``, as in the PCM model of Nandakumar et al. 2019).
    Stuck-at faults (drawn once per programming)
        each device is stuck at ``g_min`` with probability ``p_stuck_low`` and at
        ``g_max`` with probability ``p_stuck_high``, whatever its target.
    Read noise
        ``G_read = G * (1 + sigma_read_rel(G) * N(0, 1))`` with
        ``sigma_read_rel = min(read_sigma_rel * g~**(-read_sigma_exponent), read_sigma_max)``,
        times ``sqrt(ln((t + drift_t0 + read_noise_t_read) / (2 read_noise_t_read)))`` when
        ``read_noise_t_read > 0`` (the 1/f noise accumulated up to inference at
        ``t = Spec.t_inference`` after programming, as IBM aihwkit's PCM model).  Its time
        structure: a share ``read_noise_static`` of the variance is drawn once per
        programming (at the inference time) and is the same for every read; the rest is
        drawn per read, with correlation ``read_noise_correlation`` between consecutive
        reads of the same inference (AR(1); 0 for white noise).
    Drift (one exponent per device, drawn once per programming)
        ``G(t) = G0 * ((t + drift_t0) / drift_t0)**(-nu)`` (1 at programming, as IBM aihwkit),
        ``nu ~ N(mu_nu(g~), sigma_nu(g~))`` with
        ``mu_nu = clip(drift_nu_mean + drift_nu_mean_log_slope * ln g~, *drift_nu_mean_clip)``
        and likewise ``sigma_nu`` with ``drift_nu_std`` and ``drift_nu_std_log_slope``;
        ``drift_nu_abs``: ``|nu|`` (the conductance only falls), as aihwkit folds its PCM
        exponents.
    Relaxation (a programming spread that grows with time, as RRAM's does)
        ``relaxation_times`` (s after programming, increasing) and ``relaxation_polys``
        (one polynomial in ``g~`` per time, in units of ``g_max``, ascending powers): at
        ``t = Spec.t_inference`` the devices sit at ``target + sigma(t, target) * N(0,
        1)``, ``sigma`` interpolated linearly in ``ln t`` between the tabulated times and
        the first one's before it; it replaces ``prog_sigma_poly``.  Each device keeps its
        normal draw at every time (its deviation grows, its direction stays), so chips read
        at two times are the same devices; beyond the last time there are no data and
        ``Spec`` refuses the time.
    Current-voltage curve (the device's own non-linearity in its read voltage)
        ``I = G0 V + NL2(G0) V^2 + NL3(G0) V^3`` with ``G0`` the low-field conductance (S)
        and ``NL2``, ``NL3`` polynomials in ``log10(G0 / 1 S)`` (ascending powers,
        ``iv_nl2_poly`` in A/V^2 and ``iv_nl3_poly`` in A/V^3), valid for ``|V| <=
        iv_v_max`` (V), the form of Sandia CrossSim 3.2's I-V model; both empty: a linear
        device.  A programmed conductance is the device's chord ``I(V) / V`` at the read
        voltage (program-verify reads the cell there), so :func:`devices.physics.low_field`
        turns it into ``G0``; used where ``Spec(iv="device")``.
    """

    name: str = "custom"
    g_min: float = 1e-6
    g_max: float = 1e-4
    levels: int | None = None
    prog_sigma_rel: float = 0.0
    prog_sigma_abs: float = 0.0
    prog_sigma_poly: tuple[float, ...] = ()
    p_stuck_low: float = 0.0
    p_stuck_high: float = 0.0
    read_sigma_rel: float = 0.0
    read_sigma_exponent: float = 0.0
    read_sigma_max: float = math.inf
    read_noise_t_read: float = 0.0
    read_noise_static: float = 0.0
    read_noise_correlation: float = 0.0
    drift_t0: float = 1.0
    drift_nu_mean: float = 0.0
    drift_nu_std: float = 0.0
    drift_nu_mean_log_slope: float = 0.0
    drift_nu_std_log_slope: float = 0.0
    drift_nu_mean_clip: tuple[float, float] = (-math.inf, math.inf)
    drift_nu_std_clip: tuple[float, float] = (0.0, math.inf)
    drift_nu_abs: bool = False
    relaxation_times: tuple[float, ...] = ()
    relaxation_polys: tuple[tuple[float, ...], ...] = ()
    iv_nl2_poly: tuple[float, ...] = ()
    iv_nl3_poly: tuple[float, ...] = ()
    iv_v_max: float = math.inf
    source: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        o = "DeviceModel"
        v.non_negative(o, "g_min", self.g_min)
        v.positive(o, "g_max", self.g_max)
        if self.g_min >= self.g_max:
            v.fail(o, "g_min", self.g_min, f"must be < g_max = {self.g_max!r} (S)")
        v.int_at_least(o, "levels", self.levels, 2, optional=True)
        for name in ("prog_sigma_rel", "prog_sigma_abs", "read_sigma_rel", "read_sigma_exponent"):
            v.non_negative(o, name, getattr(self, name))
        if self.drift_nu_std_log_slope == 0:
            v.non_negative(o, "drift_nu_std", self.drift_nu_std)
        else:  # intercept of a state-dependent law: any sign, the clip keeps it >= 0
            v.finite(o, "drift_nu_std", self.drift_nu_std)
        if not isinstance(self.prog_sigma_poly, tuple):
            v.fail(o, "prog_sigma_poly", self.prog_sigma_poly, "must be a tuple of floats")
        for c in self.prog_sigma_poly:
            v.finite(o, "prog_sigma_poly", c)
        v.probability(o, "p_stuck_low", self.p_stuck_low)
        v.probability(o, "p_stuck_high", self.p_stuck_high)
        if self.p_stuck_low + self.p_stuck_high > 1:
            v.fail(o, "p_stuck_high", self.p_stuck_high, "p_stuck_low + p_stuck_high must be <= 1")
        v.non_negative(o, "read_noise_t_read", self.read_noise_t_read)
        for name in ("read_noise_static", "read_noise_correlation"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0 <= value <= 1) or isinstance(value, bool):
                v.fail(o, name, value, "must be a number in [0, 1]")
        if self.read_noise_correlation == 1:
            v.fail(o, "read_noise_correlation", 1, "must be < 1: a fully correlated part is "
                   "static, set read_noise_static instead")
        if not (self.read_sigma_max > 0):
            v.fail(o, "read_sigma_max", self.read_sigma_max, "must be > 0 (inf for no cap)")
        v.positive(o, "drift_t0", self.drift_t0)
        v.finite(o, "drift_nu_mean", self.drift_nu_mean)
        v.finite(o, "drift_nu_mean_log_slope", self.drift_nu_mean_log_slope)
        v.finite(o, "drift_nu_std_log_slope", self.drift_nu_std_log_slope)
        for name in ("drift_nu_mean_clip", "drift_nu_std_clip"):
            lo, hi = getattr(self, name)
            if not lo <= hi:
                v.fail(o, name, (lo, hi), "must be (low, high) with low <= high")
        if self.drift_nu_std_clip[0] < 0:
            v.fail(o, "drift_nu_std_clip", self.drift_nu_std_clip, "low end must be >= 0")
        if not isinstance(self.drift_nu_abs, bool):
            v.fail(o, "drift_nu_abs", self.drift_nu_abs, "must be True or False")
        self._check_relaxation(o)
        for name in ("iv_nl2_poly", "iv_nl3_poly"):
            poly = getattr(self, name)
            if not isinstance(poly, tuple) or not all(isinstance(c, (int, float)) and math.isfinite(c) for c in poly):
                v.fail(o, name, poly, "must be a tuple of finite floats (ascending powers of log10(G0 / 1 S))")
        if not self.iv_v_max > 0:
            v.fail(o, "iv_v_max", self.iv_v_max, "must be > 0 (V; inf: valid at every voltage)")

    def _check_relaxation(self, o: str) -> None:
        times, polys = self.relaxation_times, self.relaxation_polys
        if not isinstance(times, tuple) or not isinstance(polys, tuple):
            v.fail(o, "relaxation_times", times, "relaxation_times and relaxation_polys must be tuples")
        if len(times) != len(polys):
            v.fail(o, "relaxation_polys", polys, f"must hold one polynomial per relaxation time "
                   f"({len(times)} times)")
        if any(not (t > 0 and math.isfinite(t)) for t in times) or list(times) != sorted(set(times)):
            v.fail(o, "relaxation_times", times, "must be increasing finite times > 0 (s)")
        for poly in polys:
            if not isinstance(poly, tuple) or not poly:
                v.fail(o, "relaxation_polys", polys, "each must be a non-empty tuple of floats")
            for c in poly:
                v.finite(o, "relaxation_polys", c)
        if times and any(self.prog_sigma_poly):
            v.fail(o, "prog_sigma_poly", self.prog_sigma_poly, "the relaxation polynomials replace it: "
                   "give the spread at programming as the first relaxation time instead")

    @property
    def is_ideal(self) -> bool:
        """True when programming and reading are exact (levels may still quantize)."""
        return (self.prog_sigma_rel == 0 and self.prog_sigma_abs == 0
                and not any(self.prog_sigma_poly) and not self.relaxes and self.p_stuck_low == 0
                and self.p_stuck_high == 0 and self.read_sigma_rel == 0)

    @property
    def nonlinear(self) -> bool:
        """The device has a non-linear current-voltage curve (``iv_nl2_poly``, ``iv_nl3_poly``)."""
        return any(self.iv_nl2_poly) or any(self.iv_nl3_poly)

    @property
    def has_read_noise(self) -> bool:
        return self.read_sigma_rel > 0

    def read_time_factor(self, t_inference: float) -> float:
        """The factor on the read noise at ``t_inference`` s after programming: 1 without a
        time law, else aihwkit's ``sqrt(ln((t + t0 + t_read) / (2 t_read)))``."""
        if self.read_noise_t_read == 0:
            return 1.0
        t = t_inference + self.drift_t0
        return math.sqrt(math.log((t + self.read_noise_t_read) / (2 * self.read_noise_t_read)))

    @property
    def has_drift(self) -> bool:
        return (self.drift_nu_mean != 0 or self.drift_nu_std != 0 or self.drift_nu_mean_log_slope != 0
                or self.drift_nu_std_log_slope != 0)

    @property
    def relaxes(self) -> bool:
        """The programming spread grows with time (``relaxation_times``)."""
        return bool(self.relaxation_times)

    @property
    def ages(self) -> bool:
        """Anything of the device changes after programming: drift, relaxation, or read noise
        with a time law (``read_noise_t_read``)."""
        return self.has_drift or self.relaxes or (self.has_read_noise and self.read_noise_t_read > 0)

    def replace(self, **changes) -> "DeviceModel":
        """A copy with some fields changed (validated like a new one)."""
        from dataclasses import replace

        return replace(self, **changes)
