"""The training state as a checkpoint saves and restores it (one format: see :mod:`pyro_vae.training.checkpoint`).

A checkpoint holds everything a resumed run needs to continue bit-identically: the program's
identity (a VAE's settings; a model and guide's names and parameter shapes), the trainer's
settings and the data transform's (its ``config``, if it has one: M2's labelled data), the
weights of the program's modules, the optimizer's state, the history, every random
generator's state (each process's own latent-noise stream, in a distributed run), the
position inside an epoch that a signal stopped, and the parameters model or guide keep in
Pyro's param store only.
"""

from __future__ import annotations

import random
import warnings
from typing import TYPE_CHECKING, Any, Dict, List, Optional

import numpy as np
import torch

from pyro_vae.errors import CheckpointError, NonFiniteError
from pyro_vae.rng import latent_noise_seed
from pyro_vae.training import distributed as dist_util
from pyro_vae.training.config import CHANGEABLE_ON_RESUME

if TYPE_CHECKING:  # pragma: no cover
    from pyro_vae.training.trainer import Trainer


def _rng_state() -> Dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": random.getstate(),
        # numpy's stub gives get_state() the dict return of legacy=False; the default legacy=True returns a tuple
        "numpy": [np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]],  # type: ignore[index]
    }


def _rank_rng_states(device: torch.device) -> List[Dict[str, torch.Tensor]]:
    """Every process's own latent-noise generator states (a collective: all ranks call it)."""
    ranks = [{"torch": t} for t in dist_util.gather_tensors(torch.get_rng_state(), device)]
    if device.type == "cuda":
        for entry, t in zip(ranks, dist_util.gather_tensors(torch.cuda.get_rng_state(device), device)):
            entry["cuda_device"] = t
    return ranks


def _transform_config(trainer: "Trainer") -> Dict[str, Any]:
    """What identifies the data transform (its ``config`` dict; none for most)."""
    config = getattr(trainer.transform, "config", None)
    return dict(config) if isinstance(config, dict) else {}


def state_dict(trainer: "Trainer") -> Dict[str, Any]:
    """The trainer's state; in a distributed run a collective, which every process calls."""
    optimizer = trainer.step_fn.optimizer
    state = {
        "config": trainer.program.config,
        "trainer": trainer.config.settings(),
        "transform": _transform_config(trainer),  # M2's labelled data, say
        "epoch": trainer.epoch,
        "model": trainer.program.module.state_dict(),
        "optimizer": None if optimizer is None else optimizer.state_dict(),
        "history": trainer.history,
        "rng": _rng_state(),
        "world_size": trainer.world_size,
    }
    if trainer.world_size > 1:
        state["rng_ranks"] = _rank_rng_states(trainer.device)
    if trainer.position is not None:
        state["partial"] = dict(trainer.position)
    extra = trainer.step_fn.extra_params
    if extra:  # parameters kept in Pyro's param store only
        assert trainer.step_fn.extra_optimizer is not None  # adopt_params made it for these parameters
        state["param_store"] = {
            "params": {name: value.detach().clone() for name, value in extra},
            "optimizer": trainer.step_fn.extra_optimizer.state_dict(),
        }
    elif trainer.pending_param_store is not None:  # resumed, not stepped yet: keep what was read
        state["param_store"] = trainer.pending_param_store
    callbacks = {**trainer.callback_states, **(trainer.hooks.state_dict() if trainer.hooks is not None else {})}
    if callbacks:  # early stopping's best epoch and weights, say
        state["callbacks"] = callbacks
    return state


def refuse_non_finite_weights(trainer: "Trainer", path: str) -> None:
    """Never replace a good checkpoint with non-finite weights."""
    bad = [
        name
        for name, p in trainer.program.module.state_dict().items()
        if p.is_floating_point() and not bool(torch.isfinite(p).all())
    ]
    if bad:
        raise NonFiniteError(
            f"refusing to write a checkpoint with non-finite weights ({', '.join(bad[:3])}"
            f"{', ...' if len(bad) > 3 else ''}) over {path}; the file there is unchanged. Reload "
            f"good weights (Trainer.resume) before saving",
            epoch=trainer.epoch,
            step=trainer.step_in_epoch,
        )


def check_compatible(trainer: "Trainer", state: Dict[str, Any]) -> None:
    """Refuse a checkpoint written for another model or training configuration (every
    setting must match, except those in :data:`~pyro_vae.training.config.CHANGEABLE_ON_RESUME`)."""
    differ = {
        key: (saved, now)
        for key, (saved, now) in trainer.config.diff(state["trainer"]).items()
        if key not in CHANGEABLE_ON_RESUME
    }
    differ.update(
        {
            key: (state["config"].get(key), now)
            for key, now in trainer.program.config.items()
            if state["config"].get(key) != now
        }
    )
    saved, now = state.get("transform") or {}, _transform_config(trainer)
    differ.update({key: (saved.get(key), now.get(key)) for key in {**saved, **now} if saved.get(key) != now.get(key)})
    if differ:
        detail = ", ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in differ.items())
        raise CheckpointError(
            f"the checkpoint was written for another configuration ({detail}); build the model and "
            f"Trainer with the checkpoint's settings, or start a new run elsewhere",
            settings=tuple(differ),
        )


def load_state_dict(trainer: "Trainer", state: Dict[str, Any]) -> Optional[float]:
    """Restore ``state`` into ``trainer`` (see :func:`check_compatible`); returns the
    checkpoint's learning rate when the trainer's differs (it continues at its own)."""
    check_compatible(trainer, state)
    trainer.program.module.load_state_dict(state["model"])
    if trainer.step_fn.optimizer is not None:
        trainer.step_fn.optimizer.load_state_dict(state["optimizer"])
    saved_lr = state["trainer"]["lr"]
    changed = saved_lr if saved_lr != trainer.config.lr else None
    if changed is not None:  # the rate given now, not the checkpoint's, from the next step on
        trainer.step_fn.set_lr(trainer.config.lr)
    trainer.epoch = int(state["epoch"])
    trainer.history = list(state["history"])
    trainer.position = state.get("partial")
    trainer.pending_param_store = state.get("param_store")
    trainer.callback_states = dict(state.get("callbacks", {}))
    _restore_rng(trainer, state)
    return changed


def _restore_rng(trainer: "Trainer", state: Dict[str, Any]) -> None:
    rng, ranks, own_cuda = state["rng"], state.get("rng_ranks"), None
    if trainer.world_size > 1:
        if ranks is not None and len(ranks) == trainer.world_size:
            rng = dict(rng, torch=ranks[trainer.rank]["torch"])
            own_cuda = ranks[trainer.rank].get("cuda_device")
        else:
            warnings.warn(
                f"the checkpoint was written by {state.get('world_size', 1)} process(es), this run has "
                f"{trainer.world_size}: each rank's latent noise restarts from its own seed, so the "
                f"continuation is not bit-identical to an uninterrupted run",
                stacklevel=3,
            )
            seed = latent_noise_seed(trainer.config.seed, trainer.rank) + trainer.epoch
            rng = dict(rng, torch=torch.manual_seed(seed).get_state())
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    if own_cuda is not None and trainer.device.type == "cuda":  # this rank's own generator
        torch.cuda.set_rng_state(own_cuda, trainer.device)
    random.setstate(rng["python"])
    kind, keys, *rest = rng["numpy"]
    np.random.set_state((kind, keys.numpy(), *rest))
