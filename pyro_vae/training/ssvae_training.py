r"""Training M2 (:mod:`pyro_vae.models.ssvae`) on partly labelled data: the class-balanced labelled
subset drawn with a recorded seed (:func:`labelled_split`), and SVI that alternates an
unlabelled and a labelled minibatch, each scaled by its own :math:`N/B`, through the
library's checked step (:class:`~pyro_vae.training.step.CheckedStep`, which refuses a
non-finite loss or gradient), checkpointed after every epoch (:mod:`pyro_vae.training.loop_state`).

The epoch reported is the last one, or with ``SSConfig.validation`` the one whose classifier
was most accurate on that many held-out training images (the last ones, never trained on):
the protocol of Pyro's tutorial and of Kingma et al., who both hold out 10,000 of MNIST's
60,000 training images. Only those images' labels pick the epoch; the test set never does.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

import pyro
import torch

from pyro_vae.data.images import MNISTData, balanced_prefix, binarize, check_binarization, shift_images
from pyro_vae.errors import ConfigError, NonFiniteError, check_count, check_positive, check_seed
from pyro_vae.training.loop_state import LoopState, resume_or_start, save_loop
from pyro_vae.models.ssvae import SSVAE, SSObjective
from pyro_vae.training.step import CheckedStep, NonFiniteStep

#: Seed of the labelled subset's draw when none is given: the same labels on every run.
LABEL_SEED = 20141201


def check_num_labels(num_labels: int, num_train: int, validation: int = 0) -> None:
    """Refuse a labelled count that is not a positive integer below the number of training
    images left after ``validation`` are held out (M2 needs unlabelled images too), and a
    ``validation`` count that is negative or leaves no training image.

    :raises ConfigError: naming ``num_labels`` and ``train_size`` (and ``validation``, if any).
    """
    check_positive("num_labels", num_labels, example=100)
    if check_count("validation", validation, example=10000):
        if validation >= num_train:
            raise ConfigError(f"validation={validation} held-out images asked of {num_train} training images; "
                              f"pass fewer (e.g. {num_train // 6}) or 0 for none", settings=("validation",))
    left = num_train - validation
    if num_labels >= left:
        held = f" after holding out validation={validation}" if validation else ""
        raise ConfigError(f"num_labels={num_labels} labelled images asked of a training set of {left}{held}; "
                          f"pass num_labels below {left} (or a larger train_size"
                          f"{', or a smaller validation' if validation else ''})",
                          settings=("num_labels", "train_size") + (("validation",) if validation else ()))


def labelled_split(labels: torch.Tensor, num_labels: int, seed: int = LABEL_SEED) -> Tuple[torch.Tensor, torch.Tensor]:
    """Indices ``(labelled, unlabelled)`` of a training set: ``num_labels`` class-balanced
    labelled ones (:func:`~pyro_vae.data.images.balanced_prefix` of a permutation drawn with ``seed``
    by a private generator), the rest unlabelled.

    :raises ConfigError: ``num_labels`` not a positive integer, or not smaller than the training set.
    """
    check_num_labels(num_labels, len(labels))
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    chosen = order[balanced_prefix(labels[order], num_labels)]
    mask = torch.zeros(len(labels), dtype=torch.bool)
    mask[chosen] = True
    return chosen.sort().values, (~mask).nonzero().flatten()


@dataclass(frozen=True)
class SSConfig:
    """Settings of :func:`train_ssvae`, checked when made: each bad value raises
    :class:`~pyro_vae.errors.ConfigError` naming its setting.

    ``num_labels`` and ``validation`` are checked against the data by :func:`train_ssvae`.
    """

    num_labels: int = 100
    epochs: int = 10
    batch_size: int = 100
    lr: float = 1e-3
    binarize: str = "dynamic"
    seed: int = 0
    label_seed: int = LABEL_SEED
    #: training images held out (the last ones) whose labels pick the epoch reported; 0: none,
    #: train on all and report the last epoch
    validation: int = 0
    #: from this epoch on, the model scored (and kept, if picked) after each epoch is the running
    #: mean of the weights at the ends of the epochs since (stochastic weight averaging); 0: never.
    #: A resumed run may set it, to an epoch after the checkpoint's.
    average_from: int = 0
    #: each labelled digit is shown translated by a random -k..k pixels along each axis, drawn
    #: afresh every step (data augmentation of the few labels: the classifier cannot memorize
    #: their exact pixels); 0: never. The unlabelled digits are never shifted.
    shift_labelled: int = 0

    def __post_init__(self) -> None:
        check_positive("num_labels", self.num_labels, example=100)
        check_positive("epochs", self.epochs, example=10)
        check_positive("batch_size", self.batch_size, example=100)
        object.__setattr__(self, "lr", float(check_positive("lr", self.lr, float, 1e-3)))
        check_binarization(self.binarize)
        check_seed("seed", self.seed)
        check_seed("label_seed", self.label_seed)
        check_count("validation", self.validation, example=10000)
        check_count("average_from", self.average_from, example=90)
        check_count("shift_labelled", self.shift_labelled, example=2)
        if self.shift_labelled > 14:
            raise ConfigError(f"shift_labelled={self.shift_labelled} would move a 28x28 digit out of its frame; "
                              f"pass at most a few pixels (e.g. 2)", settings=("shift_labelled",))


@dataclass
class SSRun:
    """What :func:`train_ssvae` measured: the labelled indices used, the per-epoch record and
    the epoch reported (:attr:`reported`)."""

    config: SSConfig
    labelled: List[int]
    labelled_class_counts: List[int]
    history: List[Dict[str, float]] = field(default_factory=list)
    #: the epoch of the highest validation accuracy (the first, on a tie); ``None`` without validation
    best_epoch: Optional[int] = None

    @property
    def reported(self) -> Dict[str, float]:
        """The record of the epoch reported: the best on validation if held out, else the last."""
        return self.history[self.best_epoch - 1] if self.best_epoch is not None else self.history[-1]

    def as_dict(self) -> Dict[str, Any]:
        return {"config": asdict(self.config), "labelled_indices": self.labelled,
                "labelled_class_counts": self.labelled_class_counts, "best_epoch": self.best_epoch,
                "history": self.history}


def _scores(ssvae: SSVAE, data: MNISTData, held: Optional[Tuple[torch.Tensor, torch.Tensor]],
            prefix: str = "") -> Dict[str, float]:
    """The accuracy of :math:`q_\\phi(y|x)` on the test set and, if any, the held-out images."""
    scores = {f"{prefix}test_accuracy": ssvae.accuracy(data.test_images, data.test_labels)}
    if held is not None:
        scores[f"{prefix}validation_accuracy"] = ssvae.accuracy(*held)
    return scores


def _check_average_from(average_from: int, state: LoopState) -> None:
    """A resumed run keeps the averaging it began, and cannot begin one in its past."""
    began = state.position.get("average_from")
    if began is not None and average_from != began:
        raise ConfigError(f"average_from={average_from}, but the checkpoint has averaged the weights since epoch "
                          f"{began}; pass average_from={began}", settings=("average_from",))
    if began is None and 0 < average_from <= state.epoch:
        raise ConfigError(f"average_from={average_from} is not after the checkpoint's epoch {state.epoch}, whose "
                          f"earlier weights are gone; pass average_from={state.epoch + 1} or later",
                          settings=("average_from",))


def train_ssvae(ssvae: SSVAE, data: MNISTData, config: SSConfig,
                on_epoch: Optional[Callable[[Dict[str, float]], None]] = None,
                on_step: Optional[Callable[[int], None]] = None, max_steps: Optional[int] = None,
                checkpoint: Optional[str] = None, resume: bool = False) -> SSRun:
    r"""Train M2 on ``data``'s training half with ``config.num_labels`` labels, alternating an
    unlabelled and a labelled minibatch, each through one :class:`~pyro_vae.training.step.CheckedStep` (Adam, the finite
    guard); an epoch is one pass over the larger of the two sets (the smaller one is reshuffled
    and reused). The test accuracy of :math:`q_\phi(y|x)` and the epoch's seconds are recorded after every epoch,
    and with ``config.validation`` the accuracy on the held-out images; the model then ends with
    the weights of its best epoch on them (kept across resume; the checkpoint holds the last).
    From epoch ``config.average_from`` on, the weights scored and kept are the running mean of
    the weights at the ends of the epochs since (:meth:`~pyro_vae.training.loop_state.LoopState.add_to_average`;
    the record's ``averaged_epochs`` counts them, and its ``unaveraged_*`` accuracies are the last
    weights'); a run without held-out images then ends with the mean. With ``config.shift_labelled``
    each labelled digit is translated by a fresh random offset at every step
    (:func:`~pyro_vae.data.images.shift_images`), before its binarization.

    :param on_epoch: called with each epoch's record.
    :param on_step: called after every step with its number.
    :param max_steps: stop after this many steps (for short runs); ``None`` runs every epoch.
    :param checkpoint: a file written after every epoch (:mod:`pyro_vae.training.loop_state`).
    :param resume: continue from ``checkpoint`` if it exists, exactly as if never stopped
        (``config.epochs`` may be raised to train a finished run further, ``config.lr`` changed
        to continue at another rate, ``config.average_from`` set to an epoch still to come).
    :raises pyro_vae.errors.NonFiniteError: on a non-finite loss or gradient (parameters untouched).
    :raises pyro_vae.errors.CheckpointError: ``checkpoint`` written with other settings.
    :raises pyro_vae.errors.ConfigError: too many labels or held-out images for the training set,
        ``max_steps`` not a positive integer, ``binarize='none'`` for a model without ``grey_targets``,
        or an ``average_from`` the checkpoint contradicts (its averaging began at another epoch, or
        the epoch is past).
    """

    if max_steps is not None:
        check_positive("max_steps", max_steps, example=300)
    if config.binarize == "none" and not ssvae.grey_targets:
        raise ConfigError("binarize='none' trains on grey levels, which this SSVAE's Bernoulli refuses; pass "
                          "binarize='dynamic', or build SSVAE(grey_targets=True) for Pyro's tutorial's cross-entropy",
                          settings=("binarize",))
    torch.manual_seed(config.seed)
    pyro.set_rng_seed(config.seed)
    check_num_labels(config.num_labels, len(data.train_labels), config.validation)
    images, labels, held = data.train_images, data.train_labels, None
    if config.validation:
        held = images[-config.validation:], labels[-config.validation:]
        images, labels = images[:-config.validation], labels[:-config.validation]
    labelled, unlabelled = labelled_split(labels, config.num_labels, config.label_seed)
    x_l, y_l = images[labelled], labels[labelled]
    x_u = images[unlabelled]
    n_l, n_u = len(x_l), len(x_u)
    b_l, b_u = min(config.batch_size, n_l), min(config.batch_size, n_u)
    objective = SSObjective(ssvae)
    step = CheckedStep(objective, objective.module, lr=config.lr, module=ssvae)
    gen = torch.Generator().manual_seed(config.seed)
    run = SSRun(config, labelled.tolist(), torch.bincount(y_l, minlength=ssvae.num_classes).tolist())
    state = resume_or_start(checkpoint, resume, ssvae, ssvae.config, config, step.optimizer, gen)
    run.history = state.history
    _check_average_from(config.average_from, state)
    if not state.position:
        state.position = {"labelled_order": torch.randperm(n_l, generator=gen), "labelled_next": 0}
    pos = state.position
    for epoch in range(state.epoch + 1, config.epochs + 1):
        if max_steps is not None and state.steps >= max_steps:
            break
        began = time.perf_counter()
        u_perm = torch.randperm(n_u, generator=gen)
        totals = {"loss_unlabelled": 0.0, "loss_labelled": 0.0}
        num_batches = max(n_u // b_u, n_l // b_l)  # a pass over the larger of the two sets
        for i in range(num_batches):
            if (i + 1) * b_u > len(u_perm):
                u_perm = torch.cat([u_perm, torch.randperm(n_u, generator=gen)])
            xu = binarize(x_u[u_perm[i * b_u:(i + 1) * b_u]], config.binarize, gen)
            if pos["labelled_next"] + b_l > n_l:
                pos["labelled_order"], pos["labelled_next"] = torch.randperm(n_l, generator=gen), 0
            idx = pos["labelled_order"][pos["labelled_next"]:pos["labelled_next"] + b_l]
            pos["labelled_next"] += b_l
            xl = binarize(shift_images(x_l[idx], config.shift_labelled, gen), config.binarize, gen)
            try:
                totals["loss_unlabelled"] += step(xu, n_u)
                totals["loss_labelled"] += step((xl, y_l[idx]), n_l)
            except NonFiniteStep as err:
                raise NonFiniteError(f"training stopped at epoch {epoch}, step {i}: {err.reason}; lower lr",
                                     epoch=epoch, step=i, settings=("lr",)) from err
            state.steps += 1
            if on_step is not None:
                on_step(state.steps)
            if max_steps is not None and state.steps >= max_steps:
                break
        done = i + 1
        record = {"epoch": epoch, "steps": state.steps, "lr": config.lr,
                  "loss_unlabelled": totals["loss_unlabelled"] / done, "loss_labelled": totals["loss_labelled"] / done}
        state.epoch = epoch
        averaging = bool(config.average_from) and epoch >= config.average_from
        if averaging:  # the last weights are scored too, to see what averaging gives
            state.position["average_from"] = config.average_from
            record["averaged_epochs"] = state.add_to_average(ssvae)
            record.update(_scores(ssvae, data, held, prefix="unaveraged_"))
        with state.averaged_weights(ssvae) if averaging else contextlib.nullcontext():
            record.update(_scores(ssvae, data, held))
            if held is not None:
                state.keep_best(ssvae, record["validation_accuracy"], higher_is_better=True)
        record["seconds"] = time.perf_counter() - began
        run.history.append(record)
        if checkpoint is not None:
            save_loop(checkpoint, ssvae, ssvae.config, config, step.optimizer, gen, state)
        if on_epoch is not None:
            on_epoch(record)
    run.best_epoch = state.restore_best(ssvae)
    if run.best_epoch is None and "average" in state.position:  # the last epoch's scores are the mean's
        ssvae.load_state_dict(state.position["average"])
    return run

