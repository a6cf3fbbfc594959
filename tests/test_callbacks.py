"""Callbacks: the hooks' order, the built-in ones (progress, log, metrics file) and TensorBoard."""

import dataclasses
import json

import pyro
import pytest
from conftest import assert_same_tensors

from pyro_vae import VAE, Callback, MetricsFile, TrainConfig, Trainer
from pyro_vae.errors import ConfigError, TrainingInterrupted

QUIET = dict(progress=False, log=None)


def make(**settings):
    pyro.set_rng_seed(5)
    return Trainer(VAE(z_dim=3, hidden_dims=(16,)), seed=5, **settings)


class Recorder(Callback):
    def __init__(self):
        self.calls = []

    def on_fit_start(self, trainer):
        self.calls.append(("fit_start",))

    def on_epoch_start(self, trainer, num_steps, first_step):
        self.calls.append(("epoch_start", trainer.epoch + 1, num_steps, first_step))

    def on_step_end(self, trainer, step, loss):
        self.calls.append(("step", step, loss))

    def on_pass_end(self, trainer):
        self.calls.append(("pass_end",))

    def on_evaluate(self, trainer, metrics, test_x):
        self.calls.append(("evaluate", trainer.epoch, metrics["elbo"], test_x.shape[0]))

    def on_epoch_end(self, trainer, record):
        self.calls.append(("epoch_end", record["epoch"]))

    def on_checkpoint(self, trainer, path):
        self.calls.append(("checkpoint", trainer.epoch))

    def on_fit_end(self, trainer, error):
        self.calls.append(("fit_end", type(error).__name__ if error else None))


def test_hooks_run_in_order_with_the_numbers_the_trainer_records(mnist, tmp_path):
    trainer, seen = make(), Recorder()
    history = trainer.fit(
        mnist.train_images[:200],
        mnist.test_images[:50],
        epochs=2,
        batch_size=64,
        test_every=2,
        checkpoint=str(tmp_path / "ck.pt"),
        callbacks=[seen],
        **QUIET,
    )
    kinds = [call[0] for call in seen.calls]
    epoch = ["epoch_start", "step", "step", "step", "step", "pass_end"]
    assert kinds == [
        "fit_start",
        *epoch,
        "epoch_end",
        "checkpoint",
        *epoch,
        "evaluate",
        "epoch_end",
        "checkpoint",
        "fit_end",
    ]
    assert seen.calls[1] == ("epoch_start", 1, 4, 0) and seen.calls[-1] == ("fit_end", None)
    # The step losses are the full-data-scale ones the epoch's mean is made of: 200 images, batches 64,64,64,8.
    losses = [call[2] for call in seen.calls if call[0] == "step"][:4]
    sizes = [64, 64, 64, 8]
    assert -sum(loss * b / 200 for loss, b in zip(losses, sizes)) / 200 == pytest.approx(history[0]["train_elbo"])
    (evaluated,) = [call for call in seen.calls if call[0] == "evaluate"]
    assert evaluated == ("evaluate", 2, history[1]["test_elbo"], 50) and "test_elbo" not in history[0]


def test_fit_end_sees_the_error_that_stops_training(mnist):
    class StopAtOnce(Callback):
        def on_step_end(self, trainer, step, loss):
            trainer.stop.request(2)  # as SIGINT would

    seen = Recorder()
    with pytest.raises(TrainingInterrupted):
        make().fit(mnist.train_images[:200], None, epochs=2, batch_size=64, callbacks=[StopAtOnce(), seen], **QUIET)
    assert [c[0] for c in seen.calls][-2:] == ["pass_end", "fit_end"] and seen.calls[-1][1] == "TrainingInterrupted"


def test_the_console_log_and_progress_bar_are_callbacks(mnist, capsys):
    lines = []
    make().fit(
        mnist.train_images[:128], mnist.test_images[:20], epochs=1, batch_size=64, progress=True, log=lines.append
    )
    (line,) = lines
    assert line.startswith("epoch   1/1  train ELBO") and "test ELBO" in line and "bits/dim" in line


