"""Surrogate-gradient BPTT training of the SNNs, with a cache keyed by the configuration."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from devices import validation as v
from studies.data import Dataset, check_dataset, dataset_tag, load_dataset
from studies.models import ARCHITECTURES, build
from xbar.neurons import reset_state


@dataclass(frozen=True)
class TrainConfig:
    """How a surrogate-gradient SNN is trained.  Changing any field retrains."""

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

    def key(self) -> str:
        return config_key(self)


def config_key(config) -> str:
    """A short hash of a configuration dataclass: the cache key of what it makes."""
    blob = json.dumps(asdict(config), sort_keys=True).encode()
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
    return saved if saved.get("config") == asdict(config) else None


def save_cached(path: Path, config, model: nn.Module, info: dict) -> None:
    """Save a model with its configuration: to a temporary name, then renamed, so that an
    interrupted save never leaves a file that reads as a finished model."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"config": asdict(config), "state_dict": model.state_dict(), "info": info}, tmp)
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
        seed: int, desc: str, progress: bool = True) -> nn.Module:
    """Adam with a one-cycle learning rate over ``epochs`` shuffled passes of the training
    split; ``loss_of(model, x, y)`` gives a batch's loss.  Returns the model in eval mode."""
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
            bar.update()
    bar.close()
    return model.eval()


def train(config: TrainConfig, data: Dataset | None = None, progress: bool = True) -> nn.Module:
    """Train from scratch (BPTT through ``timesteps`` steps, Adam, one-cycle learning rate)."""
    data = data or load_dataset(config.dataset)
    with torch.random.fork_rng():
        torch.manual_seed(config.seed)
        model = build(config.arch, data.image_shape, data.n_classes)

    def loss_of(m, x, y):
        return F.cross_entropy(run_snn(m, x, config.timesteps) / config.timesteps, y)

    model = fit(model, data, loss_of, epochs=config.epochs, batch_size=config.batch_size, lr=config.lr,
                seed=config.seed, desc=f"train {config.arch} on {config.dataset}", progress=progress)
    reset_state(model)
    return model


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
    info = {"config": asdict(config), "test_accuracy": acc, "path": str(path)}
    save_cached(path, config, model, info)
    return model, {**info, "cached": False}
