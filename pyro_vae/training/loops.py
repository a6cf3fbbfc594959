"""The loops of :class:`~pyro_vae.training.trainer.Trainer`: a pass over the minibatches of an
epoch, and ``fit``'s epochs with their evaluation, checkpoints and callbacks.

Each step of :func:`run_epoch` sets warm-up's KL weight, draws the minibatch of the pass
(:class:`~pyro_vae.training.epochs.EpochPass`) and takes one checked SVI step
(:meth:`Trainer.step <pyro_vae.training.trainer.Trainer.step>`); a signal stops the pass after
the current step, at a position that a checkpoint keeps. :func:`run_fit` repeats epochs until the
target, evaluates, records the history, checkpoints, and calls the callbacks at each point, as
Lightning's fit loop does. The functions are the Trainer's own and use its private parts.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Union

import torch

from pyro_vae.data.batches import Data, Source, as_source
from pyro_vae.errors import DiskFullError, TrainingInterrupted, check_positive
from pyro_vae.training import distributed as dist_util
from pyro_vae.training.callbacks import CallbackList
from pyro_vae.training.diagnosis import diagnose_parts, non_finite_error
from pyro_vae.training.epochs import EpochPass
from pyro_vae.training.step import NonFiniteStep

if TYPE_CHECKING:
    from pyro_vae.training.trainer import Trainer


def run_epoch(trainer: "Trainer", data: Union[Data, Source], batch_size: int, hooks: CallbackList) -> float:
    """One pass of ``trainer`` over ``data`` (or the rest of a pass a signal stopped); the mean
    training objective per datapoint."""
    check_positive("batch_size", batch_size, int, 128)
    source = as_source(data, "training data").to(trainer.device)
    num_data = trainer.num_data = source.num_data
    dist_util.check_shards(num_data, batch_size, trainer.world_size)
    if trainer.position is None:
        epoch_pass = EpochPass.start(trainer.config.seed, trainer.epoch + 1, num_data, batch_size, trainer.device)
    else:  # continue the pass that a signal stopped, from its next step
        epoch_pass = EpochPass.from_state(trainer.position, num_data, batch_size, trainer.device)
        trainer.position = None
    batches = epoch_pass.batches
    if trainer.objective.jit:  # every (shard) size this pass uses: the batch and the last, smaller one
        sizes = sorted({len(range(trainer.rank, len(b), trainer.world_size)) for b in (batches[0], batches[-1])})
        trainer.objective.compile_for(
            lambda b: epoch_pass.warmup_batch(source, trainer.transform, b),
            trainer.program.num_data_arg(num_data),
            sizes,
            trainer.step_fn.zero_grads,
        )
    trainer.program.module.train()
    hooks.on_epoch_start(trainer, len(batches), epoch_pass.step)
    try:
        for step in range(epoch_pass.step, len(batches)):
            _train_step(trainer, source, batches[step], epoch_pass, step)
            hooks.on_step_end(trainer, step, epoch_pass.last_loss)
            if trainer.stop.signum is not None and step + 1 < len(batches):
                trainer.position = epoch_pass.state()
                raise TrainingInterrupted(trainer.stop.signum, trainer.epoch + 1, step + 1, None)
    finally:
        hooks.on_pass_end(trainer)
    trainer.epoch += 1
    return -epoch_pass.total / num_data


def _train_step(trainer: "Trainer", source: Source, idx: torch.Tensor, epoch_pass: EpochPass, step: int) -> None:
    """Step ``step`` of ``epoch_pass``: warm-up's KL weight, the batch, the checked step."""
    config, num_data = trainer.config, epoch_pass.num_data
    if config.kl_warmup:
        trainer.set_beta(config.warmed_beta(trainer.epoch + step / epoch_pass.num_steps))
    batch, weight = epoch_pass.batch(idx, source, trainer.transform, trainer.rank, trainer.world_size)
    noise = torch.get_rng_state()  # ~1 us; lets a diagnosis replay the step's draws
    try:
        loss = trainer.step(batch, num_data, weight)
    except NonFiniteStep as err:
        term, detail = diagnose_parts(trainer.program, batch, num_data, noise, config.analytic_kl)
        raise non_finite_error(
            err.reason, term, detail, trainer.epoch + 1, step, trainer.last_checkpoint, trainer.checkpoint_path
        ) from err.__cause__
    epoch_pass.record(step, loss * len(idx) / num_data, loss)


