"""NaNs are caught at the source; checkpoints are atomic; a signal stops training at a step
from which a resumed run continues bit-identically (through the API; the command line is
tested in test_interrupts.py)."""

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pyro
import pytest
import torch
from conftest import assert_same_tensors, message_lines

from pyro_vae import VAE, Callback, CheckpointError, Trainer
from pyro_vae.errors import DiskFullError, NonFiniteError, TrainingInterrupted
from pyro_vae.training.checkpoint import load_checkpoint, save_checkpoint

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "mnist_svi.py"

QUIET = dict(progress=False, log=lambda _: None)
# Pyro warns about the NaN before NonFiniteError explains it.
pytestmark = pytest.mark.filterwarnings("ignore:Encountered NaN")


def without_timings(history):
    return [{k: v for k, v in record.items() if k != "seconds"} for record in history]


def make(seed=7, **kwargs):
    pyro.set_rng_seed(seed)  # the seed governs the initial weights too
    return Trainer(VAE(z_dim=5, hidden_dims=(32,)), seed=seed, **kwargs)


def snapshot(trainer):
    return {k: v.detach().clone() for k, v in trainer.vae.state_dict().items()}


class PoisonAt(Callback):
    """Set one decoder weight to ``value`` just before step ``step`` (from 0) of epoch ``epoch``."""

    def __init__(self, epoch, step, value):
        self.epoch, self.step, self.value = epoch, step, value

    def poison(self, trainer, next_step):
        if trainer.epoch + 1 == self.epoch and next_step == self.step:
            with torch.no_grad():
                trainer.vae.decoder[0].weight[0, 0] = self.value

    def on_epoch_start(self, trainer, num_steps, first_step):
        self.poison(trainer, first_step)

    def on_step_end(self, trainer, step, loss):
        self.poison(trainer, step + 1)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_poisoned_decoder_stops_training_at_that_step_naming_the_term_and_checkpoint(mnist, tmp_path, value):
    path = str(tmp_path / "ck.pt")
    trainer = make()
    good = {}

    def log(line):
        if trainer.epoch == 1:
            good.update(snapshot(trainer))

    with pytest.raises(NonFiniteError) as err:
        trainer.fit(
            mnist.train_images[:640],
            None,
            epochs=3,
            batch_size=64,
            checkpoint=path,
            progress=False,
            log=log,
            callbacks=[PoisonAt(epoch=2, step=3, value=value)],
        )
    e = err.value
    assert (e.epoch, e.step, e.term, e.checkpoint, e.checkpoint_epoch) == (2, 3, "reconstruction", path, 1)
    assert isinstance(e, FloatingPointError)  # what code that predates NonFiniteError catches
    message = str(e)
    assert message.startswith("training stopped at epoch 2, step 3: ")
    assert "the reconstruction term E_q[log p(x|z)] is nan" in message and "KL(q(z|x) || p(z)) is finite" in message
    assert f"the last good checkpoint is {path} (epoch 1)" in message and "lower learning rate (lr)" in message
    assert err.value.settings == ("lr", "clip_norm")  # the CLI names its flags for these
    # The checkpoint on disk is still the good one of epoch 1: it loads, and equals it.
    state = load_checkpoint(path)
    assert state["epoch"] == 1 and "partial" not in state
    assert_same_tensors(state["model"], good)
    # The offending step was refused before the optimizer applied it: only the poisoned weight is bad.
    bad = [k for k, v in trainer.vae.state_dict().items() if not torch.isfinite(v).all()]
    assert bad == ["decoder.0.weight"]


def test_a_diverging_learning_rate_stops_with_the_named_error(mnist, tmp_path):
    path = str(tmp_path / "ck.pt")
    trainer = make()
    trainer.fit(mnist.train_images[:640], None, epochs=1, batch_size=64, checkpoint=path, **QUIET)
    good = snapshot(trainer)
    trainer.set_lr(1e8)  # one Adam step moves every weight by about 1e8: the ELBO overflows
    with pytest.raises(
        NonFiniteError, match=r"training stopped at epoch 2, step [12]: the loss is (nan|inf|-inf)"
    ) as err:
        trainer.fit(mnist.train_images[:640], None, epochs=2, batch_size=64, checkpoint=path, **QUIET)
    assert err.value.term in ("reconstruction", "KL", "reconstruction and KL")
    assert f"went bad. Nothing was written after it: the last good checkpoint is {path} (epoch 1)" in str(err.value)
    state = load_checkpoint(path)
    assert state["epoch"] == 1
    assert_same_tensors(state["model"], good)
    resumed = make()
    resumed.resume(path)  # and it resumes
    assert resumed.epoch == 1


def test_without_a_checkpoint_the_error_says_so(mnist):
    trainer = make(lr=1e8)
    with pytest.raises(NonFiniteError, match=r"no checkpoint path was given \(pass checkpoint= to fit\)"):
        trainer.fit(mnist.train_images[:256], None, epochs=2, batch_size=64, **QUIET)


