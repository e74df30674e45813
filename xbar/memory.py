"""Memory: keeping freed memory for reuse (glibc), which a simulation's large tensors
need, and sizing the reads by the bytes they take (:func:`chunking`).

Every read allocates tensors of tens of megabytes.  glibc serves allocations above its
mmap threshold (128 kB, growing to 32 MB at most) with fresh pages from the kernel and
gives them back when freed, so each such tensor costs its size in page faults on first
touch: measured on the default study's conv SNN, element-wise passes took 3-4x longer
and a third of the CPU time was the kernel's.  :func:`keep_freed_memory` raises the
mmap and trim thresholds (``mallopt``) so that freed memory stays in the heap and is
reused: the process's resident memory stays near its peak instead of shrinking between
reads.  It changes no number, only where memory comes from.  It does nothing on a C
library other than glibc.

That holds in the main thread.  A thread of its own allocates from a glibc arena of
heaps of at most 64 MB, so a larger tensor there is mapped afresh at every allocation
whatever the thresholds: a 100 MB element-wise pass took 90 ms in a thread against 20 ms
in the main thread here (34 ms with ``MALLOC_ARENA_MAX=1``, which puts every thread on
the main arena).  Dask runs its tasks in worker threads: start the workers with
``MALLOC_ARENA_MAX=1``.  :func:`keep_freed_memory` warns once where it runs in a thread
without it.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import os
import threading
import warnings

import torch
import torch.nn as nn

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_LARGEST = 2**31 - 1  # mallopt takes an int


@functools.cache
def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds to 2 GB, once per process; ``True`` if the
    C library took them."""
    try:
        mallopt = _libc().mallopt
    except (OSError, AttributeError, TypeError):
        return False
    kept = bool(mallopt(_M_MMAP_THRESHOLD, _LARGEST)) and bool(mallopt(_M_TRIM_THRESHOLD, _LARGEST))
    if kept and threading.current_thread() is not threading.main_thread() and not _one_arena():
        warnings.warn(f"xbar runs in a thread ({threading.current_thread().name!r}), where glibc maps every "
                      "tensor over 64 MB afresh from the kernel: element-wise passes took 4.5x their time in "
                      "a thread in our measurement. Start this process with MALLOC_ARENA_MAX=1 (for a Dask "
                      "cluster: MALLOC_ARENA_MAX=1 dask worker ...); the numbers are the same either way",
                      stacklevel=3)
    return kept


# Allocations from this size on are mapped afresh and given back when freed, within
# fresh_pages(): the large tensors, whose gaps fragment the heap; smaller ones reuse it.
FRESH_PAGES_FROM = 32 * 2**20


# What is kept across a pass while its reads come and go (calibration's recordings and
# replayed outputs) is mapped afresh from this size on: kept in the heap between the
# reads' temporaries, it splits their freed space into gaps too small to reuse.
KEPT_PAGES_FROM = 128 * 1024


@contextlib.contextmanager
def fresh_pages(from_bytes: int = FRESH_PAGES_FROM):
    """Within: allocations of ``from_bytes`` (:data:`FRESH_PAGES_FROM`) or more are mapped afresh from
    the kernel and given back when freed (glibc's mmap, as by default), not kept in the heap
    as :func:`keep_freed_memory` has them.  For calibration's fits, whose temporaries come
    in every layer's own sizes: a kept heap fragmented and grew with every part of a fit.
    Measured: VGG9's fc1 (4096x1024, 64x64 tiles) fitted on 4,096 inputs after another
    layer's fit took 3.3 GiB above what was resident, its heap growing by 125 MiB a part;
    with fresh pages 0.43 GiB, at twice the time (1.5 s against 0.8 s for a 2304x256 conv
    layer: the pages faulted in).  Programming took 1.3x its time so (89 s against 68 s
    for VGG9's 2 trials, at a peak of 1.32 against 1.40 GiB), and keeps freed memory; the
    reads, which repeat their sizes at every step, too."""
    try:
        mallopt = _libc().mallopt
    except (OSError, AttributeError, TypeError):
        yield
        return
    before, _fresh_from[0] = _fresh_from[0], from_bytes
    mallopt(_M_MMAP_THRESHOLD, from_bytes)
    try:
        yield
    finally:
        _fresh_from[0] = before  # an enclosing fresh_pages' threshold, else the kept heap's
        if before is not None:
            mallopt(_M_MMAP_THRESHOLD, before)
        elif keep_freed_memory():
            mallopt(_M_MMAP_THRESHOLD, _LARGEST)


