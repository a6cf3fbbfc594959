r"""Logging a run to TensorBoard (install the optional extra: ``pip install pyro_vae[tensorboard]``).

:class:`TensorBoard` writes, per epoch, the training objective and, when the test set is
evaluated, the test ELBO with its two parts -- reconstruction :math:`E_q[\log p(x|z)]` and
:math:`\mathrm{KL}(q(z|x)\,\|\,p(z))` -- and, for one of this library's VAEs, a grid of test
digits above their reconstructions. View with ``tensorboard --logdir DIR``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Optional

import torch

from pyro_vae.errors import ConfigError
from pyro_vae.rng import rng_fork
from pyro_vae.training.callbacks import Callback

if TYPE_CHECKING:  # pragma: no cover
    from pyro_vae.training.trainer import Trainer


class TensorBoard(Callback):
    """Writes scalars and a reconstruction grid to ``log_dir`` (on rank 0).

    :param num_images: test digits in the reconstruction grid (the first ones of the test set).
    """

    def __init__(self, log_dir: str, num_images: int = 16) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:  # torch's writer needs the tensorboard package
            raise ConfigError(
                f"the TensorBoard callback needs the tensorboard package ({err}); install it "
                f"with pip install 'pyro_vae[tensorboard]'"
            ) from None
        self._writer_class = SummaryWriter
        self.log_dir = log_dir
        self.num_images = num_images
        self.writer: Optional[Any] = None

    def on_fit_start(self, trainer: "Trainer") -> None:
        if trainer.rank == 0 and self.writer is None:
            self.writer = self._writer_class(self.log_dir)

    def on_evaluate(self, trainer: "Trainer", metrics: Dict[str, float], test_x: torch.Tensor) -> None:
        if self.writer is None:
            return
        epoch = trainer.epoch
        for key, value in metrics.items():
            self.writer.add_scalar(f"test/{key}", value, epoch)
        if trainer.vae is None:  # another model and guide: no images to draw
            return
        x = test_x[: self.num_images]
        with torch.no_grad(), rng_fork(0):  # a guide's mean may be sampled: not from training's stream
            mean = trainer.vae.reconstruct(x)
        side = int(round(trainer.vae.x_dim**0.5))
        rows = torch.stack([x, mean]).reshape(2, len(x), side, side)  # digits above their reconstructions
        grid = rows.permute(0, 2, 1, 3).reshape(2 * side, len(x) * side)
        self.writer.add_image("test/reconstructions", grid.clamp(0, 1).cpu(), epoch, dataformats="HW")

    def on_epoch_end(self, trainer: "Trainer", record: Dict[str, float]) -> None:
        if self.writer is None:
            return
        self.writer.add_scalar(
            "train/objective", record.get("train_elbo", record.get("train_objective")), record["epoch"]
        )
        for key in (k for k in record if k.endswith("_accuracy")):  # a classifier's, held out
            self.writer.add_scalar(f"held_out/{key}", record[key], record["epoch"])
        self.writer.add_scalar("train/beta", record["beta"], record["epoch"])
        self.writer.flush()

    def on_fit_end(self, trainer: "Trainer", error: Optional[BaseException]) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
