"""Shared by the tests of third-party SNN libraries: the digits data, a few seconds of
backprop through time, and the accuracy at every step of an evaluation loop."""

import numpy as np
import torch
import torch.nn as nn
from sklearn.datasets import load_digits

N_TRAIN = 1500  # the rest of scikit-learn's 1,797 digits is the test split


def digits() -> tuple[torch.Tensor, torch.Tensor]:
    d = load_digits()
    return torch.tensor(d.data / 16.0, dtype=torch.float32), torch.tensor(d.target)


def train(net: nn.Module, summed_output, x, y, epochs: int = 3, lr: float = 3e-3) -> nn.Module:
    """Backprop through time, the network driven by its library's own loop
    (``summed_output(net, x_batch)`` gives the readout to classify)."""
    torch.manual_seed(0)
    opt = torch.optim.Adam(net.parameters(), lr)
    for _ in range(epochs):
        for i in range(0, N_TRAIN, 100):
            loss = nn.functional.cross_entropy(summed_output(net, x[i:i + 100]), y[i:i + 100])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.eval()


def accuracy_per_step(running, y) -> np.ndarray:
    """Accuracy at every step from the running readouts ``[T, N, classes]``."""
    return np.array([float((r.argmax(1) == y).double().mean()) for r in running])