_fresh_from: list = [None]  # the threshold of the innermost fresh_pages() in force


def release_freed_memory() -> bool:
    """Give the free pages of glibc's heap back to the kernel (``malloc_trim``): after
    programming, whose temporaries (a layer's draws, the circuit's float64 solves) come in
    sizes the reads do not reuse, so that the heap they grew does not stay resident beside
    the reads' own (measured on VGG9, 2 trials: the process's peak over programming,
    calibration and simulation fell from 2.04 to 1.89 GiB); and after calibration, its
    recordings.  The pages are faulted in again as the reads need them.
    ``True`` if the C library did it; nothing on a C library other than glibc."""
    try:
        return bool(_libc().malloc_trim(0))
    except (OSError, AttributeError, TypeError):
        return False


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")


def _one_arena() -> bool:
    """This process was started with glibc's arenas limited to one (every thread on the main one)."""
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    return os.environ.get("MALLOC_ARENA_MAX") == "1" or "glibc.malloc.arena_max=1" in tunables


# The memory a study may take, by default: a laptop's share (GiB).  Of it, the process
# itself (Python, torch, the networks and the data: about 0.4 GiB) takes what it takes.
MEMORY_GB = 2.0
# The share of the budget the largest read's temporaries get; the rest holds the process,
# the programmed matrices (PROGRAM_SHARE), the networks' state and the calibration's
# recordings.  0.5 before: VGG9's study then peaked above 2 GiB (docs/studies.md).
READ_SHARE = 0.3


# The share of the budget the programmed tiles of the trials held at once get (a study runs
# its trials in parts that fit: studies.robustness); the reads take READ_SHARE.
PROGRAM_SHARE = 0.25


def programmed_bytes_per_trial(model: nn.Module, tile: tuple[int, int]) -> int:
    """About the bytes one trial's programmed tiles of ``model`` take: three numbers per
    crossbar cell (the effective conductances, the read matrices and the per-read noise
    variances), each ``nn.Linear`` and ``nn.Conv2d`` matrix of ``in x out`` weights on
    tiles of ``tile`` (rows, columns) with two columns per weight (a differential pair),
    in the model's float width.  An upper bound where a layer stays digital or a tile
    reads fewer columns."""
    import math

    rows, cols = tile
    total = 0
    for m in model.modules():
        if isinstance(m, nn.Linear):
            n_in, n_out = m.in_features, m.out_features
        elif isinstance(m, nn.Conv2d):
            n_in, n_out = m.in_channels // m.groups * math.prod(m.kernel_size), m.out_channels
        else:
            continue
        cells = math.ceil(n_in / rows) * rows * math.ceil(2 * n_out / cols) * cols
        total += 3 * cells * m.weight.element_size()
    return total


