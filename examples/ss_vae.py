#!/usr/bin/env python
"""Semi-supervised MNIST with M2 (Kingma et al., 2014): the label y a latent variable, observed
when known, summed out exactly by enumeration when not.

    python examples/ss_vae.py                                   # embedded sample, 100/600/1000/3000 labels
    python examples/ss_vae.py --labels 100 --epochs 50 --data-dir ~/data   # full MNIST

The story, top to bottom: the data, split into a class-balanced labelled subset (fixed seed,
recorded in metrics.json) and the unlabelled rest; the model p(y) p(z) p(x|y,z) and the guide
q(y|x) q(z|x,y) (pyro_vae.SSVAE, see docs/ssvae.md); SVI through the library's Trainer on
TraceEnum_ELBO plus alpha times the classification loss, each step an unlabelled minibatch with a
labelled one beside it; the test accuracy of q(y|x) per label count; the figures. Errors print one line and exit with code 2.
"""

from __future__ import annotations

import argparse
import os
import sys

import pyro

from pyro_vae import cli
from pyro_vae.data.semi_supervised import LABEL_SEED, LabelledBatches, check_num_labels, labelled_split
from pyro_vae.errors import check_count, check_positive
from pyro_vae.models.ssvae import SSVAE, SemiSupervisedELBO
from pyro_vae.training import EarlyStopping, TrainConfig, Trainer, WeightAveraging
from pyro_vae.training.accuracy import ClassifierAccuracy

#: the name this example's metrics.json carries: another program's record in --out is not replaced
PROGRAM = "ss_vae.py"


