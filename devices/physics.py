"""Pure functions of one device model on conductance tensors (siemens).

Every random draw takes an explicit ``torch.Generator``; tensors of any shape are
accepted (leading dimensions are trials and tiles), and the generator must live on
the tensor's device.
"""

from __future__ import annotations

import math

import torch

from devices.model import DeviceModel

_TINY = 1e-6  # floor of g~ where a law takes its logarithm or a negative power


def _normal(shape, like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return torch.randn(shape, generator=generator, device=like.device, dtype=like.dtype)


def _uniform(shape, like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return torch.rand(shape, generator=generator, device=like.device, dtype=like.dtype)


def prog_sigma(target: torch.Tensor, model: DeviceModel, t: float = 0.0) -> torch.Tensor:
    """Standard deviation (S) of the programmed conductance for each target (S), at ``t``
    seconds after programming (a relaxing device's spread grows with it)."""
    sigma = model.prog_sigma_rel * target.abs() + model.prog_sigma_abs
    coeffs = relaxation_poly(model, t) if model.relaxes else model.prog_sigma_poly
    if any(coeffs):
        gn = target / model.g_max
        poly = torch.zeros_like(target)
        for power, coeff in enumerate(coeffs):
            poly = poly + coeff * gn**power
        sigma = sigma + model.g_max * poly.clamp_min(0.0)
    return sigma


def relaxation_poly(model: DeviceModel, t: float) -> tuple[float, ...]:
    """The spread polynomial of a relaxing device at ``t`` s after programming: linear in
    ``ln t`` between its tabulated times, the first one's before it."""
    times, polys = model.relaxation_times, model.relaxation_polys
    if t > times[-1]:
        raise ValueError(f"relaxation of {model.name!r}: t = {t:g} s is beyond its data "
                         f"(measured up to {times[-1]:g} s)")
    if t <= times[0]:
        return polys[0]
    k = next(i for i in range(1, len(times)) if t <= times[i])
    f = (math.log(t) - math.log(times[k - 1])) / (math.log(times[k]) - math.log(times[k - 1]))
    a, b = polys[k - 1], polys[k]
    n = max(len(a), len(b))
    a, b = a + (0.0,) * (n - len(a)), b + (0.0,) * (n - len(b))
    return tuple((1 - f) * x + f * y for x, y in zip(a, b))


def _fresh(*tensors: torch.Tensor) -> bool:
    """No gradient is taken through ``tensors``: a result may be written over a draw."""
    return not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))


