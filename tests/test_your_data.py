"""Your data (pyro_vae.data.sources and examples/your_data.py): every source read into rows and a
shape, each file problem in one line, and the example run end to end on the embedded digits, a
generated CSV table, a generated folder of colour PNGs and a generated count matrix."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import import_from

from pyro_vae.data.sources import load_data, suggested_likelihood
from pyro_vae.errors import ConfigError, DataNotFoundError, InvalidDataError

ROOT = Path(__file__).resolve().parents[1]


def write_csv(path, rows, header="a,b,c,label"):
    path.write_text("\n".join([header, *rows]) + "\n")
    return str(path)


def table_csv(path, n=120, seed=0):
    g = np.random.default_rng(seed)
    z = g.normal(size=(n, 2))
    x = np.tanh(z @ g.normal(size=(2, 5))) + 0.1 * g.normal(size=(n, 5))
    label = (z[:, 0] > 0).astype(int)
    lines = ["f0,f1,f2,f3,f4,kind", *[",".join(f"{v:.5f}" for v in row) + f",{k}" for row, k in zip(x, label)]]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def png_folder(root, sizes=((6, 6),) * 12, colour=False, classes=("cats", "dogs")):
    from PIL import Image

    g = np.random.default_rng(0)
    for i, (h, w) in enumerate(sizes):
        folder = root / classes[i % len(classes)] if classes else root
        folder.mkdir(parents=True, exist_ok=True)
        pixels = g.integers(0, 256, size=(h, w, 3) if colour else (h, w), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:03d}.png")
    return str(root)


def test_a_csv_table_with_a_header_and_a_label_column(tmp_path):
    data = load_data(table_csv(tmp_path / "t.csv"), label_column="kind", test_fraction=0.25, seed=3)
    assert data.shape == (5,) and not data.is_images and data.feature_names == ["f0", "f1", "f2", "f3", "f4"]
    assert (len(data.train), len(data.test)) == (90, 30) and set(data.train_labels.tolist()) == {0, 1}
    assert data.value_kind == "real" and suggested_likelihood(data) == "normal"
    again = load_data(table_csv(tmp_path / "t.csv"), label_column="kind", test_fraction=0.25, seed=3)
    assert torch.equal(again.test, data.test)  # the split is seeded


def test_arrays_of_counts_images_and_labels(tmp_path):
    counts = np.random.default_rng(0).poisson(3.0, size=(50, 7))
    np.save(tmp_path / "counts.npy", counts)
    data = load_data(str(tmp_path / "counts.npy"))
    assert data.shape == (7,) and data.value_kind == "counts" and suggested_likelihood(data) == "negative_binomial"
    images = np.random.default_rng(1).integers(0, 256, size=(40, 5, 5, 3), dtype=np.uint8)  # channels last
    np.savez(tmp_path / "im.npz", x=images, y=np.arange(40) % 4)
    data = load_data(str(tmp_path / "im.npz"))
    assert data.shape == (3, 5, 5) and data.is_images and data.train.max() <= 1 and data.train_labels.max() == 3
    first = torch.from_numpy(images[0].transpose(2, 0, 1).astype(np.float32) / 255).flatten()
    assert any(torch.equal(first, row) for row in torch.cat([data.train, data.test]))
    torch.save({"x": torch.rand(30, 4), "y": torch.arange(30) % 2}, tmp_path / "d.pt")
    assert load_data(str(tmp_path / "d.pt")).shape == (4,)


def test_a_folder_of_images_with_class_subfolders(tmp_path):
    data = load_data(png_folder(tmp_path / "grey"), test_fraction=0.25)
    assert data.shape == (1, 6, 6) and len(data.train) + len(data.test) == 12
    assert sorted(torch.cat([data.train_labels, data.test_labels]).tolist()) == [0] * 6 + [1] * 6
    colour = load_data(png_folder(tmp_path / "colour", colour=True, classes=()))
    assert colour.shape == (3, 6, 6) and colour.train_labels is None


def test_the_named_sources_offline():
    digits = load_data("digits")
    assert digits.shape == (1, 8, 8) and len(digits.train) + len(digits.test) == 1797
    assert suggested_likelihood(digits) == "bernoulli"  # grey images, binarized as MNIST is
    wine = load_data("wine")
    assert wine.shape == (13,) and abs(float(torch.cat([wine.train, wine.test]).mean())) < 1e-5


def test_a_download_that_cannot_happen_is_one_line(monkeypatch, tmp_path):
    from torchvision import datasets

    def offline(*args, **kwargs):
        raise RuntimeError(
            "Error downloading t10k-images-idx3-ubyte.gz:\nTried http://a/, got: <urlopen error "
            "[Errno -2] Name or service not known>"
        )

    monkeypatch.setattr(datasets, "KMNIST", offline)
    with pytest.raises(
        DataNotFoundError,
        match=r"^KMNIST is not in .* and could not be downloaded \(<urlopen error "
        r"\[Errno -2\] Name or service not known>\); put its four files in ",
    ):
        load_data("kmnist", str(tmp_path))


@pytest.mark.parametrize(
    "make, error, words",
    [
        (
            lambda p: write_csv(p / "t.csv", ["1,2,3,0", "1,red,3,1"]),
            InvalidDataError,
            r"t\.csv: column 'b' holds text \('red' on line 3\); give numbers only, or take the column out as the labels",
        ),
        (
            lambda p: write_csv(p / "t.csv", ["1,2,3,0", "1,2,1"]),
            InvalidDataError,
            r"t\.csv: line 3 has 3 values, but the header has 4; give every row the same columns",
        ),
        (lambda p: (p / "e.csv").write_text("") or str(p / "e.csv"), InvalidDataError, r"e\.csv is empty \(0 bytes\)"),
        (lambda p: str(p / "missing.csv"), DataNotFoundError, r"missing\.csv does not exist; pass a \.npy"),
        (
            lambda p: png_folder(p / "mixed", sizes=((6, 6), (6, 6), (8, 6))),
            InvalidDataError,
            r"the images in .*mixed differ in size: .*002\.png is 6x8, .*000\.png 6x6; resize them to one size",
        ),
        (
            lambda p: np.save(p / "n.npy", np.array([[1.0, np.nan], [0.0, 1.0]])) or str(p / "n.npy"),
            InvalidDataError,
            r"n\.npy holds 1 NaN value \(in 1 of 2 rows\); clean or drop those rows",
        ),
    ],
)
def test_a_bad_file_is_one_line(tmp_path, make, error, words):
    with pytest.raises(error, match=words) as info:
        load_data(make(tmp_path))
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match=r"label_column='nope' is not a column of .*t\.csv \(its columns: a, b, c"):
        load_data(write_csv(tmp_path / "t.csv", ["1,2,3,0", "4,5,6,1"]), label_column="nope")


def run_example(args, out):
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "your_data.py"), *args, "--out", str(out), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout, json.loads((out / "metrics.json").read_text())


@pytest.mark.integration
def test_the_example_on_the_digits_a_table_a_png_folder_and_counts(tmp_path):
    """Each source through the whole story: it trains (the test ELBO rises), evaluates, draws what
    fits and checkpoints; bits/dim only for discrete data."""
    counts = np.random.default_rng(0).poisson(
        np.exp(np.random.default_rng(1).normal(size=(300, 1)) + 1), size=(300, 10)
    )
    np.save(tmp_path / "counts.npy", counts)
    runs = {
        "digits": (["--data", "digits", "--epochs", "8"], {"reconstructions", "prior_samples", "latent_map"}),
        "table": (
            ["--data", table_csv(tmp_path / "t.csv", n=300), "--label-column", "kind", "--epochs", "15"],
            {"feature_reconstructions", "latent_map", "elbo_curves"},
        ),
        "pngs": (
            [
                "--data",
                png_folder(tmp_path / "pngs", sizes=((6, 6),) * 60, colour=True),
                "--likelihood",
                "discretized_logistic",
                "--epochs",
                "5",
            ],
            {"reconstructions", "prior_samples"},
        ),
        "counts": (
            ["--data", str(tmp_path / "counts.npy"), "--likelihood", "poisson", "--epochs", "15"],
            {"feature_reconstructions"},
        ),
    }
    for name, (args, figures) in runs.items():
        stdout, record = run_example(args, tmp_path / name)
        history = record["history"]
        assert history[-1]["test_elbo"] > history[0]["test_elbo"], (name, [r["test_elbo"] for r in history])
        assert figures <= set(record["figures"]), (name, record["figures"], record["figures_not_drawn"])
        for figure in figures:
            assert os.path.getsize(tmp_path / name / f"{figure}.png") > 1000, (name, figure)
        assert (tmp_path / name / "checkpoint.pt").exists()
        assert ("test_bits_per_dim" in record) == (name != "table"), name
        print(name, record["config"]["likelihood"], f"test ELBO {record['test_elbo']:.3f}")
    for name in ("digits", "pngs"):  # grey 8x8 digits and 6x6 colour images, each in its own shape
        record = json.loads((tmp_path / name / "metrics.json").read_text())
        assert record["explorer"] == "explorer.html" and (tmp_path / name / "explorer.html").stat().st_size > 10000
    assert json.loads((tmp_path / "pngs" / "metrics.json").read_text())["shape"] == [3, 6, 6]
    table = json.loads((tmp_path / "table" / "metrics.json").read_text())
    assert table["shape"] == [5] and table["config"]["likelihood"] == "normal"
    table_args = ["--data", str(tmp_path / "t.csv"), "--label-column", "kind"]
    stdout, record = run_example([*table_args, "--epochs", "16", "--resume"], tmp_path / "table")
    assert "a density: no bits/dim" in stdout and len(record["history"]) == 16
    # the same file read with its label column as a feature is other data: the checkpoint says so
    refused = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "your_data.py"),
            "--data",
            str(tmp_path / "t.csv"),
            "--epochs",
            "17",
            "--resume",
            "--out",
            str(tmp_path / "table"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert refused.returncode == 2 and refused.stderr.startswith(
        "error: the checkpoint was written for another configuration (x_dim: checkpoint 5 vs now 6)"
    ), refused.stderr


def test_the_pages_table_is_generated_from_the_committed_records():
    your_data_runs = import_from("docs", "your_data_runs")
    PAGE, table = your_data_runs.PAGE, your_data_runs.table
    page = PAGE.read_text()
    assert f"<!-- your_data:start -->\n{table()}\n<!-- your_data:end -->" in page
    for figure in (
        "digits/reconstructions.png",
        "digits/latent_map.png",
        "wine/feature_reconstructions.png",
        "wine/latent_map.png",
    ):
        assert f"_static/figures/your_data/{figure}" in page
        assert (ROOT / "docs" / "_static" / "figures" / "your_data" / figure).stat().st_size > 1000


def test_the_explorer_draws_images_of_their_own_shape_and_says_what_it_cannot(tmp_path):
    from pyro_vae import VAE
    from pyro_vae.figures.explorer import write_explorer

    vae = VAE(x_dim=12, z_dim=2, hidden_dims=(8,))
    images = torch.bernoulli(torch.full((6, 12), 0.3), generator=torch.Generator().manual_seed(0))
    page = write_explorer(vae, images, torch.arange(6), tmp_path / "e.html", shape=(1, 3, 4))
    assert '"imageShape":[3,4]' in Path(page).read_text() and '"channels":1' in Path(page).read_text()
    page = write_explorer(vae, images, torch.arange(6), tmp_path / "c.html", shape=(3, 2, 2))
    assert '"imageShape":[2,2]' in Path(page).read_text() and '"channels":3' in Path(page).read_text()
    with pytest.raises(
        ConfigError,
        match=r"^the explorer draws images of x_dim=12 values, grey or colour \(1 or 3 "
        r"channels of height x width\); a table of 12 features cannot be drawn there",
    ):
        write_explorer(vae, images, torch.arange(6), tmp_path / "e.html", shape=(12,))
