"""Data-side transforms: what is done to a minibatch before the step, outside the training loop.

A transform is any object with two methods (:class:`Transform`): ``train(batch, generator)``, the
minibatch a step trains on, drawing whatever it draws from ``generator``, the epoch's own random
stream (so that a resumed run draws the same), and ``evaluation(source)``, the held-out data as
every evaluation of the run scores it. ``Trainer(model, guide, transform=...)`` takes one;
without it, the Trainer uses :class:`Binarize` for its ``binarize`` setting.

:class:`Binarize` is the binarization of the setting ``binarize`` of
:class:`~pyro_vae.training.config.TrainConfig` (:func:`pyro_vae.data.images.binarize`) applied to a
batch's first tensor, the images: during training a fresh draw per minibatch from the epoch's
own stream (``"dynamic"``), and for evaluation one draw with a fixed seed, made once, so that
every evaluation of a run scores the same binary test set.
"""

from __future__ import annotations

from typing import Protocol

import torch

from pyro_vae.data.batches import Batch, Source
from pyro_vae.data.images import binarize, check_binarization
from pyro_vae.rng import TEST_BINARIZATION_SEED


class Transform(Protocol):
    """What the :class:`~pyro_vae.training.trainer.Trainer` asks of a data-side transform."""

    def train(self, batch: Batch, generator: torch.Generator) -> Batch:
        """The training minibatch, drawn with ``generator`` (the epoch's stream)."""

    def evaluation(self, data: Source) -> Source:
        """The held-out data as every evaluation scores it."""


class Binarize:
    """The images of each batch binarized as ``mode`` says (``"none"`` leaves them)."""

    def __init__(self, mode: str) -> None:
        self.mode = check_binarization(mode)

    def train(self, batch: Batch, generator: torch.Generator) -> Batch:
        """A training minibatch, drawn with ``generator`` (the epoch's data stream)."""
        if self.mode == "none":
            return batch
        return batch.with_first(binarize(batch.first, self.mode, generator))

    def evaluation(self, data: Source) -> Source:
        """Held-out data binarized once, with the fixed evaluation seed."""
        if self.mode == "none":
            return data

        def once(batch: Batch) -> Batch:
            # Tensors are binarized here, once; a Dataset's batches as they are read, each from
            # the same seed, so that every evaluation of the run draws alike.
            generator = torch.Generator(batch.first.device).manual_seed(TEST_BINARIZATION_SEED)
            return batch.with_first(binarize(batch.first, self.mode, generator))

        return data.map(once)
