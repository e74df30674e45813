"""Seeded random streams: one per kind of draw, so that switching one option on or off
changes no other draw (sweep points differing in one option see the same devices).

:class:`ProgrammingDraws`: the generators of what is drawn once per programming, one per
kind (the devices' variation and faults, drift exponents, the static read noise, the
ADCs' gain and offset errors, and the calibration's inputs and noise).

:class:`NoiseStreams`: the per-read noise, drawn on every core.

torch draws normal numbers on one CPU thread, and a crossbar read with per-read noise
needs one draw per column read: on the default hardware that was a third of a read's
time.  :class:`NoiseStreams` gives every Monte Carlo trial ``parts`` independent
generators (the number of torch threads when the streams start) and fills each trial's
draw as ``parts`` contiguous pieces, one per generator, the pieces spread over a pool of
threads.  The numbers depend on the seed, the trial and ``parts`` only: not on which
thread drew them, nor on how the trials are grouped into chunks.  So a simulation is
bit-identical for a given seed and thread count, and a trial reads the same noise
whether it runs alone or among a hundred.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

_POOL: ThreadPoolExecutor | None = None
_POOL_SIZE = 0
_POOL_LOCK = threading.Lock()


def _pool(workers: int) -> ThreadPoolExecutor:
    global _POOL, _POOL_SIZE
    with _POOL_LOCK:
        if _POOL is None or _POOL_SIZE < workers:
            _POOL = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="xbar-noise")
            _POOL_SIZE = workers
        return _POOL


_MASK = (1 << 63) - 1


def stream_seeds(seed: int, trials: int, parts: int, kind: int = 0) -> list[int]:
    """63-bit seeds of the ``trials * parts`` streams (trial-major), from numpy's
    SeedSequence: independent for every (seed, kind, trial, part); kind 0 is the read
    noise of the columns, kind 1 the ADCs' conversion noise."""
    root = np.random.SeedSequence(seed) if kind == 0 else np.random.SeedSequence([seed, kind])
    return [int(c.generate_state(1, dtype=np.uint64)[0]) & _MASK for c in root.spawn(trials * parts)]


# The kinds of draw made once per programming, each from its own generator.
DRAW_KINDS = ("devices", "drift", "static", "adc", "calibration", "calibration_adc")


@dataclass(frozen=True)
class ProgrammingDraws:
    """One generator per kind of draw made at programming and calibration, all from one
    seed: ``devices`` (programming variation and stuck-at faults, :func:`devices.program`),
    ``drift`` (drift exponents, drawn whenever the device drifts, at ``t = 0`` too),
    ``static`` (the static share of the read noise), ``adc`` (the ADCs' gain and offset
    errors, drawn whenever there is an ADC), ``calibration`` (calibration inputs, the rows
    sampled and the fit's column noise) and ``calibration_adc`` (the fit's ADC noise)."""

    devices: torch.Generator
    drift: torch.Generator
    static: torch.Generator
    adc: torch.Generator
    calibration: torch.Generator
    calibration_adc: torch.Generator

    @classmethod
    def from_seed(cls, seed: int, device: torch.device | str = "cpu") -> "ProgrammingDraws":
        children = np.random.SeedSequence(seed).spawn(len(DRAW_KINDS))
        return cls(*(torch.Generator(device=device).manual_seed(int(c.generate_state(1, dtype=np.uint64)[0]) & _MASK)
                     for c in children))


class NoiseStreams:
    """Standard-normal draws for ``trials`` trials, ``parts`` streams per trial."""

    def __init__(self, seed: int, trials: int, kind: int = 0) -> None:
        self.seed, self.trials, self.kind = seed, trials, kind
        self.parts = 0
        self._gens: list[torch.Generator] = []

    def restart(self) -> None:
        """Start every stream again from its seed (with the current thread count)."""
        self.parts = 0
        self._gens = []

    def _generators(self, device: torch.device) -> list[torch.Generator]:
        if not self._gens or self._gens[0].device != device:
            self.parts = self.parts or max(1, torch.get_num_threads())
            self._gens = [torch.Generator(device=device).manual_seed(s)
                          for s in stream_seeds(self.seed, self.trials, self.parts, self.kind)]
        return self._gens

    def normal(self, like: torch.Tensor, trials: range) -> torch.Tensor:
        """A tensor shaped like ``like`` ``(len(trials), ...)`` of standard normals, row
        ``i`` from the streams of trial ``trials[i]``."""
        gens = self._generators(like.device)
        out = torch.empty(like.shape, dtype=like.dtype, device=like.device)
        flat = out.view(out.shape[0], -1)
        jobs = [(piece, gens[k * self.parts + p])
                for i, k in enumerate(trials)
                for p, piece in enumerate(flat[i].chunk(self.parts))]
        if self.parts == 1 or out.device.type != "cpu" or out.numel() < _PARALLEL_MIN:
            for piece, gen in jobs:
                piece.normal_(generator=gen)
        else:  # torch releases the GIL while it draws
            list(_pool(self.parts).map(lambda job: job[0].normal_(generator=job[1]), jobs))
        return out


# Draws smaller than this (numbers) stay on the calling thread: a thread hand-off costs more.
_PARALLEL_MIN = 1 << 16
