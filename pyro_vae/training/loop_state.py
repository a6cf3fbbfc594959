"""The state of a training loop at an epoch boundary, for M2's loop, which drives
:class:`~pyro_vae.training.step.CheckedStep` itself (:func:`pyro_vae.training.ssvae_training.train_ssvae`).

:class:`~pyro_vae.training.trainer.Trainer` saves and resumes the VAE (:mod:`pyro_vae.training.state`); these
loops save, after every epoch, what continuing needs to be bit-identical to never having
stopped: the weights, the optimizer's state, the epoch and step counts, the history, the
global torch RNG and the loop's own data generator, and whatever position the loop keeps
(M2's place in its reshuffled labelled set, and the running mean of its weights if it keeps
one). The file is a :mod:`pyro_vae.training.checkpoint` (atomic, read with ``weights_only=True``). A
checkpoint is refused, with the settings that differ, when the network's or the loop's
settings are not the ones it was written with; only ``epochs``, ``lr`` and ``average_from``
may change: a finished run can be extended, at a lower rate if wished (the rate given now
applies from the next step, Adam's moments kept), and averaging its weights may begin at an
epoch still to come.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Union

import torch

from pyro_vae.training.checkpoint import load_checkpoint, save_checkpoint
from pyro_vae.errors import CheckpointError

#: Loop settings a resumed run may change: more epochs, the learning rate from here on, and
#: the epoch from which weights are averaged (the loop checks it is not in the past).
CHANGEABLE = ("epochs", "lr", "average_from")


@dataclass
class LoopState:
    """Where a loop stands after ``epoch`` complete epochs (0: not started)."""

    epoch: int = 0
    steps: int = 0
    history: List[Dict[str, float]] = field(default_factory=list)
    #: the loop's own position (tensors and plain values), e.g. M2's labelled permutation
    position: Dict[str, Any] = field(default_factory=dict)

    def keep_best(self, net: torch.nn.Module, score: float, higher_is_better: bool) -> None:
        """Keep a copy of ``net``'s weights in :attr:`position`, with this epoch's number, when
        ``score`` (a held-out accuracy or loss) is the best so far: the first epoch, on a tie.
        Being part of the position, the best epoch survives a resume."""
        best = self.position.get("best_score")
        if best is None or (score > best if higher_is_better else score < best):
            self.position.update(best_score=score, best_epoch=self.epoch,
                                 best_model={k: v.detach().clone() for k, v in net.state_dict().items()})

    def restore_best(self, net: torch.nn.Module) -> Optional[int]:
        """Load the weights :meth:`keep_best` kept into ``net`` and return their epoch; ``None``
        (``net`` untouched) when no epoch was scored."""
        if "best_model" not in self.position:
            return None
        net.load_state_dict(self.position["best_model"])
        return int(self.position["best_epoch"])

    def add_to_average(self, net: torch.nn.Module) -> int:
        r"""Fold ``net``'s weights into the running mean kept in :attr:`position` and return how
        many weights it now averages: after the :math:`n`-th call it is
        :math:`\bar w_n = \bar w_{n-1} + (w_n - \bar w_{n-1})/n`, the mean of the :math:`n`
        weights given (Polyak averaging; stochastic weight averaging of Izmailov et al. 2018
        when called once an epoch at a constant rate). Entries that are not floating point are
        those of the first call."""
        n = self.position.get("averaged", 0) + 1
        if n == 1:
            self.position["average"] = {k: v.detach().clone() for k, v in net.state_dict().items()}
        else:
            for k, v in net.state_dict().items():
                if v.is_floating_point():
                    mean = self.position["average"][k]
                    mean += (v.detach() - mean) / n
        self.position["averaged"] = n
        return n

    @contextmanager
    def averaged_weights(self, net: torch.nn.Module) -> Iterator[torch.nn.Module]:
        """``net`` holding the running mean of :meth:`add_to_average` inside the block, and its
        own weights again after it."""
        own = {k: v.detach().clone() for k, v in net.state_dict().items()}
        net.load_state_dict(self.position["average"])
        try:
            yield net
        finally:
            net.load_state_dict(own)


def _differences(saved: Dict[str, Any], now: Dict[str, Any], skip=()) -> Dict[str, Any]:
    return {key: (saved.get(key), value) for key, value in now.items()
            if key not in skip and saved.get(key) != value}


def save_loop(path: Union[str, os.PathLike], net: torch.nn.Module, net_config: Dict[str, Any],
              loop_config: Any, optimizer: torch.optim.Optimizer, generator: torch.Generator,
              state: LoopState) -> None:
    """Write ``state`` and everything it needs (weights, optimizer, RNGs) to ``path``, atomically."""
    save_checkpoint({
        "kind": "loop", "net_config": net_config, "loop_config": asdict(loop_config),
        "model": net.state_dict(), "optimizer": optimizer.state_dict(),
        "rng": {"torch": torch.get_rng_state(), "generator": generator.get_state()},
        "epoch": state.epoch, "steps": state.steps, "history": state.history, "position": state.position,
    }, path)


def load_loop(path: Union[str, os.PathLike], net: torch.nn.Module, net_config: Dict[str, Any],
              loop_config: Any, optimizer: torch.optim.Optimizer, generator: torch.Generator) -> LoopState:
    """Restore the checkpoint at ``path`` into ``net``, ``optimizer``, the global torch RNG and
    ``generator``; returns where the loop stands.

    :raises CheckpointError: not a loop checkpoint, or written with other settings (named).
    """
    saved = load_checkpoint(path)
    if saved.get("kind") != "loop":
        raise CheckpointError(f"{path} is not a checkpoint of an M2 or CVAE training loop; give the file "
                              f"such a run wrote, or start afresh", settings=("checkpoint",))
    differ = {**_differences(saved["net_config"], net_config),
              **_differences(saved["loop_config"], asdict(loop_config), CHANGEABLE)}
    if differ:
        detail = ", ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in differ.items())
        raise CheckpointError(f"{path} was written with other settings ({detail}); pass the settings it was "
                              f"written with, or start afresh in another directory", settings=tuple(differ))
    net.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    for group in optimizer.param_groups:  # the rate given now, not the checkpoint's
        group["lr"] = loop_config.lr
    torch.set_rng_state(saved["rng"]["torch"])
    generator.set_state(saved["rng"]["generator"])
    return LoopState(int(saved["epoch"]), int(saved["steps"]), list(saved["history"]), dict(saved["position"]))


def resume_or_start(path: Optional[Union[str, os.PathLike]], resume: bool, net: torch.nn.Module,
                    net_config: Dict[str, Any], loop_config: Any, optimizer: torch.optim.Optimizer,
                    generator: torch.Generator) -> LoopState:
    """:func:`load_loop` when ``resume`` and a checkpoint exists at ``path``; else a fresh state."""
    if resume and path is not None and os.path.exists(path):
        return load_loop(path, net, net_config, loop_config, optimizer, generator)
    return LoopState()
