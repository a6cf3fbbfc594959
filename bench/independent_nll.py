#!/usr/bin/env python
"""An independent re-computation of a one-layer VAE checkpoint's test NLL, beside pyro_vae's.

None of pyro_vae's model or evaluation code is used for the estimate: the networks are rebuilt
from the checkpoint's weight tensors (Linear, softplus, Linear, softplus, Linear; the encoder's
scale softplus + 1e-6), everything is float64, the densities are plain ``torch.distributions``
(``Normal``, ``Bernoulli``), and a VampPrior's mixture density is accumulated one component at
a time with ``logaddexp``. Only the test images come through pyro_vae (``Trainer.prepare_test``:
binarized once with the fixed seed of every NLL here), so that both estimates see the same pixels.
Then pyro_vae's :func:`~pyro_vae.inference.evaluate.log_likelihood` runs on the same images, and
the two are compared twice:

- **paired**: both estimates of image ``i`` use the same standard-normal noise, drawn after
  ``torch.manual_seed(i)``, so the Monte Carlo error cancels and what is left of the difference
  is the computation's: float32 against float64, and any error in either code;
- **unpaired**: each draws its own particles, so they agree up to their Monte Carlo errors; the
  record gives the standard error of the mean difference from the spread of the per-image
  differences.

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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from report import save


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
def log_weights(weights: dict, x: torch.Tensor, eps: torch.Tensor, components) -> torch.Tensor:
    """log p(x|z) + log p(z) - log q(z|x) at z = loc(x) + scale(x) * eps, for eps ``[K, B, D]``."""
    loc, scale = encode(weights, x)
    q = Normal(loc, scale)
    z = loc + scale * eps
    return (
        Bernoulli(logits=mlp(weights, "decoder.", z)).log_prob(x).sum(-1)
        + log_prior(weights, z, components)
        - q.log_prob(z).sum(-1)
    )


def pseudo_components(weights: dict):
    """The VampPrior's components, encoded from its pseudo-inputs; None for N(0, I)."""
    if "vamp.raw_pseudo_inputs" not in weights:
        return None
    return encode(weights, torch.sigmoid(weights["vamp.raw_pseudo_inputs"]))


@torch.no_grad()
def independent_log_likelihood(weights: dict, x: torch.Tensor, num_samples: int, chunk: int = 10) -> torch.Tensor:
    """log p̂(x_i) = logmeanexp_k [log p(x_i|z_k) + log p(z_k) - log q(z_k|x_i)], z_k ~ q(z|x_i)."""
    components, out = pseudo_components(weights), []
    z_dim = weights["decoder.0.weight"].shape[1]
    for batch in x.split(chunk):
        eps = torch.randn(num_samples, len(batch), z_dim, dtype=x.dtype)
        out.append(torch.logsumexp(log_weights(weights, batch, eps, components), 0) - math.log(num_samples))
    return torch.cat(out)


def paired(weights: dict, vae, x: torch.Tensor, num_samples: int):
    """Both estimates of each image from the same noise: (independent, pyro_vae's), each ``[N]``."""
    from pyro_vae.inference.evaluate import log_likelihood

    components, z_dim = pseudo_components(weights), weights["decoder.0.weight"].shape[1]
    independent, ours = [], []
    for i in range(len(x)):
        torch.manual_seed(i)  # pyro_vae's guide draws its [K, 1, D] noise as the first thing after this
        ll = log_likelihood(
            vae.model, vae.guide, x[i : i + 1], num_samples=num_samples, batch_size=1, particles_per_chunk=num_samples
        )
        ours.append(ll.log_likelihood.double())
        torch.manual_seed(i)
        eps = torch.randn(num_samples, 1, z_dim).double()  # the same float32 draws
        log_w = log_weights(weights, x[i : i + 1].double(), eps, components)
        independent.append(torch.logsumexp(log_w, 0) - math.log(num_samples))
    return torch.cat(independent), torch.cat(ours)


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
    from pyro_vae import Trainer, load_mnist, load_model
    from pyro_vae.inference.evaluate import log_likelihood

    vae = load_model(args.checkpoint)
    test = Trainer(vae).prepare_test(load_mnist(args.data_dir, verbose=False).test_images)[: args.test_size]
    torch.manual_seed(2)
    independent = independent_log_likelihood(weights, test.double(), args.samples)
    torch.manual_seed(3)
    ours = log_likelihood(vae.model, vae.guide, test, num_samples=args.samples)
    same_noise, ours_same_noise = paired(weights, vae, test, args.samples)
    gap = same_noise - ours_same_noise
    result = {
        "command": " ".join(["python bench/independent_nll.py", *sys.argv[1:]]),
        "config": state["config"],
        "epoch": state["epoch"],
        "test_images": len(test),
        "samples_per_image": args.samples,
        "paired": {
            "independent_nll": -float(same_noise.mean()),
            "pyro_vae_nll": -float(ours_same_noise.mean()),
            "difference": float(-gap.mean()),
            "largest_image_difference": float(gap.abs().max()),
        },
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
        save(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
