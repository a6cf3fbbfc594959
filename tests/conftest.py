import importlib
import os
import shutil
import struct
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pyro
import pytest
import torch

from pyro_vae import load_mnist
from pyro_vae.data.images import _IDX_MAGIC, DATA_ENV, MNIST_FILES, load_embedded
from pyro_vae.training.callbacks import Callback


def mnist_dir():
    """Real MNIST for the tests: $PYRO_VAE_DATA, else None (the embedded sample, as a newcomer has).

    No look-up beside the repo: CI runs the suite once with $PYRO_VAE_DATA and once
    without it, and the second run must really use the embedded sample.
    """
    return os.environ.get(DATA_ENV) or None


@pytest.fixture(autouse=True)
def torch_threads_restored():
    """A test that pins torch to one thread (for a bit-exact comparison, or beside a process
    group) gives the rest of the session back its threads."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


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


def write_idx_mnist(root: Path) -> Path:
    """Write the four MNIST IDX files under ``root/MNIST/raw`` (torchvision's layout), with
    the sizes and magics of :data:`pyro_vae.data.images.MNIST_FILES`: the embedded sample tiled,
    its 4,000 train images 15 times (60,000) and its 1,000 test images 10 times (10,000)."""
    data = load_embedded()
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    halves = {"train": (data.train_images, data.train_labels), "t10k": (data.test_images, data.test_labels)}
    for prefix, (images, labels) in halves.items():
        n = MNIST_FILES[f"{prefix}-labels-idx1-ubyte"] - 8  # an 8-byte header, then 1 byte per label
        pixels = _tile(images, n).mul(255).round().to(torch.uint8)
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", _IDX_MAGIC["images"], pixels.reshape(n, 28, 28))
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", _IDX_MAGIC["labels"], _tile(labels, n).to(torch.uint8))
    return root


def _tile(rows: torch.Tensor, n: int) -> torch.Tensor:
    """``rows`` repeated end to end, cut at ``n`` rows."""
    return rows.repeat(-(-n // len(rows)), *[1] * (rows.dim() - 1))[:n]


def _write_idx(path: Path, magic: int, values: torch.Tensor) -> None:
    """IDX: big-endian int32 magic, then each dimension as a big-endian int32, then the bytes."""
    header = struct.pack(f">{1 + values.dim()}i", magic, *values.shape)
    path.write_bytes(header + values.contiguous().numpy().tobytes())


@pytest.fixture(scope="session")
def idx_mnist_dir(tmp_path_factory):
    """MNIST IDX files on disk in both CI modes: the real ones ($PYRO_VAE_DATA), or ones
    tiled from the embedded sample by :func:`write_idx_mnist`."""
    if mnist_dir() is not None:
        return Path(mnist_dir())
    return write_idx_mnist(tmp_path_factory.mktemp("idx_mnist"))


def message_lines(stderr: str):
    """The CLI's stderr lines without the one-line notice that the embedded sample is in use
    (printed when the tests run as a newcomer would, with no real MNIST)."""
    return [line for line in stderr.strip().splitlines() if not line.startswith("pyro_vae: full MNIST not found")]


def import_from(folder: str, name: str):
    """Module ``name`` of the repository's ``folder`` (``bench``, ``docs``): imported with the folder
    on ``sys.path``, which is then restored as it was (the bench scripts add their own folder too)."""
    saved = list(sys.path)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / folder))
    try:
        return importlib.import_module(name)
    finally:
        sys.path[:] = saved


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


#: What the browser tests need, and how to get it (they skip with this line where it is missing).
CHROMIUM_INSTALL = (
    "browser tests need Chromium, chromedriver and selenium: "
    "apt-get install -y chromium chromium-driver && pip install selenium"
)


@contextmanager
def headless_chromium(window: str, *flags: str, logs: bool = False):
    """A headless Chromium driven by selenium, in a fresh profile; skips the test with
    :data:`CHROMIUM_INSTALL` where the browser, its driver or selenium is missing."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip(CHROMIUM_INSTALL)
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if binary is None or driver_path is None:
        pytest.skip(CHROMIUM_INSTALL)
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--window-size={window}",
        *flags,
    ):
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="chromium-")
    options.add_argument(f"--user-data-dir={profile}")
    if logs:
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # Service(path): selenium's own driver look-up would need the internet.
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


class StopAt(Callback):
    """Ask training to stop after step ``step`` of epoch ``epoch``, as SIGINT would."""

    def __init__(self, epoch, step):
        self.epoch, self.step = epoch, step

    def on_step_end(self, trainer, step, loss):
        if trainer.epoch + 1 == self.epoch and step == self.step:
            trainer.stop.request(2)
