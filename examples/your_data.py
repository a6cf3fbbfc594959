#!/usr/bin/env python
"""Train a VAE on your own data -- an array, a CSV table, a folder of images, or a named data set --
and write its figures, metrics and checkpoint, as examples/mnist_svi.py does for MNIST.

    python examples/your_data.py --data digits                         # scikit-learn's 8x8 digits, offline
    python examples/your_data.py --data wine                           # scikit-learn's wine table, offline
    python examples/your_data.py --data wine.csv --label-column class --likelihood normal
    python examples/your_data.py --data counts.npy --likelihood negative_binomial
    python examples/your_data.py --data my_images/                     # one size, grey or colour
    python examples/your_data.py --data fashion_mnist --data-dir ~/data

The story, top to bottom: the data (pyro_vae.data.sources.load_data: rows of features or pixels,
and the shape of one datapoint); the model p(z) p(x|z) with a likelihood that fits the values and
the guide q(z|x) (a pyro_vae.VAE); SVI on the ELBO through the Trainer; the test ELBO; the figures
that fit the data (images: reconstructions, samples, interpolations; a table: each feature's
reconstructions; both: the ELBO curves and, with labels, the latent map). Errors print one line
and exit with code 2.
"""

from __future__ import annotations

import argparse
import os
import sys

import pyro

from pyro_vae import VAE, cli
from pyro_vae.data.sources import NAMED, load_data, suggested_likelihood
from pyro_vae.errors import check_positive
from pyro_vae.models.likelihoods import LIKELIHOODS
from pyro_vae.training import MetricsFile, TrainConfig, Trainer

#: the name this example's metrics.json carries: another program's record in --out is not replaced
PROGRAM = "your_data.py"


def parse_args(argv=None):
    p = cli.OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--data",
        default="digits",
        help=f"a .npy/.npz/.pt/.csv file, a folder of images, or one of {', '.join(NAMED)} (default digits)",
    )
    p.add_argument("--data-dir", default=None, help="where mnist, fashion_mnist and kmnist are found or downloaded")
    p.add_argument("--no-download", action="store_true", help="never download (mnist then falls back to its sample)")
    p.add_argument("--label-column", default=None, help="the CSV column of class labels (taken out of the features)")
    p.add_argument(
        "--test-fraction",
        type=float,
        default=0.1,
        help="share of the rows held out for testing, for data without a split (default 0.1)",
    )
    p.add_argument(
        "--likelihood",
        default=None,
        metavar="NAME",
        help=f"p(x|z): one of {', '.join(sorted(LIKELIHOODS))}, or categorical:K (default: from the "
        f"values -- bernoulli for 0/1 and for images, continuous_bernoulli for a table in [0, 1], "
        f"negative_binomial for counts, normal otherwise)",
    )
    p.add_argument("--z-dim", type=int, default=2, help="latent dimension (default 2: the latent map is z itself)")
    p.add_argument(
        "--hidden",
        dest="hidden_dims",
        type=int,
        nargs="+",
        default=[128],
        help="hidden widths of encoder and decoder (default 128)",
    )
    p.add_argument("--epochs", type=int, default=50, help="train until this epoch (default 50)")
    p.add_argument("--batch-size", type=int, default=64, help="minibatch size (default 64)")
    p.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate (default 0.003)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split, the weights and training (default 0)")
    p.add_argument("--out", default="runs/your_data", help="output directory (default runs/your_data)")
    cli.add_resume_options(p, "continue from OUT/checkpoint.pt (a larger --epochs trains further; --lr may change)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    args = p.parse_args(argv)
    for name, example in (("z_dim", 2), ("epochs", 50), ("batch_size", 64)):
        check_positive(name, getattr(args, name), example=example)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    config = TrainConfig(lr=args.lr, seed=args.seed)  # checked now, before any data is read
    out = cli.output_dir(args.out, ["checkpoint.pt"], args.resume, args.overwrite, program=PROGRAM)

    # 1. The data: rows of features or pixels, and the shape of one datapoint.
    data = load_data(
        args.data, args.data_dir, args.test_fraction, args.seed, args.label_column, download=not args.no_download
    )
    likelihood = args.likelihood or suggested_likelihood(data)
    print(
        f"data: {data.source}: {len(data.train)} train / {len(data.test)} test rows of shape {data.shape} "
        f"({data.value_kind} values); likelihood {likelihood}",
        flush=True,
    )

    # 2. The model p(z) p(x|z) and the guide q(z|x), sized for the data.
    pyro.set_rng_seed(args.seed)  # before the networks: the seed governs their initial weights too
    vae = VAE(x_dim=data.x_dim, z_dim=args.z_dim, hidden_dims=tuple(args.hidden_dims), likelihood=likelihood)

    # 3. SVI on the ELBO through the Trainer, checkpointed after every epoch (--resume continues).
    trainer = Trainer(vae, config=config)
    checkpoint = os.path.join(out, "checkpoint.pt")
    if args.resume:
        trainer.resume(checkpoint)
    record = {
        "program": PROGRAM,
        "data": data.source,
        "shape": list(data.shape),
        "num_train": len(data.train),
        "num_test": len(data.test),
        "config": {**vae.config, **trainer.config.settings(), **vars(args), "likelihood": likelihood},
    }
    metrics = MetricsFile(os.path.join(out, cli.RECORD), **record)
    trainer.fit(
        data.train,
        data.test,
        epochs=args.epochs,
        batch_size=args.batch_size,
        checkpoint=checkpoint,
        progress=not args.no_progress,
        log=lambda line: print(line, flush=True),
        callbacks=[metrics],
    )

    # 4. The test ELBO = E_q[log p(x|z)] - KL(q(z|x) || p(z)) per test row; bits/dim only for discrete data.
    final = trainer.last_evaluation
    bits = f" ({final['bits_per_dim']:.4f} bits/dim)" if "bits_per_dim" in final else " (a density: no bits/dim)"
    metrics.update(
        test_elbo=final["elbo"],
        test_recon=final["recon"],
        test_kl=final["kl"],
        history=trainer.history,
        **({"test_bits_per_dim": final["bits_per_dim"]} if "bits_per_dim" in final else {}),
    )

    # 5. The figures that fit the data.
    from pyro_vae.figures.plots import plot_all

    figures, not_drawn = plot_all(
        vae,
        trainer.history,
        trainer.test_data,
        data.test_labels,
        out,
        shape=data.shape,
        feature_names=data.feature_names,
        noun="image" if data.is_images else "row",
    )
    for name, reason in not_drawn.items():
        print(f"figure {name}.png not drawn: {reason}", flush=True)
    explorer = None
    if data.is_images and data.test_labels is not None:  # the latent-space explorer, for labelled images
        from pyro_vae.figures.explorer import write_explorer

        try:  # like a figure, the page must not cost the run its metrics
            explorer = os.path.basename(
                write_explorer(
                    vae, trainer.test_data, data.test_labels, os.path.join(out, "explorer.html"), shape=data.shape
                )
            )
        except Exception as error:
            print(f"explorer.html not written: {' '.join(str(error).split())}", flush=True)
    metrics.update(
        figures={k: os.path.basename(v) for k, v in figures.items()}, figures_not_drawn=not_drawn, explorer=explorer
    )
    print(
        f"test ELBO {final['elbo']:.3f} nats/datapoint = recon {final['recon']:.3f} - KL {final['kl']:.3f}{bits}; "
        f"figures, metrics.json and checkpoint.pt in {out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
