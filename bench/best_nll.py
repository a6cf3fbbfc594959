#!/usr/bin/env python
"""The best test NLL a recipe reaches on this CPU in a fixed wall-clock budget (issue 14's moonshot).

Trains one model for ``--minutes`` of wall-clock time (training only: evaluations pause the
clock), with a learning rate that follows the *time* budget (a cosine from ``--lr`` down to
``--lr-final``), KL warm-up over the first ``--warmup`` fraction of it and, optionally, a batch
size that doubles at given fractions (``--batch-schedule``), and evaluates the test NLL with
``--eval-samples`` importance samples on the full test set, dynamically binarized once with a
fixed seed as Burda et al. did, at each of ``--eval-at`` (minutes of training): with
``--curve-samples`` importance samples at every point and, at the end, with ``--eval-samples``
(Burda's k = 5000). Each row of the curve is written to ``--json`` as it is measured: training
minutes, epochs, steps, test ELBO, NLL, its standard error, the median effective sample size and
the evaluation's own minutes.

    python bench/best_nll.py --data-dir ../shared/data                      # the full hour
    python bench/best_nll.py --data-dir ../shared/data --minutes 5 --eval-at 5   # a prefix
    python bench/best_nll.py --model hvae --prior vamp ...                  # another recipe

Reference (Burda et al. 2015, Table 1, one stochastic layer, 3,280 epochs on a GPU): VAE 86.76,
IWAE k=50 84.78; two layers: VAE 85.33, IWAE k=50 82.90.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time

import pyro
import torch

from pyro_vae import Callback, TrainConfig, Trainer, load_mnist
from pyro_vae.inference.evaluate import log_likelihood
from pyro_vae.models.registry import build_model

PAPER = {"one-layer VAE": 86.76, "one-layer IWAE k=50": 84.78, "two-layer VAE": 85.33, "two-layer IWAE k=50": 82.90}


class TimeSchedule(Callback):
    """Before every step: the learning rate and the KL weight as functions of the training
    minutes spent so far (a cosine for the rate, a linear warm-up for the weight)."""

    def __init__(self, clock: "Clock", args: argparse.Namespace) -> None:
        self.clock, self.args = clock, args

    def fraction(self) -> float:
        return min(1.0, self.clock.minutes() / self.args.minutes)

    def apply(self, trainer: Trainer) -> None:
        f, a = self.fraction(), self.args
        trainer.set_lr(a.lr_final + 0.5 * (a.lr - a.lr_final) * (1 + math.cos(math.pi * f)))
        if a.warmup > 0:
            trainer.set_beta(min(1.0, f / a.warmup))

    def on_epoch_start(self, trainer: Trainer, num_steps: int, first_step: int) -> None:
        self.apply(trainer)

    def on_step_end(self, trainer: Trainer, step: int, loss: float) -> None:
        if step % 20 == 0:
            self.apply(trainer)


class Clock:
    """Wall-clock seconds of training only: :meth:`pause` stops it during evaluations."""

    def __init__(self) -> None:
        self.spent, self.since = 0.0, time.perf_counter()

    def minutes(self) -> float:
        running = time.perf_counter() - self.since if self.since is not None else 0.0
        return (self.spent + running) / 60

    def pause(self) -> None:
        self.spent += time.perf_counter() - self.since
        self.since = None

    def resume(self) -> None:
        self.since = time.perf_counter()


def batch_size_at(fraction: float, args: argparse.Namespace) -> int:
    """``--batch-size``, doubled at each of ``--batch-schedule``'s fractions already passed."""
    return args.batch_size * 2 ** sum(fraction >= f for f in args.batch_schedule)