def _shifted(noise: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """``shift + scale * noise`` clipped at 0 S, for a fresh draw ``noise``: written into it
    where no gradient is taken (the same numbers, one tensor of its size fewer)."""
    if _fresh(scale, shift):
        return noise.mul_(scale).add_(shift).clamp_min_(0.0)
    return (shift + scale * noise).clamp_min(0.0)


def program(target: torch.Tensor, model: DeviceModel, generator: torch.Generator, t: float = 0.0,
            shape: tuple[int, ...] | None = None) -> torch.Tensor:
    """Program devices to ``target`` (S): variation and stuck-at faults, drawn once.

    ``t``: seconds since programming, for a relaxing device (its spread at that time; the
    same draws at every ``t``).  ``shape``: the devices' shape, ``target`` broadcast to it
    (several programmings of the same targets, one draw for all: default ``target``'s).
    Returns the programmed conductances (S), clipped at 0 S.  Draw order is
    fixed (variation, then faults), so one generator state gives one programming; the
    variation's normal draws are taken whenever anything is drawn, even at zero variation,
    so that a device with and one without variation see the same fault draws (sweeps pair
    their points on common random numbers).
    """
    shape = target.shape if shape is None else torch.Size(shape)
    faults = bool(model.p_stuck_low or model.p_stuck_high)
    if faults or model.prog_sigma_rel or model.prog_sigma_abs or any(model.prog_sigma_poly) or model.relaxes:
        g = _shifted(_normal(shape, target, generator), prog_sigma(target, model, t), target)
    else:
        g = target.expand(shape).clamp_min(0.0)
    if faults:
        u = _uniform(shape, target, generator)
        g = g.masked_fill(u < model.p_stuck_low, model.g_min)
        high = (u >= model.p_stuck_low) & (u < model.p_stuck_low + model.p_stuck_high)
        g = g.masked_fill(high, model.g_max)
    return g


def read_sigma_rel(g: torch.Tensor, model: DeviceModel, t: float = 0.0) -> torch.Tensor:
    """Relative standard deviation of the read noise of devices at conductance ``g`` (S),
    ``t`` s after programming (static and per-read parts together)."""
    rel = torch.full_like(g, model.read_sigma_rel)
    if model.read_sigma_exponent:
        gn = (g / model.g_max).clamp_min(_TINY)
        rel = rel * gn ** (-model.read_sigma_exponent)
    return rel.clamp_max(model.read_sigma_max) * model.read_time_factor(t)


def read_sigma(g: torch.Tensor, model: DeviceModel, t: float = 0.0) -> torch.Tensor:
    """Standard deviation (S) of the read noise of devices at conductance ``g`` (S)."""
    if not model.has_read_noise:
        return torch.zeros_like(g)
    return read_sigma_rel(g, model, t) * g.abs()


def read(g: torch.Tensor, model: DeviceModel, generator: torch.Generator, t: float = 0.0) -> torch.Tensor:
    """One read of every device, static and per-read parts together (S)."""
    if not model.has_read_noise:
        return g
    return g + read_sigma(g, model, t) * _normal(g.shape, g, generator)


def static_read_noise(g: torch.Tensor, g0: torch.Tensor, model: DeviceModel, t: float,
                      generator: torch.Generator) -> torch.Tensor:
    """The static share of the read noise, drawn once: devices programmed to ``g0`` and at
    ``g`` at inference keep ``g * (1 + sqrt(read_noise_static) * sigma_rel(g0) * N(0, 1))``,
    clipped at 0 S (as aihwkit draws its 1/f noise once per inference time)."""
    if not (model.has_read_noise and model.read_noise_static):
        return g
    rel = math.sqrt(model.read_noise_static) * read_sigma_rel(g0, model, t)
    return _shifted(_normal(g.shape, g, generator), g.abs() * rel, g)


def drift_nu(g0: torch.Tensor, model: DeviceModel, generator: torch.Generator) -> torch.Tensor:
    """Draw one drift exponent per device, from its state-dependent distribution."""
    gn = (g0 / model.g_max).clamp_min(_TINY)
    log_gn = torch.log(gn)
    mu = (model.drift_nu_mean + model.drift_nu_mean_log_slope * log_gn).clamp(*model.drift_nu_mean_clip)
    sd = (model.drift_nu_std + model.drift_nu_std_log_slope * log_gn).clamp(*model.drift_nu_std_clip)
    nu = mu + sd * _normal(g0.shape, g0, generator)
    return nu.abs() if model.drift_nu_abs else nu


def drift_factor(nu: torch.Tensor, t: float, model: DeviceModel) -> torch.Tensor:
    """``((t + t0) / t0)**(-nu)``: 1 at programming (``t = 0``), the law of Nandakumar et al.
    as IBM aihwkit applies it (``PCMLikeNoiseModel.apply_drift_noise_to_conductance``)."""
    return torch.exp(-nu * math.log((t + model.drift_t0) / model.drift_t0))


def drift(g0: torch.Tensor, t: float, model: DeviceModel, generator: torch.Generator) -> torch.Tensor:
    """Conductance (S) at ``t`` seconds after programming, for devices programmed to ``g0``.

    Draws a drift exponent per device (see :func:`drift_nu`); to follow one programmed
    state through several times, draw ``nu`` once and use :func:`drift_factor`.
    """
    if t < 0 or not math.isfinite(t):
        raise ValueError(f"drift: t = {t!r} is not allowed: must be a finite time >= 0 (s)")
    if not model.has_drift:
        return g0
    return g0 * drift_factor(drift_nu(g0, model, generator), t, model)


def _log_poly(g0: torch.Tensor, poly: tuple[float, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """A polynomial in ``x = log10(G0)`` (ascending powers) and its derivative in ``G0``,
    both 0 where ``G0 <= 0`` (no device)."""
    on = g0 > 0
    x = torch.where(on, g0, torch.ones_like(g0)).log10()
    value, slope = torch.zeros_like(g0), torch.zeros_like(g0)
    for k in range(len(poly) - 1, -1, -1):  # Horner, value and derivative in x together
        slope = slope * x + value
        value = value * x + poly[k]
    dg = slope / (torch.where(on, g0, torch.ones_like(g0)) * math.log(10.0))
    return torch.where(on, value, 0.0), torch.where(on, dg, 0.0)


def iv_coefficients(g0: torch.Tensor, model: DeviceModel) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(G0, NL2, NL3)`` of each device of low-field conductance ``g0`` (S): its current
    is ``G0 V + NL2 V^2 + NL3 V^3`` (A) at ``V`` volts (:class:`DeviceModel`)."""
    return g0, _log_poly(g0, model.iv_nl2_poly)[0], _log_poly(g0, model.iv_nl3_poly)[0]


def low_field(g: torch.Tensor, v: float, model: DeviceModel, iterations: int = 30) -> torch.Tensor:
    """The low-field conductance ``G0`` (S) of devices whose chord ``I(v) / v`` at ``v``
    volts is ``g`` (S): what a program-verify at ``v`` leaves.  Newton's method on
    ``G0 + NL2(G0) v + NL3(G0) v^2 = g`` from ``G0 = g``, to float64 round-off (the chord
    is monotonic in ``G0`` over the device's window).  ``g`` itself for a linear device."""
    if not model.nonlinear or g.numel() == 0:
        return g
    g64 = g.double()
    g0 = g64.clone()
    for _ in range(iterations):
        n2, d2 = _log_poly(g0, model.iv_nl2_poly)
        n3, d3 = _log_poly(g0, model.iv_nl3_poly)
        step = (g0 + n2 * v + n3 * v * v - g64) / (1.0 + d2 * v + d3 * v * v)
        g0 = torch.where(g64 > 0, g0 - step, 0.0)
        if float(step.abs().max()) <= 1e-15 * float(g64.abs().max().clamp_min(1e-300)):
            break
    return g0.to(g.dtype)