def trials_per_part(per_trial: int, trials: int, memory_gb: float) -> int:
    """How many of ``trials`` programmings of ``per_trial`` bytes each fit
    :data:`PROGRAM_SHARE` of ``memory_gb`` (at least one)."""
    return max(1, min(trials, int(PROGRAM_SHARE * memory_gb * 2**30 // max(1, per_trial))))


# What a step keeps of each crossbar layer's outputs while the next layers read: the analog
# output, the ideal product of the same input and the ideal network's output (the metrics').
KEPT_PER_OUTPUT = 3
# What a step keeps of each neuron: its membrane and its spikes, in the analog network (per
# trial) and in the ideal one run beside it (counted per trial too: an upper bound).
KEPT_PER_NEURON = 4


def read_bytes_per_sample(hw: nn.Module, model: nn.Module, x: torch.Tensor, step) -> int:
    """Bytes a step of ``hw`` takes per sample and trial at its peak, on inputs like ``x``
    (its first sample, one step of the ideal ``model`` through ``step`` to see each
    layer's input): the largest crossbar read (reads per sample times
    :meth:`ProgrammedMatrix.read_bytes`), what the step keeps of every crossbar layer's
    outputs meanwhile (:data:`KEPT_PER_OUTPUT` numbers per output) and every neuron's
    state, kept across the steps (:data:`KEPT_PER_NEURON` numbers per neuron, the
    membrane's width).  Its parts: :func:`step_bytes`."""
    return step_peak(*step_bytes(hw, model, x, step))


def step_peak(reads: dict, outputs: dict, neurons: int) -> int:
    """:func:`read_bytes_per_sample` from the parts :func:`step_bytes` found."""
    return max(reads.values(), default=1) + KEPT_PER_OUTPUT * sum(outputs.values()) + KEPT_PER_NEURON * neurons


def step_bytes(hw: nn.Module, model: nn.Module, x: torch.Tensor, step) -> tuple[dict, dict, int]:
    """Per sample and trial, seen over one step of ``x``'s first sample through ``step``
    (the ideal ``model``): the bytes of each crossbar layer's read at its peak and of its
    outputs (by name), and of the membranes of the neurons
    (:func:`xbar.neurons.neuron_reading`)."""
    from xbar.network import analog_layers
    from xbar.neurons import neuron_reading

    layers = dict(analog_layers(hw))
    reads: dict[str, int] = {}
    outputs: dict[str, int] = {}
    membranes: dict[str, int] = {}

    def seen(name):
        def hook(module, inputs):
            n = layers[name].reads_per_sample(inputs[0])
            matrix = layers[name].matrix
            reads[name] = max(reads.get(name, 0), n * matrix.read_bytes())
            outputs[name] = max(outputs.get(name, 0), n * matrix.shape[1] * matrix.g_read.element_size())
        return hook

    def neuron(name):
        def count(module, inputs, output):
            reading = neuron_reading(module, output)
            if reading is not None:
                membranes[name] = reading[1].numel() * reading[1].element_size()
        return count

    handles = [m.register_forward_pre_hook(seen(n)) for n, m in model.named_modules() if n in layers]
    handles += [m.register_forward_hook(neuron(n)) for n, m in model.named_modules()]
    try:
        with torch.no_grad():
            step.reset()
            step(x[:1])
    finally:
        step.reset()
        for h in handles:
            h.remove()
    return reads, outputs, sum(membranes.values())


def spans(n: int, step: int) -> list[slice]:
    """``0 .. n - 1`` in consecutive slices of ``step`` (the last may be shorter): the
    chunks of trials, the parts of a batch, the parts of a fit's tile-rows."""
    return [slice(a, min(n, a + step)) for a in range(0, n, step)]


def chunking(per_sample: int, batch: int, trials: int, memory_gb: float) -> tuple[int, int]:
    """``(trials per chunk, samples per part of a batch)`` that keep the largest read within
    :data:`READ_SHARE` of ``memory_gb``: as many trials together as fit with the whole
    batch; a batch that does not fit with one trial is read in parts."""
    room = max(1, int(READ_SHARE * memory_gb * 2**30 // max(1, per_sample)))
    if room >= batch:
        return max(1, min(trials, room // batch)), batch
    return 1, room


def check_memory(where: str, memory_gb) -> None:
    import math

    if isinstance(memory_gb, bool) or not isinstance(memory_gb, (int, float)) or not math.isfinite(memory_gb) \
            or memory_gb <= 0:
        raise ValueError(f"{where}: memory_gb = {memory_gb!r} is not allowed: must be a number of GiB > 0")
