"""Calibration from data: a few samples run through the crossbar network, layer by layer.

``Spec(calibration="data")`` (the default) fits each tile's digital gain and offset to the
chip's own reads of the inputs that layer sees on real data (see :mod:`xbar.tile.calibration`): the
network is run on a calibration batch for the study's timesteps, and each layer's inputs
are recorded and read back.  Layers are fitted one at a time in the order they run, each
with every layer before it already calibrated, so that each sees the inputs it will see
in inference.

Run naively, that is one pass of the batch per layer (``calibrate(..., replay=False)``).
By default a pass costs about one layer's reads, not the network's, where the network is
feed-forward (no crossbar layer's input depends on a layer that runs after it, checked on
the ideal model's data flow over two steps, :func:`_direct_inputs`): the calibrated layers
before the one being fitted replay the outputs they read in the pass after their own fit
(:class:`_Replay`), the layer being fitted records its inputs without reading, and the
step ends there: nothing after it runs, since nothing after it can reach it (where the
network keeps its state in its modules; else the layers after it run the ideal product).
Each layer is read once; calibrating a deep network then costs about one simulation of
its calibration batch, plus the fits, whatever its depth.  A network with a loop through
its crossbar layers (recurrent weights) runs every pass in full.  Measured against known
random vectors (``"vectors"``), whose statistics are not the network's:
docs/hardware.md#calibration.

Only the inputs are used, never labels, and the inference's read-noise stream is not
touched (the fits draw from each programming's own generator).  The batch must be a fair
sample of the data: the first samples of a dataset stored by class are all one class, and
a calibration fitted on one class misreads the others (measured: 5 points lost against the
raw chip, docs/hardware.md#calibration).  A batch holding fewer than half of the model's
classes is warned about: by the samples' labels where the caller has them (as
:func:`xbar.simulate` does), else by the model's own predictions on the batch.
"""

from __future__ import annotations

import sys
import warnings
from typing import Callable

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from xbar.checks import check_batch, check_count, model_dtype
from xbar.network import analog_layers
from xbar.memory import (KEPT_PAGES_FROM, MEMORY_GB, READ_SHARE, check_memory, chunking, fresh_pages, keep_freed_memory,
                         release_freed_memory, spans, step_bytes, step_peak)
from xbar.neurons import reset_state
from xbar.stepping import READOUTS, DataFlow, Stepper, check_steppable, readout_step
from xbar.tile.calibration import CAL_MAX_ROWS, CAL_ROWS_PER_READ
from xbar.tile.matrix import trial_chunks

# Samples of a calibration batch, by default: enough for a fit whose error is small
# against the hardware's (docs/hardware.md#calibration), few enough to cost little.
CALIBRATION_SAMPLES = 64


def awaiting(hw: nn.Module) -> list:
    """The programmed matrices of ``hw`` that wait for a calibration from data."""
    return [m.matrix for _, m in analog_layers(hw) if m.matrix.awaits_data]


