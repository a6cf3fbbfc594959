"""The settings of a training run, validated once, in one frozen dataclass.

:class:`TrainConfig` holds every default of :class:`~pyro_vae.training.trainer.Trainer` (the model's
own settings are the :class:`~pyro_vae.models.vae.VAE`'s, in ``vae.config``). A checkpoint records
:meth:`TrainConfig.settings`; resuming compares them with :meth:`TrainConfig.diff`, which is
the one place that decides whether a run may continue under a new configuration.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple, Union

from pyro.infer.elbo import ELBO

from pyro_vae.data.images import check_binarization
from pyro_vae.errors import ConfigError, check_count, check_positive, check_seed
from pyro_vae.inference.objectives import ALIASES, OBJECTIVES, check_beta, is_jit, objective_name

#: Settings a resumed run may change: a lower rate is how a diverged run is retried.
CHANGEABLE_ON_RESUME = frozenset({"lr"})


@dataclass(frozen=True)
class TrainConfig:
    """How a model and guide are trained.

    :param lr: Adam's learning rate.
    :param binarize: ``"dynamic"``, ``"fixed"`` or ``"none"`` (see :func:`pyro_vae.data.images.binarize`),
        applied to the first tensor of each batch, the images (:mod:`~pyro_vae.data.transforms`);
        ``None`` picks the program's natural one: ``"dynamic"`` for a Bernoulli VAE, whose
        pixels must be binary (a fresh draw every epoch), ``"none"`` for every other model.
    :param seed: seeds Pyro/torch and the run's named random streams (:mod:`pyro_vae.rng`).
    :param objective: the training objective, by name -- ``"elbo"`` (:class:`pyro.infer.Trace_ELBO`,
        the default), ``"meanfield"``, ``"iwae"``, ``"jit_elbo"`` or ``"jit_meanfield"`` (see
        :mod:`pyro_vae.inference.objectives`) -- or as a fresh :class:`pyro.infer.ELBO` instance (e.g.
        ``Trace_ELBO(num_particles=4)``). Every feature reads it from here: beta, warm-up,
        the JIT refusal, checkpoints.
    :param num_particles: particles of an objective given by name (:math:`K` for ``"iwae"``);
        an instance carries its own.
    :param beta: weight of the KL term in the training objective.
    :param kl_warmup: epochs over which that weight rises linearly from 0 to ``beta``.
    :param clip_norm: if given, :class:`pyro.optim.clipped_adam.ClippedAdam` clamps every
        gradient entry to ``[-clip_norm, clip_norm]`` before the Adam update; ``None`` is
        :class:`torch.optim.Adam` (fused).
    :param validate: run every training step with Pyro's and torch's argument and support
        validation on. Off by default: the data is checked once when training starts and
        every step's loss and gradient are checked for non-finite values; validation stays
        on everywhere else (evaluation, the guide contract, your own calls).
    :param distributed: train data-parallel in this process's process group
        (:mod:`pyro_vae.training.distributed`).
    """

    lr: float = 1e-3
    binarize: Optional[str] = None
    seed: int = 0
    objective: Union[str, ELBO] = "elbo"
    num_particles: Optional[int] = None
    beta: float = 1.0
    kl_warmup: int = 0
    clip_norm: Optional[float] = None
    validate: bool = False
    distributed: bool = False

    def __post_init__(self) -> None:
        fix = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 -- frozen
        fix("lr", float(check_positive("lr", self.lr, float, 1e-3)))
        if self.binarize is not None:
            check_binarization(self.binarize)
        fix("seed", check_seed("seed", self.seed))
        self._check_objective()
        fix("beta", check_beta(self.beta))
        fix("kl_warmup", check_count("kl_warmup", self.kl_warmup, example=10, unit="epochs"))
        if self.kl_warmup and self.jit:
            raise ConfigError(
                f"kl_warmup changes the KL weight every step, which a JIT-compiled objective "
                f"({self.objective_name!r}) would freeze; use objective='elbo' or 'meanfield' with warm-up",
                settings=("kl_warmup", "objective"),
            )
        if self.clip_norm is not None:
            fix("clip_norm", float(check_positive("clip_norm", self.clip_norm, float, 10.0)))
        fix("validate", bool(self.validate))
        fix("distributed", bool(self.distributed))

    def _check_objective(self) -> None:
        objective, particles = self.objective, self.num_particles
        if isinstance(objective, str):
            if ALIASES.get(objective, objective) not in OBJECTIVES:
                raise ConfigError(
                    f"unknown objective {objective!r}; choose one of {sorted(OBJECTIVES)} (or "
                    f"Pyro's class names {sorted(ALIASES)})",
                    settings=("objective",),
                )
            if particles is not None and (
                isinstance(particles, bool) or not isinstance(particles, int) or particles < 1
            ):
                raise ConfigError(
                    f"num_particles must be a positive integer, got {particles!r}; pass e.g. "
                    f"num_particles=5, or None for the objective's default",
                    settings=("num_particles",),
                )
            object.__setattr__(self, "objective", ALIASES.get(objective, objective))
            return
        if not isinstance(objective, ELBO):
            raise ConfigError(
                f"objective must be a name ({', '.join(sorted(OBJECTIVES))}) or a pyro.infer "
                f"ELBO instance, got {type(objective).__name__}",
                settings=("objective",),
            )
        if particles is not None and particles != objective.num_particles:
            raise ConfigError(
                f"num_particles={particles} but the objective {type(objective).__name__} has "
                f"num_particles={objective.num_particles}; set it on the instance and leave num_particles=None",
                settings=("num_particles",),
            )
        object.__setattr__(self, "num_particles", objective.num_particles)

    @property
    def objective_name(self) -> str:
        """The objective's name: its key in :data:`pyro_vae.inference.objectives.OBJECTIVES`, or its class name."""
        return self.objective if isinstance(self.objective, str) else objective_name(self.objective)

    @property
    def jit(self) -> bool:
        """Whether the objective is one of Pyro's JIT-compiled ELBOs."""
        if isinstance(self.objective, str):
            return self.objective.startswith("jit_")
        return is_jit(self.objective)

    def warmed_beta(self, epochs_done: float) -> float:
        """The KL weight after ``epochs_done`` epochs (a fraction inside one): rising linearly from
        0 to ``beta`` over ``kl_warmup`` epochs, then ``beta``."""
        return self.beta * min(1.0, epochs_done / self.kl_warmup) if self.kl_warmup else self.beta

    @property
    def analytic_kl(self) -> bool:
        """Whether the objective takes each latent site's KL in closed form (the mean-field ELBOs)."""
        return self.objective_name in ("meanfield", "jit_meanfield")

    def resolved(self, natural_binarization: str) -> "TrainConfig":
        """This config with ``binarize`` resolved: ``natural_binarization`` where it is None."""
        if self.binarize is not None:
            return self
        return dataclasses.replace(self, binarize=natural_binarization)

    def settings(self) -> Dict[str, Any]:
        """What a checkpoint records: every setting that shapes the run's numbers, the
        objective by name (``validate`` and ``distributed`` change how, not what, is computed)."""
        out = {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("validate", "distributed")
        }
        out["objective"] = self.objective_name
        return out

    def diff(self, saved: Dict[str, Any]) -> Dict[str, Tuple[Any, Any]]:
        """``{setting: (saved value, this value)}`` for every setting that differs from
        ``saved`` (the :meth:`settings` a checkpoint recorded)."""
        return {key: (saved.get(key), value) for key, value in self.settings().items() if saved.get(key) != value}