def test_non_finite_weights_are_never_written_over_a_checkpoint(tmp_path):
    trainer = make()
    path = tmp_path / "ck.pt"
    trainer.save(str(path))
    before = path.read_bytes()
    with torch.no_grad():
        trainer.vae.decoder[0].bias[1] = float("nan")
    with pytest.raises(
        NonFiniteError, match=r"refusing to write a checkpoint with non-finite weights \(decoder\.0\.bias\)"
    ):
        trainer.save(str(path))
    assert path.read_bytes() == before


def test_clip_norm_trains_with_clipped_adam_and_is_part_of_the_checkpointed_config(mnist, tmp_path):
    trainer = make(clip_norm=5.0)
    assert isinstance(trainer.optimizer, pyro.optim.clipped_adam.ClippedAdam)
    assert trainer.optimizer.defaults["lr"] == 1e-3 and trainer.optimizer.defaults["clip_norm"] == 5.0
    trainer.fit(mnist.train_images[:256], None, epochs=1, batch_size=64, checkpoint=str(tmp_path / "ck.pt"), **QUIET)
    assert load_checkpoint(tmp_path / "ck.pt")["trainer"]["clip_norm"] == 5.0
    with pytest.raises(CheckpointError, match=r"clip_norm: checkpoint 5\.0 vs now None"):
        make().resume(str(tmp_path / "ck.pt"))
    same = make(clip_norm=5.0)
    same.resume(str(tmp_path / "ck.pt"))
    assert same.epoch == 1 and type(make().optimizer) is torch.optim.Adam


def test_the_grad_check_refuses_a_finite_loss_with_a_non_finite_gradient(mnist):
    """A NaN that reaches the gradient only (a hook on the decoder's output) is caught before Adam's step."""
    trainer = make()
    x = mnist.train_images[:128]
    trainer.fit(x, None, epochs=1, batch_size=64, **QUIET)
    before = snapshot(trainer)
    handle = trainer.vae.decoder[0].weight.register_hook(lambda grad: grad * float("nan"))
    try:
        with pytest.raises(NonFiniteError, match=r"the loss is finite \(.*\) but its gradient norm is not"):
            trainer.fit(x, None, epochs=2, batch_size=64, **QUIET)
    finally:
        handle.remove()
    assert_same_tensors(snapshot(trainer), before)  # no step was taken


# ---- signals and mid-epoch checkpoints ---------------------------------------------------------


class InterruptAfter(Callback):
    """Send ``signum`` to this process right after the ``steps``-th SVI step of a fit."""

    def __init__(self, steps, signum=signal.SIGINT):
        self.steps, self.signum, self.done = steps, signum, 0

    def on_step_end(self, trainer, step, loss):
        self.done += 1
        if self.done == self.steps:
            os.kill(os.getpid(), self.signum)


@pytest.mark.parametrize("signum, steps", [(signal.SIGINT, 13), (signal.SIGTERM, 4), (signal.SIGINT, 10)])
def test_a_signal_mid_epoch_writes_a_checkpoint_that_resumes_bit_identically(mnist, tmp_path, signum, steps):
    """10 steps per epoch: 13 stops in epoch 2 at step 3, 4 in epoch 1, 10 between epochs 1 and 2."""
    train, test = mnist.train_images[:600], mnist.test_images[:200]
    quiet = dict(batch_size=64, **QUIET)
    straight = make()
    straight.fit(train, test, epochs=3, checkpoint=str(tmp_path / "straight.pt"), **quiet)

    path = str(tmp_path / "ck.pt")
    first = make()
    handler = signal.getsignal(signum)
    with pytest.raises(TrainingInterrupted) as err:
        first.fit(train, test, epochs=3, checkpoint=path, callbacks=[InterruptAfter(steps, signum)], **quiet)
    assert signal.getsignal(signum) is handler  # fit restored the previous handler
    epoch, step = divmod(steps, 10)
    stop = err.value
    assert (stop.signum, stop.epoch, stop.step, stop.checkpoint) == (signum, epoch + 1, step, path)
    assert stop.exit_code == 128 + signum
    assert str(stop).startswith(f"interrupted ({signal.Signals(signum).name}) at epoch {epoch + 1}, step {step}; ")
    state = load_checkpoint(path)
    assert state["epoch"] == epoch
    assert (state["version"], state.get("partial", {}).get("step")) == (3, step if step else None)

    resumed = make()
    resumed.resume(path)
    assert resumed.step_in_epoch == step
    resumed.fit(train, test, epochs=3, checkpoint=path, **quiet)
    a, b = load_checkpoint(tmp_path / "straight.pt"), load_checkpoint(path)
    for key in ("model", "optimizer", "rng", "epoch", "version"):
        assert_same_tensors(a[key], b[key], key)
    assert without_timings(a["history"]) == without_timings(b["history"])  # train and test ELBOs too


def test_an_interrupted_trainer_continues_in_memory(mnist):
    train = mnist.train_images[:320]
    straight = make()
    straight.fit(train, None, epochs=2, batch_size=64, **QUIET)
    trainer = make()
    with pytest.raises(TrainingInterrupted, match=r"at epoch 2, step 2; no checkpoint path was given"):
        trainer.fit(train, None, epochs=2, batch_size=64, callbacks=[InterruptAfter(7)], **QUIET)
    trainer.fit(train, None, epochs=2, batch_size=64, **QUIET)
    assert_same_tensors(snapshot(trainer), snapshot(straight))


