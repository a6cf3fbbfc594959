#!/usr/bin/env python
"""The best test NLL a recipe reaches on this CPU in a budget of wall-clock training minutes.

Trains one model for ``--minutes`` of training (evaluations stop the clock) under the budget rule
of :mod:`pyro_vae.training.budget`: a learning rate on a cosine over the minutes, from ``--lr``
down to ``--lr-final``; a KL warm-up of ``--warmup-minutes`` (at most ``--warmup-fraction`` of
the budget); a batch size that doubles at the fractions ``--batch-schedule``; from the fraction
``--final-from`` on, the objective ``--final-objective`` (the IWAE bound with
``--final-particles`` = 10 from 70 %); optionally, from the fraction ``--average-from``, the
mean of the weights at each epoch's end, which the last point evaluates after the last weights.
The same rule sets every budget: ``--minutes 10`` and
``--minutes 60`` differ in that flag only. It evaluates the
test NLL on the full test set, dynamically binarized once with a fixed seed as Burda et al. did,
at each of ``--eval-at`` (training minutes): with ``--curve-samples`` importance samples at every
point and, at the end, with ``--eval-samples`` (Burda's k = 5000). Each row of the curve is
written to ``--json`` as it is measured: training minutes, epochs, steps, test ELBO, NLL, its
standard error, the median effective sample size and the evaluation's own minutes.

The defaults are the recipe (the one-layer VAE 300-300 softplus, z = 50, VampPrior, and the rule
above). Recipes are chosen with ``--validation 10000``: the last 10,000 training images are held out and evaluated
instead of the test set, which no choice sees.

    python bench/best_nll.py --data-dir ../shared/data                           # the hour
    python bench/best_nll.py --data-dir ../shared/data --minutes 10              # ten minutes
    python bench/best_nll.py --data-dir ../shared/data --minutes 10 --validation 10000  # choosing

Anchors (test NLL on dynamically binarized MNIST, k = 5000): Burda et al. 2016, Table 1 (one
stochastic layer, 3,280 epochs on a GPU) VAE 86.76, IWAE k=50 84.78; two layers VAE 85.33, IWAE
k=50 82.90. Tomczak & Welling 2018, Table 2: HVAE + VampPrior (MLP) 83.19, convHVAE + VampPrior 81.09.
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

from pyro_vae import TrainConfig, Trainer, load_mnist
from pyro_vae.inference.evaluate import log_likelihood
from pyro_vae.models.registry import build_model
from pyro_vae.training.budget import BudgetSchedule, TimeBudget

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import allocator
from report import commit, save

PAPER = {
    "Burda et al.: one-layer VAE": 86.76,
    "Burda et al.: one-layer IWAE k=50": 84.78,
    "Burda et al.: two-layer VAE": 85.33,
    "Burda et al.: two-layer IWAE k=50": 82.90,
    "Tomczak & Welling: HVAE + VampPrior": 83.19,
    "Tomczak & Welling: convHVAE + VampPrior": 81.09,
}


def evaluate(vae, test: torch.Tensor, num_samples: int) -> dict:
    """The k-sample NLL of the test set, its standard error from the importance weights, the
    median effective sample size, and the evaluation's own minutes, keyed by k."""
    start = time.perf_counter()
    with torch.no_grad():
        ll = log_likelihood(vae.model, vae.guide, test, num_samples=num_samples)
    return {
        f"nll_k{num_samples}": ll.nll(),
        f"nll_k{num_samples}_stderr": ll.nll_stderr(),
        f"median_ess_k{num_samples}": float(ll.ess.median()),
        f"eval_minutes_k{num_samples}": (time.perf_counter() - start) / 60,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=None, help="full MNIST (default: $PYRO_VAE_DATA, cache, embedded)")
    p.add_argument("--minutes", type=float, default=60.0, help="training minutes (evaluations not counted)")
    p.add_argument(
        "--eval-at",
        type=float,
        nargs="+",
        default=None,
        help="training minutes at which to evaluate (default: 1/6, 1/3, 1/2, 3/4 and all of --minutes)",
    )
    p.add_argument("--model", default="vae", choices=["vae", "hvae"])
    p.add_argument("--prior", default="vamp", choices=["standard", "vamp"])
    p.add_argument("--z-dim", type=int, default=50, help="latent size of the one-layer vae")
    p.add_argument("--hidden", type=int, nargs="+", default=[300, 300], help="hidden widths of the one-layer vae")
    p.add_argument(
        "--activation",
        default=None,
        help="activation of the deterministic layers (default: the model's, softplus for vae, tanh for hvae)",
    )
    p.add_argument("--guide", default="diagonal")
    p.add_argument(
        "--pseudo-inputs",
        type=int,
        default=250,
        help="K of the VampPrior (250, chosen on held-out images over 500 and 125: docs/models.md, rows 10, 12, 13)",
    )
    p.add_argument("--objective", default="elbo", help="elbo, meanfield, iwae (with --particles)")
    p.add_argument("--particles", type=int, default=None)
    rule = BudgetSchedule(minutes=60.0)  # the defaults of the budget rule (pyro_vae.training.budget)
    p.add_argument("--batch-size", type=int, default=rule.batch_size, help="initial batch size")
    p.add_argument(
        "--batch-schedule",
        type=float,
        nargs="*",
        default=list(rule.batch_doublings),
        help="fractions of the budget at which the batch size doubles",
    )
    p.add_argument("--lr", type=float, default=rule.lr, help="initial learning rate")
    p.add_argument("--lr-final", type=float, default=rule.lr_final, help="learning rate at the end of the budget")
    p.add_argument(
        "--warmup-minutes",
        type=float,
        default=rule.warmup_minutes,
        help="minutes of linear KL warm-up, at most --warmup-fraction of the budget",
    )
    p.add_argument(
        "--warmup-fraction",
        type=float,
        default=rule.warmup_fraction,
        help="the longest warm-up, as a fraction of the budget",
    )
    p.add_argument(
        "--final-objective",
        default="iwae",
        help="the objective of the budget's last part, from --final-from ('none': the ELBO throughout)",
    )
    p.add_argument("--final-particles", type=int, default=10, help="its particles (iwae: K)")
    p.add_argument("--final-from", type=float, default=0.7, help="the fraction of the budget where it starts")
    p.add_argument(
        "--average-from",
        type=float,
        default=None,
        help="the fraction of the budget from which the weights at each epoch's end are averaged; "
        "the last point is evaluated with the last weights and then with the mean (default: no averaging)",
    )
    p.add_argument("--eval-samples", type=int, default=5000, help="k of the final test NLL (Burda: 5000)")
    p.add_argument(
        "--curve-samples",
        type=int,
        default=500,
        help="k of the NLL at every point of the curve (a full-test k=5000 evaluation takes "
        "10-30 minutes on 2 cores, so the curve uses fewer; the last point has both)",
    )
    p.add_argument("--test-size", type=int, default=None, help="evaluate on the first N test images (default all)")
    p.add_argument(
        "--validation",
        type=int,
        default=0,
        help="hold out the last N training images and evaluate on them instead of the test set: "
        "the mode in which recipes are chosen (no test image is seen)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--json",
        default=None,
        help="the record (default: bench/results/best_nll_<minutes>min.json, which bench/nll_curve.py reads)",
    )
    p.add_argument(
        "--checkpoint",
        default=None,
        help="written before every evaluation, so that a long one can be redone from it "
        "(default: runs/best_nll_<minutes>min/checkpoint.pt)",
    )
    allocator.add_option(p)
    args = p.parse_args()
    # Subnormal floats flushed to zero, before torch's worker threads exist (they copy the mode
    # of the thread that starts them, once: docs/models.md); and freed memory kept in the heap,
    # so that the evaluation's [particles, images, 784] temporaries do not fault in fresh pages.
    torch.set_flush_denormal(True)
    allocator_setting = allocator.apply(args.allocator)
    if args.final_objective == "none":
        args.final_objective = args.final_particles = None
    if args.json is None:
        args.json = os.path.join(os.path.dirname(__file__), "results", f"best_nll_{args.minutes:g}min.json")
    if args.checkpoint is None:
        args.checkpoint = os.path.join("runs", f"best_nll_{args.minutes:g}min", "checkpoint.pt")
    default_at = [args.minutes * f for f in (1 / 6, 1 / 3, 1 / 2, 3 / 4)]
    eval_at = sorted(m for m in (args.eval_at or default_at) if m <= args.minutes)
    if not eval_at or eval_at[-1] < args.minutes:
        eval_at.append(args.minutes)

    data = load_mnist(args.data_dir)
    pyro.set_rng_seed(args.seed)
    if args.model == "vae":
        config = {
            "model": "vae",
            "z_dim": args.z_dim,
            "hidden_dims": args.hidden,
            "guide": args.guide,
            "prior": args.prior,
        }
    else:
        config = {"model": "hvae", "prior": args.prior}
    if args.activation is not None:
        config["activation"] = args.activation
    if args.prior == "vamp":
        config["num_pseudo_inputs"] = args.pseudo_inputs
    vae = build_model(config)
    trainer = Trainer(
        vae, config=TrainConfig(lr=args.lr, seed=args.seed, objective=args.objective, num_particles=args.particles)
    )
    train_images, held_out = data.train_images, data.test_images[: args.test_size]
    if args.validation:
        train_images, held_out = train_images[: -args.validation], train_images[-args.validation :]
    train_x = trainer.check_data(train_images, "training data")
    num_train = len(train_images)
    test = trainer.prepare_test(held_out)  # binarized once, fixed seed
    result = {
        "command": "python bench/best_nll.py " + " ".join(sys.argv[1:]),
        "commit": commit(),
        "recipe": {**vars(args), "config": config},
        "data": data.source,
        "evaluated_on": "validation" if args.validation else "test",
        "num_train": num_train,
        "num_test": len(test),
        "threads": torch.get_num_threads(),
        "allocator": allocator_setting,
        "flush_denormal": True,
        "machine": platform.processor() or platform.machine(),
        "paper": PAPER,
        "curve": [],
        "epochs": [],
    }
    schedule = BudgetSchedule(
        args.minutes,
        lr=args.lr,
        lr_final=args.lr_final,
        warmup_minutes=args.warmup_minutes,
        warmup_fraction=args.warmup_fraction,
        batch_size=args.batch_size,
        batch_doublings=tuple(args.batch_schedule),
        final_objective=args.final_objective,
        final_particles=args.final_particles,
        final_from=args.final_from,
        average_from=args.average_from,
    )
    result["schedule"] = {**vars(schedule), "warmup": schedule.warmup}
    budget = TimeBudget(schedule)  # the clock runs during training passes only
    steps = 0
    while not budget.spent_all():
        batch_size = budget.batch_size()
        train_elbo = trainer.train_epoch(train_x, batch_size=batch_size, callbacks=[budget])
        steps += math.ceil(num_train / batch_size)
        result["epochs"].append(
            {
                "epoch": trainer.epoch,
                "train_minutes": budget.minutes(),
                "train_elbo": train_elbo,
                "batch_size": batch_size,
                "lr": trainer.optimizer.param_groups[0]["lr"],
                "beta": trainer.current_beta,
                "objective": type(trainer.loss).__name__,
            }
        )
        print(f"epoch {trainer.epoch}: {budget.minutes():.2f} training minutes, batch {batch_size}", flush=True)
        if budget.minutes() >= eval_at[0] or budget.spent_all():
            os.makedirs(os.path.dirname(os.path.abspath(args.checkpoint)), exist_ok=True)
            trainer.save(args.checkpoint)
            row = {
                "train_minutes": budget.minutes(),
                "epochs": trainer.epoch,
                "steps": steps,
                "batch_size": batch_size,
                "lr": trainer.optimizer.param_groups[0]["lr"],
                "checkpoint": args.checkpoint,
            }
            print(json.dumps(row), "-- evaluating", flush=True)
            if budget.spent_all() and args.average_from is not None:
                # the last weights first, for what averaging changed; then the mean is the result
                last_weights = {"test_elbo": trainer.evaluate(test)["elbo"]}
                last_weights.update(evaluate(vae, test, args.curve_samples))
                row["last_weights"] = last_weights
                row["averaged_epochs"] = budget.averaged_epochs()
                budget.load_average(trainer)
                trainer.save(args.checkpoint)
                print(json.dumps(last_weights), f"-- the mean of {row['averaged_epochs']} epochs", flush=True)
            row["test_elbo"] = trainer.evaluate(test)["elbo"]
            row.update(evaluate(vae, test, args.curve_samples))
            if budget.spent_all() and args.eval_samples != args.curve_samples:
                row.update(evaluate(vae, test, args.eval_samples))
            result["curve"].append(row)
            print(json.dumps(row), flush=True)
            save(args.json, result)
            while eval_at and eval_at[0] <= budget.minutes():
                eval_at.pop(0)
    last = result["curve"][-1]
    print(
        f"test NLL {last[f'nll_k{args.eval_samples}']:.2f} nats (k={args.eval_samples}) after {last['train_minutes']:.1f} training "
        f"minutes ({last['epochs']} epochs); Burda et al.'s one-layer VAE: {PAPER['Burda et al.: one-layer VAE']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
