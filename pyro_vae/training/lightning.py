r"""Training a model and guide under PyTorch Lightning (optional: ``pip install -e ".[lightning]"``).

:class:`SVIModule` is a :class:`lightning.LightningModule` around a
:class:`~pyro_vae.training.program.Program` -- a VAE of this library or any Pyro model and guide
-- for users whose training lives in ``lightning.Trainer``, as Pyro's own Lightning example's does.
Each training step is the negative ELBO of the minibatch at the full-data scale :math:`N/B`
(``num_data=N``, the size of the training set), differentiated by ``Trainer``'s loop; each
validation step logs the held-out ELBO per datapoint (:func:`pyro_vae.inference.elbo.elbo_terms`)::

    module = SVIModule(model, guide, lr=1e-3)
    lightning.Trainer(max_epochs=10).fit(module, DataLoader(train, batch_size=128, shuffle=True),
                                         DataLoader(held_out, batch_size=1000))

What Lightning then gives: its loggers, accelerators and strategies (multi-GPU and multi-node),
precision settings and its own checkpoints. What it does not give, and
:class:`~pyro_vae.training.trainer.Trainer` does: a resume that repeats an uninterrupted run to
the bit, mid-epoch included; the finite guard that refuses a non-finite step before the
optimizer applies it and names the ELBO term that went bad; the guide contract checked on the
call that is made; parameters kept in Pyro's param store only (here every parameter must live
in the modules that model and guide are or belong to). A data-side transform
(:mod:`pyro_vae.data.transforms`: a VAE's binarization, the CVAE's quadrants, M2's labelled
minibatches) is applied to each training batch with the module's own generator, seeded once:
reproducible from a fresh start, not across Lightning's resume. ``docs/training.md`` gives the
measured comparison.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch

try:
    import lightning
except ImportError as err:  # pragma: no cover - the optional extra
    from pyro_vae.errors import ConfigError

    raise ConfigError(
        f"pyro_vae.training.lightning needs the lightning package ({err}); install it with "
        f"pip install 'pyro_vae[lightning]'"
    ) from None
import pyro
from pyro.infer import Trace_ELBO
from pyro.infer.elbo import ELBO

from pyro_vae.data.batches import Batch, as_batch
from pyro_vae.data.transforms import Transform
from pyro_vae.inference.elbo import elbo_terms
from pyro_vae.models.plate import registration_skipped
from pyro_vae.training.program import Program, as_program
from pyro_vae.training.step import make_optimizer


class SVIModule(lightning.LightningModule):
    """A model and guide (or a VAE: ``SVIModule(vae)``) as a LightningModule.

    :param objective: any :class:`pyro.infer.ELBO` with ``differentiable_loss``; ``Trace_ELBO()`` by default.
    :param lr: Adam's learning rate.
    :param num_data: :math:`N`, the size of the training set; by default the length of the
        training dataloader's dataset.
    :param validate: run the training steps with Pyro's argument and support validation on (the
        default: nothing else checks the batches Lightning hands over); off is
        :class:`~pyro_vae.training.trainer.Trainer`'s setting, which checks the data once instead.
    :param transform: done to every training batch before its step, drawing from a generator
        seeded with ``seed`` (:mod:`pyro_vae.data.transforms`); validation batches are taken as
        they come.
    """

    def __init__(
        self,
        model: Any,
        guide: Optional[Callable[..., Any]] = None,
        objective: Optional[ELBO] = None,
        lr: float = 1e-3,
        num_data: Optional[int] = None,
        validate: bool = True,
        transform: Optional[Transform] = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.program: Program = as_program(model, guide)
        self.body = self.program.module  # registered: Lightning optimizes and saves its parameters
        self.elbo = objective if objective is not None else Trace_ELBO()
        self.program.check_objective(self.elbo)  # M2 needs its own
        self.transform = transform
        self.generator = torch.Generator().manual_seed(seed)
        self.lr = lr
        self.num_data = num_data
        self.validate = validate

    def _num_data(self) -> int:
        if self.num_data is None:
            loader = self.trainer.train_dataloader
            assert loader is not None  # Lightning has set up the training data before a training step
            self.num_data = len(loader.dataset)
        return self.num_data

    def _call(self, fn: Callable[..., Any], batch: Batch, num_data: Optional[int]) -> Any:
        return batch.call(fn, num_data if self.program.takes_num_data else None)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        """The negative ELBO of the minibatch at the full-data scale; logs ``train_elbo`` per datapoint."""
        batch, n = as_batch(batch), self._num_data()
        if self.transform is not None:
            batch = self.transform.train(batch, self.generator)
        # Lightning's optimizer steps the modules' parameters: Pyro's param-store registration is not needed.
        with pyro.validation_enabled(self.validate), registration_skipped():
            loss = self._call(
                # Pyro declares differentiable_loss only on the ELBO subclasses, not on the ELBO base class
                lambda *a, **k: self.elbo.differentiable_loss(self.program.model, self.program.guide, *a, **k),  # type: ignore[attr-defined]
                batch,
                n,
            )
        self.log("train_elbo", -loss.detach() / n, batch_size=batch.size)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        """Logs the held-out ``val_elbo``, ``val_recon`` and ``val_kl`` per datapoint."""
        batch = as_batch(batch)
        terms = elbo_terms(self.program.model, self.program.guide, *batch.args, **batch.kwargs)
        for key in ("elbo", "recon", "kl"):  # Lightning averages them over batches, weighted by size
            self.log(f"val_{key}", getattr(terms, key).mean(), batch_size=batch.size)

    def configure_optimizers(self) -> Optional[torch.optim.Optimizer]:
        """Adam (fused where torch has it) over every parameter of the program's modules."""
        return make_optimizer(list(self.parameters()), self.lr, None)  # fused Adam, as the Trainer's
