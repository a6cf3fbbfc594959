#!/usr/bin/env python
"""An independent re-computation of a one-layer VAE checkpoint's test NLL, beside pyro_vae's.

None of pyro_vae's model or evaluation code is used for the estimate: the networks are rebuilt
from the checkpoint's weight tensors (Linear, softplus, Linear, softplus, Linear; the encoder's
scale softplus + 1e-6), everything is float64, the densities are plain ``torch.distributions``
(``Normal``, ``Bernoulli``), and a VampPrior's mixture density is accumulated one component at
a time with ``logaddexp``. Only the test images come through pyro_vae (``Trainer.prepare_test``:
binarized once with the fixed seed of every NLL here), so that both estimates see the same pixels.
Then pyro_vae's :func:`~pyro_vae.inference.evaluate.log_likelihood` runs on the same images, and
the two are compared. They draw different particles, so they agree up to their Monte Carlo
errors: the record gives the standard error of the mean difference from the spread of the
per-image differences.

    python bench/independent_nll.py --checkpoint runs/best_nll/checkpoint.pt --test-size 200
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

import torch
import torch.nn.functional as F
from torch.distributions import Bernoulli, Normal


def mlp(weights: dict, prefix: str, x: torch.Tensor) -> torch.Tensor:
    """Linear, softplus, Linear, softplus, ..., Linear from ``prefix.{0,2,4,...}.weight``."""
    layers = sorted({int(k[len(prefix) :].split(".")[0]) for k in weights if k.startswith(prefix)})
    for i, layer in enumerate(layers):
        x = x @ weights[f"{prefix}{layer}.weight"].T + weights[f"{prefix}{layer}.bias"]
        if i < len(layers) - 1:
            x = F.softplus(x)
    return x


def encode(weights: dict, x: torch.Tensor):
    loc, raw = mlp(weights, "encoder.encoder.net.", x).chunk(2, dim=-1)
    return loc, F.softplus(raw) + 1e-6


def log_prior(weights: dict, z: torch.Tensor, components) -> torch.Tensor:
    """log p(z): N(0, I), or the VampPrior (1/K) sum_k N(z; mu_k, sigma_k^2), one component at a time."""
    if components is None:
        return Normal(0.0, 1.0).log_prob(z).sum(-1)
    locs, scales = components
    total = torch.full(z.shape[:-1], -math.inf, dtype=z.dtype)
    for k in range(len(locs)):
        total = torch.logaddexp(total, Normal(locs[k], scales[k]).log_prob(z).sum(-1))
    return total - math.log(len(locs))


@torch.no_grad()
def independent_log_likelihood(weights: dict, x: torch.Tensor, num_samples: int, chunk: int = 10) -> torch.Tensor:
    """log p̂(x_i) = logmeanexp_k [log p(x_i|z_k) + log p(z_k) - log q(z_k|x_i)], z_k ~ q(z|x_i)."""
    components = None
    if "vamp.raw_pseudo_inputs" in weights:
        components = encode(weights, torch.sigmoid(weights["vamp.raw_pseudo_inputs"]))
    out = []
    for batch in x.split(chunk):
        loc, scale = encode(weights, batch)
        q = Normal(loc, scale)
        z = q.sample((num_samples,))  # [K, B, D]
        log_w = (
            Bernoulli(logits=mlp(weights, "decoder.", z)).log_prob(batch).sum(-1)
            + log_prior(weights, z, components)
            - q.log_prob(z).sum(-1)
        )
        out.append(torch.logsumexp(log_w, 0) - math.log(num_samples))
    return torch.cat(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data-dir", default=None, help="full MNIST (default: $PYRO_VAE_DATA, cache, embedded)")
    p.add_argument("--test-size", type=int, default=200)
    p.add_argument("--samples", type=int, default=5000)
    p.add_argument("--json", default=None, help="where to write the record")
    args = p.parse_args()

    state = torch.load(args.checkpoint, map_location="cpu", weights_only=False)
    weights = {k: v.double() for k, v in state["model"].items()}
    # the data, and afterwards the estimate to compare with, from pyro_vae
    from pyro_vae import Trainer, load_mnist
    from pyro_vae.inference.evaluate import log_likelihood
    from pyro_vae.models.registry import build_model

    vae = build_model(state["config"])
    vae.load_state_dict(state["model"])
    test = Trainer(vae).prepare_test(load_mnist(args.data_dir, verbose=False).test_images)[: args.test_size]
    torch.manual_seed(2)
    independent = independent_log_likelihood(weights, test.double(), args.samples)
    torch.manual_seed(3)
    ours = log_likelihood(vae.model, vae.guide, test, num_samples=args.samples)
    result = {
        "command": " ".join(["python bench/independent_nll.py", *sys.argv[1:]]),
        "config": state["config"],
        "epoch": state["epoch"],
        "test_images": len(test),
        "samples_per_image": args.samples,
        "independent_nll": -float(independent.mean()),
        "pyro_vae_nll": ours.nll(),
        "pyro_vae_stderr": ours.nll_stderr(),
        "difference": -float(independent.mean()) - ours.nll(),
        # the spread of the per-image differences: the Monte Carlo error of the mean difference,
        # measured rather than taken from the delta method (unreliable where few weights dominate)
        "difference_stderr": float((independent - ours.log_likelihood.double()).std() / len(test) ** 0.5),
        "median_ess": float(ours.ess.median()),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json + ".tmp", "w") as f:
            json.dump(result, f, indent=2)
        os.replace(args.json + ".tmp", args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
