"""examples/mnist_svi.py end to end: figures, metrics.json, checkpoint, --resume."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import message_lines

from pyro_vae import cli
from pyro_vae.errors import ConfigError, OutputDirError
from pyro_vae.training import TrainConfig

pytestmark = pytest.mark.integration  # runs whole programs, a browser or a docs build: out of the fast loop

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "mnist_svi.py"
FIGURES = ["elbo_curves.png", "reconstructions.png", "prior_samples.png", "latent_map.png", "interpolation.png"]


def run(args, mnist_source):
    data = ["--data-dir", mnist_source] if mnist_source else []
    return subprocess.run(
        [sys.executable, str(EXAMPLE), *data, "--no-download", "--no-progress", *args],
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_example_runs_writes_everything_and_resumes(tmp_path, mnist_source):
    out = str(tmp_path / "run")
    small = ["--train-size", "1024", "--test-size", "500", "--z-dim", "8", "--hidden", "64", "--out", out]
    first = run(["--epochs", "1", *small], mnist_source)
    assert first.returncode == 0, first.stderr
    for name in FIGURES + ["explorer.html", "metrics.json", "checkpoint.pt"]:
        assert os.path.getsize(os.path.join(out, name)) > 1000 or name == "metrics.json", name
    metrics = json.loads(Path(out, "metrics.json").read_text())
    assert metrics["explorer"] == "explorer.html" and "explorer.html" in first.stdout
    assert metrics["epochs"] == 1 and metrics["num_train"] == 1024 and metrics["num_test"] == 500
    assert metrics["test_elbo"] == pytest.approx(metrics["test_recon"] - metrics["test_kl"])
    assert -800 < metrics["test_elbo"] < 0
    state = torch.load(os.path.join(out, "checkpoint.pt"), weights_only=True)
    assert state["epoch"] == 1 and {"model", "optimizer", "rng", "config"} <= set(state)

    second = run(
        ["--epochs", "2", "--resume", "--train-size", "1024", "--test-size", "500", "--out", out], mnist_source
    )
    assert second.returncode == 0, second.stderr
    assert "resumed from" in second.stdout and "at epoch 1" in second.stdout
    metrics = json.loads(Path(out, "metrics.json").read_text())
    assert metrics["epochs"] == 2 and [r["epoch"] for r in metrics["history"]] == [1, 2]
    assert metrics["config"]["z_dim"] == 8  # taken from the checkpoint


def test_example_errors_are_one_line_without_traceback(tmp_path, mnist_source):
    out = str(tmp_path / "run")
    missing = run(["--resume", "--out", out], mnist_source)
    assert missing.returncode == 2
    (line,) = message_lines(missing.stderr)  # after the data's one-line notice, if any
    assert line.startswith("error: no checkpoint at") and "Traceback" not in missing.stderr

    bad = run(["--epochs", "0", "--out", out, "--train-size", "64"], mnist_source)
    assert bad.returncode == 2 and "epochs must be a positive int" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_example_help():
    result = subprocess.run([sys.executable, str(EXAMPLE), "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    for flag in [
        "--epochs",
        "--batch-size",
        "--lr",
        "--z-dim",
        "--hidden",
        "--likelihood",
        "--data-dir",
        "--out",
        "--seed",
        "--device",
        "--test-every",
        "--resume",
    ]:
        assert flag in result.stdout


def test_example_guide_objective_warmup_and_log_likelihood(tmp_path, mnist_source):
    out = str(tmp_path / "run")
    result = run(
        [
            "--epochs",
            "2",
            "--train-size",
            "512",
            "--test-size",
            "100",
            "--z-dim",
            "8",
            "--hidden",
            "64",
            "--guide",
            "iaf",
            "--objective",
            "iwae",
            "--particles",
            "3",
            "--kl-warmup",
            "1",
            "--eval-samples",
            "200",
            "--out",
            out,
        ],
        mnist_source,
    )
    assert result.returncode == 0, result.stderr
    assert "guide=iaf" in result.stdout and "IWAE_ELBO K=3" in result.stdout
    assert "test log-likelihood" in result.stdout
    metrics = json.loads(Path(out, "metrics.json").read_text())
    assert metrics["config"]["guide"] == "iaf" and metrics["config"]["objective"] == "iwae"
    assert metrics["test_log_likelihood_samples"] == 200
    # log p(x) >= ELBO on average: the importance-sampled estimate is the tighter bound
    assert metrics["test_log_likelihood"] > metrics["test_elbo"]
    # warm-up over 1 epoch of 4 steps: the last step of epoch 1 uses beta = 3/4, then 1
    assert [r["beta"] for r in metrics["history"]] == [0.75, 1.0]
    for name in FIGURES:
        assert os.path.getsize(os.path.join(out, name)) > 1000, name


def test_custom_guide_example_trains_and_compares(mnist_source):
    script = EXAMPLE.parent / "custom_guide.py"
    data = ["--data-dir", mnist_source] if mnist_source else []
    result = subprocess.run(
        [sys.executable, str(script), *data, "--epochs", "2", "--train-size", "1000"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert "diagonal Normal" in lines[-2] and "Student-t" in lines[-1]
    elbos = [float(line.split()[-7]) for line in lines[-2:]]
    assert all(-300 < e < -100 for e in elbos), elbos


def load_example():
    spec = importlib.util.spec_from_file_location("mnist_svi_under_test", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_an_unexpected_exception_is_one_line_and_exit_code_2(tmp_path, monkeypatch, capsys):
    example = load_example()

    def broken_loader(*args, **kwargs):
        raise ZeroDivisionError("size cannot be zero")

    monkeypatch.setattr(cli, "load_mnist", broken_loader)
    args = ["--epochs", "1", "--z-dim", "2", "--hidden", "8", "--no-progress", "--out", str(tmp_path / "run")]
    assert cli.run(example.main, args) == 2
    err = capsys.readouterr().err
    assert err == "error: unexpected error (please report with --debug): ZeroDivisionError: size cannot be zero\n"

    assert cli.run(example.main, [*args, "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "broken_loader" in err
    assert err.rstrip().splitlines()[-1].startswith("error: unexpected error")


def test_a_run_in_out_is_replaced_only_when_asked(tmp_path, capsys):
    (tmp_path / "checkpoint_100.pt").write_bytes(b"a finished run")
    with pytest.raises(OutputDirError, match=r"holds a run \(checkpoint_100\.pt\); continue it with --resume"):
        cli.output_dir(str(tmp_path), ["checkpoint_100.pt", "checkpoint_600.pt"])
    assert cli.output_dir(str(tmp_path), ["checkpoint_600.pt"]) == str(tmp_path)  # another run's file: no clash
    assert cli.output_dir(str(tmp_path), ["checkpoint_100.pt"], resume=True) == str(tmp_path)
    assert cli.output_dir(str(tmp_path), ["checkpoint_100.pt"], overwrite=True) == str(tmp_path)
    with pytest.raises(SystemExit) as stop:
        load_example().parse_args(["--resume", "--overwrite"])
    assert stop.value.code == 2
    assert "error: argument --overwrite: not allowed with argument --resume" in capsys.readouterr().err


def test_a_record_in_out_is_kept_unless_replacing_it_is_asked(tmp_path):
    """Another program's metrics.json is refused (its figures and record would be replaced), and
    a run of other rows of the same program adds to the record instead of erasing it."""
    ss = {"program": "ss_vae.py", "runs": {"100": {"test_accuracy": 0.91}, "1000": {"test_accuracy": 0.96}}}
    (tmp_path / "metrics.json").write_text(json.dumps(ss))
    with pytest.raises(
        OutputDirError,
        match=r"metrics\.json is the record of a run of ss_vae\.py, which this run of "
        r"cvae\.py would replace; choose another --out, or replace it with --overwrite$",
    ):
        cli.output_dir(str(tmp_path), ["cvae_1.pt"], program="cvae.py")
    with pytest.raises(OutputDirError, match="of ss_vae.py"):
        cli.output_dir(
            str(tmp_path), ["checkpoint.pt"], resume=True, program="mnist_svi.py"
        )  # resuming replaces it too
    assert cli.output_dir(str(tmp_path), ["cvae_1.pt"], overwrite=True, program="cvae.py") == str(tmp_path)
    assert cli.output_dir(str(tmp_path), ["checkpoint_600.pt"], program="ss_vae.py") == str(tmp_path)
    assert cli.earlier_rows(str(tmp_path), "ss_vae.py", "runs", replaced=["1000", "600"]) == {"100": ss["runs"]["100"]}
    assert cli.earlier_rows(str(tmp_path), "cvae.py", "table") == {}  # another program's rows are never taken
    for foreign in (
        '{"runs": {"100": {}}}',
        "[1, 2]",
        '{"program": "ss_vae.py", "runs": {"1',
    ):  # no program, no dict, cut
        (tmp_path / "metrics.json").write_text(foreign)
        with pytest.raises(
            OutputDirError,
            match=r"metrics\.json is not a record of ss_vae\.py runs \(unreadable, or another program's\), and this run "
            r"would replace it; choose another --out",
        ):
            cli.output_dir(str(tmp_path), ["checkpoint_100.pt"], program="ss_vae.py")
        assert cli.earlier_rows(str(tmp_path), "ss_vae.py", "runs") == {}
    cli.write_record(str(tmp_path), ss)
    assert json.loads((tmp_path / "metrics.json").read_text()) == ss and os.listdir(tmp_path) == ["metrics.json"]


def test_counts_say_what_they_count_and_what_zero_means():
    # one check (errors.check_count) for every "integer >= 0" setting, in the CLI and the library
    with pytest.raises(
        ConfigError,
        match=r"^eval_samples must be an integer >= 0, got -1; pass e\.g\. "
        r"eval_samples=5000, or 0 for no importance-sampled evaluation$",
    ):
        load_example().parse_args(["--eval-samples", "-1"])  # parse_args ends with cli.check_options
    with pytest.raises(
        ConfigError,
        match=r"^kl_warmup must be a whole number of epochs >= 0, got 1\.5; pass e\.g\. "
        r"kl_warmup=10, or 0 for none$",
    ) as err:
        TrainConfig(kl_warmup=1.5)
    assert err.value.settings == ("kl_warmup",)
    assert TrainConfig(kl_warmup=3).kl_warmup == 3


@pytest.mark.parametrize(
    "raised, size",
    [
        (
            RuntimeError(
                "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you "
                "tried to allocate 160000000000 bytes. Error code 12 (Cannot allocate memory)"
            ),
            " (149.0 GiB",
        ),
        (
            torch.OutOfMemoryError(
                "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 8 GiB"
            ),
            " (2.00 GiB",
        ),
        (MemoryError(), ""),
    ],
)
def test_running_out_of_memory_is_one_line_that_says_so(raised, size, capsys):
    def main(argv):
        raise raised

    assert cli.run(main, []) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: out of memory{size}") and err.count("\n") == 1, err
    assert "make the run smaller" in err and "enforce fail" not in err


@pytest.mark.parametrize("device", ["tpu", "meta", "cuda:x"])
def test_an_unknown_device_is_one_line(device, tmp_path):
    result = run(["--device", device, "--out", str(tmp_path / "run")], None)
    assert result.returncode == 2
    assert result.stderr == (
        f"error: device {device} is not supported; use cpu, or cuda (cuda:N for one GPU) (command line: --device)\n"
    )


@pytest.mark.parametrize(
    "test_size, z_dim, not_drawn",
    [
        (1, 1, {"interpolation"}),  # one image: no pair to interpolate; z_dim=1: z itself on the map
        (1, 8, {"interpolation", "latent_map"}),  # one image: PCA has no axis either
        (3, 2, set()),  # three digits, z itself on the map
    ],
)
def test_tiny_test_sets_and_latent_sizes_still_finish_the_run(tmp_path, mnist_source, test_size, z_dim, not_drawn):
    out = tmp_path / "run"
    result = run(
        [
            "--epochs",
            "1",
            "--train-size",
            "256",
            "--test-size",
            str(test_size),
            "--z-dim",
            str(z_dim),
            "--hidden",
            "32",
            "--out",
            str(out),
        ],
        mnist_source,
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["figures_not_drawn"]) == not_drawn
    assert set(metrics["figures"]) | not_drawn == {name[:-4] for name in FIGURES}
    for name in not_drawn:  # each one line on stdout, saying why
        (line,) = [line for line in result.stdout.splitlines() if line.startswith(f"figure {name}.png not drawn: ")]
        assert "needs at least 2 test images" in line
    assert metrics["num_test"] == test_size and (out / "checkpoint.pt").exists()
    assert metrics["explorer"] == "explorer.html" or "explorer.html not written: " in result.stdout


def test_train_and_test_sizes_are_class_balanced(tmp_path, mnist_source):
    out = tmp_path / "run"
    result = run(
        [
            "--epochs",
            "1",
            "--train-size",
            "100",
            "--test-size",
            "20",
            "--z-dim",
            "2",
            "--hidden",
            "16",
            "--out",
            str(out),
        ],
        mnist_source,
    )
    assert result.returncode == 0, result.stderr
    assert "100 train / 20 test images" in result.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train_class_counts"] == [10] * 10 and metrics["test_class_counts"] == [2] * 10


def test_resume_may_lower_the_learning_rate_and_says_so(tmp_path, mnist_source):
    out = tmp_path / "run"
    small = ["--train-size", "256", "--test-size", "50", "--z-dim", "4", "--hidden", "32", "--out", str(out)]
    assert run(["--epochs", "1", *small], mnist_source).returncode == 0
    resumed = run(["--epochs", "2", "--resume", "--lr", "0.0003", *small], mnist_source)
    assert resumed.returncode == 0, resumed.stderr
    assert "learning rate changed on resume: 0.001 (checkpoint) -> 0.0003 (--lr)" in resumed.stdout
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 2 and state["trainer"]["lr"] == 0.0003
    assert {group["lr"] for group in state["optimizer"]["param_groups"]} == {0.0003}  # Adam stepped at it
    assert json.loads((out / "metrics.json").read_text())["config"]["lr"] == 0.0003
    # other options still continue the saved run
    clash = run(["--epochs", "3", "--resume", "--z-dim", "5", "--out", str(out)], mnist_source)
    assert (
        clash.returncode == 2
        and "z_dim 5 (checkpoint: 4)" in clash.stderr
        and "(command line: --z-dim)" in clash.stderr
    )


@pytest.mark.parametrize(
    "model",
    [
        ["--model", "hvae"],
        ["--prior", "vamp", "--pseudo-inputs", "20"],
        ["--model", "hvae", "--prior", "vamp", "--pseudo-inputs", "20"],
    ],
)
def test_the_example_trains_and_resumes_the_other_models_by_name(tmp_path, mnist_source, model):
    out = tmp_path / "run"
    small = ["--train-size", "256", "--test-size", "50", "--out", str(out)]
    first = run(["--epochs", "1", *model, *small], mnist_source)
    assert first.returncode == 0, first.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["model"] == ("hvae" if "hvae" in model else "vae")
    assert metrics["config"]["prior"] == ("vamp" if "vamp" in model else "standard")
    assert set(metrics["figures"]) == {name[:-4] for name in FIGURES} and -800 < metrics["test_elbo"] < 0
    # the explorer draws N(0, I) under one latent layer: for these models it says why it is not written
    assert (
        metrics["explorer"] is None and "explorer.html not written: the explorer draws one latent layer" in first.stdout
    )
    resumed = run(["--epochs", "2", "--resume", *small], mnist_source)  # the model comes from the checkpoint
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((out / "metrics.json").read_text())["epochs"] == 2


def test_the_hvae_refuses_the_one_layer_settings_in_one_line(tmp_path):
    result = run(["--model", "hvae", "--z-dim", "3", "--guide", "iaf", "--out", str(tmp_path / "run")], None)
    assert result.returncode == 2
    assert result.stderr.endswith(
        "takes no z_dim or guide, settings of the one-layer vae; leave them unset (command line: --z-dim, --guide)\n"
    ), result.stderr
