r"""Fitting the VAE: stochastic variational inference on the ELBO (seed items 8-10).

Each step draws a minibatch of :math:`B` of the :math:`N` training images and
takes an Adam step on :class:`pyro.infer.Trace_ELBO`'s estimate of
:math:`-\mathrm{ELBO}`, with the plate scaling the batch by :math:`N/B`
(seed item 9). Encoder :math:`\theta` and decoder :math:`\phi` are updated
*jointly* by stochastic gradient ascent -- not by EM (the seed's one slip).

Reproducibility: epoch ``e`` draws its data order and its dynamic binarization
from a generator seeded by ``(seed, e)``, so an epoch does not depend on what ran
before it, and a run resumed from a checkpoint draws exactly the same data.
"""

from __future__ import annotations

import math
import random
import time
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, List, Optional

import numpy as np
import pyro
import torch
from pyro.infer import SVI
from pyro.infer.elbo import ELBO
from tqdm.auto import tqdm

from .checkpoint import load_checkpoint, save_checkpoint
from .data import BINARIZATIONS, binarize, check_pixels
from .elbo import bits_per_dim, elbo_terms
from .errors import CheckpointError
from .guide_contract import check_guide
from .objectives import check_beta, get_objective, kl_weighted
from .vae import VAE

#: The test set is binarized once, with this seed, whatever the training seed:
#: test figures of runs with different seeds are then on the same data.
TEST_BINARIZATION_SEED = 20151101


def _positive(name: str, value: Any, kind: type = int) -> Any:
    ok = isinstance(value, (int, float) if kind is float else int) and not isinstance(value, bool)
    if not ok or not value > 0 or (kind is float and not math.isfinite(value)):
        raise ValueError(f"{name} must be a positive {kind.__name__}, got {value!r}")
    return value


@contextmanager
def _rng_fork(seed: int) -> Iterator[None]:
    """Run a block on its own seeded RNG stream, leaving the training stream untouched."""
    cpu_state = torch.get_rng_state()
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.set_rng_state(cpu_state)
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)


