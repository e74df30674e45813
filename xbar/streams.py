"""Seeded random streams: one per kind of draw, so that switching one option on or off
changes no other draw (sweep points differing in one option see the same devices).

:class:`ProgrammingDraws`: the generators of what is drawn once per programming, one per
kind (the devices' variation and faults, drift exponents, the static read noise, the
ADCs' gain and offset errors, and the calibration's inputs and noise).

:class:`NoiseStreams`: the per-read noise, one stream per Monte Carlo trial.  On the CPU
a stream is counter-based (:mod:`xbar.kernels`): its ``n``-th normal depends on its key
and ``n`` only, so the numbers are drawn on every core and are bit-identical for a given
seed whatever the thread count, and a trial reads the same noise whether it runs alone
or among a hundred (each trial's position advances by what it draws).  On other devices
each trial's stream is a torch generator on that device, seeded with the same key.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from xbar import kernels

_MASK = (1 << 63) - 1

# What the results record of the per-read noise's numbers (the attrs of xbar.simulate).
READ_NOISE_GENERATOR = ("one stream per trial: on CPU counter-based (SplitMix64 output, 256-layer ziggurat; "
                        "xbar.kernels), the same whatever the thread count; on other devices torch's generator")


def stream_seeds(seed: int, trials: range, kind: int = 0) -> list[int]:
    """63-bit keys of the streams of ``trials``, from numpy's SeedSequence: independent for
    every (seed, kind, trial), and trial ``k``'s whatever the others (its ``k``-th child);
    kind 0 is the read noise of the columns, 1 the ADCs' conversion noise, 2 and 3 the
    same two while calibrating."""
    entropy = seed if kind == 0 else [seed, kind]
    return [int(np.random.SeedSequence(entropy, spawn_key=(k,)).generate_state(1, dtype=np.uint64)[0]) & _MASK
            for k in trials]


# The kinds of draw made once per programming, each from its own generator.
DRAW_KINDS = ("devices", "drift", "static", "adc", "calibration", "calibration_adc", "neurons")


@dataclass(frozen=True)
class ProgrammingDraws:
    """One generator per kind of draw made at programming and calibration, all from one
    seed: ``devices`` (programming variation and stuck-at faults, :func:`devices.program`),
    ``drift`` (drift exponents, drawn whenever the device drifts, at ``t = 0`` too),
    ``static`` (the static share of the read noise), ``adc`` (the ADCs' gain and offset
    errors, drawn whenever there is an ADC), ``calibration`` (calibration inputs and the
    rows sampled; in hardware-aware training also the fit's column noise) and
    ``calibration_adc`` (hardware-aware training's calibration ADC noise) and ``neurons``
    (the analog neurons' mismatch, :mod:`xbar.membrane`).  Evaluation's
    calibration reads draw their noise from each trial's own :class:`NoiseStreams` (kinds
    2 and 3), so that a trial's calibration is the same whatever other trials run with it."""

    devices: torch.Generator
    drift: torch.Generator
    static: torch.Generator
    adc: torch.Generator
    calibration: torch.Generator
    calibration_adc: torch.Generator
    neurons: torch.Generator

    @classmethod
    def from_seed(cls, seed: int, device: torch.device | str = "cpu") -> "ProgrammingDraws":
        children = np.random.SeedSequence(seed).spawn(len(DRAW_KINDS))
        return cls(*(torch.Generator(device=device).manual_seed(int(c.generate_state(1, dtype=np.uint64)[0]) & _MASK)
                     for c in children))


class NoiseStreams:
    """Standard-normal draws for trials ``trials`` (a count, or which trials of a run:
    :func:`xbar.convert`'s ``only``), one stream per trial (module docstring), indexed
    from 0; ``kind`` as :func:`stream_seeds`."""

    def __init__(self, seed: int, trials: int | range, kind: int = 0) -> None:
        trials = range(trials) if isinstance(trials, int) else trials
        self.seed, self.trials, self.kind = seed, len(trials), kind
        self.keys = np.array(stream_seeds(seed, trials, kind), dtype=np.uint64)
        self.offsets = np.zeros(len(trials), dtype=np.uint64)  # each trial's next position (CPU)
        self._gens: list[torch.Generator] = []  # each trial's generator (other devices)

    def restart(self) -> None:
        """Start every stream again from its seed."""
        self.offsets[:] = 0
        self._gens = []

    def _claim(self, trials: range, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The keys and first positions of ``n`` numbers for each of ``trials``, which
        then move on by ``n``."""
        first = self.offsets[trials.start:trials.stop].copy()
        self.offsets[trials.start:trials.stop] += np.uint64(n)
        kernels.follow_torch_threads()
        return self.keys[trials.start:trials.stop], first

    def _generators(self, device: torch.device) -> list[torch.Generator]:
        if not self._gens or self._gens[0].device != device:
            self._gens = [torch.Generator(device=device).manual_seed(int(k)) for k in self.keys]
        return self._gens

    def add_noise_(self, u: torch.Tensor, var: torch.Tensor, trials: range, codes: tuple[float, int] | None = None
                   ) -> torch.Tensor:
        """``u + sqrt(var) * eps`` in place, ``eps`` :meth:`normal`'s numbers for ``trials``
        (row ``i`` of ``u`` and ``var`` ``(len(trials), ...)`` is trial ``trials[i]``'s);
        with ``codes`` ``(lo, top)``, then the ADC's clip to ``[lo, 1]`` and rounding to
        codes (:func:`xbar.tile.converters.to_codes_`).  On the CPU, one pass of native
        code (:func:`xbar.kernels.noisy_read_`, in float64: the codes may differ from the
        float-width passes' in the last bit of a rounding, never in distribution); else
        torch's passes on :meth:`normal`'s numbers."""
        if u.device.type == "cpu" and u.is_contiguous() and var.is_contiguous() and var.dtype == u.dtype \
                and var.shape == u.shape and not u.requires_grad:
            flat = u.view(u.shape[0], -1)
            lo, top = codes or (0.0, 0)
            kernels.noisy_read_(flat.numpy(), var.view(flat.shape).numpy(), *self._claim(trials, flat.shape[1]),
                                float(lo), float(top))
            return u
        u = u.addcmul_(var.sqrt(), self.normal(u, trials))
        if codes is not None:
            u.clamp_(codes[0], 1).mul_(codes[1]).round_()
        return u

    def normal(self, like: torch.Tensor, trials: range) -> torch.Tensor:
        """A tensor shaped like ``like`` ``(len(trials), ...)`` of standard normals, row
        ``i`` from the stream of trial ``trials[i]``."""
        out = torch.empty(like.shape, dtype=like.dtype, device=like.device)
        flat = out.view(out.shape[0], -1)
        if out.device.type == "cpu":
            kernels.fill_normal(flat.numpy(), *self._claim(trials, flat.shape[1]))
        else:
            gens = self._generators(out.device)
            for row, k in zip(flat, trials):
                row.normal_(generator=gens[k])
        return out
