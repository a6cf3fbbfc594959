"""The held-out ELBO a run reports: per datapoint, with its reconstruction and KL parts."""

from __future__ import annotations

from contextlib import ExitStack
from typing import Dict

import pyro
import torch

from pyro_vae.data.batches import Source
from pyro_vae.inference.elbo import bits_per_dim, elbo_terms
from pyro_vae.models.plate import registration_skipped
from pyro_vae.rng import evaluation_seed, rng_fork
from pyro_vae.training import distributed as dist_util
from pyro_vae.training.config import TrainConfig
from pyro_vae.training.program import Program


@torch.no_grad()
def test_elbo(
    program: Program,
    data: Source,
    config: TrainConfig,
    rank: int = 0,
    world_size: int = 1,
    skip_registration: bool = True,
    batch_size: int = 1000,
) -> Dict[str, float]:
    """Per-datapoint ``elbo``, ``recon`` and ``kl`` of prepared held-out ``data``
    (:func:`pyro_vae.inference.elbo.elbo_terms`), and ``bits_per_dim`` where the program has pixels.

    One sample of ``z`` per datapoint for the reconstruction term, the KL in closed form where
    valid; the noise comes from the run's evaluation stream, so repeated evaluations agree. In
    a distributed run each process evaluates its share of the data and the sums are reduced.
    """
    program.module.eval()
    keys = ("recon", "kl", "elbo")
    mine = torch.arange(rank, data.num_data, world_size)
    sums = torch.zeros(len(keys) + 1, dtype=torch.float64)
    with rng_fork(evaluation_seed(config.seed, rank)), pyro.validation_enabled(config.validate), ExitStack() as stack:
        if skip_registration:
            stack.enter_context(registration_skipped())
        for idx in mine.split(batch_size):
            batch = data.take(idx)
            terms = elbo_terms(program.model, program.guide, *batch.args, **batch.kwargs)
            sums[:-1] += torch.stack([getattr(terms, key).sum() for key in keys]).to(sums)
            sums[-1] += batch.size
    program.module.train()
    totals = dist_util.all_reduce_sum(sums.to(_device(program))).tolist()
    out = {key: value / totals[-1] for key, value in zip(keys, totals)}
    if program.x_dim is not None:
        out["bits_per_dim"] = float(bits_per_dim(torch.tensor(out["elbo"]), program.x_dim))
    return out


def _device(program: Program) -> torch.device:
    param = next(program.module.parameters(), None)
    return param.device if param is not None else torch.device("cpu")
