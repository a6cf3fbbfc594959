import os
from pathlib import Path

import pyro
import pytest
import torch

from pyro_vae import load_mnist

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def mnist_dir():
    """Real MNIST for the tests: $PYRO_VAE_DATA, else ../shared/data, else None (embedded)."""
    if os.environ.get("PYRO_VAE_DATA"):
        return os.environ["PYRO_VAE_DATA"]
    if (SHARED_DATA / "MNIST" / "raw").is_dir():
        return str(SHARED_DATA)
    return None


@pytest.fixture(scope="session")
def mnist_source():
    """The directory the real-MNIST tests read, or None for the embedded sample."""
    return mnist_dir()


@pytest.fixture(scope="session")
def mnist(mnist_source):
    directory = mnist_source
    if directory is None:
        return load_mnist(download=False, verbose=False)
    return load_mnist(directory, download=False)


@pytest.fixture(autouse=True)
def fresh_pyro():
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    yield
    pyro.clear_param_store()


def assert_same_tensors(a, b, where="state"):
    """torch.equal on every tensor of two nested states (dicts, lists, tuples), equality elsewhere."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same_tensors(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_tensors(x, y, f"{where}[{i}]")
    else:
        assert a == b, where