def calibrate(hw: nn.Module, model: nn.Module, x, timesteps: int, *,
              encoder: Callable[[torch.Tensor, int], torch.Tensor] | None = None,
              reset: Callable[[nn.Module], None] = reset_state, readout: str = "sum",
              labels: torch.Tensor | None = None, progress: bool = False, replay: bool = True,
              memory_gb: float = MEMORY_GB) -> nn.Module:
    """Calibrate the crossbar layers of ``hw`` (converted from ``model`` by
    :func:`xbar.convert` with ``Spec(calibration="data")``) on the inputs ``x``
    ``[samples, ...]`` (one timestep's input per sample, as :func:`xbar.simulate` takes
    them; a fair sample of the data, every class in it), run for ``timesteps`` steps with
    ``encoder`` (default: ``x`` at every step).  A few dozen samples suffice
    (:data:`CALIBRATION_SAMPLES`).  ``model`` is run on the same batch (``readout`` as in
    :func:`xbar.simulate`) to check that it covers the classes: by the samples' ``labels``
    when given (never used for the fit), else by the model's predictions (an untrained
    model predicts few classes on any batch).  ``progress``: a progress bar over the
    layers.  ``replay`` (default): read each layer once in all (:class:`_Replay`), where the
    network is feed-forward; the layers before the one being fitted then give the same read
    noise in every pass (one realization), where ``replay=False`` runs the whole network
    for each layer and draws a fresh one in each pass: the fits are the same in
    distribution, and without per-read noise the same bit for bit.  ``memory_gb``: as in
    :func:`xbar.simulate`, the trials read together and, where one trial of the whole batch
    does not fit, the parts of the batch read one after the other (:func:`_record_pass`);
    and the size of each fit's parts (:meth:`ProgrammedMatrix.fit_calibration`).  Returns
    ``hw``, calibrated in place."""
    check_count("calibrate", "timesteps", timesteps)
    check_memory("calibrate", memory_gb)
    keep_freed_memory()
    if readout not in READOUTS:
        raise ValueError(f"calibrate: readout = {readout!r} is not allowed: must be one of {READOUTS}")
    pending = awaiting(hw)
    if not pending:
        raise ValueError("calibrate: hw has no crossbar layer waiting for a calibration from data "
                         "(Spec.calibration='data', not yet calibrated)")
    check_steppable(hw, "calibrate")
    dtype = model_dtype(hw, "calibrate")
    x, _ = check_batch(x, torch.zeros(len(x), dtype=torch.long), dtype, " (calibrate)")
    dev = next(iter(hw.buffers())).device
    x = x.to(dev, dtype)
    encoder = encoder or (lambda inputs, t: inputs)
    step = Stepper(hw, reset)
    matrices = [m.matrix for _, m in analog_layers(hw)]
    was_training = hw.training
    hw.eval()
    try:
        with torch.no_grad():
            _check_classes(model, x, timesteps, encoder, reset, readout, labels)
            bar = tqdm(total=len(pending), desc="calibrate", unit="layer", disable=not progress, leave=False,
                       bar_format="{l_bar}{bar}| {n:.1f}/{total} layers [{elapsed}<{remaining}]")
            fits = 0  # layers fitted times trials: the bar counts layers, exactly
            order, rows = _run_order(step, matrices, pending, x, encoder)
            direct = _direct_inputs(model, hw, x, encoder, reset) if replay else None
            per_chunk, part, replay = _sizes(hw, model, x, timesteps, encoder, reset, matrices[0].trials,
                                             direct is not None, memory_gb)
            starts = [m.draws.calibration.get_state() for m in matrices]
            for ks in trial_chunks(matrices[0].trials, len(x), per_chunk):  # each chunk through every pass
                for m, state in zip(matrices, starts):  # every chunk samples the same rows
                    m.draws.calibration.set_state(state)
                    m.select_trials(ks.start, ks.stop)
                kept = _Replay(hw, order, direct, rows, step.mode != "state") if replay else None
                pending = awaiting(hw)
                while pending:
                    target = next(m for m in order if any(m is p for p in pending))
                    _record_pass(step, matrices, pending, target, x, timesteps, encoder, ks, part, kept)
                    inputs, target.recording = target.recording, None
                    release_freed_memory()  # the pass's temporaries, before the fit's
                    with fresh_pages():  # a fit's temporaries come in its layer's own sizes
                        target.fit_calibration(inputs, age=False, memory_gb=memory_gb)  # calibrated at t_calibration
                    del inputs
                    pending = awaiting(hw)
                    fits += ks.stop - ks.start
                    bar.n = fits / matrices[0].trials
                    bar.refresh()
                del kept
            bar.close()
            _stop_recording(matrices)
            for m in matrices:  # then the chip ages to t_inference (Spec.t_calibration)
                m.advance_to_inference()
    finally:
        _stop_recording(matrices)
        for m in matrices:
            m.reset_read_noise()
        hw.train(was_training)
    return hw


# Layers whose outputs a replayed calibration keeps at once, at most (a layer's outputs are
# dropped once the layers reading them are read calibrated: two for a chain of layers).
REPLAY_KEPT_LAYERS = 2


