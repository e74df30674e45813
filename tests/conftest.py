import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

# Trained models are cached per test session, in a fresh folder, so that the tests train
# what they check (never a stale model from a user's cache).
_CACHE = None


@pytest.fixture(scope="session", autouse=True)
def _model_cache(tmp_path_factory):
    global _CACHE
    _CACHE = tmp_path_factory.mktemp("xbar-cache")
    old = os.environ.get("XBAR_CACHE")
    os.environ["XBAR_CACHE"] = str(_CACHE)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    yield
    if old is None:
        os.environ.pop("XBAR_CACHE", None)
    else:
        os.environ["XBAR_CACHE"] = old


@pytest.fixture(scope="session")
def digits_mlp(_model_cache):
    from studies.data import load_dataset
    from studies.train import TrainConfig, load_or_train

    config = TrainConfig(dataset="digits", arch="mlp", timesteps=4, epochs=12)
    model, info = load_or_train(config, progress=False)
    return model, info, load_dataset("digits"), config


@pytest.fixture(scope="session")
def mnist_conv(_model_cache):
    from studies.data import load_dataset
    from studies.robustness import StudyConfig
    from studies.train import load_or_train

    config = StudyConfig().train_config()  # the default study's model
    model, info = load_or_train(config, progress=False)
    return model, info, load_dataset("mnist5k"), config


@pytest.fixture(scope="session")
def mnist_data():
    from studies.data import load_dataset

    return load_dataset("mnist5k")


@pytest.fixture(scope="session")
def converted_mlp(_model_cache, mnist_data):
    """Plain ReLU MLP converted with 99.9th-percentile thresholds."""
    from studies.ann_to_snn import ConversionConfig, load_or_convert

    return load_or_convert(ConversionConfig(arch="mlp"), progress=False, data=mnist_data)


@pytest.fixture(scope="session")
def converted_mlp_qcfs(_model_cache, mnist_data):
    """Conversion-aware: QCFS activations (8 levels) and 4-bit weights."""
    from studies.ann_to_snn import ConversionConfig, load_or_convert

    config = ConversionConfig(arch="mlp", levels=8, weight_bits=4)
    return load_or_convert(config, timesteps=8, progress=False, data=mnist_data)


def _dask(*args: str) -> list[str]:
    return [sys.executable, "-m", "dask", *args]


@pytest.fixture
def dask_cluster(tmp_path):
    """A real Dask scheduler and two single-threaded workers, on loopback."""
    sched_file = tmp_path / "scheduler.json"
    procs = [subprocess.Popen(_dask("scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                                    "--scheduler-file", str(sched_file)),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)]
    try:
        deadline = time.monotonic() + 60
        while not sched_file.is_file() and time.monotonic() < deadline:
            time.sleep(0.1)
        address = json.loads(sched_file.read_text())["address"]
        for _ in range(2):
            procs.append(subprocess.Popen(
                _dask("worker", address, "--nthreads", "1", "--no-dashboard", "--host", "127.0.0.1"),
                env={**os.environ, "MALLOC_ARENA_MAX": "1"},  # as docs/studies.md says to start them
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
        from distributed import Client

        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
        yield address
    finally:
        for p in reversed(procs):
            os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
