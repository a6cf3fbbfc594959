#!/usr/bin/env python
"""Throughput and memory of the k = 5000 importance-sampled test log-likelihood.

Runs :func:`pyro_vae.inference.evaluate.log_likelihood` (the Pyro model and guide, vectorized
particles, chunks of at most 5,000 particle x datapoint rows) on the first
``--test-size`` test images, and the same estimator written in plain PyTorch
(``bench/reference.py: reference_log_likelihood``, same chunks) with the same weights on
the same images. Prints importance samples per second, the time that rate implies for the whole
10,000-image test set, the peak resident memory of the process, and both NLLs (they
estimate the same number and must agree within their Monte Carlo error).

The weights are those of ``--checkpoint`` (a pyro_vae checkpoint of the default
architecture) or, without one, of a freshly initialized VAE: the speed does not depend
on them.

    python bench/loglik.py --data-dir ../shared/data                     # 500 test images
    python bench/loglik.py --data-dir ../shared/data --test-size 10000   # the whole test set
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

import pyro
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference import ReferenceVAE, copy_weights, reference_log_likelihood
from report import save

from pyro_vae import VAE, Trainer, load_mnist
from pyro_vae.inference.evaluate import log_likelihood
from pyro_vae.training.checkpoint import load_checkpoint


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=None, help="full MNIST (default: $PYRO_VAE_DATA, cache, embedded)")
    p.add_argument("--test-size", type=int, default=500)
    p.add_argument("--samples", type=int, default=5000, help="k, importance samples per image")
    p.add_argument("--checkpoint", default=None, help="weights to evaluate (default: a fresh VAE)")
    p.add_argument("--skip-reference", action="store_true", help="time pyro_vae only")
    p.add_argument("--json", default=os.path.join(os.path.dirname(__file__), "results", "loglik.json"))
    args = p.parse_args()

    data = load_mnist(args.data_dir, verbose=False)
    pyro.clear_param_store()
    vae = VAE()
    if args.checkpoint:
        vae.load_state_dict(load_checkpoint(args.checkpoint)["model"])
    trainer = Trainer(vae)
    test = trainer.prepare_test(data.test_images)[: args.test_size]
    rss_before = peak_rss_mb()
    torch.manual_seed(1)
    start = time.perf_counter()
    ll = log_likelihood(vae.model, vae.guide, test, num_samples=args.samples)
    seconds = time.perf_counter() - start
    rss_after = peak_rss_mb()
    samples = args.samples * len(test)
    result = {
        "command": " ".join(["python bench/loglik.py", *sys.argv[1:]]),
        "threads": torch.get_num_threads(),
        "test_images": len(test),
        "samples_per_image": args.samples,
        "seconds": seconds,
        "samples_per_second": samples / seconds,
        "projected_seconds_10k": 10_000 * args.samples / (samples / seconds),
        "peak_rss_mb_before": rss_before,
        "peak_rss_mb": rss_after,
        "nll": ll.nll(),
        "nll_stderr": ll.nll_stderr(),
    }
    if not args.skip_reference:
        reference = copy_weights(ReferenceVAE(), vae)
        torch.manual_seed(1)
        start = time.perf_counter()
        ref_ll = reference_log_likelihood(reference, test, args.samples)
        ref_seconds = time.perf_counter() - start
        result.update(
            {
                "reference_seconds": ref_seconds,
                "reference_samples_per_second": samples / ref_seconds,
                "ratio": seconds / ref_seconds,
                "reference_nll": -float(ref_ll.mean()),
            }
        )
    save(args.json, result)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
