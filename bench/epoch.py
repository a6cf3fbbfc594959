#!/usr/bin/env python
"""Wall time of one full training epoch and of one test-set evaluation: pyro_vae against plain PyTorch.

pyro_vae: :meth:`pyro_vae.Trainer.train_epoch` on all training images (batch 128, dynamic
binarization, the default VAE), everything included: shuffling, binarizing, batching, the
steps and their checks; then :meth:`pyro_vae.Trainer.evaluate` (test ELBO) on the test set.
Reference: the same epoch written by hand (``bench/reference.py``): a shuffled index,
``torch.bernoulli`` per batch, default Adam, the loss summed with ``.item()`` as the usual
loop logs it; then its test ELBO (closed-form KL, one sample of z).

The two alternate for ``--repeats`` rounds; the table gives the median and the spread.
As in ``bench/step.py``, the C allocator keeps freed memory (``bench/allocator.py``) unless
``--allocator glibc-default``; minor page faults per epoch are reported.

    python bench/epoch.py --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import warnings

import pyro
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import allocator
from allocator import minor_faults
from reference import ReferenceTrainer
from report import save

from pyro_vae import VAE, Trainer, load_mnist


def reference_epoch(ref: ReferenceTrainer, x: torch.Tensor, batch_size: int, generator: torch.Generator) -> float:
    total = 0.0
    for idx in torch.randperm(len(x), generator=generator).split(batch_size):
        batch = torch.bernoulli(x[idx], generator=generator)
        total += ref.step(batch, len(x)).item() * len(idx) / len(x)
    return -total / len(x)


@torch.no_grad()
def reference_evaluate(ref: ReferenceTrainer, x: torch.Tensor, batch_size: int = 1000) -> float:
    total = 0.0
    for batch in x.split(batch_size):
        total += float(ref.vae(batch, batch.shape[0]))
    return -total / len(x)


def timed(fn, *args):
    faults, start = minor_faults(), time.perf_counter()
    value = fn(*args)
    return time.perf_counter() - start, value, minor_faults() - faults


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=None, help="full MNIST (default: $PYRO_VAE_DATA, cache, embedded)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--objective", default="elbo", help="pyro_vae's objective (default elbo; e.g. jit_elbo)")
    allocator.add_option(p)
    p.add_argument("--json", default=os.path.join(os.path.dirname(__file__), "results", "epoch.json"))
    args = p.parse_args()

    setting = allocator.apply(args.allocator)
    warnings.filterwarnings("ignore", category=FutureWarning)  # torch.jit.trace's deprecation (jit_elbo)
    data = load_mnist(args.data_dir, verbose=False)
    train_x, test_x = data.train_images, data.test_images
    pyro.clear_param_store()
    trainer = Trainer(VAE(), seed=0, objective=args.objective)
    ref = ReferenceTrainer()
    generator = torch.Generator().manual_seed(0)
    test_ready = trainer.prepare_test(test_x)
    times = {"pyro_vae": [], "reference": [], "pyro_vae_eval": [], "reference_eval": []}
    faults = {name: [] for name in times}
    elbos = {}
    for r in range(args.repeats):
        runs = [
            ("pyro_vae", lambda: trainer.train_epoch(train_x, args.batch_size)),
            ("reference", lambda: reference_epoch(ref, train_x, args.batch_size, generator)),
        ]
        for name, fn in runs if r % 2 == 0 else runs[::-1]:
            seconds, elbos[name], n = timed(fn)
            times[name].append(seconds)
            faults[name].append(n)
        seconds, elbos["pyro_vae_eval"], n = timed(lambda: trainer.evaluate(test_ready)["elbo"])
        times["pyro_vae_eval"].append(seconds)
        faults["pyro_vae_eval"].append(n)
        seconds, elbos["reference_eval"], n = timed(reference_evaluate, ref, test_ready)
        times["reference_eval"].append(seconds)
        faults["reference_eval"].append(n)
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()), flush=True)
    median = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "command": " ".join(["python bench/epoch.py", *sys.argv[1:]]),
        "threads": torch.get_num_threads(),
        "train_images": len(train_x),
        "test_images": len(test_x),
        "batch_size": args.batch_size,
        "allocator": setting,
        "seconds": {k: {"median": median[k], "min": min(v), "max": max(v)} for k, v in times.items()},
        "page_faults": {k: statistics.median(v) for k, v in faults.items()},
        "epoch_ratio": median["pyro_vae"] / median["reference"],
        "eval_ratio": median["pyro_vae_eval"] / median["reference_eval"],
        "last_elbos": elbos,
    }
    save(args.json, result)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
