"""Where a run is inside an epoch: its data order, its random stream and its next step.

Epoch :math:`e` draws its order and its dynamic binarization from the stream
:func:`pyro_vae.rng.data_order_generator` seeds with ``(seed, e)``, so an epoch does not
depend on what ran before it. A :class:`EpochPass` is one such pass over the training data;
stopped by a signal, it is saved with the checkpoint (:meth:`EpochPass.state`) and continued
from its next step (:meth:`EpochPass.from_state`) with the very same batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Tuple

import torch

from pyro_vae.data.batches import Batch, Source
from pyro_vae.data.transforms import Transform
from pyro_vae.errors import CheckpointError
from pyro_vae.rng import data_order_generator
from pyro_vae.training.distributed import shard


@dataclass
class EpochPass:
    """One pass over ``num_data`` images in batches of ``batch_size``: epoch ``epoch``'s order,
    its generator (which binarizes each batch as it is drawn), the next step and the running
    sum of the losses of the steps taken."""

    epoch: int
    order: torch.Tensor
    generator: torch.Generator
    batch_size: int
    step: int = 0
    total: float = 0.0
    last_loss: float = float("nan")

    @classmethod
    def start(cls, seed: int, epoch: int, num_data: int, batch_size: int, device: torch.device) -> "EpochPass":
        """Epoch ``epoch``'s pass from its first step: a permutation of the ``num_data`` images."""
        generator = data_order_generator(seed, epoch, device)
        order = torch.randperm(num_data, generator=generator, device=generator.device)
        return cls(epoch, order, generator, batch_size)

    def record(self, step: int, contribution: float, loss: float) -> None:
        """Step ``step`` is done: add its share of the epoch's mean loss."""
        self.step, self.last_loss = step + 1, loss
        self.total += contribution

    @property
    def num_data(self) -> int:
        return len(self.order)

    @property
    def batches(self) -> List[torch.Tensor]:
        """The indices of every minibatch of the pass (the last may be smaller)."""
        return list(self.order.split(self.batch_size))

    @property
    def num_steps(self) -> int:
        return -(-self.num_data // self.batch_size)

    def batch(
        self, idx: torch.Tensor, source: Source, transform: Transform, rank: int = 0, world_size: int = 1
    ) -> Tuple[Batch, float]:
        """The minibatch ``idx``, transformed with this pass's stream; in a distributed run this
        process's rows of it (every process transformed the global batch alike) and the weight that
        makes uneven shards average to the full batch's gradient."""
        batch = transform.train(source.take(idx), self.generator)
        if world_size == 1:
            return batch, 1.0
        batch = batch.map(lambda t: shard(t, rank, world_size))
        return batch, world_size * batch.size / len(idx)

    def warmup_batch(self, source: Source, transform: Transform, size: int) -> Batch:
        """A batch of the first ``size`` datapoints, transformed on a fixed stream, not the pass's
        (JIT warm-up)."""
        device = self.generator.device
        return transform.train(source.take(torch.arange(size, device=device)), torch.Generator(device).manual_seed(0))

    def state(self) -> Dict[str, Any]:
        """What a mid-epoch checkpoint saves (plain tensors and numbers)."""
        return {
            "epoch": self.epoch,
            "step": self.step,
            "order": self.order,
            "total": self.total,
            "generator": self.generator.get_state(),
            "batch_size": self.batch_size,
            "num_data": self.num_data,
        }

    @classmethod
    def from_state(cls, state: Dict[str, Any], num_data: int, batch_size: int, device: torch.device) -> "EpochPass":
        """Continue a saved pass; the training data and batch size must be the ones it began with."""
        if (state["num_data"], state["batch_size"]) != (num_data, batch_size):
            raise CheckpointError(
                f"epoch {state['epoch']} stopped at step {state['step']} of a pass over "
                f"{state['num_data']} images in batches of {state['batch_size']}, but now {num_data} "
                f"images in batches of {batch_size} are given; continue with the same training data "
                f"and batch size",
                settings=("train_size", "batch_size"),
            )
        generator = torch.Generator(device=device)
        generator.set_state(state["generator"])
        return cls(
            int(state["epoch"]), state["order"], generator, batch_size, int(state["step"]), float(state["total"])
        )
