r"""Fitting a model and guide by stochastic variational inference on the ELBO (seed items 8-10).

Each step draws a minibatch of :math:`B` of the :math:`N` training datapoints and takes an Adam
step on :class:`pyro.infer.Trace_ELBO`'s estimate of :math:`-\mathrm{ELBO}` (or any
:class:`pyro.infer.ELBO`'s), with the plate scaling the batch by :math:`N/B` (seed item 9).
Model :math:`\theta` and guide :math:`\phi` (decoder and encoder, for a VAE) are updated
*jointly* by stochastic gradient ascent -- not by EM (the seed's one slip).

The model and guide are any Pyro program's (:class:`~pyro_vae.training.program.Program`,
``Trainer(model, guide)``), or one of this library's VAEs (``Trainer(vae)``); the data is any
of the forms of :mod:`~pyro_vae.data.batches`.

:class:`Trainer` orchestrates small parts, one concept each:

- :class:`~pyro_vae.training.config.TrainConfig`, the validated settings;
- :class:`~pyro_vae.training.program.Program`, the model and guide, their parameters and checks;
- :mod:`~pyro_vae.data.batches`, the data as minibatches of the model's arguments;
- :class:`~pyro_vae.data.transforms.Binarize`, the data-side binarization of the images;
- :class:`~pyro_vae.training.objective.Objective`, the ELBO with its KL weight and JIT bookkeeping;
- :class:`~pyro_vae.training.step.CheckedStep`, loss and gradients, the finite guard, the optimizer;
- :mod:`~pyro_vae.training.diagnosis`, which names what went non-finite;
- :mod:`~pyro_vae.training.loops`, the epoch's pass over the minibatches and ``fit``'s epochs;
- :class:`~pyro_vae.training.epochs.EpochPass`, the data order and the position in an epoch;
- :mod:`pyro_vae.rng`'s named streams; :class:`~pyro_vae.training.signals.SignalStop`;
- :mod:`~pyro_vae.training.state`, the checkpoint's content; :mod:`pyro_vae.training.distributed`;
- :mod:`~pyro_vae.training.callbacks`, through which training is observed and extended.

Speed: the objective runs as a module whose parameters one fused ``torch.optim.Adam``
steps, rather than :class:`pyro.infer.SVI` with one Adam per parameter; the data is
validated once when training starts instead of by every distribution at every step; and
the param-store registration that only SVI needs is skipped (``bench/step.py`` measures
each lever; ``validate=True`` turns per-step validation back on).
"""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple, Union, cast

import pyro
import torch

from pyro_vae.data.batches import Batch, Data, Source, as_source
from pyro_vae.data.transforms import Binarize, Transform
from pyro_vae.errors import ConfigError, check_positive
from pyro_vae.rng import latent_noise_seed
from pyro_vae.training import distributed as dist_util
from pyro_vae.training import loops
from pyro_vae.training import state as training_state
from pyro_vae.training.callbacks import Callback, CallbackList, ConsoleLog, ProgressBar
from pyro_vae.training.checkpoint import check_writable_dir, load_checkpoint, save_checkpoint
from pyro_vae.training.config import TrainConfig
from pyro_vae.training.evaluation import test_elbo
from pyro_vae.training.objective import Objective
from pyro_vae.training.program import Program, as_program
from pyro_vae.training.signals import SignalStop
from pyro_vae.training.step import CheckedStep


def _one_config(guide: Any, config: Optional[TrainConfig], settings: Dict[str, Any]) -> TrainConfig:
    """The settings given to :class:`Trainer`: one TrainConfig, or keywords, never both."""
    if isinstance(guide, TrainConfig):
        raise ConfigError(
            "the second argument of Trainer is the guide; pass the settings as "
            "Trainer(vae, config=TrainConfig(...)) or by keyword"
        )
    if config is not None and settings:
        raise ConfigError(
            f"give the settings either as one TrainConfig or by keyword, not both (got a config and {sorted(settings)})"
        )
    return config if config is not None else TrainConfig(**settings)