def parse_args(argv=None):
    p = cli.OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_data_options(p)
    p.add_argument(
        "--labels",
        type=int,
        nargs="+",
        default=[100, 600, 1000, 3000],
        help="labelled training images, one run each (default 100 600 1000 3000)",
    )
    p.add_argument("--epochs", type=int, default=10, help="passes over the unlabelled images per run (default 10)")
    p.add_argument("--batch-size", type=int, default=100, help="minibatch size of both kinds (default 100)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 0.001)")
    p.add_argument("--z-dim", type=int, default=50, help="style code size (default 50)")
    p.add_argument(
        "--hidden",
        dest="hidden_dims",
        type=int,
        nargs="+",
        default=[500],
        help="hidden widths of each network (default 500)",
    )
    p.add_argument(
        "--classifier",
        choices=["mlp", "conv"],
        default="mlp",
        help="network of q(y|x): mlp (the --hidden widths, as in Kingma et al. and Pyro's example; "
        "default) or conv (two strided convolutions, then the --hidden widths)",
    )
    p.add_argument(
        "--alpha",
        type=float,
        default=None,
        help="weight of the classification loss on each labelled image (default 0.1 x training "
        "images, not counting --validation; Kingma et al.'s 0.1 N on the labelled average is 0.1 N / labels per image)",
    )
    p.add_argument(
        "--binarize",
        default="dynamic",
        choices=["dynamic", "none"],
        help="dynamic: each training digit a fresh binary draw (default); none: grey levels as "
        "Bernoulli targets, a cross-entropy, as in Pyro's tutorial (see docs/ssvae.md)",
    )
    p.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    p.add_argument(
        "--validation",
        type=int,
        default=0,
        help="hold out this many training images (the last ones) and report the epoch whose classifier "
        "is most accurate on them, as Pyro's tutorial and Kingma et al. do with 10000 "
        "(default 0: train on all, report the last epoch)",
    )
    p.add_argument(
        "--average-from",
        type=int,
        default=0,
        metavar="EPOCH",
        help="from this epoch on, score (and pick) the mean of the weights at the ends of the epochs "
        "since, stochastic weight averaging (default 0: never; with --resume, an epoch to come)",
    )
    p.add_argument(
        "--shift-labelled",
        type=int,
        default=0,
        metavar="PIXELS",
        help="show each labelled digit translated by a random -PIXELS..PIXELS along each axis, afresh "
        "every step: augmentation of the few labels (default 0: never)",
    )
    p.add_argument(
        "--label-seed", type=int, default=LABEL_SEED, help=f"seed of the labelled subset (default {LABEL_SEED})"
    )
    p.add_argument("--out", default="runs/ss_vae", help="output directory (default runs/ss_vae)")
    cli.add_resume_options(
        p,
        "continue each label count from its checkpoint in OUT (written after every epoch); "
        "finished counts are kept, a larger --epochs trains them further (--lr may change)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    args = p.parse_args(argv)
    for name, example in (("z_dim", 50), ("epochs", 10), ("batch_size", 100)):
        check_positive(name, getattr(args, name), example=example)
    for count in args.labels:
        check_positive("num_labels", count, example=100)
    check_count("validation", args.validation, example=10000, unit="images")
    check_count("average_from", args.average_from, example=90, unit="epochs")
    return args


def labelled_counts(labels) -> list:
    """Labelled images per class."""
    return labels.bincount(minlength=10).tolist()


def averaged(record) -> str:
    """What an epoch's scores are of, when --average-from made them a mean's."""
    if "averaged_epochs" not in record:
        return ""
    first = record["epoch"] - record["averaged_epochs"] + 1
    return f", weights averaged over epochs {first}-{record['epoch']}"


def main(argv=None) -> int:
    args = parse_args(argv)
    config = TrainConfig(lr=args.lr, seed=args.seed)  # checked now, before any data is read
    out = cli.output_dir(
        args.out, [f"checkpoint_{count}.pt" for count in args.labels], args.resume, args.overwrite, program=PROGRAM
    )

    # 1. The data: the last --validation training images held out (their labels pick the epoch),
    #    each run's labelled subset drawn class-balanced from the rest, the others unlabelled.
    data = cli.load_data(args).subset(args.train_size, args.test_size)
    n = len(data.train_images)
    for count in args.labels:  # before any run starts: one line, not after the first runs' minutes
        check_num_labels(count, n, args.validation)
    images, labels = data.train_images, data.train_labels
    held_out = {"test": (data.test_images, data.test_labels)}
    if args.validation:
        held_out["validation"] = images[-args.validation :], labels[-args.validation :]
        images, labels = images[: -args.validation], labels[: -args.validation]
    alpha = 0.1 * len(images) if args.alpha is None else args.alpha  # 0.1 x the images trained on
    held = f" ({len(images)} trained on, the last {args.validation} held out)" if args.validation else ""
    print(f"data: {data.source}: {n} train{held} / {len(data.test_images)} test images; alpha={alpha:g}", flush=True)

    settings = {**vars(args), "alpha": alpha}
    # Runs of other label counts that earlier commands left in OUT stay in its record, each with its settings.
    earlier = cli.earlier_rows(out, PROGRAM, "runs", replaced=[str(c) for c in args.labels])
    metrics = {**cli.metrics_fields(PROGRAM, data, settings), "runs": earlier}
    models = {}
    for count in args.labels:
        labelled, unlabelled = labelled_split(labels, count, args.label_seed)
        # The labelled minibatch that joins every unlabelled one: drawn afresh each step, binarized
        # like the unlabelled images (and with --shift-labelled translated a few pixels).
        batches = LabelledBatches(
            images[labelled], labels[labelled], args.batch_size, args.binarize, args.shift_labelled
        )
        # 2. Model p(y) p(z) p(x|y,z) and guide q(y|x) q(z|x,y), a fresh pair per label count.
        pyro.set_rng_seed(args.seed)  # before the networks: the seed governs their initial weights too
        vae = SSVAE(
            z_dim=args.z_dim,
            hidden_dims=tuple(args.hidden_dims),
            alpha=alpha,
            classifier=args.classifier,
            grey_targets=args.binarize == "none",
        )
        # 3. SVI on J^alpha: each step the unlabelled ELBO (y enumerated) plus the labelled ELBO and
        #    alpha times the classification loss, checkpointed after every epoch (--resume continues);
        #    the classifier's accuracy after every epoch; the epoch of the best held-out accuracy kept;
        #    with --average-from, the running mean of the weights scored and kept.
        trainer = Trainer(
            vae,
            lr=config.lr,
            seed=config.seed,
            objective=SemiSupervisedELBO(vae, batches.num_labelled),
            transform=batches,
        )
        saved = os.path.join(out, f"checkpoint_{count}.pt")
        if args.resume and os.path.exists(saved):
            trainer.resume(saved)
        averaging = WeightAveraging(args.average_from) if args.average_from else None
        picking = EarlyStopping(None, monitor="validation_accuracy") if args.validation else None
        callbacks = [ClassifierAccuracy(vae.classify, held_out, averaging), picking, averaging]
        history = trainer.fit(
            images[unlabelled],
            None,
            epochs=args.epochs,
            batch_size=args.batch_size,
            checkpoint=saved,
            progress=not args.no_progress,
            log=lambda line, count=count: print(f"{count} labels, {line}", flush=True),
            callbacks=[c for c in callbacks if c is not None],
        )
        # 4. The test accuracy of the classifier q(y|x): at the last epoch, or at the best on validation.
        best = picking.best_epoch if picking is not None else None
        reported, last = history[best - 1] if best is not None else history[-1], history[-1]
        seconds = sum(r["seconds"] for r in history)
        chosen = (
            f" at epoch {best}, the best of {len(history)} on {args.validation} held-out images "
            f"({reported['validation_accuracy']:.4f}; last epoch {last['test_accuracy']:.4f})"
            if best is not None
            else f" after {len(history)} epochs"
        )
        steps = len(history) * -(-len(unlabelled) // args.batch_size)
        print(
            f"{count} labels: test accuracy {reported['test_accuracy']:.4f}{chosen}{averaged(reported)} "
            f"({steps} steps, {seconds:.0f} s of training)",
            flush=True,
        )
        metrics["runs"][str(count)] = {
            "labelled_indices": labelled.tolist(),
            "labelled_class_counts": labelled_counts(labels[labelled]),
            "best_epoch": best,
            "history": history,
            "test_accuracy": reported["test_accuracy"],
            "reported_epoch": reported["epoch"],
            "steps": steps,
            "wall_seconds": seconds,
            "settings": settings,
        }
        models[count] = vae
        cli.write_record(out, metrics)

    # 5. The figures: accuracy per epoch of every run in the record; style and samples from this
    #    command's run that took the most steps (of those, the most labels).
    from pyro_vae.figures.ssvae_plots import (
        plot_accuracy,
        plot_class_samples,
        plot_style_transfer,
    )

    metrics["runs"] = {c: metrics["runs"][c] for c in sorted(metrics["runs"], key=int)}
    shown = max(models, key=lambda c: (metrics["runs"][str(c)]["steps"], c))
    best = models[shown]
    figures = {
        "accuracy": plot_accuracy(metrics["runs"], os.path.join(out, "accuracy.png")),
        "style_transfer": plot_style_transfer(
            best, data.test_images, data.test_labels, os.path.join(out, "style_transfer.png")
        ),
        "class_samples": plot_class_samples(best, os.path.join(out, "class_samples.png")),
    }
    metrics["figures"] = {k: os.path.basename(v) for k, v in figures.items()}
    metrics["figures_labels"] = shown  # the run the style-transfer and samples figures show
    cli.write_record(out, metrics)
    print("labels  test accuracy  epoch")
    for count, r in metrics["runs"].items():
        print(
            f"{count:>6}  {r['test_accuracy']:>13.4f}  {r['reported_epoch']:>5}"
            + ("" if int(count) in models else "  (an earlier run in this --out)")
        )
    print(f"figures, metrics.json and checkpoints in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
