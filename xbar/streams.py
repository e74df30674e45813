"""Seeded streams of per-read noise, drawn on every core.

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


def stream_seeds(seed: int, trials: int, parts: int) -> list[int]:
    """63-bit seeds of the ``trials * parts`` streams (trial-major), from numpy's
    SeedSequence: independent for every (seed, trial, part)."""
    mask = (1 << 63) - 1
    children = np.random.SeedSequence(seed).spawn(trials * parts)
    return [int(c.generate_state(1, dtype=np.uint64)[0]) & mask for c in children]


class NoiseStreams:
    """Standard-normal draws for ``trials`` trials, ``parts`` streams per trial."""

    def __init__(self, seed: int, trials: int) -> None:
        self.seed, self.trials = seed, trials
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
                          for s in stream_seeds(self.seed, self.trials, self.parts)]
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
