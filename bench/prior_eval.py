#!/usr/bin/env python
"""Minutes of the k = 5000 importance-sampled test NLL, per prior, on one checkpoint.

Evaluates :func:`pyro_vae.inference.evaluate.log_likelihood` on the first ``--test-size`` test
images (binarized once with the fixed seed of every NLL in this repository) with the weights of
``--checkpoint`` (any pyro_vae checkpoint: the model is rebuilt from its config), from a fixed
seed, and writes the NLL, its Monte Carlo standard error, the per-image estimates' digest and
the minutes to ``--json``. Run it under two trees of pyro_vae to compare them on the same
checkpoint: the same seed and the same ``--batch-size`` draw the same particles, so the two
estimates must agree to far below their standard error. Both runs evaluate as
``bench/best_nll.py`` does: subnormals flushed to zero and freed memory kept in the heap
(``--allocator glibc-default`` leaves glibc as is)::

    git worktree add /tmp/before <commit>
    PYTHONPATH=/tmp/before python bench/prior_eval.py --checkpoint C --json /tmp/before.json
    python bench/prior_eval.py --checkpoint C --compare /tmp/before.json
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
import time

import pyro
import torch

import pyro_vae
from pyro_vae import Trainer, load_mnist
from pyro_vae.inference.evaluate import log_likelihood
from pyro_vae.models.registry import build_model
from pyro_vae.training.checkpoint import load_checkpoint

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import allocator
from report import commit


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=None, help="full MNIST (default: $PYRO_VAE_DATA, cache, embedded)")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--test-size", type=int, default=10_000)
    p.add_argument("--samples", type=int, default=5000, help="k, importance samples per image")
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="images per chunk (default: log_likelihood's); give two trees the same to draw the same particles",
    )
    p.add_argument("--json", required=True, help="where to write this run's record")
    p.add_argument("--compare", default=None, help="a record of the same checkpoint to compare with")
    allocator.add_option(p)
    args = p.parse_args()
    torch.set_flush_denormal(True)  # as bench/best_nll.py evaluates: before torch's worker threads exist
    allocator_setting = allocator.apply(args.allocator)

    state = load_checkpoint(args.checkpoint)
    pyro.clear_param_store()
    # rebuilt by hand rather than by pyro_vae.load_model: the "before" tree may predate it
    vae = build_model(state["config"])
    vae.load_state_dict(state["model"])
    vae.eval()
    test = Trainer(vae).prepare_test(load_mnist(args.data_dir, verbose=False).test_images)[: args.test_size]
    defaults = inspect.signature(log_likelihood).parameters  # the tree's own, for the record
    batch_size = args.batch_size or defaults["batch_size"].default
    torch.manual_seed(1)
    start = time.perf_counter()
    ll = log_likelihood(vae.model, vae.guide, test, num_samples=args.samples, batch_size=batch_size)
    minutes = (time.perf_counter() - start) / 60
    result = {
        "command": " ".join(["python bench/prior_eval.py", *sys.argv[1:]]),
        "code": os.path.dirname(os.path.abspath(pyro_vae.__file__)),
        "commit": commit(os.path.dirname(os.path.abspath(pyro_vae.__file__))),
        "allocator": allocator_setting,
        "flush_denormal": True,
        "config": state["config"],
        "threads": torch.get_num_threads(),
        "test_images": len(test),
        "samples_per_image": args.samples,
        "batch_size": batch_size,
        "particles_per_chunk": min(args.samples, defaults["max_elements"].default // batch_size),
        "minutes": minutes,
        "nll": ll.nll(),
        "nll_stderr": ll.nll_stderr(),
        "per_image": ll.log_likelihood.tolist(),
    }
    if args.compare:
        with open(args.compare) as f:
            before = json.load(f)
        diff = (ll.log_likelihood.double() - torch.tensor(before["per_image"], dtype=torch.float64)).abs()
        result["compared_with"] = {
            "record": args.compare,
            "code": before["code"],
            "commit": before.get("commit", "unknown"),
            "batch_size": before.get("batch_size", 100),  # records before the field: that day's default
            "minutes": before["minutes"],
            "nll": before["nll"],
            "nll_difference": result["nll"] - before["nll"],
            "max_per_image_difference": float(diff.max()),
            "speedup": before["minutes"] / minutes,
        }
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    tmp = args.json + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f, indent=1)
    os.replace(tmp, args.json)
    print(json.dumps({k: v for k, v in result.items() if k != "per_image"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