class Trainer:
    """SVI for a :class:`~pyro_vae.vae.VAE`: epochs, evaluation, history and checkpoints.

    :param vae: the model/guide pair to fit.
    :param lr: Adam's learning rate.
    :param binarize: ``"dynamic"``, ``"fixed"`` or ``"none"`` (see :func:`pyro_vae.data.binarize`).
    :param seed: seeds Pyro/torch and the per-epoch data streams.
    :param objective: ``"elbo"`` (:class:`pyro.infer.Trace_ELBO`, the default),
        ``"meanfield"``, ``"iwae"``, ``"jit_elbo"`` or ``"jit_meanfield"``; see
        :mod:`pyro_vae.objectives`.
    :param num_particles: particles of the objective (:math:`K` for ``"iwae"``).
    :param beta: weight of the KL term (of site ``"z"``) in the training objective.
    :param kl_warmup: epochs over which that weight rises linearly from 0 to ``beta``.
    :param loss: an ELBO instance to use instead of ``objective``.
    """

    def __init__(
        self,
        vae: VAE,
        *,
        lr: float = 1e-3,
        binarize: str = "dynamic",
        seed: int = 0,
        objective: str = "elbo",
        num_particles: Optional[int] = None,
        beta: float = 1.0,
        kl_warmup: int = 0,
        loss: Optional[ELBO] = None,
    ) -> None:
        if binarize not in BINARIZATIONS:
            raise ValueError(f"unknown binarization {binarize!r}; choose one of {list(BINARIZATIONS)}")
        if isinstance(kl_warmup, bool) or not isinstance(kl_warmup, int) or kl_warmup < 0:
            raise ValueError(f"kl_warmup must be a whole number of epochs >= 0, got {kl_warmup!r}")
        if kl_warmup and objective.startswith("jit"):
            raise ValueError(
                f"kl_warmup changes the KL weight every step, which a JIT-compiled objective "
                f"({objective!r}) would freeze; use objective='elbo' or 'meanfield' with warm-up"
            )
        self.vae = vae
        self.lr = _positive("lr", lr, float)
        self.binarize = binarize
        self.seed = int(seed)
        self.objective = objective
        self.num_particles = num_particles
        self.beta = check_beta(beta)
        self.kl_warmup = kl_warmup
        self.optim = pyro.optim.Adam({"lr": self.lr})
        self.loss = loss if loss is not None else get_objective(objective, num_particles)
        # The KL weight acts on site "z" of both programs (pyro.poutine.scale, per site).
        self._model = kl_weighted(vae.model, self.beta)
        self._guide = kl_weighted(vae.guide, self.beta)
        self.svi = SVI(self._model, self._guide, self.optim, loss=self.loss)
        self.epoch = 0
        self.history: List[Dict[str, float]] = []
        pyro.set_rng_seed(self.seed)

    def set_lr(self, lr: float) -> None:
        """Change Adam's learning rate for the next steps (for schedules such as Burda et al.'s).

        ``self.lr`` stays the configured base rate; the current rate lives in Adam's
        state, which checkpoints save and restore.
        """
        lr = _positive("lr", lr, float)
        self.optim.pt_optim_args["lr"] = lr  # for parameters Adam has not seen yet
        for optimizer in self.optim.optim_objs.values():
            for group in optimizer.param_groups:
                group["lr"] = lr

    def set_beta(self, beta: float) -> None:
        """Set the KL weight the next SVI steps use (KL warm-up calls this every step)."""
        self._model.beta = self._guide.beta = check_beta(beta)

    @property
    def current_beta(self) -> float:
        return self._model.beta

    @property
    def device(self) -> torch.device:
        return next(self.vae.parameters()).device

    # ---- data ------------------------------------------------------------------------

    def _epoch_generator(self, epoch: int) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)

    def check_data(self, x: torch.Tensor, what: str) -> torch.Tensor:
        """Flatten ``x``, refuse NaN/out-of-range pixels and, without binarization,
        pixels outside the likelihood's support."""
        x = self.vae.flatten(x)
        check_pixels(x, what)
        if self.binarize == "none":
            self.vae.likelihood.check_support(x)
        return x

    def prepare_test(self, x: torch.Tensor) -> torch.Tensor:
        """The evaluation copy of ``x``: binarized once, with a fixed seed if dynamic."""
        x = self.check_data(x, "test data")
        generator = torch.Generator().manual_seed(TEST_BINARIZATION_SEED)
        return binarize(x, self.binarize, generator).to(self.device)

    # ---- one epoch of SVI ----------------------------------------------------------------

    def train_epoch(self, x: torch.Tensor, batch_size: int = 128, progress: bool = True) -> float:
        """One pass over ``x`` in shuffled minibatches.

        Returns the mean training objective per datapoint: the ELBO by default, the
        IWAE bound or the beta-weighted ELBO when so configured.
        """
        _positive("batch_size", batch_size)
        num_data = x.shape[0]
        generator = self._epoch_generator(self.epoch + 1)
        order = torch.randperm(num_data, generator=generator)
        self.vae.train()
        total = 0.0
        bar = tqdm(
            order.split(batch_size),
            desc=f"epoch {self.epoch + 1}",
            unit="step",
            leave=False,
            disable=None if progress else True,
        )
        num_steps = len(bar)
        for step, idx in enumerate(bar):
            if self.kl_warmup:
                self.set_beta(self.beta * min(1.0, (self.epoch + step / num_steps) / self.kl_warmup))
            batch = binarize(x[idx], self.binarize, generator).to(self.device, non_blocking=True)
            # The plate scales the batch by num_data / B: svi.step returns -ELBO for all N.
            loss = self.svi.step(batch, num_data=num_data)
            if not math.isfinite(loss):
                raise FloatingPointError(
                    f"the ELBO became {loss} at epoch {self.epoch + 1}, step {step}; lower the "
                    f"learning rate (--lr) or resume from the last checkpoint"
                )
            total += loss * len(idx) / num_data
            if step % 20 == 0:
                bar.set_postfix(elbo=f"{-loss / num_data:.2f}")
        self.epoch += 1
        return -total / num_data

    # ---- evaluation ----------------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, batch_size: int = 1000) -> Dict[str, float]:
        """Per-datapoint test ELBO and its parts on prepared data (see :meth:`prepare_test`).

        One sample of ``z`` per datapoint for the reconstruction term, the KL in closed
        form; the noise comes from a fixed seed, so repeated evaluations agree.
        """
        self.vae.eval()
        sums = {"recon": 0.0, "kl": 0.0, "elbo": 0.0}
        with _rng_fork(self.seed + 7919):
            for batch in x.split(batch_size):
                terms = elbo_terms(self.vae.model, self.vae.guide, batch)
                for key in sums:
                    sums[key] += float(getattr(terms, key).sum())
        self.vae.train()
        out = {key: value / len(x) for key, value in sums.items()}
        out["bits_per_dim"] = float(bits_per_dim(torch.tensor(out["elbo"]), self.vae.x_dim))
        return out

    # ---- the loop ------------------------------------------------------------------------

    def fit(
        self,
        train_x: torch.Tensor,
        test_x: Optional[torch.Tensor],
        epochs: int,
        batch_size: int = 128,
        test_every: int = 1,
        checkpoint: Optional[str] = None,
        progress: bool = True,
        log: Callable[[str], None] = print,
    ) -> List[Dict[str, float]]:
        """Train until ``self.epoch == epochs`` (so a resumed trainer continues), evaluating
        every ``test_every`` epochs and at the end, checkpointing after every epoch."""
        _positive("epochs", epochs)
        _positive("batch_size", batch_size)
        _positive("test_every", test_every)
        train_x = self.check_data(train_x, "training data")
        if self.epoch == 0:  # the guide contract, checked once by tracing, before any step
            sample = binarize(train_x[:2], self.binarize, torch.Generator().manual_seed(0))
            with _rng_fork(self.seed):  # leaves the training RNG stream untouched
                check_guide(self.vae.model, self.vae.guide, sample.to(self.device), self.vae.z_dim)
        test_ready = self.prepare_test(test_x) if test_x is not None else None
        while self.epoch < epochs:
            start = time.perf_counter()
            train_elbo = self.train_epoch(train_x, batch_size, progress)
            record: Dict[str, float] = {
                "epoch": self.epoch,
                "train_elbo": train_elbo,
                "seconds": time.perf_counter() - start,
                "beta": self.current_beta,
            }
            if test_ready is not None and (self.epoch % test_every == 0 or self.epoch == epochs):
                test = self.evaluate(test_ready)
                record.update({f"test_{key}": value for key, value in test.items()})
            self.history.append(record)
            log(format_record(record, epochs))
            if checkpoint is not None:
                self.save(checkpoint)
        return self.history

    # ---- checkpoints ---------------------------------------------------------------------

    def state_dict_config(self) -> Dict[str, Dict[str, Any]]:
        """The settings a checkpoint must share with the trainer that resumes it."""
        return {
            "config": self.vae.config,
            "trainer": {
                "lr": self.lr,
                "binarize": self.binarize,
                "seed": self.seed,
                "objective": self.objective,
                "num_particles": self.num_particles,
                "beta": self.beta,
                "kl_warmup": self.kl_warmup,
            },
        }

    def state_dict(self) -> Dict[str, Any]:
        np_state = np.random.get_state()
        return {
            **self.state_dict_config(),
            "epoch": self.epoch,
            "model": self.vae.state_dict(),
            "optim": self.optim.get_state(),
            "history": self.history,
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "python": random.getstate(),
                "numpy": [np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]],
            },
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        mine = self.state_dict_config()
        differ = {
            key: (state[part].get(key), value)
            for part in ("config", "trainer")
            for key, value in mine[part].items()
            if state[part].get(key) != value
        }
        if differ:
            detail = ", ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in differ.items())
            raise CheckpointError(f"the checkpoint was written for another configuration ({detail})")
        self.vae.load_state_dict(state["model"])
        self.optim.set_state(state["optim"])
        self.epoch = int(state["epoch"])
        self.history = list(state["history"])
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        random.setstate(rng["python"])
        kind, keys, *rest = rng["numpy"]
        np.random.set_state((kind, keys.numpy(), *rest))

    def save(self, path: str) -> None:
        save_checkpoint(self.state_dict(), path)

    def resume(self, path: str) -> None:
        """Continue from a checkpoint written by :meth:`save` for the same VAE config."""
        self.load_state_dict(load_checkpoint(path))


def format_record(record: Dict[str, float], epochs: int) -> str:
    """One log line per epoch: train ELBO, test ELBO = reconstruction - KL, bits/dim."""
    line = f"epoch {int(record['epoch']):>3}/{epochs}  train ELBO {record['train_elbo']:9.3f}"
    if "test_elbo" in record:
        line += (
            f"  test ELBO {record['test_elbo']:9.3f} = recon {record['test_recon']:9.3f}"
            f" - KL {record['test_kl']:7.3f} nats  ({record['test_bits_per_dim']:.4f} bits/dim)"
        )
    return line + f"  {record['seconds']:.1f} s"