class Trainer:
    """SVI for a model and guide: epochs, evaluation, history, checkpoints and callbacks.

    ``Trainer(model, guide, lr=3e-4)`` trains any Pyro model and guide that take the same
    arguments (:class:`~pyro_vae.training.program.Program`); ``Trainer(vae)`` one of this
    library's VAEs, behind its door and guide contract. The settings are those of
    :class:`~pyro_vae.training.config.TrainConfig`, by keyword or as ``config=``; ``transform``
    is done to every batch before its step (:mod:`pyro_vae.data.transforms`). With
    ``distributed=True`` the loss module is wrapped in
    :class:`~torch.nn.parallel.DistributedDataParallel`, every process trains on its shard
    of each global minibatch, metrics are reduced over processes and only rank 0 writes.
    """

    def __init__(
        self,
        model: Any,
        guide: Optional[Callable[..., Any]] = None,
        config: Optional[TrainConfig] = None,
        transform: Optional[Transform] = None,
        **settings: Any,
    ) -> None:
        config = _one_config(guide, config, settings)
        #: The model and guide being trained.
        self.program: Program = as_program(model, guide)
        #: The run's settings, ``binarize`` resolved for the program (none where a transform is given).
        self.config = config.resolved(self.program.natural_binarization if transform is None else "none")
        #: What is done to every batch before its step (:mod:`pyro_vae.data.transforms`).
        # resolved() gave binarize a value
        self.transform: Transform = transform if transform is not None else Binarize(cast(str, self.config.binarize))
        if transform is not None and self.config.binarize != "none":
            raise ConfigError(
                f"binarize={self.config.binarize!r} and a transform were both given; binarize in "
                f"the transform (pyro_vae.data.transforms.Binarize) or pass binarize='none'",
                settings=("binarize",),
            )
        self.objective = Objective(self.program, self.config)
        self.rank, self.world_size = 0, 1
        #: Asks training to stop cleanly (SIGINT/SIGTERM inside :meth:`fit`).
        self.stop = SignalStop()
        loss_fn: Callable[..., torch.Tensor] = self.objective.module
        agree = None
        if self.config.distributed:
            loss_fn, agree, self.rank, self.world_size = dist_util.data_parallel(
                self.objective.module, self.objective.elbo, self.stop, self.device
            )
        self.step_fn = CheckedStep(
            self.objective, loss_fn, self.config.lr, self.config.clip_norm, self.config.validate, agree
        )
        self.epoch = 0
        self.history: List[Dict[str, float]] = []
        #: The last :meth:`evaluate` result.
        self.last_evaluation: Optional[Dict[str, float]] = None
        #: The held-out data the fit in progress evaluates, prepared (:meth:`prepare_test`).
        self.test_source: Optional[Source] = None
        #: ``(checkpoint's lr, this trainer's lr)`` when :meth:`resume` changed the rate, else None.
        self.lr_changed_on_resume: Optional[Tuple[float, float]] = None
        #: (path, epoch, step) of the last checkpoint written or resumed from.
        self.last_checkpoint: Optional[Tuple[str, int, int]] = None
        #: Where a stopped epoch continues (:meth:`.EpochPass.state`): None at an epoch boundary.
        self.position: Optional[Dict[str, Any]] = None
        #: A checkpoint's param-store-only parameters, written back before the next step.
        self.pending_param_store: Optional[Dict[str, Any]] = None
        #: The callbacks' states (:meth:`.Callback.state_dict`): a checkpoint's, or the last fit's.
        self.callback_states: Dict[str, Any] = {}
        #: Set by a callback (early stopping) to end :meth:`fit` after the current epoch.
        self.should_stop = False
        self.hooks: Optional[CallbackList] = None  # of the fit in progress
        self.num_data = 0  # of the pass in progress
        self.target_epochs = 0  # of the fit in progress
        #: The checkpoint the fit in progress writes.
        self.checkpoint_path: Optional[str] = None
        self._model_checked = False
        pyro.set_rng_seed(self.config.seed)
        if self.world_size > 1:  # each process draws its own latent noise
            torch.manual_seed(latent_noise_seed(self.config.seed, self.rank))

    # ---- views of the parts ----------------------------------------------------------------

    @property
    def vae(self) -> Any:
        """The VAE of ``Trainer(vae)``; None for another model and guide."""
        return getattr(self.program, "vae", None)

    @property
    def loss(self) -> Any:
        """The :class:`pyro.infer.ELBO` instance being optimized."""
        return self.objective.elbo

    @property
    def loss_module(self) -> torch.nn.Module:
        return self.objective.module

    @property
    def optimizer(self) -> Optional[torch.optim.Optimizer]:
        """Adam over the program's module parameters (the ones checkpoints save); None if it has none."""
        return self.step_fn.optimizer

    @property
    def current_beta(self) -> float:
        return self.objective.beta

    @property
    def device(self) -> torch.device:
        param = next(self.program.module.parameters(), None)
        return param.device if param is not None else torch.device("cpu")

    @property
    def step_in_epoch(self) -> int:
        """Steps already taken in epoch ``self.epoch + 1`` (non-zero only after a signal)."""
        return 0 if self.position is None else int(self.position["step"])

    @property
    def test_data(self) -> Any:
        """The held-out data :meth:`fit` evaluates, prepared (binarized once): a tensor where it
        was given as one."""
        return None if self.test_source is None else self.test_source.data

    def set_lr(self, lr: float) -> None:
        """Change Adam's learning rate for the next steps (for schedules such as Burda et al.'s);
        ``config.lr`` stays the base rate, the current one lives in Adam's (checkpointed) state."""
        self.step_fn.set_lr(check_positive("lr", lr, float, 1e-3))

    def set_beta(self, beta: float) -> None:
        """Set the KL weight the next steps use (KL warm-up calls this every step)."""
        self.objective.set_beta(beta)

    # ---- data ----------------------------------------------------------------------------

    def check_data(self, data: Data, what: str) -> Source:
        """``data`` as a source of minibatches (:func:`~pyro_vae.data.batches.as_source`),
        checked by the program (:meth:`Program.prepare <pyro_vae.training.program.Program.prepare>`):
        a VAE's images flattened, NaN/out-of-range pixels refused."""
        source = as_source(data, what)
        mode = self.config.binarize if isinstance(self.transform, Binarize) else None  # None: the transform's affair
        return source.map(lambda batch: self.program.prepare(batch, what, mode))

    def prepare_test(self, data: Data) -> Any:
        """The evaluation copy of held-out ``data``: checked and binarized once, with a fixed seed
        if dynamic (:meth:`Binarize.evaluation <pyro_vae.data.transforms.Binarize.evaluation>`);
        a tensor where ``data`` is one."""
        return self.transform.evaluation(self.check_data(data, "test data")).to(self.device).data

    @torch.no_grad()
    def evaluate(self, data: Union[Data, Source], batch_size: int = 1000) -> Dict[str, float]:
        """Per-datapoint ELBO and its parts on prepared held-out data (:meth:`prepare_test`); see
        :func:`pyro_vae.training.evaluation.test_elbo`."""
        self.last_evaluation = test_elbo(
            self.program,
            as_source(data, "test data"),
            self.config,
            self.rank,
            self.world_size,
            self.objective.skip_registration,
            batch_size,
        )
        return self.last_evaluation

    # ---- training --------------------------------------------------------------------------

    def step(self, batch: Any, num_data: int, weight: float = 1.0) -> float:
        """One checked SVI step on ``batch`` (valid data: a tensor or a
        :class:`~pyro_vae.data.batches.Batch`; this process's shard when distributed) of a
        training set of ``num_data`` datapoints (:class:`~pyro_vae.training.step.CheckedStep`);
        returns the loss at the full-data scale."""
        batch = Batch((batch,), {}) if isinstance(batch, torch.Tensor) else batch
        if not self._model_checked:  # here, not inside a JIT trace or DDP's forward
            self._check_model(batch, num_data)
        n = self.program.num_data_arg(num_data)
        self.objective.compile_for(lambda b: batch.select(slice(0, b)), n, [batch.size], self.step_fn.zero_grads)
        self.objective.claim_param_store(batch, n)
        if self.pending_param_store is not None:  # resumed: restore the param store first
            saved, self.pending_param_store = self.pending_param_store, None
            self.step_fn.restore_extra_params(saved, batch, n)
        return self.step_fn(batch, n, weight)

    def _check_model(self, batch: Batch, num_data: int) -> None:
        """Once, before any step, on the first minibatch: the program's checks (a VAE's guide
        contract, on its own RNG stream) and whether the objective suits the model."""
        self.program.check(batch, num_data)
        self.objective.check_model(batch.select(slice(0, 2)))
        self._model_checked = True

    def train_epoch(
        self, data: Union[Data, Source], batch_size: int = 128, callbacks: Union[Iterable[Callback], CallbackList] = ()
    ) -> float:
        """One pass over valid ``data`` (:meth:`check_data`) in shuffled minibatches (or the rest of
        a pass that a signal stopped); returns the mean training objective per datapoint
        (:func:`pyro_vae.training.loops.run_epoch`).

        :raises NonFiniteError: at the first non-finite loss or gradient, before the optimizer applies it.
        """
        hooks = callbacks if isinstance(callbacks, CallbackList) else CallbackList(callbacks)
        return loops.run_epoch(self, data, batch_size, hooks)

    def fit(
        self,
        train: Data,
        test: Optional[Data],
        epochs: int,
        batch_size: int = 128,
        test_every: int = 1,
        checkpoint: Optional[str] = None,
        progress: bool = True,
        log: Optional[Callable[[str], None]] = print,
        callbacks: Iterable[Callback] = (),
    ) -> List[Dict[str, float]]:
        """Train on ``train`` until ``self.epoch == epochs`` (so a resumed trainer continues),
        evaluating the held-out ``test`` every ``test_every`` epochs and at the end, checkpointing
        after every epoch (:func:`pyro_vae.training.loops.run_fit`). Data in any form of
        :mod:`~pyro_vae.data.batches`. ``progress`` and ``log`` add the
        :class:`~.callbacks.ProgressBar` and :class:`~.callbacks.ConsoleLog` callbacks before
        ``callbacks``.

        :raises TrainingInterrupted: on SIGINT or SIGTERM, after the current step and a checkpoint
            (mid-epoch if need be) that :meth:`resume` continues exactly.
        :raises NonFiniteError: on a non-finite loss or gradient (see :meth:`train_epoch`).
        """
        check_positive("epochs", epochs, int, 10)
        check_positive("test_every", test_every, int, 1)
        check_positive("batch_size", batch_size, int, 128)
        if checkpoint is not None:
            check_writable_dir(os.path.dirname(os.path.abspath(checkpoint)), "checkpoint directory")
        hooks = CallbackList([*([ProgressBar()] if progress else []), *([ConsoleLog(log)] if log else []), *callbacks])
        return loops.run_fit(self, train, test, epochs, batch_size, test_every, checkpoint, hooks)

    # ---- checkpoints -----------------------------------------------------------------------

    def state_dict(self) -> Dict[str, Any]:
        """Everything a resumed run needs to continue bit-identically (:mod:`~pyro_vae.training.state`)."""
        return training_state.state_dict(self)

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Continue the run ``state`` holds; every setting must match it except ``lr``: a trainer
        built with another rate continues at that rate (to retry a run that diverged, say) and
        records the change in :attr:`lr_changed_on_resume`."""
        saved_lr = training_state.load_state_dict(self, state)
        self.lr_changed_on_resume = None if saved_lr is None else (saved_lr, self.config.lr)

    def save(self, path: str) -> None:
        """Write a checkpoint atomically; refuse to replace a good one with non-finite weights."""
        training_state.refuse_non_finite_weights(self, path)
        state = self.state_dict()  # on every process: it gathers their RNG states
        if self.rank == 0:
            save_checkpoint(state, path)
        self.last_checkpoint = (str(path), self.epoch, self.step_in_epoch)

    def _save(self, path: str, hooks: Callback) -> None:
        self.save(path)
        hooks.on_checkpoint(self, path)

    def resume(self, path: str) -> None:
        """Continue from the checkpoint at ``path``, written by :meth:`save` for the same config."""
        self.load_state_dict(load_checkpoint(path))
        self.last_checkpoint = (str(path), self.epoch, self.step_in_epoch)
