#!/usr/bin/env python
"""Complete MNIST digits from 1, 2 or 3 of their quadrants with a conditional VAE (Sohn et al.,
2015), against a deterministic network's single prediction.

    python examples/cvae.py                               # embedded sample, 1, 2 and 3 input quadrants
    python examples/cvae.py --quadrants 1 --epochs 30 --data-dir ~/data

The story, top to bottom: the data, each digit split into input quadrants x and missing ones y;
the baseline f(x) and the CVAE p(z|x) p(y|x,z) with its guide q(z|x,y) (pyro_vae.models.cvae, see
docs/cvae.md), each trained by SVI on the training digits; the test negative conditional
log-likelihood -log p(y|x) per digit (the CVAE's by importance sampling, K draws from q(z|x,y));
the table next to Pyro's tutorial; a figure of completions. Errors print one line, exit code 2.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

from pyro_vae import EarlyStopping, TrainConfig, Trainer, cli
from pyro_vae.data.images import binarize
from pyro_vae.errors import ConfigError, check_count, check_positive
from pyro_vae.models.cvae import CVAE, Baseline, QuadrantPairs, conditional_log_likelihood, split_quadrants

#: Pyro's CVAE tutorial, test -log p(y|x) for 1 / 2 / 3 input quadrants (its authors' measurement).
ANCHORS = {"baseline": {1: 100.4, 2: 61.9, 3: 25.4}, "cvae": {1: 71.8, 2: 51.0, 3: 24.2}}
#: the name this example's metrics.json carries: another program's record in --out is not replaced
PROGRAM = "cvae.py"


def parse_args(argv=None):
    p = cli.OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_data_options(p)
    p.add_argument("--quadrants", type=int, nargs="+", default=[1, 2, 3], help="input quadrants, one run each")
    p.add_argument("--epochs", type=int, default=10, help="epochs of each network (default 10)")
    p.add_argument("--batch-size", type=int, default=128, help="minibatch size (default 128)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 0.001)")
    p.add_argument("--z-dim", type=int, default=20, help="latent size of the CVAE (default 20)")
    p.add_argument(
        "--hidden",
        dest="hidden_dims",
        type=int,
        nargs="+",
        default=[500, 500],
        help="hidden widths of every network (default 500 500)",
    )
    p.add_argument(
        "--samples",
        dest="num_samples",
        type=int,
        default=100,
        help="K importance samples of the CVAE's test log p(y|x) (default 100)",
    )
    p.add_argument(
        "--validation",
        type=int,
        default=0,
        help="hold out the last N training images; each network keeps the weights of its epoch with "
        "the lowest loss on them (default 0: none; Pyro's tutorial holds out 10000)",
    )
    p.add_argument(
        "--patience",
        type=int,
        default=None,
        help="with --validation: stop a network after this many epochs without a better one",
    )
    p.add_argument(
        "--binarize",
        default="dynamic",
        choices=["dynamic", "none"],
        help="dynamic: binary pixels (train: drawn afresh each epoch; test: threshold 0.5; default); "
        "none: grey levels as Bernoulli targets (cross-entropy), as Pyro's tutorial",
    )
    p.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    p.add_argument("--out", default="runs/cvae", help="output directory (default runs/cvae)")
    cli.add_resume_options(
        p,
        "continue each network from its checkpoint in OUT (written after every epoch); "
        "finished ones are kept, a larger --epochs trains them further (--lr may change)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    args = p.parse_args(argv)
    for name, example in (("z_dim", 20), ("num_samples", 100), ("epochs", 10), ("batch_size", 128)):
        check_positive(name, getattr(args, name), example=example)
    check_count("validation", args.validation, example=10000, unit="images")
    if args.patience is not None:
        check_positive("patience", args.patience, example=3)
    for k in args.quadrants:
        if k not in (1, 2, 3):
            raise ConfigError(
                f"num_inputs must be 1, 2 or 3 input quadrants, got {k}; pass one of 1, 2, 3", settings=("num_inputs",)
            )
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    config = TrainConfig(lr=args.lr, seed=args.seed)  # checked now, before any data is read
    checkpoints = [f"{name}_{k}.pt" for name in ("baseline", "cvae") for k in args.quadrants]
    out = cli.output_dir(args.out, checkpoints, args.resume, args.overwrite, program=PROGRAM)

    # 1. The data: training digits binarized afresh each epoch, test digits thresholded at 0.5
    #    (or, with --binarize none, grey levels throughout).
    data = cli.load_data(args).subset(args.train_size, args.test_size)
    test = binarize(data.test_images, "fixed" if args.binarize == "dynamic" else "none")
    train, held_out = data.train_images, None
    if args.validation:  # the last training images, to pick each network's best epoch on
        if args.validation >= len(train):
            raise ConfigError(
                f"validation={args.validation} held-out images asked of {len(train)} training images; "
                f"pass fewer (e.g. {len(train) // 6}) or 0 for none",
                settings=("validation",),
            )
        train, held_out = train[: -args.validation], train[-args.validation :]
    print(
        f"data: {data.source}: {len(train)} train / {len(test)} test images"
        + (f" ({args.validation} training images held out)" if args.validation else ""),
        flush=True,
    )
    # Rows of other quadrant counts that earlier commands left in OUT stay in its record, each with its settings.
    earlier = cli.earlier_rows(out, PROGRAM, "table", replaced=[str(k) for k in args.quadrants])
    metrics = {**cli.metrics_fields(PROGRAM, data, vars(args)), "anchors": ANCHORS, "table": earlier}
    nets = {}
    for k in args.quadrants:
        x, y = split_quadrants(test, k)
        row = {}
        # 2. The baseline f(x) and the CVAE p(z|x) p(y|x,z) with q(z|x,y), for k input quadrants.
        for name in ("baseline", "cvae"):
            torch.manual_seed(args.seed)  # before the network: the seed governs its initial weights too
            net = (
                Baseline(k, tuple(args.hidden_dims))
                if name == "baseline"
                else CVAE(k, args.z_dim, tuple(args.hidden_dims))
            )
            # 3. SVI on the conditional ELBO (for the baseline, exactly -log p(y|x)) through the
            #    Trainer: each batch of digits binarized and split into (x, y) on the data side,
            #    checkpointed after every epoch (--resume continues from the last one); with
            #    --validation, early stopping keeps the epoch of the best held-out ELBO.
            trainer = Trainer(net.model, net.guide, config=config, transform=QuadrantPairs(k, args.binarize))
            checkpoint = os.path.join(out, f"{name}_{k}.pt")
            if args.resume and os.path.exists(checkpoint):
                trainer.resume(checkpoint)
            callbacks = [EarlyStopping(args.patience)] if held_out is not None else []
            history = trainer.fit(
                train,
                held_out,
                epochs=args.epochs,
                batch_size=args.batch_size,
                checkpoint=checkpoint,
                progress=not args.no_progress,
                log=None,
                callbacks=callbacks,
            )
            wall = sum(r["seconds"] for r in history)
            # 4. -log p(y|x) per test digit: exact for the baseline, importance-sampled for the CVAE.
            nll = -float(conditional_log_likelihood(net.model, net.guide, x, y, num_samples=args.num_samples).mean())
            row[name] = {
                "test_nll": nll,
                "epochs": len(history),
                "wall_seconds": wall,
                "history": history,
                **({"best_epoch": callbacks[0].best_epoch} if callbacks else {}),
            }
            nets[(name, k)] = net
            print(
                f"{k} quadrant(s), {name}: test -log p(y|x) = {nll:.1f} nats ({len(history)} epochs, {wall:.0f} s)",
                flush=True,
            )
        metrics["table"][str(k)] = {**row, "settings": vars(args)}
        cli.write_record(out, metrics)

    # 5. The table next to Pyro's tutorial, and the completions figure.
    print(
        f"{'quadrants':>9}  {'baseline':>8}  {'(Pyro)':>6}  {'CVAE':>6}  {'(Pyro)':>6}   test -log p(y|x), "
        f"CVAE K={args.num_samples}"
    )
    metrics["table"] = {k: metrics["table"][k] for k in sorted(metrics["table"], key=int)}
    for k, r in metrics["table"].items():
        print(
            f"{k:>9}  {r['baseline']['test_nll']:>8.1f}  {ANCHORS['baseline'][int(k)]:>6.1f}  "
            f"{r['cvae']['test_nll']:>6.1f}  {ANCHORS['cvae'][int(k)]:>6.1f}"
            + ("" if int(k) in args.quadrants else "  (an earlier run in this --out)")
        )
    from pyro_vae.figures.cvae_plots import plot_completions

    figure = plot_completions(nets, test, args.quadrants, os.path.join(out, "completions.png"))
    metrics["figures"] = {"completions": os.path.basename(figure)}
    metrics["figures_quadrants"] = args.quadrants  # the rows the completions figure shows
    cli.write_record(out, metrics)
    print(f"table in metrics.json, completions.png and checkpoints in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