def _sizes(hw: nn.Module, model: nn.Module, x: torch.Tensor, timesteps: int, encoder, reset, trials: int,
           replay: bool, memory_gb: float) -> tuple[int, int, bool]:
    """``(trials per chunk, samples per part, replay)`` of a calibration of ``trials`` on the batch ``x``
    within :data:`xbar.memory.READ_SHARE` of ``memory_gb``: a read's bytes per sample
    (:func:`xbar.memory.step_peak`), and with ``replay`` the outputs it keeps
    over every step of the whole batch of the chunk's trials (those of the
    :data:`REPLAY_KEPT_LAYERS` largest; where the batch is read in parts, its outputs are
    kept whole).  Where one trial's kept outputs leave no room for a read of one sample,
    the layers are calibrated by passes of the whole network (``replay`` off: the same
    fits in distribution, at about the network's depth times the cost, in the memory of
    one read)."""
    found = step_bytes(hw, model, encoder(x, 0), Stepper(model, reset))
    per_read = step_peak(*found)
    if replay:
        outputs = sorted(found[1].values())
        kept = timesteps * sum(outputs[-REPLAY_KEPT_LAYERS:])  # per sample and trial, over the steps
        room = READ_SHARE * memory_gb * 2**30 - kept * len(x)  # one trial's outputs of the whole batch kept
        if room >= per_read:
            per_chunk, part = chunking(per_read + kept, len(x), trials, memory_gb)
            return (per_chunk, part, True) if part == len(x) else (1, min(len(x), int(room // per_read)), True)
    per_chunk, part = chunking(per_read, len(x), trials, memory_gb)
    return per_chunk, part, False


def _check_classes(model: nn.Module, x: torch.Tensor, timesteps: int, encoder, reset, readout: str,
                   labels: torch.Tensor | None) -> None:
    """Warn when the batch ``x`` holds fewer than half of ``model``'s classes: by ``labels``
    if given (one step then tells the number of classes), else by the model's predictions."""
    was_training = model.training
    model.eval()
    step = Stepper(model, reset)
    try:
        step.reset()
        acc = None
        for t in range(timesteps if labels is None else 1):
            acc = readout_step(acc, step(encoder(x, t)), readout)
    finally:
        step.reset()
        model.train(was_training)
    classes = acc.reshape(len(x), -1).shape[-1]
    found = acc.reshape(len(x), -1).argmax(-1) if labels is None else torch.as_tensor(labels).reshape(-1)
    counts = torch.bincount(found.long().cpu(), minlength=classes)
    seen = int((counts > 0).sum())
    who = "the model predicts" if labels is None else "the labels hold"
    if classes > 1 and 2 * seen < classes:
        warnings.warn(f"calibrate: on the {len(x)} calibration samples {who} only {seen} "
                      f"of the model's {classes} classes (counts {counts.tolist()}): a calibration fitted on "
                      "them may misread the others. Calibrate on a shuffled sample of the data, every "
                      "class in it (a dataset stored by class starts with one class)", stacklevel=3)


def _run_order(step: Stepper, matrices: list, pending: list, x: torch.Tensor, encoder) -> tuple[list, dict]:
    """The pending matrices in the order they first run, and the inputs (rows) of one
    sample that each matrix reads at each of its calls in a step (by ``id``): one step of
    the batch's first sample on the first trial (a read refuses what it cannot simulate
    here, before any fit; one sample, so that this read holds no more memory than the
    passes'), nothing recorded and nothing drawn from the calibration generators (the
    read-noise streams it used are restarted)."""
    order: list = []
    rows: dict = {id(m): [] for m in matrices}

    def called(module, inputs):
        rows[id(module)].append(inputs[0].shape[1])
        if any(module is m for m in pending) and not any(module is m for m in order):
            order.append(module)

    handles = [m.register_forward_pre_hook(called) for m in matrices]
    try:
        for m in matrices:
            m.select_trials(0, 1)
        for m in pending:
            m.recording, m.keep_recording, m.rows_per_read = [], False, sys.maxsize
        step.reset()
        step(encoder(x, 0)[:1])
    finally:
        step.reset()
        for h in handles:
            h.remove()
        _stop_recording(matrices)
        for m in matrices:
            m.reset_read_noise()
    if not order:
        raise ValueError("calibrate: the converted network never ran its crossbar layers on the "
                         "calibration batch: its forward calls modules it holds elsewhere than in its "
                         "attributes (a nirtorch GraphExecutor runs its graph's own copies). Load a "
                         "NIR graph with xbar.from_nir instead")
    return order, rows


def _record_pass(step: Stepper, matrices: list, pending: list, target, x: torch.Tensor, timesteps: int,
                 encoder, ks: slice, part: int, replay: _Replay | None = None) -> None:
    """Run the calibration batch once on trials ``ks`` and leave the inputs that ``target``
    read in ``target.recording``, ``(k, rows, in)``.  Without ``replay``, the other pending
    matrices read raw and sample their rows as they always did, keeping nothing; with it,
    the layers before ``target`` replay their calibrated outputs (or read them, the first
    time) and those after it run the ideal product (:class:`_Replay`).  Where one trial of
    the whole batch does not fit the budget, the batch runs in parts of ``part`` samples,
    one after the other (as :func:`xbar.simulate` reads it): its reads then draw their
    noise and sample their rows in another order, so the fits differ in their digits (not
    in distribution) from a run with room for the whole batch."""
    try:
        parts = spans(len(x), part)
        for m in pending:
            m.keep_recording = m is target
            m.rows_per_read = min(CAL_ROWS_PER_READ, -(-CAL_MAX_ROWS // (timesteps * len(parts))))  # bounded memory
            m.recording = []
        for m in matrices:
            m.select_trials(ks.start, ks.stop)  # a new pass: no correlation with the reads before
        for ps in parts:
            if replay is not None:
                replay.arrange(target, ps.start)
            step.reset()
            for t in range(timesteps):
                xt = encoder(x, t)[ps]
                try:
                    step(xt.repeat(ks.stop - ks.start, *([1] * (xt.dim() - 1))))
                except _PassDone:  # the step's rest reaches no recording: its draws only
                    replay.draw_past_rest(len(range(ps.start, ps.stop)))
        recording = torch.cat(target.recording, 1)  # (k, rows, in)
    finally:
        if replay is not None:
            replay.restore()
        for m in matrices:
            m.recording, m.keep_recording = None, True
    target.recording = recording


class _Replay:
    """The passes of a feed-forward network at the cost of about one layer's reads each.
    In the pass that fits ``target``, each crossbar layer before it (calibrated) replays
    the outputs it read, step by step, in the first pass it ran calibrated (its inputs are
    the same in every later pass: only layers before it feed it, and they are final); the
    target records its inputs as a read would, but gives the ideal product instead of
    reading, as do the layers after it (in a feed-forward network nothing they give
    reaches the target).  Each layer is then read once, calibrated, in the pass after its
    fit.  One replay serves one chunk of trials (:func:`calibrate` runs each chunk through
    every pass before the next, so that the outputs kept are that chunk's); its outputs
    are kept per part of the batch (``part``: its first sample); a replayed output is a
    copy, so that nothing downstream can change the kept one.

    Only the outputs some layer still needs are kept: a layer's outputs are dropped once
    every layer that reads them directly (``direct``, from the data flow:
    :func:`_direct_inputs`) has made its own calibrated read.  A layer before the target
    whose outputs reach it through no live layer gives zeros of its outputs' shapes (what
    it gives reaches only layers that replay): a VGG's calibration holds two layers'
    outputs at a time, not all of them.

    With ``stop`` (the network keeps its state in its modules: not a norse ``state``
    argument, which a step cut short would not hand back), a step ends at the target's
    record (:class:`_PassDone`): the layers after it, and the neurons and everything else
    after it in the step, do not run, and their calibration generators draw what their
    reads would have (:meth:`draw_past_rest`, from ``rows``: each matrix's inputs per
    sample at each of its calls in a step, :func:`_run_order`), so the fits are those of
    the full pass, bit for bit.  A target called more than once in a step runs its step
    to the end."""

    def __init__(self, hw: nn.Module, order: list, direct: dict, rows: dict, stop: bool) -> None:
        self.layers = [_owner(hw, m) for m in order]
        self.order = order
        self.rows, self.stop, self.after = rows, stop, []
        index = {id(m): i for i, m in enumerate(order)}
        names = {id(m.matrix): n for n, m in analog_layers(hw)}
        # the layers whose outputs each one reads directly, by position in ``order``
        self.direct = [{index[id(d)] for d in order if names[id(d)] in direct[names[id(m)]]} for m in order]
        self.kept: dict[tuple[int, int], list] = {}  # (layer index, part start) -> outputs by call
        self.shapes: dict[tuple[int, int], list] = {}  # the same, of outputs no longer kept
        self.patched: list = []

    def arrange(self, target, part: int) -> None:
        self.restore()
        at = next(i for i, m in enumerate(self.order) if m is target)
        self._drop_unneeded(part)
        live = self._live(at, part)
        for i, module in enumerate(self.layers):
            key = (i, part)
            if i < at:
                if key in self.kept:
                    module.forward = self._replaying(self.kept[key])
                elif i in live:
                    self.kept[key] = []
                    module.forward = self._keeping(module, self.kept[key])
                else:
                    module.forward = self._zeros(self.shapes[key])
            elif i > at:  # drawing past the rows a pending layer's read samples, as the full pass does
                module.forward = module.ideal_drawing_past
            elif self._stops(target):  # the target: its inputs recorded; the step ends there
                module.forward = self._recording_then_stop(module)
            else:  # the target: its inputs recorded, no read (its outputs reach only ideal layers)
                module.forward = module.record_then_ideal
            self.patched.append(module)
        self.after = [m for m in self.order[at + 1:] if m.recording is not None] if self._stops(target) else []

    def _stops(self, target) -> bool:
        return self.stop and len(self.rows[id(target)]) == 1

    def draw_past_rest(self, samples: int) -> None:
        """What the pending layers after the target draw in a step of ``samples`` samples
        per trial, the step having stopped at the target."""
        for m in self.after:
            for per_sample in self.rows[id(m)]:
                m.draw_past(per_sample * samples)

    def _live(self, at: int, part: int) -> set:
        """The layers before position ``at`` whose outputs this pass needs: those the
        target reads, and those not yet read calibrated (they read now), with what they read."""
        stack = list(self.direct[at]) + [i for i in self._waiting(part) if i < at]
        live: set = set()
        while stack:
            i = stack.pop()
            if i in live:
                continue
            live.add(i)
            if (i, part) not in self.kept:
                stack.extend(self.direct[i])
        return live

    def _waiting(self, part: int) -> list[int]:
        """The layers that have not yet made their calibrated read (in this part of the batch)."""
        return [i for i in range(len(self.order)) if (i, part) not in self.kept and (i, part) not in self.shapes]

    def _drop_unneeded(self, part: int) -> None:
        """Drop the kept outputs that no layer waiting for its calibrated read reads."""
        waiting = self._waiting(part)
        for key in [k for k in self.kept if k[1] == part]:
            if not any(key[0] in self.direct[j] for j in waiting):
                self.shapes[key] = [(t.shape, t.dtype, t.device) for t in self.kept.pop(key)]

    def restore(self) -> None:
        for module in self.patched:
            del module.forward  # back to the class's forward
        self.patched = []

    @staticmethod
    def _recording_then_stop(module: nn.Module):
        def record(x, *args, **kwargs):
            module.record(x)
            raise _PassDone
        return record

    @staticmethod
    def _replaying(outputs: list):
        calls = iter(outputs)
        return lambda *args, **kwargs: next(calls).clone()

    @staticmethod
    def _zeros(shapes: list):
        calls = iter(shapes)

        def zeros(*args, **kwargs):
            shape, dtype, device = next(calls)
            return torch.zeros(shape, dtype=dtype, device=device)
        return zeros

    @staticmethod
    def _keeping(module: nn.Module, outputs: list):
        forward = type(module).forward

        def keep(*args, **kwargs):
            out = forward(module, *args, **kwargs)
            with fresh_pages(KEPT_PAGES_FROM):  # kept across the pass: not between the reads' gaps
                outputs.append(out.clone())
            return out
        return keep


class _PassDone(Exception):
    """A calibration pass's step has recorded what it needs (:class:`_Replay`)."""


def _owner(hw: nn.Module, matrix) -> nn.Module:
    return next(m for _, m in analog_layers(hw) if m.matrix is matrix)


def _direct_inputs(model: nn.Module, hw: nn.Module, x: torch.Tensor, encoder, reset) -> dict | None:
    """For each crossbar layer (by name), the crossbar layers whose outputs reach its input
    with no crossbar layer between (through neurons, their state and digital operations);
    ``None`` where the network is not feed-forward: where a layer's input depends on the
    output of a layer that runs after it (or on its own earlier output).  Found over two
    steps of the ideal ``model`` on one sample: each layer's outputs are marked in the
    autograd graph (a leaf, so that following an input back stops at the layers it reads),
    and each layer's input is followed back to the marks it reaches.  Anything that cannot
    be followed (a model that does not run under autograd) counts as not feed-forward:
    every pass then runs in full."""
    names = [n for n, _ in analog_layers(hw)]
    modules = dict(model.named_modules())
    if any(n not in modules for n in names) or torch.is_inference_mode_enabled():
        return None
    rank: dict[str, int] = {}
    direct: dict[str, set] = {n: set() for n in names}
    flow = DataFlow()  # no stops: followed through spikes and across steps
    ok = [True]

    def before(name):
        def check(module, inputs):
            rank.setdefault(name, len(rank))
            reached = flow.reached(t for t in inputs if isinstance(t, torch.Tensor))
            direct[name] |= reached
            if any(rank.get(r, len(rank)) >= rank[name] for r in reached):
                ok[0] = False
        return check

    def after(name):
        def mark(module, inputs, out):
            leaf = flow.mark(name, out)
            if leaf is None:
                ok[0] = False
            return leaf
        return mark

    handles = [h for n in names for h in (modules[n].register_forward_pre_hook(before(n)),
                                         modules[n].register_forward_hook(after(n)))]
    was_training = model.training
    model.eval()
    step = Stepper(model, reset)
    try:
        with torch.enable_grad():
            step.reset()
            for t in range(2):
                step(encoder(x[:1], t))
    except Exception:  # noqa: BLE001 - not followable: run the passes in full
        return None
    finally:
        for h in handles:
            h.remove()
        step.reset()
        model.train(was_training)
    return direct if ok[0] and len(rank) == len(names) else None


def _stop_recording(matrices: list) -> None:
    """Every matrix back to plain reads of all its trials, recording nothing."""
    for m in matrices:
        m.recording, m.keep_recording = None, True
        m.select_trials()