def test_the_metrics_file_holds_the_history_after_every_epoch(mnist, tmp_path):
    path = tmp_path / "metrics.json"
    metrics = MetricsFile(str(path), data="test")

    class ReadBack(Callback):  # runs after MetricsFile: the file already has this epoch
        def on_epoch_end(self, trainer, record):
            assert json.loads(path.read_text())["history"][-1]["epoch"] == record["epoch"]

    trainer = make()
    trainer.fit(mnist.train_images[:128], None, epochs=2, batch_size=64, callbacks=[metrics, ReadBack()], **QUIET)
    metrics.update(test_elbo=-1.5)
    saved = json.loads(path.read_text())
    assert saved["data"] == "test" and saved["epochs"] == 2 and saved["test_elbo"] == -1.5
    assert saved["history"] == json.loads(json.dumps(trainer.history))


def test_tensorboard_logs_the_elbo_its_parts_and_a_reconstruction_grid_without_changing_training(mnist, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from pyro_vae.training.tensorboard import TensorBoard

    train, test = mnist.train_images[:256], mnist.test_images[:40]
    logged = make()  # the trainer seeds the global stream when built: build each just before its fit
    logged.fit(
        train, test, epochs=2, batch_size=64, callbacks=[TensorBoard(str(tmp_path / "tb"), num_images=8)], **QUIET
    )
    plain = make()
    plain.fit(train, test, epochs=2, batch_size=64, **QUIET)
    assert_same_tensors(logged.vae.state_dict(), plain.vae.state_dict())  # the callback drew no training noise
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    for key, name in (("elbo", "test/elbo"), ("recon", "test/recon"), ("kl", "test/kl")):
        values = [e.value for e in events.Scalars(name)]
        assert values == pytest.approx([h[f"test_{key}"] for h in logged.history], rel=1e-6), name
        assert [e.step for e in events.Scalars(name)] == [1, 2]
    assert [e.value for e in events.Scalars("train/objective")] == pytest.approx(
        [h["train_elbo"] for h in logged.history]
    )
    images = events.Images("test/reconstructions")
    assert len(images) == 2 and (images[-1].height, images[-1].width) == (2 * 28, 8 * 28)


def test_train_config_is_validated_frozen_and_diffed():
    config = TrainConfig(lr=3e-4, objective="Trace_ELBO")
    assert config.objective == "elbo" and config.binarize is None  # Pyro's class name, and "the likelihood's"
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.lr = 1.0
    assert config.resolved("dynamic").binarize == "dynamic"
    assert config.resolved("none").binarize == "none"
    assert TrainConfig(binarize="fixed").resolved("dynamic").binarize == "fixed"
    saved = config.resolved("dynamic").settings()
    assert TrainConfig(lr=1e-3, binarize="dynamic", objective="elbo").diff(saved) == {"lr": (3e-4, 1e-3)}
    assert TrainConfig(binarize="dynamic", lr=3e-4, beta=0.5).diff(saved) == {"beta": (1.0, 0.5)}
    for bad, setting in (
        (dict(lr=0), "lr"),
        (dict(binarize="half"), "binarize"),
        (dict(seed=1.5), "seed"),
        (dict(objective="nope"), "objective"),
        (dict(num_particles=0), "num_particles"),
        (dict(kl_warmup=-1), "kl_warmup"),
        (dict(clip_norm=-2.0), "clip_norm"),
        (dict(beta=-1), "beta"),
        (dict(objective="jit_elbo", kl_warmup=2), "kl_warmup"),
    ):
        with pytest.raises(ConfigError) as err:
            TrainConfig(**bad)
        assert setting in err.value.settings, (bad, err.value.settings)


def test_a_trainer_takes_one_config_or_keywords_not_both():
    vae = VAE(z_dim=2, hidden_dims=(8,))
    assert Trainer(vae, config=TrainConfig(lr=0.01)).config.lr == 0.01 == Trainer(vae, lr=0.01).config.lr
    with pytest.raises(ConfigError, match="either as one TrainConfig or by keyword"):
        Trainer(vae, config=TrainConfig(), lr=0.01)
    with pytest.raises(TypeError):
        Trainer(vae, learning_rate=0.01)
