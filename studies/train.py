"""Surrogate-gradient BPTT training of the SNNs, with a cache keyed by the configuration."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

import xbar
from devices import validation as v
from studies.data import Dataset, check_dataset, dataset_tag, load_dataset
from studies.models import ARCHITECTURES, LIF, build
from xbar.aware import INGREDIENTS, is_ingredient_list
from xbar.network import crossbar_layers
from xbar.neurons import reset_state


@dataclass(frozen=True)
class TrainingOptions:
    """What training sees beyond its recipe (shared by :class:`TrainConfig` and the
    fine-tuning of converted networks, ``studies.ann_to_snn.FineTune``): the crossbars of
    ``hardware`` (an :class:`xbar.Spec`) in the forward pass with the ingredients
    ``aware`` switches on (``None``: standard training; :mod:`xbar.aware`), and two
    robustness options, each usable with or without it:

    ``margin``, ``margin_width``
        adds ``margin * mean(relu(margin_width - |u|))`` to the loss, ``u = (mem -
        threshold) / threshold`` the membrane potential of every LIF neuron at every step
        before its spike: potentials are pushed out of the band of ``margin_width``
        thresholds around the threshold, where a small read error flips a spike.  Datta,
        Liu and Beerel (arXiv:2212.10170, 2022) shift membrane potentials away from the
        threshold with a Hoyer regulariser for the same reason (noise robustness of
        one-timestep SNNs); this is a direct hinge on that band.
    ``weight_clip``
        after every optimiser step, each crossbar layer's weights are clipped to
        ``weight_clip`` standard deviations of that layer's weights (IBM aihwkit's
        ``WeightClipType.LAYER_GAUSSIAN``, default ``sigma = 2.5``, used in the
        hardware-aware training of Rasch et al., Nature Communications 14, 5282, 2023): a
        few outlying weights no longer set the layer's conductance scale, so the others
        use more of the window.
    """

    hardware: xbar.Spec | None = None
    aware: xbar.Aware = field(default_factory=xbar.Aware)
    margin: float = 0.0
    margin_width: float = 0.1
    weight_clip: float | None = None

    def check_options(self, owner: str) -> None:
        if self.hardware is not None and not isinstance(self.hardware, xbar.Spec):
            v.fail(owner, "hardware", self.hardware, "must be an xbar.Spec (the crossbars to train on), or None")
        if not isinstance(self.aware, xbar.Aware):
            v.fail(owner, "aware", self.aware, "must be an xbar.Aware")
        v.non_negative(owner, "margin", self.margin)
        v.positive(owner, "margin_width", self.margin_width)
        if self.weight_clip is not None:
            v.positive(owner, "weight_clip", self.weight_clip)


@dataclass(frozen=True)
class TrainConfig(TrainingOptions):
    """How a surrogate-gradient SNN is trained (and, from :class:`TrainingOptions`, on
    which crossbars and with which robustness options).  Changing any field retrains."""

    dataset: str = "mnist5k"
    arch: str = "conv"
    timesteps: int = 6
    epochs: int = 15
    batch_size: int = 64
    lr: float = 3e-3
    seed: int = 0

    def __post_init__(self) -> None:
        o = "TrainConfig"
        check_dataset(o, self.dataset)
        v.one_of(o, "arch", self.arch, ARCHITECTURES)
        v.int_at_least(o, "timesteps", self.timesteps, 1)
        v.int_at_least(o, "epochs", self.epochs, 1)
        v.int_at_least(o, "batch_size", self.batch_size, 1)
        v.positive(o, "lr", self.lr)
        v.int_at_least(o, "seed", self.seed, 0)
        self.check_options(o)

    def key(self) -> str:
        return config_key(self)


def check_training_options(owner: str, hardware_aware, aware, margin, weight_clip) -> None:
    """A study's ``hardware_aware`` (a bool), ``aware`` (the ingredients switched on,
    names from :data:`xbar.aware.INGREDIENTS`), ``margin`` and ``weight_clip``."""
    v.non_negative(owner, "margin", margin)
    if weight_clip is not None:
        v.positive(owner, "weight_clip", weight_clip)
    if not isinstance(hardware_aware, bool):
        v.fail(owner, "hardware_aware", hardware_aware, "must be True or False")
    if not is_ingredient_list(aware):
        v.fail(owner, "aware", aware, f"must list ingredients, each once, among {list(INGREDIENTS)}")


# Fields added after models were first cached: left out of the cache key (and of the saved
# configuration) while at their defaults, so that a standard model keeps its cached file.
_LATER_FIELDS = {"hardware": None, "aware": xbar.Aware(), "margin": 0.0, "margin_width": 0.1,
                 "weight_clip": None}


def config_dict(config) -> dict:
    """The configuration as saved and hashed: ``asdict``, without the fields added later
    (to a :class:`TrainConfig`, or a conversion's ``fine_tune``) that are at their defaults."""
    out = asdict(config)
    later = _LATER_FIELDS if isinstance(config, TrainConfig) else {"fine_tune": None}
    for name, default in later.items():
        if name in out and getattr(config, name) == default:
            out.pop(name)
    return out


def config_key(config) -> str:
    """A short hash of a configuration dataclass: the cache key of what it makes.  A model
    trained hardware-aware (or a converted one fine-tuned so) also hashes the version of
    the training forward pass (:data:`xbar.aware.FORWARD_VERSION`), so that a model
    trained by an earlier one is trained again."""
    keyed = config_dict(config)
    options = config if isinstance(config, TrainConfig) else getattr(config, "fine_tune", None)
    if options is not None and options.hardware is not None:
        keyed["aware_forward"] = xbar.aware.FORWARD_VERSION
    blob = json.dumps(keyed, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def cache_dir() -> Path:
    """``$XBAR_CACHE``, else ``~/.cache/xbar``."""
    return Path(os.environ.get("XBAR_CACHE", Path.home() / ".cache" / "xbar"))


def load_cached(path: Path, config) -> dict | None:
    """The saved ``{"config", "state_dict", "info"}`` at ``path`` if it was made with exactly
    ``config`` (a dataclass), else None."""
    if not path.is_file():
        return None
    saved = torch.load(path, map_location="cpu", weights_only=False)
    return saved if saved.get("config") == config_dict(config) else None


def save_cached(path: Path, config, model: nn.Module, info: dict) -> None:
    """Save a model with its configuration: to a temporary name, then renamed, so that an
    interrupted save never leaves a file that reads as a finished model."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"config": config_dict(config), "state_dict": model.state_dict(), "info": info}, tmp)
    tmp.replace(path)


def run_snn(model: nn.Module, x: torch.Tensor, timesteps: int) -> torch.Tensor:
    """Summed outputs of ``timesteps`` steps on a static input (state reset first)."""
    reset_state(model)
    out = 0.0
    for _ in range(timesteps):
        out = out + model(x)
    return out


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, timesteps: int,
             batch_size: int = 500) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(x), batch_size):
        correct += int((run_snn(model, x[i : i + batch_size], timesteps).argmax(-1)
                        == y[i : i + batch_size]).sum())
    return correct / len(x)


def fit(model: nn.Module, data: Dataset, loss_of, *, epochs: int, batch_size: int, lr: float,
        seed: int, desc: str, progress: bool = True, after_step=None) -> nn.Module:
    """Adam with a one-cycle learning rate over ``epochs`` shuffled passes of the training
    split; ``loss_of(model, x, y)`` gives a batch's loss; ``after_step(model)``, if given,
    runs after every optimiser step.  Returns the model in eval mode."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps = epochs * -(-len(data.x_train) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    bar = tqdm(total=steps, desc=desc, unit="batch", disable=not progress, leave=False, mininterval=1.0)
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(data.x_train), generator=gen)
        for i in range(0, len(perm), batch_size):
            idx = perm[i : i + batch_size]
            loss = loss_of(model, data.x_train[idx], data.y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            if after_step is not None:
                after_step(model)
            bar.update()
    bar.close()
    return model.eval()


def train(config: TrainConfig, data: Dataset | None = None, progress: bool = True) -> nn.Module:
    """Train from scratch (BPTT through ``timesteps`` steps, Adam, one-cycle learning
    rate), on the crossbars of ``config.hardware`` if set (hardware-aware)."""
    data = data or load_dataset(config.dataset)
    with torch.random.fork_rng():
        torch.manual_seed(config.seed)
        model = build(config.arch, data.image_shape, data.n_classes)
    kind = "hardware-aware " if config.hardware is not None else ""
    return train_snn(model, data, config, config.timesteps, config.epochs,
                     desc=f"train {kind}{config.arch} on {config.dataset}", progress=progress)


def train_snn(model: nn.Module, data: Dataset, config, timesteps: int, epochs: int, *, desc: str,
              progress: bool = True) -> nn.Module:
    """BPTT of ``model`` through ``timesteps`` steps for ``epochs`` epochs with the options
    of ``config`` (:class:`TrainingOptions` with ``batch_size``, ``lr`` and ``seed``):
    training from scratch, or fine-tuning a converted network."""
    hw = None if config.hardware is None else xbar.HardwareAware(model, config.hardware, config.aware,
                                                                seed=config.seed)
    neurons = [m for m in model.modules() if isinstance(m, LIF)]

    def loss_of(m, x, y):
        if hw is not None:
            hw.new_batch()
        for n in neurons:
            n.record = [] if config.margin > 0 else None
        loss = F.cross_entropy(run_snn(m, x, timesteps) / timesteps, y)
        if config.margin > 0:
            loss = loss + config.margin * membrane_margin(neurons, config.margin_width)
        return loss

    after = None if config.weight_clip is None else (lambda m: clip_weights(m, config.weight_clip))
    try:
        if hw is not None:
            hw.attach()
        model = fit(model, data, loss_of, epochs=epochs, batch_size=config.batch_size, lr=config.lr,
                    seed=config.seed, desc=desc, progress=progress, after_step=after)
    finally:
        if hw is not None:
            hw.detach()
        for n in neurons:
            n.record = None
    reset_state(model)
    return model


def membrane_margin(neurons: list, width: float) -> torch.Tensor:
    """Mean over every neuron and step recorded of ``relu(width - |u|)``, ``u`` the
    potential before the spike in thresholds from the threshold (see :class:`TrainConfig`)."""
    terms = [F.relu(width - u.abs()).mean() for n in neurons for u in n.record]
    return torch.stack(terms).mean() if terms else torch.zeros(())


@torch.no_grad()
def clip_weights(model: nn.Module, sigmas: float) -> None:
    """Clip each crossbar layer's weights to ``sigmas`` standard deviations of its weights
    (aihwkit's layer-Gaussian clipping)."""
    for _, m in crossbar_layers(model):
        bound = sigmas * float(m.weight.std())
        m.weight.clamp_(-bound, bound)


def load_or_train(config: TrainConfig, progress: bool = True,
                  data: Dataset | None = None) -> tuple[nn.Module, dict]:
    """The trained model for ``config``: from the cache if it holds one for exactly this
    configuration, else trained and saved there.  Returns ``(model, info)`` where ``info``
    has the configuration, the cache path and the ideal test accuracy.  ``data``: the
    dataset of ``config``, if the caller has it loaded already."""
    path = cache_dir() / f"{config.arch}-{dataset_tag(config.dataset)}-{config.key()}.pt"
    data = data or load_dataset(config.dataset)
    with torch.random.fork_rng():
        torch.manual_seed(config.seed)
        model = build(config.arch, data.image_shape, data.n_classes)
    saved = load_cached(path, config)
    if saved is not None:
        model.load_state_dict(saved["state_dict"])
        return model.eval(), {**saved["info"], "cached": True}
    model = train(config, data, progress)
    acc = evaluate(model, data.x_test, data.y_test, config.timesteps)
    info = {"config": config_dict(config), "test_accuracy": acc, "path": str(path)}
    save_cached(path, config, model, info)
    return model, {**info, "cached": False}


def load_weights(arch: str, path: Path | str, data: Dataset, timesteps: int,
                 converted: bool = False) -> tuple[nn.Module, dict]:
    """The architecture ``arch`` for ``data``'s images with the trained weights in the file
    ``path`` (a ``state_dict``, or a checkpoint holding one under ``"state_dict"``, saved by
    ``torch.save``), nothing trained here.  ``converted``: the file holds a ReLU ANN of
    :func:`studies.ann_to_snn.build_ann`'s layout, converted here to an IF SNN
    (:func:`studies.ann_to_snn.convert_trained`: its activation scales from 1,000 training
    images, the classes in turn); else a surrogate SNN of :func:`studies.models.build`'s.
    Refuses a file that does not fit the layout with the keys it lacks and those it has
    over; ``info`` holds the file, its SHA-256 and the model's ideal test accuracy after
    ``timesteps`` steps."""
    from studies.ann_to_snn import build_ann, convert_trained

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"weights = {str(path)!r}: no such file (a state_dict saved with torch.save)")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is refused the same way
        raise ValueError(f"weights = {str(path)!r} is not a torch state_dict file: {err}") from err
    state = saved.get("state_dict", saved) if isinstance(saved, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"weights = {str(path)!r} holds a {type(saved).__name__}, not a state_dict")
    builder, where = (build_ann, "studies.ann_to_snn.build_ann") if converted else (build, "studies.models.build")
    kind = f"{arch} ANN" if converted else f"{arch} SNN"
    model = builder(arch, data.image_shape, data.n_classes)
    ours, theirs = set(model.state_dict()), set(state)
    if ours != theirs:
        missing, extra = sorted(ours - theirs), sorted(theirs - ours)
        raise ValueError(f"weights = {str(path)!r} does not fit the {kind} layout for {data.image_shape} images, "
                         f"{data.n_classes} classes: it lacks {missing[:6]}{' ...' if len(missing) > 6 else ''} "
                         f"and has over {extra[:6]}{' ...' if len(extra) > 6 else ''}; "
                         f"the layout's keys: {where}({arch!r}, shape, classes).state_dict()")
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"weights = {str(path)!r} does not fit the {kind} layout: {err}") from err
    model.eval()
    if converted:
        model = convert_trained(model, data)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    info = {"config": {"arch": arch, "weights": str(path), "sha256": digest, "converted": converted},
            "test_accuracy": evaluate(model, data.x_test, data.y_test, timesteps), "path": str(path)}
    return model, info
