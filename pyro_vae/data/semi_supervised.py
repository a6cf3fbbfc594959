r"""Partly labelled data, as semi-supervised training (M2, :mod:`pyro_vae.models.ssvae`) reads it.

A training set of images is split into a small class-balanced labelled subset, drawn with a
recorded seed (:func:`labelled_split`), and the unlabelled rest. The
:class:`~pyro_vae.training.trainer.Trainer` passes over the *unlabelled* images in its own
seeded order; :class:`LabelledBatches`, a data-side transform (:mod:`pyro_vae.data.transforms`),
sets beside each unlabelled minibatch a minibatch of labelled images, so that one step sees both
and each part is scaled by its own :math:`N/B`. The labelled minibatch is drawn without
replacement from the labelled set at every step, from the epoch's own random stream: a resumed run
draws the same ones, and every labelled image is seen equally often in expectation.
"""

from __future__ import annotations

import hashlib
from typing import Any, Dict, Tuple

import torch

from pyro_vae.data.batches import Batch, Source
from pyro_vae.data.images import balanced_prefix, binarize, check_binarization, check_pixels, shift_images
from pyro_vae.errors import ConfigError, InvalidDataError, check_count, check_positive, check_seed

#: Seed of the labelled subset's draw when none is given: the same labels on every run.
LABEL_SEED = 20141201


def check_num_labels(num_labels: int, num_train: int, validation: int = 0) -> None:
    """Refuse a labelled count that is not a positive integer below the number of training
    images left after ``validation`` are held out (semi-supervised training needs unlabelled
    images too), and a ``validation`` count that is negative or leaves no training image.

    :raises ConfigError: naming ``num_labels`` and ``train_size`` (and ``validation``, if any).
    """
    check_positive("num_labels", num_labels, example=100)
    if check_count("validation", validation, example=10000):
        if validation >= num_train:
            raise ConfigError(
                f"validation={validation} held-out images asked of {num_train} training images; "
                f"pass fewer (e.g. {num_train // 6}) or 0 for none",
                settings=("validation",),
            )
    left = num_train - validation
    if num_labels >= left:
        held = f" after holding out validation={validation}" if validation else ""
        raise ConfigError(
            f"num_labels={num_labels} labelled images asked of a training set of {left}{held}; "
            f"pass num_labels below {left} (or a larger train_size"
            f"{', or a smaller validation' if validation else ''})",
            settings=("num_labels", "train_size") + (("validation",) if validation else ()),
        )


def labelled_split(
    labels: torch.Tensor, num_labels: int, label_seed: int = LABEL_SEED
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Indices ``(labelled, unlabelled)`` of a training set: ``num_labels`` class-balanced
    labelled ones (:func:`~pyro_vae.data.images.balanced_prefix` of a permutation drawn with
    ``label_seed`` by a private generator), the rest unlabelled.

    :raises ConfigError: ``num_labels`` not a positive integer, or not smaller than the training
        set; ``label_seed`` not a seed.
    """
    check_num_labels(num_labels, len(labels))
    check_seed("label_seed", label_seed)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(label_seed))
    chosen = order[balanced_prefix(labels[order], num_labels)]
    mask = torch.zeros(len(labels), dtype=torch.bool)
    mask[chosen] = True
    return chosen.sort().values, (~mask).nonzero().flatten()


class LabelledBatches:
    r"""The transform of semi-supervised training: each unlabelled minibatch ``x`` becomes the
    model's arguments ``(x, x_labelled, y_labelled)``, with ``batch_size`` labelled images (all of
    them, if fewer) drawn afresh at every step.

    Images of both kinds are binarized as ``binarize`` says (``"dynamic"``: a fresh draw at
    every step; ``"none"``: grey levels); with ``shift`` each labelled image is first translated
    by a random ``-shift..shift`` pixels along each axis (:func:`~pyro_vae.data.images.shift_images`),
    augmentation of the few labels; the unlabelled images are never shifted.

    :param images: ``[N_l, ...]`` labelled images, pixels in [0, 1].
    :param labels: ``[N_l]`` their classes.
    :raises ConfigError: a bad ``batch_size``, ``binarize`` or ``shift`` (named).
    :raises InvalidDataError: images and labels of different lengths, or pixels outside [0, 1].
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int = 100,
        binarize: str = "dynamic",
        shift: int = 0,
    ) -> None:
        check_pixels(images, "labelled images")
        if not isinstance(labels, torch.Tensor) or labels.shape != (len(images),):
            shape = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
            raise InvalidDataError(
                f"the labels must be a tensor of shape [{len(images)}], one per labelled image; got {shape}"
            )
        self.images, self.labels = images.flatten(1), labels
        self.batch_size = min(check_positive("batch_size", batch_size, example=100), len(images))
        self.binarize = check_binarization(binarize)
        self.shift = check_count("shift", shift, example=2, unit="pixels")
        side = int(round(self.images.shape[1] ** 0.5))
        if self.shift and (side * side != self.images.shape[1] or 2 * self.shift >= side):
            raise ConfigError(
                f"shift={self.shift} needs square images at least {2 * self.shift + 1} pixels wide; "
                f"pass a few pixels (e.g. 2) for 28x28 digits, or 0",
                settings=("shift",),
            )
        self._side = side
        digest = hashlib.sha1(self.images.detach().cpu().numpy().tobytes())  # once: the data do not change
        digest.update(self.labels.detach().cpu().numpy().tobytes())
        self._digest = digest.hexdigest()[:16]

    @property
    def num_labelled(self) -> int:
        """:math:`N_l`, the size of the labelled set (the labelled part's scale is :math:`N_l/B_l`)."""
        return len(self.images)

    @property
    def config(self) -> Dict[str, Any]:
        """What identifies the labelled data in a checkpoint: a resume with other labels is refused."""
        return {
            "num_labelled": self.num_labelled,
            "labelled_batch_size": self.batch_size,
            "binarize": self.binarize,
            "shift": self.shift,
            "labelled_data": self._digest,
        }

    def train(self, batch: Batch, generator: torch.Generator) -> Batch:
        """``(x, x_labelled, y_labelled)``: the unlabelled minibatch and a labelled one, drawn with
        ``generator`` (the epoch's stream)."""
        device = batch.first.device
        unlabelled = binarize(batch.first, self.binarize, generator)
        pick = torch.randperm(self.num_labelled, generator=generator, device=generator.device)[: self.batch_size]
        shifted = shift_images(self.images[pick.cpu()], self.shift, generator, side=self._side)
        labelled = binarize(shifted.to(device), self.binarize, generator)
        return Batch((unlabelled, labelled, self.labels[pick.cpu()].to(device)), {})

    def evaluation(self, data: Source) -> Source:
        """Held-out images as they are (a classifier's accuracy reads grey levels)."""
        return data