def evaluate(vae, test: torch.Tensor, num_samples: int) -> dict:
    """The k-sample NLL of the test set, its standard error from the importance weights, the
    median effective sample size, and the evaluation's own minutes, keyed by k."""
    start = time.perf_counter()
    with torch.no_grad():
        ll = log_likelihood(vae.model, vae.guide, test, num_samples=num_samples)
    return {f"nll_k{num_samples}": ll.nll(),
            f"nll_k{num_samples}_stderr": float(ll.stderr.pow(2).mean().sqrt() / len(test) ** 0.5),
            f"median_ess_k{num_samples}": float(ll.ess.median()),
            f"eval_minutes_k{num_samples}": (time.perf_counter() - start) / 60}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=None, help="full MNIST (default: $PYRO_VAE_DATA, cache, embedded)")
    p.add_argument("--minutes", type=float, default=60.0, help="training minutes (evaluations not counted)")
    p.add_argument("--eval-at", type=float, nargs="+", default=None,
                   help="training minutes at which to evaluate (default: 5 10 20 30 45 60, within --minutes)")
    p.add_argument("--model", default="vae", choices=["vae", "hvae"])
    p.add_argument("--prior", default="standard", choices=["standard", "vamp"])
    p.add_argument("--z-dim", type=int, default=50, help="latent size of the one-layer vae")
    p.add_argument("--hidden", type=int, nargs="+", default=[400], help="hidden widths of the one-layer vae")
    p.add_argument("--activation", default=None,
                   help="activation of the deterministic layers (default: the model's, softplus for vae, tanh for hvae)")
    p.add_argument("--guide", default="diagonal")
    p.add_argument("--objective", default="elbo", help="elbo, meanfield, iwae (with --particles)")
    p.add_argument("--particles", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=128, help="initial batch size")
    p.add_argument("--batch-schedule", type=float, nargs="*", default=[0.5, 0.8],
                   help="fractions of the budget at which the batch size doubles")
    p.add_argument("--lr", type=float, default=1e-3, help="initial learning rate")
    p.add_argument("--lr-final", type=float, default=5e-5, help="learning rate at the end of the budget")
    p.add_argument("--warmup", type=float, default=0.02, help="fraction of the budget of linear KL warm-up")
    p.add_argument("--eval-samples", type=int, default=5000, help="k of the final test NLL (Burda: 5000)")
    p.add_argument("--curve-samples", type=int, default=500,
                   help="k of the NLL at every point of the curve (a full-test k=5000 evaluation takes "
                        "10-30 minutes on 2 cores, so the curve uses fewer; the last point has both)")
    p.add_argument("--test-size", type=int, default=None, help="evaluate on the first N test images (default all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=os.path.join(os.path.dirname(__file__), "results", "best_nll.json"))
    p.add_argument("--checkpoint", default=os.path.join("runs", "best_nll", "checkpoint.pt"),
                   help="written before every evaluation, so that a long one can be redone from it")
    args = p.parse_args()
    eval_at = sorted(m for m in (args.eval_at or [5, 10, 20, 30, 45, 60]) if m <= args.minutes)
    if not eval_at or eval_at[-1] < args.minutes:
        eval_at.append(args.minutes)

    data = load_mnist(args.data_dir)
    pyro.set_rng_seed(args.seed)
    if args.model == "vae":
        config = {"model": "vae", "z_dim": args.z_dim, "hidden_dims": args.hidden, "guide": args.guide,
                  "prior": args.prior}
    else:
        config = {"model": "hvae", "prior": args.prior}
    if args.activation is not None:
        config["activation"] = args.activation
    vae = build_model(config)
    trainer = Trainer(vae, config=TrainConfig(lr=args.lr, seed=args.seed, objective=args.objective,
                                       num_particles=args.particles))
    train_x = trainer.check_data(data.train_images, "training data")
    test = trainer.prepare_test(data.test_images[: args.test_size])  # binarized once, fixed seed
    result = {
        "command": "python bench/best_nll.py " + " ".join(sys.argv[1:]), "recipe": {**vars(args), "config": config},
        "data": data.source, "num_train": len(train_x), "num_test": len(test), "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(), "paper": PAPER, "curve": [],
    }
    clock = Clock()
    schedule = TimeSchedule(clock, args)
    steps = 0
    while clock.minutes() < args.minutes:
        batch_size = batch_size_at(schedule.fraction(), args)
        trainer.train_epoch(train_x, batch_size=batch_size, callbacks=[schedule])
        steps += math.ceil(len(train_x) / batch_size)
        print(f"epoch {trainer.epoch}: {clock.minutes():.2f} training minutes, batch {batch_size}", flush=True)
        if clock.minutes() >= eval_at[0] or clock.minutes() >= args.minutes:
            clock.pause()
            os.makedirs(os.path.dirname(os.path.abspath(args.checkpoint)), exist_ok=True)
            trainer.save(args.checkpoint)
            row = {"train_minutes": clock.minutes(), "epochs": trainer.epoch, "steps": steps,
                   "batch_size": batch_size, "lr": trainer.optimizer.param_groups[0]["lr"],
                   "checkpoint": args.checkpoint}
            print(json.dumps(row), "-- evaluating", flush=True)
            row["test_elbo"] = trainer.evaluate(test)["elbo"]
            row.update(evaluate(vae, test, args.curve_samples))
            if clock.minutes() >= args.minutes and args.eval_samples != args.curve_samples:
                row.update(evaluate(vae, test, args.eval_samples))
            result["curve"].append(row)
            print(json.dumps(row), flush=True)
            os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
            with open(args.json, "w") as f:
                json.dump(result, f, indent=2)
            while eval_at and eval_at[0] <= clock.minutes():
                eval_at.pop(0)
            clock.resume()
    last = result["curve"][-1]
    print(f"test NLL {last[f'nll_k{args.eval_samples}']:.2f} nats (k={args.eval_samples}) after {last['train_minutes']:.1f} training "
          f"minutes ({last['epochs']} epochs); the paper's one-layer VAE: {PAPER['one-layer VAE']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