def run_fit(
    trainer: "Trainer",
    train: Data,
    test: Optional[Data],
    epochs: int,
    batch_size: int,
    test_every: int,
    checkpoint: Optional[str],
    hooks: CallbackList,
) -> List[Dict[str, float]]:
    """``trainer``'s epochs until ``trainer.epoch == epochs`` or a callback stops it; its history."""
    trainer.checkpoint_path, trainer.target_epochs = checkpoint, epochs
    hooks.load_state_dict(trainer.callback_states)
    trainer.hooks, trainer.should_stop = hooks, False
    with trainer.stop:  # a signal during the checks below stops after the first step
        source = trainer.check_data(train, "training data").to(trainer.device)  # once, not per batch
        first = torch.arange(min(batch_size, source.num_data), device=trainer.device)
        trainer._check_model(
            trainer.transform.train(source.take(first), torch.Generator(trainer.device).manual_seed(0)),
            source.num_data,
        )
        trainer.test_source = as_source(trainer.prepare_test(test)) if test is not None else None
        hooks.on_fit_start(trainer)
        error: Optional[BaseException] = None
        try:
            try:
                while trainer.epoch < epochs and not trainer.should_stop:
                    _fit_epoch(trainer, source, batch_size, epochs, test_every, checkpoint, hooks)
            except TrainingInterrupted as stop:
                if checkpoint is not None:
                    trainer._save(checkpoint, hooks)
                raise TrainingInterrupted(stop.signum, stop.epoch, stop.step, checkpoint) from None
        except DiskFullError as err:  # a file of the run could not be written: say what is intact
            error = err.with_checkpoint(trainer.last_checkpoint)
            raise error from None
        except BaseException as err:
            error = err
            raise
        finally:
            hooks.on_fit_end(trainer, error)
            trainer.callback_states, trainer.hooks = {**trainer.callback_states, **hooks.state_dict()}, None
    return trainer.history


def _fit_epoch(
    trainer: "Trainer",
    source: Source,
    batch_size: int,
    epochs: int,
    test_every: int,
    checkpoint: Optional[str],
    hooks: CallbackList,
) -> None:
    """One epoch of ``fit``: the pass, the evaluation when due, the history's record, the checkpoint."""
    start = time.perf_counter()
    train_elbo = run_epoch(trainer, source, batch_size, hooks)
    # an objective that is not an ELBO (M2's adds a classification loss) is not called one
    name = "train_elbo" if getattr(trainer.loss, "is_elbo", True) else "train_objective"
    record: Dict[str, Any] = {
        "epoch": trainer.epoch,
        name: train_elbo,
        "seconds": time.perf_counter() - start,
        "beta": trainer.current_beta,
    }
    if trainer.test_source is not None and (trainer.epoch % test_every == 0 or trainer.epoch == epochs):
        test = trainer.evaluate(trainer.test_source)
        hooks.on_evaluate(trainer, test, trainer.test_data)
        record.update({f"test_{key}": value for key, value in test.items()})
    hooks.on_epoch_metrics(trainer, record)
    trainer.history.append(record)
    hooks.on_epoch_end(trainer, record)
    if checkpoint is not None:
        trainer._save(checkpoint, hooks)
    if trainer.stop.signum is not None:  # arrived during evaluation or the save
        raise TrainingInterrupted(trainer.stop.signum, trainer.epoch + 1, 0, None)
