"""Programming a layer's tiles: from conductance targets to the state a read sees.

One function for evaluation (:class:`xbar.tile.ProgrammedMatrix`, Monte Carlo trials
leading) and hardware-aware training (:mod:`xbar.aware`, one programming per batch, with
gradients): the devices are programmed (variation and stuck-at faults), drift to
``Spec.t_inference``, take the static share of their read noise, and are seen through
the wires (IR drop); the per-read share of the read noise is kept as a variance per
device of the effective matrix.  The circuit is a parameter: evaluation solves it
exactly for every programmed state, training holds each device's attenuation in the
nominal tile (or differentiates the first-order model).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from devices import drift_factor, drift_nu, program, read_sigma_rel, static_read_noise
from mapping.layout import decode_columns
from xbar.spec import Spec
from xbar.tile.converters import full_scale
from xbar.streams import ProgrammingDraws


@dataclass
class ProgrammedState:
    """The programmed tiles ``(..., n_r, n_c, R, C)`` (S), as a read sees them.

    ``g_eff``: the conductances at inference (drift and the static read noise) through the
    wires; ``s2``: the per-read noise variance of each entry of ``g_eff`` (``None``
    without per-read noise).  The designer's view of the same
    tiles, what a worst-case ADC range is sized for, is the nominal one:
    :func:`designed_full_scale`."""

    g_eff: torch.Tensor
    s2: torch.Tensor | None


def per_read_variance(g0: torch.Tensor, g_eff: torch.Tensor, spec: Spec) -> torch.Tensor | None:
    """The variance (S^2) of each effective conductance's per-read noise, to first order
    with IR drop: each device's relative read noise (at its programmed state) on its
    entry of the effective matrix, exactly the device-level noise with ideal wires.
    ``None`` where the device has no per-read noise."""
    dev = spec.device
    if not (dev.has_read_noise and dev.read_noise_static < 1):
        return None
    rel = torch.where(g0 > 0, read_sigma_rel(g0, dev, spec.t_inference), torch.zeros_like(g0))
    return (1 - dev.read_noise_static) * (rel * g_eff) ** 2


def programmed_devices(targets: torch.Tensor, spec: Spec, draws: ProgrammingDraws, *,
                       variation: bool = True, read_noise: bool = True,
                       shape: tuple[int, ...] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The devices programmed to ``targets`` (S) as ``spec``'s are, at ``t_inference``,
    and at programming: ``(g, g0)``, each kind of draw from its own generator of ``draws``
    (so that the variation, the drift exponents and the static read noise are the same
    whether or not the others are drawn).  The drift exponents are drawn whenever the
    device drifts, at ``t_inference = 0`` too, where they change nothing; a relaxing
    device is programmed with the same draws at programming (``g0``) and at
    ``t_inference`` (``g``).  ``variation=False``: the targets themselves, no draw
    (training without that ingredient); ``read_noise=False``: no static read noise.
    ``shape``: the devices' shape, ``targets`` broadcast to it (several programmings of
    the same targets; default ``targets``' own)."""
    dev, t = spec.device, spec.t_inference
    if variation:
        if dev.relaxes and t > 0:  # the same draws at programming and at t
            state = draws.devices.get_state()
            g0 = program(targets, dev, draws.devices, shape=shape)
            again = torch.Generator(device=draws.devices.device)
            again.set_state(state)
            g = program(targets, dev, again, t, shape=shape)
        else:
            g0 = g = program(targets, dev, draws.devices, shape=shape)
        if dev.has_drift:
            nu = drift_nu(g0, dev, draws.drift)
            g = g * drift_factor(nu, t, dev) if t > 0 else g
    else:
        g0 = g = targets if shape is None else targets.expand(shape)
    if read_noise:
        g = static_read_noise(g, g0, dev, t, draws.static)
    return g, g0


def seen_through(g: torch.Tensor, g0: torch.Tensor, spec: Spec,
                 circuit: Callable[[torch.Tensor], torch.Tensor], read_noise: bool = True) -> ProgrammedState:
    """Devices at ``g`` (programmed at ``g0``, :func:`programmed_devices`) as a read sees
    them: through ``circuit`` (conductances -> effective conductances), with the per-read
    share of their read noise (none with ``read_noise=False``)."""
    g_eff = circuit(g)
    return ProgrammedState(g_eff, per_read_variance(g0, g_eff, spec) if read_noise else None)


def program_tiles(targets: torch.Tensor, spec: Spec, draws: ProgrammingDraws,
                  circuit: Callable[[torch.Tensor], torch.Tensor], *, variation: bool = True,
                  read_noise: bool = True) -> ProgrammedState:
    """Program ``targets`` (S) as ``spec``'s devices do (:func:`programmed_devices`) and
    see them through ``circuit`` (:func:`seen_through`), all at once (hardware-aware
    training's one programming per batch; evaluation sees its trials one by one:
    :class:`xbar.tile.ProgrammedMatrix`)."""
    g, g0 = programmed_devices(targets, spec, draws, variation=variation, read_noise=read_noise)
    return seen_through(g, g0, spec, circuit, read_noise)


def designed_full_scale(nominal: torch.Tensor, spec: Spec, circuit: Callable[[torch.Tensor], torch.Tensor],
                        n_in: int, analog_pairs: bool, outputs_per_tile: int) -> torch.Tensor | None:
    """The worst-case ADC full scale of each tile (A), ``(n_r, n_c)``, as a designer sizes
    it: from the nominal targets ``nominal`` ``(n_r, n_c, R, C)`` through the circuit, not
    from a programmed chip's own devices, which no designer knows (the ranges set from
    calibration reads, ``Spec.adc_percentile``, replace it when the chip is calibrated);
    a tile of zero weights, for the conductance window
    (:func:`xbar.tile.converters.full_scale`).  ``None`` without an ADC."""
    if spec.adc_bits is None:
        return None
    nominal = nominal.detach()
    zero_tiles = None
    if analog_pairs:  # each pair's two targets equal: a zero weight
        zero_tiles = (decode_columns(nominal, "differential", outputs_per_tile) == 0).flatten(-2).all(-1)
    return full_scale(circuit(nominal).detach(), spec, n_in, analog_pairs, outputs_per_tile, zero_tiles)