# ---- the checkpoint file -------------------------------------------------------------------------


def test_checkpoints_are_fsynced_file_then_directory_and_leave_no_temporary_file(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(
        os, "fsync", lambda fd: (synced.append(os.path.realpath(f"/proc/self/fd/{fd}")), real_fsync(fd))
    )
    stale = tmp_path / "ck.pt.abc123.tmp"  # left by a writer that was killed
    stale.write_bytes(b"torn")
    save_checkpoint({"epoch": 3}, tmp_path / "ck.pt")
    assert len(synced) == 2 and synced[0].endswith(".tmp") and synced[1] == str(tmp_path.resolve())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.pt"]
    assert load_checkpoint(tmp_path / "ck.pt")["epoch"] == 3


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    save_checkpoint({"epoch": 1}, tmp_path / "ck.pt")

    def disk_full(obj, f):
        f.write(b"half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(
        DiskFullError,
        match=rf"^could not write {tmp_path}/ck\.pt: no space left on the device "
        rf"\([0-9.]+ [KMG]iB free\); free some space or choose another output "
        rf"directory$",
    ) as err:
        save_checkpoint({"epoch": 2}, tmp_path / "ck.pt")
    assert isinstance(err.value, OSError) and err.value.path == str(tmp_path / "ck.pt")
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "ck.pt")["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]


# ---- a full disk ----------------------------------------------------------------------------------


@contextlib.contextmanager
def small_filesystem(path, size):
    """A real filesystem of ``size`` at ``path`` (tmpfs: needs root, as CI and these machines have)."""
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({mounted.stderr.decode().strip()}): run as root")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


def run_example(out, *options):
    command = [
        sys.executable,
        str(EXAMPLE),
        "--z-dim",
        "2",
        "--hidden",
        "16",
        "--epochs",
        "3",
        "--no-progress",
        "--train-size",
        "1000",
        "--test-size",
        "200",
        "--no-download",
        "--out",
        str(out),
        *options,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=out.parent)


@pytest.mark.integration
def test_a_full_disk_leaves_no_partial_file_and_says_which_checkpoint_is_intact(tmp_path):
    """Room for one checkpoint (about 330 KB) but not for its successor beside it: the epoch-2
    checkpoint cannot be written. One line names that file, the space left and the intact epoch-1
    checkpoint; nothing torn or temporary is left; the run resumes from it."""
    with small_filesystem(tmp_path / "disk", "500k") as disk:
        result = run_example(disk / "run")
        assert result.returncode == 2, result.stderr
        (line,) = message_lines(result.stderr)
        assert re.fullmatch(
            rf"error: could not write {disk}/run/checkpoint\.pt: no space left on the device \([0-9.]+ KiB free\); "
            rf"free some space or choose another output directory; the last good checkpoint, {disk}/run/checkpoint\.pt "
            rf"\(epoch 1\), is intact: resume from it \(command line: --out\)",
            line,
        ), line
        assert sorted(p.name for p in (disk / "run").iterdir()) == ["checkpoint.pt", "metrics.json"]
        assert load_checkpoint(disk / "run" / "checkpoint.pt")["epoch"] == 1
        json.loads((disk / "run" / "metrics.json").read_text())  # whole, not torn
        resumed = run_example(disk / "run", "--resume")  # epochs 2-3 fail the same way, from epoch 1
        assert "resumed from" in resumed.stdout and "(epoch 1), is intact" in resumed.stderr


@pytest.mark.integration
def test_figures_and_the_page_that_do_not_fit_are_said_in_one_line_each_and_leave_nothing(tmp_path):
    """Room for the checkpoint and the metrics but not for every figure and the page: each one
    left out is one line naming its file and the space left, the run finishes, and every file in
    the folder is whole (no temporary file, no truncated page)."""
    with small_filesystem(tmp_path / "disk", "700k") as disk:
        result = run_example(disk / "run")
        assert result.returncode == 0, result.stderr
        left_out = [line for line in result.stdout.splitlines() if "not drawn" in line or "not written" in line]
        assert left_out and all(
            re.fullmatch(
                r"(figure \w+\.png not drawn|explorer\.html not written): could not write "
                rf"{disk}/run/\S+: no space left on the device \([0-9.]+ KiB free\); free "
                r"some space or choose another output directory",
                line,
            )
            for line in left_out
        ), left_out
        record = json.loads((disk / "run" / "metrics.json").read_text())
        expected = {
            "checkpoint.pt",
            "metrics.json",
            *record["figures"].values(),
            *([record["explorer"]] if record["explorer"] else []),
        }
        assert {p.name for p in (disk / "run").iterdir()} == expected
        assert len(record["figures_not_drawn"]) + len(record["figures"]) == 5
        for name in record["figures"].values():  # each figure whole: a PNG that ends with its IEND chunk
            assert (disk / "run" / name).read_bytes()[-8:-4] == b"IEND"
