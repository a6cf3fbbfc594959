"""A classifier's accuracy on held-out data, after every epoch, as a callback.

Any model with a classifier -- M2's :math:`q_\\phi(y|x)` (:meth:`SSVAE.classify
<pyro_vae.models.ssvae.SSVAE.classify>`), a user's own -- gets its held-out accuracy into each
epoch's record, where the console log, TensorBoard, the metrics file and early stopping on
``monitor="validation_accuracy"`` read it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Dict, Optional, Tuple

import torch

from pyro_vae.errors import ConfigError, InvalidDataError
from pyro_vae.training.averaging import WeightAveraging
from pyro_vae.training.callbacks import Callback

if TYPE_CHECKING:  # pragma: no cover
    from pyro_vae.training.trainer import Trainer


@torch.no_grad()
def accuracy(
    classify: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor, batch_size: int = 2000
) -> float:
    """The fraction of ``x`` whose ``classify(x)`` (predicted classes) equals ``y``."""
    right = sum(
        int((classify(x[i : i + batch_size]) == y[i : i + batch_size]).sum()) for i in range(0, len(x), batch_size)
    )
    return right / len(x)


class ClassifierAccuracy(Callback):
    """After every epoch, ``record[f"{name}_accuracy"]`` for every held-out ``(x, y)`` of ``data``:
    the fraction of ``x`` that ``classify`` labels ``y``, with the weights the epoch is scored with
    (the mean, while :class:`~pyro_vae.training.averaging.WeightAveraging` holds it in).

    :param classify: images to predicted classes, e.g. ``ssvae.classify``.
    :param data: ``{"test": (x, y), "validation": (x, y)}``, say.
    :param averaging: the run's weight averaging, if any: then the last training weights are
        scored too, as ``unaveraged_{name}_accuracy``, to show what averaging changed.

    Give it before :class:`~pyro_vae.training.early_stopping.EarlyStopping` watching one of its
    accuracies.
    """

    def __init__(
        self,
        classify: Callable[[torch.Tensor], torch.Tensor],
        data: Dict[str, Tuple[torch.Tensor, torch.Tensor]],
        averaging: Optional[WeightAveraging] = None,
        batch_size: int = 2000,
    ) -> None:
        if not callable(classify):
            raise ConfigError(
                f"classify must map images to predicted classes, e.g. ssvae.classify; got a {type(classify).__name__}",
                settings=("classify",),
            )
        for name, pair in data.items():
            if (
                not (isinstance(pair, tuple) and len(pair) == 2 and all(isinstance(t, torch.Tensor) for t in pair))
                or len(pair[0]) != len(pair[1])
                or len(pair[0]) == 0
            ):
                raise InvalidDataError(
                    f"held-out data {name!r} must be a tuple (x, y) of tensors with one label per image, at least one"
                )
        self.classify, self.data, self.averaging, self.batch_size = classify, data, averaging, batch_size

    def _scores(self, prefix: str = "") -> Dict[str, float]:
        return {
            f"{prefix}{name}_accuracy": accuracy(self.classify, x, y, self.batch_size)
            for name, (x, y) in self.data.items()
        }

    def on_epoch_metrics(self, trainer: "Trainer", record: Dict[str, float]) -> None:
        record.update(self._scores())
        if self.averaging is not None and self.averaging.holds_mean:
            with self.averaging.last_weights(trainer):
                record.update(self._scores("unaveraged_"))
