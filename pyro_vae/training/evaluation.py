"""The test ELBO a run reports: per datapoint, with its reconstruction and KL parts."""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any, Dict

import pyro
import torch

from .. import distributed as dist_util
from ..elbo import bits_per_dim, elbo_terms
from ..plate import registration_skipped
from ..rng import evaluation_seed, rng_fork
from .config import TrainConfig


@torch.no_grad()
def test_elbo(vae: Any, x: torch.Tensor, config: TrainConfig, rank: int = 0, world_size: int = 1,
              skip_registration: bool = True, batch_size: int = 1000) -> Dict[str, float]:
    """Per-datapoint ``elbo``, ``recon``, ``kl`` and ``bits_per_dim`` of prepared data ``x``.

    One sample of ``z`` per datapoint for the reconstruction term, the KL in closed form;
    the noise comes from the run's evaluation stream, so repeated evaluations agree. In a
    distributed run each process evaluates its share of ``x`` and the sums are reduced.
    """
    vae.eval()
    keys = ("recon", "kl", "elbo")
    mine = dist_util.shard(x, rank, world_size)
    sums = torch.zeros(len(keys) + 1, dtype=torch.float64, device=x.device)
    with rng_fork(evaluation_seed(config.seed, rank)), pyro.validation_enabled(config.validate), \
            ExitStack() as stack:
        if skip_registration:
            stack.enter_context(registration_skipped())
        for batch in mine.split(batch_size):
            terms = elbo_terms(vae.model, vae.guide, batch)
            sums[:-1] += torch.stack([getattr(terms, key).sum() for key in keys]).to(sums.dtype)
            sums[-1] += batch.shape[0]
    vae.train()
    sums = dist_util.all_reduce_sum(sums).tolist()
    out = {key: value / sums[-1] for key, value in zip(keys, sums)}
    out["bits_per_dim"] = float(bits_per_dim(torch.tensor(out["elbo"]), vae.x_dim))
    return out
