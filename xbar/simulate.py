"""The timestep-aware simulator: analog and ideal networks in lockstep.

At every timestep both networks get the same input; forward hooks take, for every
crossbar layer ``l`` (in the order the layers are registered):

``read_error``        error of one read: the analog layer's output against the ideal
                      output *of the same input*, RMS over the batch, relative to the
                      RMS of the ideal crossbar product (the output without the layer's
                      bias, which is added digitally and carries no error) — the
                      hardware's error, with no history in it.  NaN where that ideal
                      product is 0 (no input reached the layer): a relative error of
                      nothing is undefined.
``layer_error``       the analog layer's output against the ideal network's output of
                      the same layer, relative likewise to the ideal product without the
                      bias: read error plus everything that has accumulated upstream and
                      in earlier timesteps.  NaN likewise where that product is 0.
``membrane_error``    RMS divergence of the membrane potentials of the neurons fed by
                      layer ``l``, in units of their threshold; NaN where no neuron
                      follows or the neuron has no threshold (a leaky integrator).
``spike_mismatch``    fraction of those neurons whose spike differs between the networks.
``spike_rate``        mean spikes per neuron per timestep (analog; ``spike_rate_ideal``).
                      The three spike variables are NaN for a neuron whose output is not
                      binary (a leaky-integrator readout, graded spikes).
``neurons``           neurons fed by the layer, per sample (0 where no neuron follows).
``accuracy``          accuracy if the output were read after ``t`` steps (analog; also
                      ``accuracy_ideal``): argmax of the sum of the outputs of steps
                      ``1..t`` (``readout="sum"``, a spike count), of their maximum
                      (``"max"``, as norse reads leaky-integrator voltages) or of step
                      ``t``'s output (``"last"``).

The neurons fed by a layer are found on the first step, by data flow: the layer's output
is marked, and a neuron is fed by every layer whose marked output its input depends on
(followed back through the autograd graph of that one step, through pooling, batch norm,
additions and any other operation, and not past another neuron's spikes); a layer feeds
the first such neuron that runs.  So a residual block's second convolution feeds the
neuron after the addition, though the shortcut's own crossbar layer runs between them.
A crossbar layer inside a neuron (snntorch ``RLeaky``'s recurrent weights, the
convolution of ``SConv2dLSTM``) feeds that neuron.  Where the data flow cannot be
followed (a model that reads under ``torch.no_grad`` inside, or ``simulate`` called under
``torch.inference_mode``), the first neuron that runs after the layer and before the
next crossbar layer.
What counts as a neuron, for each SNN library, is in :mod:`xbar.neurons`; how each
library's network is driven one step per call, in :mod:`xbar.stepping`.

All error variables are pooled over every sample of ``data`` (ratios of sums).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import xarray as xr
from tqdm.auto import tqdm

from xbar import kernels
from xbar.checks import batches as checked_batches
from xbar.checks import check_count, check_step_output, model_dtype
from xbar.network import analog_layers
from xbar.calibrate import awaiting, calibrate
from xbar.neurons import neuron_reading, reset_state, threshold
from xbar.stepping import DataFlow, READOUTS, Stepper, check_steppable, readout_step
from xbar.memory import MEMORY_GB, check_memory, chunking, keep_freed_memory, read_bytes_per_sample, spans
from xbar.streams import READ_NOISE_GENERATOR
from xbar.tile.matrix import trial_chunks



@dataclass
class _Acc:
    """Running sums, shapes ``(K, T, L)`` unless noted."""

    k: int
    t: int
    n_layers: int
    sums: dict = field(default_factory=dict)

    def add(self, key: str, index, value) -> None:
        if key not in self.sums:
            self.sums[key] = np.zeros((self.k, self.t, self.n_layers))
        self.sums[key][index] += value


def _by_trial(x: torch.Tensor, k: int) -> torch.Tensor:
    """``x`` (trial-major samples on its first axis of more than one entry, after any
    leading axes of one: SpikingJelly's ``[1, N, ...]``) as ``(k, N/k, ...)``, a view
    whatever the memory layout (a convolution's output is channels-last)."""
    while x.dim() > 1 and x.shape[0] == 1:
        x = x[0]
    return x.unflatten(0, (k, -1)) if x.dim() and x.shape[0] % k == 0 else x.reshape(k, -1)


def _per_trial_sum(x: torch.Tensor, k: int) -> np.ndarray:
    """Sum of ``x`` over everything but the trial (in ``x``'s dtype, reduced in its memory
    order: a cast to float64 first would cost more than the rest of the metrics)."""
    x = _by_trial(x, k)
    dims = tuple(range(1, x.dim()))
    return (x.sum(dims) if x.is_floating_point() else x.sum(dims, dtype=torch.int64)).double().cpu().numpy()


def _per_trial_sq(a: torch.Tensor, b: torch.Tensor | None, k: int) -> np.ndarray:
    """Per-trial sum of ``(a - b)**2`` (``a**2`` without ``b``); ``b`` broadcasts over
    the trials of ``a`` when it has one trial's samples."""
    a = _by_trial(a, k)
    if b is None:
        return _per_trial_sum(a * a, k)
    b = _by_trial(b, k) if b.numel() == a.numel() else b.reshape(a.shape[1:]).expand_as(a)
    # mse_loss: the squared differences in one pass, where a - b then a square take two.
    return np.array([float(F.mse_loss(a[i], b[i], reduction="sum")) for i in range(k)])


def _is_within(name: str, outer: str) -> bool:
    return name.startswith(outer + ".")


def _match_neurons(order: list[str], neuron_names: set[str], layer_names: list[str],
                   fed_by: dict[str, set[str]]) -> dict:
    """For each crossbar layer, the neuron it feeds (see the module docstring): from the
    data flow of the first step (``fed_by``: for each neuron, the layers its input
    depends on), else from the order in which modules started running."""
    result = {}
    for name in layer_names:
        around = [n for n in neuron_names if _is_within(name, n)]
        fed = [n for n in order if n in neuron_names and name in fed_by.get(n, ())]
        if around or fed:
            result[name] = max(around, key=len) if around else fed[0]
            continue
        result[name] = None
        for other in order[order.index(name) + 1:]:
            if other in layer_names:
                break
            if other in neuron_names:
                result[name] = other
                break
    return result


def _discover(model: nn.Module, step: Stepper, x0: torch.Tensor, y0: torch.Tensor,
              layer_names: list[str]) -> dict:
    """Run one step of the ideal ``model`` with hooks on every module: which modules are
    neurons and in which order they run; the step's output is checked."""
    order: list[str] = []
    neuron_names: set[str] = set()
    flow = DataFlow()
    handles = []
    for name, m in model.named_modules():
        if not name:
            continue
        handles.append(m.register_forward_pre_hook(lambda mod, inp, name=name: order.append(name)))

        def post(mod, inp, out, name=name):
            if neuron_reading(mod, out) is not None:
                neuron_names.add(name)
                flow.neuron_ran(name, inp, out)
        handles.append(m.register_forward_hook(post))
        if name in layer_names:
            handles.append(m.register_forward_hook(lambda mod, inp, out, name=name: flow.mark(name, out)))
    step.reset()
    try:
        with torch.enable_grad():  # the step's autograd graph is its data flow
            out = step(x0)
    except (RuntimeError, TypeError, ValueError) as err:
        raise ValueError(f"simulate: the model failed on its first step, for an input of shape "
                         f"{tuple(x0.shape)} and dtype {x0.dtype}: {err}. Check that x has the "
                         "shape the model expects ([samples, ...] of one timestep)") from err
    finally:
        for h in handles:
            h.remove()
        step.reset()
    check_step_output(out, len(x0), y0, step.mode)
    never = [n for n in layer_names if n not in order]
    if never:
        raise ValueError(f"simulate: the model's forward never calls its layers {never}")
    return _match_neurons(order, neuron_names, layer_names, flow.fed_by)


class _RangeWatch:
    """Warns once per layer when a crossbar layer's inputs leave the DAC's range (an
    unsigned DAC refuses negative inputs itself: :class:`xbar.tile.ProgrammedMatrix`)."""

    def __init__(self, spec) -> None:
        self.spec = spec
        self.active = spec is not None and (spec.dac_bits is not None or spec.adc_bits is not None)
        self.warned: set[str] = set()

    def hook(self, name: str):
        def check(module, inputs):
            if name in self.warned:
                return
            x = inputs[0]
            hi_ok = self.spec.input_range
            lo_ok = -hi_ok if self.spec.dac_signed else 0.0
            lo, hi = (float(v) for v in torch.aminmax(x))
            # negatives on an unsigned DAC are not a range question: the read refuses them
            if (lo >= lo_ok or not self.spec.dac_signed) and hi <= hi_ok:
                return
            self.warned.add(name)
            share = float(((x < lo_ok) | (x > hi_ok)).double().mean())
            what = "clipped by the DAC" if self.spec.dac_bits is not None else "beyond the full scale the ADC range was set for"
            warnings.warn(f"simulate: layer {name!r}: {share:.1%} of its inputs lie outside the DAC "
                          f"range [{lo_ok:g}, {hi_ok:g}] (min {lo:.4g}, max {hi:.4g}); they are {what}. "
                          "Scale the inputs to the range, or set Spec(input_range=...)", stacklevel=4)
        return check


def _hooks(hw: nn.Module, ideal_modules: dict, names: list[str], neurons: dict, captured: dict) -> list:
    """Forward hooks that put, for every crossbar layer and the neuron it feeds, what one
    step computed into ``captured`` (and watch the DAC range); returns their handles."""

    def keep_output(tag):
        def hook(module, inputs, output):
            captured[tag] = (output, getattr(module, "last_ideal", None), getattr(module, "last_bias", None))
        return hook

    def keep_neuron(tag):
        def hook(module, inputs, output):
            captured[tag] = neuron_reading(module, output)
        return hook

    watch = _RangeWatch(getattr(hw, "xbar_spec", None))
    handles = []
    for name in names:
        handles.append(hw.get_submodule(name).register_forward_hook(keep_output(("a", name))))
        handles.append(ideal_modules[name].register_forward_hook(keep_output(("i", name))))
        if watch.active:
            handles.append(hw.get_submodule(name).register_forward_pre_hook(watch.hook(name)))
        nn_name = neurons[name]
        if nn_name is not None:
            handles.append(hw.get_submodule(nn_name).register_forward_hook(keep_neuron(("a", nn_name))))
            handles.append(ideal_modules[nn_name].register_forward_hook(keep_neuron(("i", nn_name))))
    return handles


def simulate(hw: nn.Module, model: nn.Module, data, timesteps: int, *,
             encoder: Callable[[torch.Tensor, int], torch.Tensor] | None = None,
             reset: Callable[[nn.Module], None] = reset_state, readout: str = "sum",
             progress: bool = True, attrs: dict | None = None,
             trials_per_chunk: int | None = None, calibration_data=None,
             memory_gb: float = MEMORY_GB) -> xr.Dataset:
    """Run the analog network ``hw`` (from :func:`xbar.convert`) and the ideal ``model``
    in lockstep for ``timesteps`` steps on every batch of ``data``.

    data
        an ``(x, y)`` pair (tensors or numpy arrays; ``x`` float ``[samples, ...]``, ``y``
        integer class indices ``[samples]``), or an iterable of such batches (a
        DataLoader).  Checked before any work; see :mod:`xbar.checks`.  The batches are
        read once and kept (every chunk of trials runs over all of them, on the same
        samples): a test set that does not fit in memory is run in parts.
    encoder
        ``encoder(x, t)`` gives the input of step ``t`` (0-based); default: ``x`` at every
        step (direct encoding).  A stochastic encoder must draw from its own seeded
        generator.
    reset
        clears the neuron state of a network between batches (default:
        :func:`xbar.neurons.reset_state`).
    readout
        how the outputs of steps ``1..t`` give the prediction at step ``t``: ``"sum"``
        (default), ``"max"`` or ``"last"`` (see the module docstring).

    calibration_data
        inputs ``[samples, ...]``, or an ``(inputs, labels)`` pair (the labels only to
        check that the classes are covered), to calibrate the crossbars on first
        (:func:`xbar.calibrate`, with this ``encoder``, ``reset``, ``readout`` and
        ``timesteps``): a few dozen samples of the training data, never of ``data``.
        Crossbars with ``Spec(calibration="data")`` must be calibrated, by this or by
        :func:`xbar.calibrate` before; ``simulate`` never fits anything on the samples it
        evaluates, and refuses to run uncalibrated crossbars.
    trials_per_chunk
        Monte Carlo trials run together (default: as many as keep the largest read within
        :data:`xbar.memory.READ_SHARE` of ``memory_gb``, :func:`xbar.memory.chunking`, so that memory does not grow
        with the trials).
        Chunks run one after the other over all of ``data``, the ideal network in
        lockstep with each; a trial's results do not depend on the chunks (its read noise
        comes from its own streams, :mod:`xbar.streams`).

    memory_gb
        the memory (GiB) the reads may take (default :data:`xbar.memory.MEMORY_GB`): the
        trials run together and, where one trial of a whole batch would not fit, the
        batch is read in parts of as many samples as fit.  A batch read in parts draws
        its read noise in another order than whole, so its results differ in their digits
        (not in distribution) from a run with room for it.

    Returns an ``xarray.Dataset`` with dims ``trial``, ``timestep`` (1..T) and ``layer``
    and the variables listed in this module's docstring; ``attrs`` holds the spec.
    """
    check_count("simulate", "timesteps", timesteps)
    keep_freed_memory()
    if readout not in READOUTS:
        raise ValueError(f"simulate: readout = {readout!r} is not allowed: must be one of {READOUTS}")
    layers = analog_layers(hw)
    if not layers:
        raise ValueError("simulate: hw has no crossbar layer: pass the network returned by xbar.convert")
    names = [n for n, _ in layers]
    ideal_modules = dict(model.named_modules())
    missing = [n for n in names if n not in ideal_modules]
    if missing:
        raise ValueError(f"simulate: model has no layers named {missing}: hw must be converted "
                         "from this model")
    check_steppable(model, "simulate")
    dtype = model_dtype(model, "simulate")
    hw_dtype = model_dtype(hw, "simulate (hw)")
    if hw_dtype != dtype:
        raise ValueError(f"simulate: hw is {hw_dtype} but model is {dtype}: convert the model "
                         "after changing its dtype")
    k = getattr(hw, "xbar_trials", 1)
    if calibration_data is None and awaiting(hw):
        raise ValueError("simulate: the crossbars of hw wait for their calibration from data "
                         "(Spec.calibration='data'), and simulate fits nothing on the samples it "
                         "evaluates: calibrate on a few training samples first, "
                         "xbar.calibrate(hw, model, x_train[:64], timesteps), or pass "
                         "calibration_data=x_train[:64]; Spec(calibration='vectors') calibrates at "
                         "programming, Spec(calibration=None) is the raw chip")
    if calibration_data is not None and not awaiting(hw):
        if any(m.matrix.spec.calibration != "data" or m.matrix.calibrated for _, m in layers):
            raise ValueError("simulate: calibration_data given, but no crossbar layer of hw waits for a "
                             "calibration from data (already calibrated, or Spec.calibration is not 'data')")
        calibration_data = None  # an ideal spec: nothing to correct
    encoder = encoder or (lambda x, t: x)
    dev = next(iter(hw.buffers())).device
    ideal_step, analog_step = Stepper(model, reset), Stepper(hw, reset)

    was_training = model.training
    model.eval()
    hw.eval()
    captured: dict = {}
    handles: list = []
    try:  # a refusal anywhere below leaves the model as it was (training mode, no hooks)
        batches = list(checked_batches(data, dtype))  # every batch checked before any work
        if not batches:
            raise ValueError("simulate: data yielded no samples")
        first = batches[0]
        x0 = first[0].to(dev)
        if trials_per_chunk is not None:
            check_count("simulate", "trials_per_chunk", trials_per_chunk)
        check_memory("simulate", memory_gb)
        if calibration_data is not None:
            cal_x, cal_y = (calibration_data if isinstance(calibration_data, (tuple, list))
                            else (calibration_data, None))
            calibrate(hw, model, cal_x, timesteps, encoder=encoder, reset=reset, readout=readout, labels=cal_y)
        neurons = _discover(model, ideal_step, encoder(x0, 0), first[1].to(dev), names)
        biggest = max(len(x) for x, _ in batches)
        per_sample = read_bytes_per_sample(hw, model, encoder(x0, 0), ideal_step)
        per_chunk, part = chunking(per_sample, biggest, k, memory_gb)
        chunks = trial_chunks(k, biggest, trials_per_chunk or per_chunk)
        if trials_per_chunk is None and part < biggest:  # one trial of a whole batch would not fit
            batches = [(x[s], y[s]) for x, y in batches for s in spans(len(x), part)]
        thresholds = {n: threshold(ideal_modules[n]) for n in neurons.values() if n is not None}
        handles += _hooks(hw, ideal_modules, names, neurons, captured)
        for _, m in layers:
            m.record_ideal = True
            m.matrix.reset_read_noise()

        acc = _Acc(k, timesteps, len(names))
        flags = {"binary": np.ones(len(names), bool), "threshold": np.ones(len(names), bool)}
        correct = np.zeros((k, timesteps))
        correct_ideal = np.zeros(timesteps)
        n_samples = sum(len(x) for x, _ in batches)
        bar = tqdm(total=k, desc="simulate", unit="trial", disable=not progress, leave=False, mininterval=1.0,
                   bar_format="{l_bar}{bar}| {n:.1f}/{total} trials [{elapsed}<{remaining}]")
        with torch.no_grad(), bar:
            for ks in chunks:
                start, kc = ks.start, ks.stop - ks.start
                for _, m in layers:
                    m.matrix.select_trials(ks.start, ks.stop)
                for bi, (x, y) in enumerate(batches):
                    x, y = x.to(dev), y.to(dev)
                    b = x.shape[0]
                    ideal_step.reset()
                    analog_step.reset()
                    for _, m in layers:
                        m.matrix.new_inference()
                    read_i = read_a = None
                    for t in range(timesteps):
                        xt = encoder(x, t)
                        captured.clear()
                        out_i = ideal_step(xt)
                        out_a = analog_step(xt.repeat(kc, *([1] * (xt.dim() - 1))))
                        if start == 0:
                            if bi == 0 and t == 0:
                                _check_all_called(captured, names)
                            check_step_output(out_i, b, y, ideal_step.mode)
                        _step_metrics(acc, flags, t, ks, names, neurons, captured, thresholds)
                        read_i = readout_step(read_i, out_i, readout)
                        read_a = readout_step(read_a, out_a, readout)
                        if start == 0:  # the ideal network is the same in every chunk
                            correct_ideal[t] += float((read_i.argmax(-1) == y).sum())
                        pred_a = read_a.reshape(kc, b, -1).argmax(-1)
                        correct[ks, t] += (pred_a == y.unsqueeze(0)).sum(1).double().cpu().numpy()
                    bar.update(kc * b / n_samples)
    finally:
        for h in handles:
            h.remove()
        for _, m in layers:
            m.record_ideal = False
            m.last_ideal = m.last_bias = None
            m.matrix.select_trials()
        model.train(was_training)
    how = {"sum": "argmax of the summed outputs of steps 1..t",
           "max": "argmax of the maximum output over steps 1..t",
           "last": "argmax of the output of step t"}[readout]
    return _dataset(acc, flags, correct, correct_ideal, n_samples, names, neurons, hw, timesteps,
                    {"readout": f"{readout}: {how}", "read_noise_generator": READ_NOISE_GENERATOR, **(attrs or {})})


def _check_all_called(captured: dict, names: list[str]) -> None:
    skipped = [n for n in names if ("a", n) not in captured]
    if skipped:
        raise ValueError(f"simulate: the converted network never ran its crossbar layers {skipped}: "
                         "its forward calls modules it holds elsewhere than in its attributes "
                         "(a nirtorch GraphExecutor, as norse's and snntorch's from_nir return, runs "
                         "its graph's own copies), so the result would be the ideal network's. "
                         "Load a NIR graph with xbar.from_nir instead")


def _step_metrics(acc: _Acc, flags: dict, t: int, ks: slice, names, neurons, captured, thresholds) -> None:
    """Add one step's metrics of trials ``ks`` (the chunk that ran) into ``acc``."""
    k = ks.stop - ks.start
    at = (ks, t)
    for li, name in enumerate(names):
        ya, ref, bias = captured[("a", name)]
        yi = captured[("i", name)][0]
        read_num, layer_num, read_den, layer_den = _output_sums(ya, ref, yi, bias, k)
        for key, value in (("read_num", read_num), ("layer_num", layer_num), ("read_den", read_den),
                           ("layer_den", layer_den)):
            acc.add(key, at + (li,), value)
        nn_name = neurons[name]
        if nn_name is None or captured.get(("i", nn_name)) is None or captured.get(("a", nn_name)) is None:
            continue
        s_i, v_i = captured[("i", nn_name)]
        s_a, v_a = captured[("a", nn_name)]
        spikes, mismatch, spikes_ideal, not_binary = _spike_sums(s_a, s_i, k)
        acc.add("count", at + (li,), s_i.numel())
        if not_binary:
            flags["binary"][li] = False
        acc.add("spikes", at + (li,), spikes)
        acc.add("spikes_ideal", at + (li,), spikes_ideal)
        acc.add("mismatch", at + (li,), mismatch)
        thr = thresholds[nn_name]
        if thr is None:
            flags["threshold"][li] = False
            continue
        acc.add("mem_count", at + (li,), v_i.numel())  # a neuron may pool its spikes: its own count
        if isinstance(thr, float):  # divided once, on the sums
            acc.add("mem_sq", at + (li,), _squared_differences(v_a, v_i, k) / thr**2)
        else:  # per neuron
            v_a = _by_trial(v_a, k)
            dv = (v_a - v_i.reshape(v_a.shape[1:])) / thr
            acc.add("mem_sq", at + (li,), _per_trial_sq(dv, None, k))


def _rows(k: int, trials: tuple, samples: tuple = (), maps: tuple = ()) -> tuple | None:
    """For the native sums: each of ``trials`` (trial-major samples, shaped alike) as a
    ``(k, N, M)`` array, each of ``samples`` (one trial's ``N`` samples) as ``(N, M)`` and
    each of ``maps`` (one sample's map, ``[1, ...]``: a bias map; or ``None``) as ``(M,)``,
    every sample's entries in the first tensor's memory order (so that it, a
    convolution's channels-last output, is not copied); ``None`` where the native code
    does not apply (not on the CPU, not one float dtype, no sample axis)."""
    a = trials[0]
    tensors = trials + samples + tuple(x for x in maps if x is not None)
    if any(x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64) or x.dtype != a.dtype
           or x.requires_grad for x in tensors):
        return None
    views = [_by_trial(x, k) for x in trials]
    a = views[0]
    if a.dim() < 3 or a.shape[1] == 0 or any(v.shape != a.shape for v in views):
        return None
    if any(x.numel() != a[0].numel() for x in samples) or any(
            x is not None and x.numel() != a[0, 0].numel() for x in maps):
        return None
    inner = sorted(range(2, a.dim()), key=lambda d: -a.stride(d))  # a sample's axes, outermost first
    n = a.shape[1]
    out = [v.permute(0, 1, *inner).contiguous().view(k, n, -1).numpy() for v in views]
    out += [x.reshape(a.shape[1:]).permute(0, *(d - 1 for d in inner)).contiguous().view(n, -1).numpy()
            for x in samples]
    out += [None if x is None else x.reshape(a.shape[2:]).permute(*(d - 2 for d in inner)).contiguous().view(-1).numpy()
            for x in maps]
    return tuple(out)


def _output_sums(ya, ref, yi, bias, k: int) -> tuple:
    """Per trial, summed over a step's samples: ``(ya - ref)**2``, ``(ya - yi)**2`` and
    ``(ref - bias)**2``, and ``(yi - bias)**2`` (the same for every trial; ``bias`` 0
    where ``None``): the numerators and denominators of the read and layer errors.  On
    the CPU one native pass in float64 (:func:`xbar.kernels.output_sums`), else torch's."""
    rows = _rows(k, (ya, ref), (yi,), (bias,))
    if rows is not None:
        a, r, i, b = rows
        s = _per_trial_rows(kernels.output_sums, (a, r, i, np.zeros(a.shape[2], a.dtype) if b is None else b), 4)
        return s[:, 0], s[:, 1], s[:, 2], np.full(k, s[0, 3])
    read_num, layer_num = _per_trial_sq(ya, ref, k), _per_trial_sq(ya, yi, k)
    if bias is not None:  # errors relative to the crossbar's product, not the digital bias
        read_den = _per_trial_sq(ref, bias.expand_as(ref), k)
        yi = yi - bias
    else:
        read_den = _per_trial_sq(ref, None, k)
    return read_num, layer_num, read_den, float(yi.double().square().sum()) * np.ones(k)


def _spike_sums(s_a, s_i, k: int) -> tuple:
    """``(analog spikes per trial, differing spikes per trial, ideal spikes, ideal outputs
    neither 0 nor 1)``, summed over a step's samples and neurons; on the CPU one native
    pass (:func:`xbar.kernels.spike_sums`)."""
    rows = _rows(k, (s_a,), (s_i,))
    if rows is not None:
        s = _per_trial_rows(kernels.spike_sums, rows, 4)
        return s[:, 0], s[:, 1], float(s[0, 2]), bool(s[0, 3] > 0)
    s_a = _by_trial(s_a, k)
    s_i = s_i.reshape(s_a.shape[1:])
    not_binary = not bool(((s_i == 0) | (s_i == 1)).all())
    return (_per_trial_sum(s_a, k), _per_trial_sum(s_a != s_i.unsqueeze(0), k), float(s_i.sum()), not_binary)


def _squared_differences(a, b, k: int) -> np.ndarray:
    """Per trial, the sum of ``(a - b)**2`` (``b`` one trial's samples, broadcast over the
    trials); on the CPU one native pass (:func:`xbar.kernels.squared_differences`)."""
    rows = _rows(k, (a,), (b,))
    if rows is None:
        return _per_trial_sq(a, b, k)
    return _per_trial_rows(kernels.squared_differences, rows, None)


def _per_trial_rows(kernel, arrays: tuple, columns: int | None) -> np.ndarray:
    """``kernel(*arrays, out)``'s sums per sample row (``arrays[0]`` ``(K, N, M)``; ``out``
    ``(K * N, columns)``, or ``(K * N,)`` for ``None``) summed over each trial's rows:
    ``(K, columns)`` or ``(K,)``."""
    k_count, n_count = arrays[0].shape[:2]
    out = np.empty((k_count * n_count,) if columns is None else (k_count * n_count, columns))
    kernels.follow_torch_threads()
    kernel(*arrays, out)
    return out.reshape(k_count, n_count, *out.shape[1:]).sum(1)


def _ratio(num, den):
    """``num / den``; NaN where ``den`` is 0: an error relative to an ideal product of 0
    is undefined (neither perfect nor infinite)."""
    return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def _dataset(acc, flags, correct, correct_ideal, n, names, neurons, hw, timesteps, attrs) -> xr.Dataset:
    s = acc.sums
    has_neuron = np.array([neurons[nm] is not None for nm in names])
    count = s.get("count", np.zeros((acc.k, timesteps, len(names))))
    safe = np.where(count > 0, count, 1)
    mem_count = s.get("mem_count", np.zeros_like(count))
    safe_mem = np.where(mem_count > 0, mem_count, 1)

    def neuron_var(values, flag=None):
        ok = has_neuron if flag is None else has_neuron & flags[flag]
        return np.where(ok[None, None, :] & (count > 0), values, np.nan)

    dims = ("trial", "timestep", "layer")
    zeros = np.zeros_like(count)
    data_vars = {
        "read_error": (dims, np.sqrt(_ratio(s["read_num"], s["read_den"])),
                       {"long_name": "error of one read (relative RMS, same input)", "units": "1"}),
        "layer_error": (dims, np.sqrt(_ratio(s["layer_num"], s["layer_den"])),
                        {"long_name": "layer output error against the ideal network (relative RMS)",
                         "units": "1"}),
        "membrane_error": (dims, neuron_var(np.sqrt(s.get("mem_sq", zeros) / safe_mem), "threshold"),
                           {"long_name": "RMS membrane-potential divergence", "units": "threshold"}),
        "spike_mismatch": (dims, neuron_var(s.get("mismatch", zeros) / safe, "binary"),
                           {"long_name": "fraction of neurons whose spike differs", "units": "1"}),
        "spike_rate": (dims, neuron_var(s.get("spikes", zeros) / safe, "binary"),
                       {"long_name": "spikes per neuron per timestep (analog)", "units": "1"}),
        "spike_rate_ideal": (("timestep", "layer"), neuron_var(s.get("spikes_ideal", zeros) / safe, "binary")[0],
                             {"long_name": "spikes per neuron per timestep (ideal)", "units": "1"}),
        "neurons": (("layer",), count[0, 0] / n,
                    {"long_name": "neurons fed by the layer, per sample", "units": "1"}),
        "accuracy": (("trial", "timestep"), correct / n,
                     {"long_name": "accuracy reading the output after t steps (analog)", "units": "1"}),
        "accuracy_ideal": (("timestep",), correct_ideal / n,
                           {"long_name": "accuracy reading the output after t steps (ideal)",
                            "units": "1"}),
    }
    first = getattr(hw, "xbar_first_trial", 0)  # a part of a run (convert's only): its trials' numbers
    coords = {"trial": np.arange(first, first + acc.k), "timestep": np.arange(1, timesteps + 1), "layer": names,
              "neuron": ("layer", [neurons[nm] or "" for nm in names])}
    ds = xr.Dataset(data_vars, coords=coords)
    spec = getattr(hw, "xbar_spec", None)
    ds.attrs.update({"n_samples": int(n), "timesteps": int(timesteps)})
    if spec is not None:
        ds.attrs.update(spec.to_attrs())
    if attrs:
        ds.attrs.update(attrs)
    return ds
