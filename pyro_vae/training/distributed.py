r"""Data-parallel SVI across processes with :mod:`torch.distributed`.

Every process (a *rank*) holds a replica of the VAE. Each SVI step, all ranks draw the
same global minibatch of :math:`B` images (the epoch order and the dynamic binarization
come from generators seeded alike on every rank), and rank :math:`r` of :math:`W` keeps
the rows :math:`r, r+W, r+2W, \dots` of it, a shard of :math:`B_r` images. Its loss is
the negative ELBO of its shard at the scale of the data plate, :math:`N/B_r`, times
:math:`W B_r / B`; :class:`~torch.nn.parallel.DistributedDataParallel` averages the
gradients over ranks, which gives

.. math::

    \frac1W \sum_r \frac{W B_r}{B} \frac{N}{B_r} \nabla \sum_{i \in \text{shard } r} -\mathrm{ELBO}_i
    = \frac{N}{B} \nabla \sum_{i \in \text{batch}} -\mathrm{ELBO}_i ,

the gradient one process would compute on the whole minibatch (seed item 9), whatever
the shard sizes. Each rank draws its own latent noise (its RNG is seeded by seed and
rank), so a run on :math:`W` ranks equals one process on the same global batches whose
noise for shard :math:`r` comes from rank :math:`r`'s stream.

Launch with ``torchrun`` (``torchrun --nproc_per_node=2 examples/mnist_svi.py
--distributed``); :func:`init_from_env` reads its environment variables. The backend is
gloo on the CPU and NCCL on CUDA devices.
"""

from __future__ import annotations

import gc
import os
import signal
from typing import Any, List, Tuple

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from pyro_vae.errors import ConfigError

#: torchrun's environment variables, all of which a launched process has.
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def is_distributed() -> bool:
    """Whether this process belongs to an initialized process group."""
    return dist.is_available() and dist.is_initialized()


def rank_and_world() -> Tuple[int, int]:
    """``(rank, world_size)``: ``(0, 1)`` outside a process group."""
    if not is_distributed():
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


def init_from_env(device: str = "cpu") -> Tuple[int, int, torch.device]:
    """Join the process group that ``torchrun`` set up; returns ``(rank, world_size, device)``.

    :param device: ``"cpu"`` (gloo) or ``"cuda"`` (NCCL; each process takes the GPU
        numbered by its ``LOCAL_RANK``).
    :raises ConfigError: when not launched by torchrun, or CUDA is asked for but absent.
    """
    missing = [name for name in TORCHRUN_VARIABLES if name not in os.environ]
    if missing:
        raise ConfigError(
            f"distributed training needs the process group variables that torchrun sets "
            f"({', '.join(missing)} missing); launch the program with torchrun, e.g. "
            f"'torchrun --nproc_per_node=2 PROGRAM'",
            settings=("distributed",),
        )
    local_rank = int(os.environ["LOCAL_RANK"])
    kind = torch.device(device).type
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                "device 'cuda' was asked for but torch sees no CUDA device; use device 'cpu'", settings=("device",)
            )
        torch.cuda.set_device(local_rank)
        target = torch.device("cuda", local_rank)
        backend = "nccl"
    elif kind == "cpu":
        target, backend = torch.device("cpu"), "gloo"
    else:
        raise ConfigError(f"distributed training runs on 'cpu' or 'cuda' devices, not {device!r}")
    if not is_distributed():
        dist.init_process_group(backend=backend)
    return dist.get_rank(), dist.get_world_size(), target


def shard(indices: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """Rank ``rank``'s rows of a global minibatch: ``indices[rank::world_size]``."""
    return indices[rank::world_size]


def check_shards(num_data: int, batch_size: int, world_size: int) -> None:
    """Every global minibatch, the last one included, needs a row per process."""
    smallest = num_data % batch_size or batch_size
    if world_size > 1 and min(smallest, batch_size) < world_size:
        raise ConfigError(
            f"{world_size} processes need at least {world_size} images in every minibatch, but {num_data} "
            f"images in batches of {batch_size} leave a last batch of {smallest}; choose another batch_size "
            f"(or number of training images)",
            settings=("batch_size", "train_size"),
        )


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum ``values`` over ranks, in place (a no-op outside a process group)."""
    if is_distributed():
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def gather_tensors(tensor: torch.Tensor, device: torch.device) -> List[torch.Tensor]:
    """Every rank's ``tensor`` (same shape and dtype on all ranks), in rank order, on the CPU;
    ``device`` is where the backend exchanges it (the GPU for NCCL)."""
    if not is_distributed():
        return [tensor]
    local = tensor.to(device)
    out = [torch.empty_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(out, local)
    return [t.cpu() for t in out]


def data_parallel(
    loss_fn: torch.nn.Module, elbo: Any, stop: Any, device: torch.device
) -> Tuple[Any, "StepAgreement", int, int]:
    """``(loss module wrapped in DistributedDataParallel, how the processes agree on a step, rank,
    world size)`` in this process's group; ``stop`` is the trainer's
    :class:`~pyro_vae.training.signals.SignalStop`."""
    if not is_distributed():
        raise ConfigError(
            "distributed=True needs a process group: launch the program with torchrun "
            "and call pyro_vae.training.distributed.init_from_env() first",
            settings=("distributed",),
        )
    if not hasattr(elbo, "differentiable_loss"):
        raise ConfigError(
            f"distributed training needs an objective with differentiable_loss; {type(elbo).__name__} has none",
            settings=("objective",),
        )
    rank, world_size = rank_and_world()
    wrapped = DistributedDataParallel(loss_fn, device_ids=[device] if device.type == "cuda" else None)
    return wrapped, StepAgreement(stop, device, world_size), rank, world_size


class StepAgreement:
    """How the processes agree on a training step's outcome, in one all-reduce per step: the
    loss of the global minibatch, whether any process was asked to stop (then all stop after
    this step), and how many others refused the step (then all refuse it).

    :param stop: this process's :class:`~pyro_vae.training.signals.SignalStop`.
    """

    def __init__(self, stop: Any, device: torch.device, world_size: int) -> None:
        self.stop = stop
        self.device = device
        self.world_size = world_size

    def __call__(self, loss: torch.Tensor, refused: bool) -> Tuple[float, int]:
        """``(mean loss over processes, refusals by the other processes)``."""
        signum = self.stop.signum
        flags = [signum == signal.SIGINT, signum == signal.SIGTERM, refused]
        shared = torch.cat([loss.reshape(1).to(torch.float64).cpu(), torch.tensor(flags, dtype=torch.float64)])
        shared = all_reduce_sum(shared.to(self.device)).cpu()
        if signum is None and shared[1:3].any():
            self.stop.request(signal.SIGINT if shared[1] > 0 else signal.SIGTERM)
        return float(shared[0]) / self.world_size, int(shared[3]) - int(refused)


def shutdown() -> None:
    """Leave the process group (destroy it on this rank).

    Call it once the trainers are gone (after the function that trained has returned):
    a :class:`~torch.nn.parallel.DistributedDataParallel` wrapper that outlives the group
    can abort the process when it is finally destroyed (gloo: "terminate called without an
    active exception", about 1 run in 40 here; 0 in 100 with this order). Released wrappers
    are collected first. There is no barrier: rank 0 may still be writing figures and
    evaluating long after the others are done.
    """
    if not is_distributed():
        return
    gc.collect()
    dist.destroy_process_group()
