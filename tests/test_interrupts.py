"""examples/mnist_svi.py under kill -9, SIGINT and SIGTERM; --resume is bit-identical.

Each test runs the command line as subprocesses on 2,000 training images with a small
network, so that an epoch takes a fraction of a second and checkpoints come often.
"""

import json
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import assert_same_tensors, message_lines

from pyro_vae.training.checkpoint import load_checkpoint

pytestmark = pytest.mark.integration  # runs whole programs, a browser or a docs build: out of the fast loop

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "mnist_svi.py"
SMALL = ["--train-size", "2000", "--test-size", "100", "--z-dim", "8", "--hidden", "64", "--seed", "3"]


def command(mnist_source, out, *args):
    data = ["--data-dir", mnist_source] if mnist_source else []
    return [sys.executable, str(EXAMPLE), *data, "--no-download", "--no-progress", *SMALL, "--out", str(out), *args]


def run(mnist_source, out, *args):
    return subprocess.run(command(mnist_source, out, *args), capture_output=True, text=True, timeout=300)


def start(mnist_source, out, *args):
    return subprocess.Popen(
        command(mnist_source, out, *args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def wait_for_new_checkpoint(path: Path, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    """Until ``proc`` has written ``path`` (a file that did not exist, or a newer one)."""
    before = path.stat().st_mtime_ns if path.exists() else None
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.stat().st_mtime_ns != before):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no checkpoint was written"
        time.sleep(0.01)


def same_run(a: dict, b: dict) -> None:
    """Two checkpoints hold the same run: torch.equal on every tensor, and equal ELBOs."""
    for key in ("model", "optimizer", "rng", "epoch", "config", "trainer", "version"):
        assert_same_tensors(a[key], b[key], key)
    # The training records agree; test ELBOs where both runs evaluated (a run evaluates at its last epoch).

    def train(history):
        return [(r["epoch"], r["train_elbo"], r["beta"]) for r in history]

    assert train(a["history"]) == train(b["history"])
    assert a["history"][-1]["test_elbo"] == b["history"][-1]["test_elbo"]


def test_sigkill_at_random_moments_never_leaves_a_bad_checkpoint(tmp_path, mnist_source):
    """Five kill -9 at seeded random moments (mid-step, mid-evaluation, mid-save), each
    followed by --resume; the checkpoint always loads, and the last resume completes."""
    rng = random.Random(90210)
    out = tmp_path / "run"
    path = out / "checkpoint.pt"
    epochs = []
    for trial in range(5):
        proc = start(mnist_source, out, "--batch-size", "100", "--epochs", "100000", *(["--resume"] if trial else []))
        wait_for_new_checkpoint(path, proc)
        time.sleep(rng.uniform(0.0, 0.5))
        proc.kill()  # SIGKILL: no handler runs, nothing is flushed
        proc.communicate()
        assert proc.returncode == -signal.SIGKILL
        state = load_checkpoint(path)  # never torn: the previous complete file, or the next one
        assert state["epoch"] >= (epochs[-1] + 1 if epochs else 1) and "partial" not in state
        epochs.append(state["epoch"])
    final = run(mnist_source, out, "--batch-size", "100", "--epochs", str(epochs[-1] + 1), "--resume")
    assert final.returncode == 0, final.stderr
    assert f"resumed from {path} at epoch {epochs[-1]}" in final.stdout
    assert json.loads((out / "metrics.json").read_text())["epochs"] == epochs[-1] + 1
    assert not list(out.glob("*.tmp"))  # temporary files of killed writers are cleaned up


def test_sigint_and_sigterm_write_a_checkpoint_exit_130_143_and_resume(tmp_path, mnist_source):
    out = tmp_path / "run"
    path = out / "checkpoint.pt"
    for signum, code in ((signal.SIGINT, 130), (signal.SIGTERM, 143)):
        proc = start(
            mnist_source,
            out,
            "--batch-size",
            "20",
            "--epochs",
            "100000",
            *(["--resume"] if signum == signal.SIGTERM else []),
        )
        wait_for_new_checkpoint(path, proc)
        time.sleep(0.1)
        proc.send_signal(signum)
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == code, stderr
        lines = message_lines(stderr)
        assert "Traceback" not in stderr and len(lines) == 1, stderr
        match = re.fullmatch(
            rf"interrupted at epoch (\d+), step (\d+); checkpoint at {re.escape(str(path))}: "
            rf"rerun with --resume --out {re.escape(str(out))}",
            lines[0],
        )
        assert match, stderr
        epoch, step = int(match[1]), int(match[2])
        state = load_checkpoint(path)
        assert state["epoch"] == epoch - 1
        assert state.get("partial", {}).get("step", 0) == step
    final = run(mnist_source, out, "--batch-size", "20", "--epochs", str(epoch), "--resume")
    assert final.returncode == 0, final.stderr
    assert "resumed from" in final.stdout and load_checkpoint(path)["epoch"] == epoch


# ---- resume is exact through the command line ------------------------------------------------

RESUME = [
    "--batch-size",
    "4",
    "--test-every",
    "2",
]  # 500 steps per epoch (a second or more); no evaluation after epoch 1


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory, mnist_source):
    out = tmp_path_factory.mktemp("straight")
    result = run(mnist_source, out, *RESUME, "--epochs", "2")
    assert result.returncode == 0, result.stderr
    return load_checkpoint(out / "checkpoint.pt")


def test_cli_one_epoch_then_resume_equals_two_straight_epochs(tmp_path, mnist_source, straight_run):
    first = run(mnist_source, tmp_path, *RESUME, "--epochs", "1")
    assert first.returncode == 0, first.stderr
    second = run(mnist_source, tmp_path, *RESUME, "--epochs", "2", "--resume")
    assert second.returncode == 0, second.stderr
    same_run(straight_run, load_checkpoint(tmp_path / "checkpoint.pt"))


def test_cli_sigint_mid_epoch_then_resume_equals_two_straight_epochs(tmp_path, mnist_source, straight_run):
    proc = start(mnist_source, tmp_path, *RESUME, "--epochs", "2")
    for line in proc.stdout:  # "model: ..." is the last line before training starts
        if line.startswith("model:"):
            break
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    match = re.match(r"interrupted at epoch (\d+), step (\d+);", message_lines(stderr)[0])
    assert match and int(match[2]) > 0, stderr  # inside an epoch, not between two
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["version"] == 3 and state["partial"]["step"] == int(match[2])

    resumed = run(mnist_source, tmp_path, *RESUME, "--epochs", "2", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert f"(+ {match[2]} steps of epoch {match[1]})" in resumed.stdout
    final = load_checkpoint(tmp_path / "checkpoint.pt")
    assert final["version"] == 3 and "partial" not in final
    same_run(straight_run, final)


def test_cvae_example_stops_on_sigint_with_its_checkpoint_and_resumes_from_it(tmp_path, mnist_source):
    """examples/cvae.py trains through the Trainer: Ctrl-C writes the network's checkpoint, exits
    130 with one line saying where it is, and --resume continues from that epoch."""
    cvae = EXAMPLE.parent / "cvae.py"
    data = ["--data-dir", mnist_source] if mnist_source else []
    args = [
        sys.executable,
        str(cvae),
        *data,
        "--no-download",
        "--no-progress",
        "--quadrants",
        "1",
        "--train-size",
        "500",
        "--test-size",
        "50",
        "--epochs",
        "5000",
        "--z-dim",
        "2",
        "--hidden",
        "16",
        "--samples",
        "2",
        "--out",
        str(tmp_path / "run"),
    ]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_new_checkpoint(tmp_path / "run" / "baseline_1.pt", proc)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    (line,) = message_lines(stderr)
    match = re.fullmatch(
        rf"interrupted at epoch (\d+), step (\d+); checkpoint at {tmp_path}/run/baseline_1\.pt: "
        r"rerun with --resume",
        line,
    )
    assert match, line
    saved = load_checkpoint(tmp_path / "run" / "baseline_1.pt")
    assert saved["epoch"] == int(match[1]) - 1 and (saved.get("partial") or {"step": 0})["step"] == int(match[2])
    args[args.index("5000")] = str(saved["epoch"] + 1)  # resumed: one more epoch for each network
    done = subprocess.run([*args, "--resume"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["table"]["1"]["baseline"]["epochs"] == saved["epoch"] + 1
