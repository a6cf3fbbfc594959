#!/usr/bin/env python
"""Train a VAE on MNIST with Pyro's SVI and write its figures, metrics and checkpoint.

    python examples/mnist_svi.py                      # embedded 5,000-digit sample, 100 epochs
    python examples/mnist_svi.py --data-dir ~/data    # full MNIST (downloaded there if missing)
    python examples/mnist_svi.py --resume             # continue the run in --out
    torchrun --nproc_per_node=2 examples/mnist_svi.py --distributed   # data-parallel, 2 processes

The model p(z) p(x|z) and guide q(z|x) are pyro_vae.VAE's; see docs/equations.md.
Errors print one line and exit with code 2 (--debug shows the traceback); SIGINT and
SIGTERM stop after the current step with a checkpoint, exiting 130 and 143.
With --distributed (under torchrun), every process trains on its shard of each minibatch,
gradients are averaged, and only rank 0 prints, writes checkpoints, figures and metrics.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
import warnings

import pyro
import torch

from tqdm.auto import tqdm

from pyro_vae import VAE, Trainer, load_mnist
from pyro_vae import distributed
from pyro_vae.checkpoint import check_writable_dir, load_checkpoint
from pyro_vae.errors import ConfigError, PyroVAEError, TrainingInterrupted, check_positive
from pyro_vae.evaluate import log_likelihood
from pyro_vae.guides import GUIDES
from pyro_vae.objectives import OBJECTIVES

# Options that define the model and its data stream. On --resume they come from the
# checkpoint; giving a different value on the command line is an error.
DEFAULTS = {
    "z_dim": 50,
    "hidden": [400],
    "likelihood": "bernoulli",
    "activation": "softplus",
    "binarize": None,  # dynamic for bernoulli, none for continuous_bernoulli
    "lr": 1e-3,
    "seed": 0,
    "guide": "diagonal",
    "objective": "elbo",
    "num_particles": None,
    "beta": 1.0,
    "kl_warmup": 0,
    "clip_norm": None,
}


#: Errors that name their problem and fix; any other exception is reported as unexpected.
EXPECTED_ERRORS = (PyroVAEError, ValueError, TypeError, FloatingPointError, OSError)
#: The library's errors name settings (PyroVAEError.settings); these are their flags here.
SETTING_FLAGS = {
    "lr": "--lr", "clip_norm": "--clip-norm", "epochs": "--epochs", "batch_size": "--batch-size",
    "test_every": "--test-every", "z_dim": "--z-dim", "hidden_dims": "--hidden", "likelihood": "--likelihood",
    "binarize": "--binarize", "num_particles": "--particles", "train_size": "--train-size",
    "test_size": "--test-size", "checkpoint": "--out", "distributed": "--distributed", "device": "--device",
    "beta": "--beta", "kl_warmup": "--kl-warmup", "objective": "--objective", "guide": "--guide",
    "activation": "--activation", "seed": "--seed",
}


def flags_for(err: BaseException) -> list:
    """The command-line flags of the settings an error names (also when Pyro re-raised it)."""
    while err is not None and not getattr(err, "settings", ()):
        err = err.__cause__
    return [SETTING_FLAGS[s] for s in getattr(err, "settings", ()) if s in SETTING_FLAGS]


class OneLineParser(argparse.ArgumentParser):
    """argparse, with its usage errors as one line on stderr (exit code 2, like every error here)."""

    def error(self, message: str) -> None:
        self.exit(2, f"error: {message}; see {self.prog} --help\n")


def parse_args(argv=None) -> argparse.Namespace:
    p = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=100, help="train until this epoch (default 100)")
    p.add_argument("--batch-size", type=int, default=128, help="minibatch size (default 128)")
    p.add_argument("--lr", type=float, default=None, help="Adam learning rate (default 1e-3)")
    p.add_argument("--z-dim", type=int, default=None, help="latent dimension (default 50)")
    p.add_argument("--hidden", type=int, nargs="+", default=None, help="hidden layer widths (default 400)")
    p.add_argument("--activation", default=None, choices=["softplus", "relu", "tanh", "elu"],
                   help="hidden nonlinearity (default softplus)")
    p.add_argument("--likelihood", default=None, choices=["bernoulli", "continuous_bernoulli"],
                   help="p(x|z): bernoulli for binarized pixels (default), continuous_bernoulli for grey levels")
    p.add_argument("--binarize", default=None, choices=["dynamic", "fixed", "none"],
                   help="dynamic (fresh Bernoulli draw each epoch; default for bernoulli), fixed "
                        "(threshold 0.5), none (default for continuous_bernoulli)")
    p.add_argument("--guide", default=None, choices=sorted(GUIDES),
                   help="q(z|x): diagonal Normal MLP (default), conv, full_covariance, iaf")
    p.add_argument("--objective", default=None, choices=sorted(OBJECTIVES),
                   help="elbo (Trace_ELBO, default), meanfield (analytic KL), iwae, jit_elbo, jit_meanfield")
    p.add_argument("--particles", dest="num_particles", type=int, default=None,
                   help="particles of the objective; K of iwae (default 5), 1 for the ELBOs")
    p.add_argument("--beta", type=float, default=None, help="weight of the KL term in training (default 1)")
    p.add_argument("--kl-warmup", type=int, default=None,
                   help="epochs over which the KL weight rises linearly from 0 to --beta (default 0)")
    p.add_argument("--clip-norm", type=float, default=None,
                   help="clamp every gradient entry to [-C, C] (pyro.optim.ClippedAdam; default: no clipping)")
    p.add_argument("--eval-samples", type=int, default=0,
                   help="K importance samples for the final test log-likelihood (e.g. 5000; default 0: skip)")
    p.add_argument("--data-dir", default=None,
                   help="MNIST in torchvision's layout (DIR/MNIST/raw); default $PYRO_VAE_DATA, then "
                        "~/.cache/pyro_vae (downloading), then the embedded 5,000-digit sample")
    p.add_argument("--no-download", action="store_true", help="never try to download MNIST")
    p.add_argument("--train-size", type=int, default=None,
                   help="use only N training images, class-balanced: each digit's first images in turn")
    p.add_argument("--test-size", type=int, default=None,
                   help="use only N test images, class-balanced like --train-size")
    p.add_argument("--out", default="runs/mnist_svi", help="output directory (default runs/mnist_svi)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default 0)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu); with --distributed, "
                   "cuda gives each process the GPU of its LOCAL_RANK")
    p.add_argument("--distributed", action="store_true",
                   help="data-parallel training across the processes torchrun starts (gloo on cpu, "
                        "NCCL on cuda); e.g. torchrun --nproc_per_node=2 examples/mnist_svi.py --distributed")
    p.add_argument("--test-every", type=int, default=1, help="evaluate the test ELBO every N epochs")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    args = p.parse_args(argv)
    for name, example in (("epochs", 10), ("batch_size", 128), ("test_every", 1)):
        check_positive(name, getattr(args, name), example=example)
    for name in ("train_size", "test_size"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be a positive number of images, got {value}; "
                              f"drop the option to use them all")
    if args.eval_samples < 0:
        raise ConfigError(f"--eval-samples must be >= 0, got {args.eval_samples}; "
                          f"e.g. --eval-samples 5000, or 0 to skip")
    return args


def resolve_config(args: argparse.Namespace, checkpoint: dict | None) -> dict:
    """The run's config: CLI values, else the checkpoint's (on --resume), else the defaults."""
    given = {
        "z_dim": args.z_dim,
        "hidden": args.hidden,
        "likelihood": args.likelihood,
        "activation": args.activation,
        "binarize": args.binarize,
        "lr": args.lr,
        "seed": args.seed,
        "guide": args.guide,
        "objective": args.objective,
        "num_particles": args.num_particles,
        "beta": args.beta,
        "kl_warmup": args.kl_warmup,
        "clip_norm": args.clip_norm,
    }
    if checkpoint is None:
        config = {k: (v if v is not None else DEFAULTS[k]) for k, v in given.items()}
    else:
        saved = {
            "z_dim": checkpoint["config"]["z_dim"],
            "hidden": list(checkpoint["config"]["hidden_dims"]),
            "likelihood": checkpoint["config"]["likelihood"],
            "activation": checkpoint["config"]["activation"],
            "guide": checkpoint["config"]["guide"],
            **checkpoint["trainer"],
        }
        # Every option continues the saved run, but --lr may change the rate (e.g. to retry a diverged run).
        clash = {k: (v, saved[k]) for k, v in given.items() if v is not None and v != saved[k] and k != "lr"}
        if clash:
            raise PyroVAEError(
                "--resume continues the saved run, but these options differ from it: "
                + ", ".join(f"--{k.replace('_', '-')} {a} (checkpoint: {b})" for k, (a, b) in clash.items())
                + ". Drop them, or use a new --out to start another run."
            )
        config = dict(saved, lr=given["lr"] if given["lr"] is not None else saved["lr"])
    if config["binarize"] is None:
        config["binarize"] = "dynamic" if config["likelihood"] == "bernoulli" else "none"
    return config


def main(argv=None) -> int:
    args = parse_args(argv)
    checkpoint_path = os.path.join(args.out, "checkpoint.pt")
    check_writable_dir(args.out)
    checkpoint = load_checkpoint(checkpoint_path) if args.resume else None
    config = resolve_config(args, checkpoint)
    try:
        device_type = torch.device(args.device).type
    except RuntimeError:
        device_type = None
    if device_type not in ("cpu", "cuda"):
        raise ConfigError(f"--device {args.device} is not supported; use cpu, or cuda (cuda:N for one GPU)")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise PyroVAEError(f"--device {args.device} was asked for, but CUDA is not available here; use --device cpu")
    rank = 0
    if args.distributed:
        rank, world_size, device = distributed.init_from_env(args.device)
    else:
        device = torch.device(args.device)
    say = print if rank == 0 else (lambda *a, **k: None)

    # Model and trainer first: a bad setting is refused before the data is read.
    pyro.set_rng_seed(config["seed"])  # the seed governs the initial weights too
    vae = VAE(z_dim=config["z_dim"], hidden_dims=config["hidden"], likelihood=config["likelihood"],
              activation=config["activation"], guide=config["guide"]).to(device)
    trainer = Trainer(vae, lr=config["lr"], binarize=config["binarize"], seed=config["seed"],
                      objective=config["objective"], num_particles=config["num_particles"],
                      beta=config["beta"], kl_warmup=config["kl_warmup"], clip_norm=config["clip_norm"],
                      distributed=args.distributed)
    if checkpoint is not None:
        trainer.resume(checkpoint_path, checkpoint)  # already read above, for the config
        at = f" (+ {trainer.step_in_epoch} steps of epoch {trainer.epoch + 1})" if trainer.step_in_epoch else ""
        say(f"resumed from {checkpoint_path} at epoch {trainer.epoch}{at}", flush=True)
        if trainer.lr_changed_on_resume is not None:
            old, new = trainer.lr_changed_on_resume
            say(f"learning rate changed on resume: {old:g} (checkpoint) -> {new:g} (--lr)", flush=True)

    data = load_mnist(args.data_dir, download=not args.no_download, verbose=rank == 0)
    data = data.subset(args.train_size, args.test_size)  # class-balanced, in the data's order
    train_x, test_x, test_y = data.train_images, data.test_images, data.test_labels
    say(f"data: {data.source}: {len(train_x)} train / {len(test_x)} test images", flush=True)
    particles = f" K={trainer.loss.num_particles}" if trainer.loss.num_particles > 1 else ""
    warmup = f" (warm-up over {config['kl_warmup']} epochs)" if config["kl_warmup"] else ""
    optimizer = "Adam" if config["clip_norm"] is None else f"ClippedAdam clip_norm={config['clip_norm']}"
    processes = f", {trainer.world_size} processes" if args.distributed else ""
    say(f"model: z_dim={config['z_dim']} hidden={config['hidden']} {config['activation']}, "
          f"likelihood={config['likelihood']}, binarize={config['binarize']}, guide={config['guide']}; "
          f"SVI {type(trainer.loss).__name__}{particles}, beta={config['beta']}{warmup}, "
          f"{optimizer} lr={config['lr']}, batch {args.batch_size}, {args.epochs} epochs, {device}{processes}", flush=True)

    start = time.perf_counter()
    with warnings.catch_warnings():
        # A NaN loss is reported (step, term, checkpoint) by NonFiniteError; Pyro's warning adds nothing.
        warnings.filterwarnings("ignore", message="Encountered NaN")
        try:
            trainer.fit(train_x, test_x, epochs=args.epochs, batch_size=args.batch_size,
                        test_every=args.test_every, checkpoint=checkpoint_path,
                        progress=not args.no_progress, log=lambda line: print(line, flush=True))
        except TrainingInterrupted as stop:
            if rank != 0:
                return stop.exit_code
            print(f"interrupted at epoch {stop.epoch}, step {stop.step}; checkpoint at {stop.checkpoint}: "
                  f"rerun with --resume --out {args.out}", file=sys.stderr, flush=True)
            return stop.exit_code
    wall = time.perf_counter() - start

    test_ready = trainer.prepare_test(test_x)
    final = trainer.evaluate(test_ready)  # every rank takes part: the sums are reduced
    if rank != 0:
        return 0
    from pyro_vae.plots import plot_all  # matplotlib and torchvision: 1-2 s of start-up, spent only here

    figures, not_drawn = plot_all(vae, trainer.history, test_ready, test_y, args.out)
    for name, reason in not_drawn.items():
        print(f"figure {name}.png not drawn: {reason}", flush=True)
    from pyro_vae.explorer import write_explorer

    try:  # like a figure, the page must not cost the run its metrics
        explorer = os.path.basename(write_explorer(vae, test_ready, test_y, os.path.join(args.out, "explorer.html")))
    except Exception as error:  # noqa: BLE001
        explorer = None
        print(f"explorer.html not written: {' '.join(str(error).split())}", flush=True)
    seconds = [r["seconds"] for r in trainer.history]
    metrics = {
        "epochs": trainer.epoch,
        "test_elbo": final["elbo"],
        "test_recon": final["recon"],
        "test_kl": final["kl"],
        "test_bits_per_dim": final["bits_per_dim"],
        "train_elbo": trainer.history[-1]["train_elbo"],
        "seconds_per_epoch": sum(seconds) / len(seconds),
        "wall_seconds_this_run": wall,
        "data": data.source,
        "num_train": len(train_x),
        "num_test": len(test_x),
        "train_class_counts": torch.bincount(data.train_labels, minlength=10).tolist(),
        "test_class_counts": torch.bincount(test_y, minlength=10).tolist(),
        "config": {**config, "batch_size": args.batch_size, "device": str(device),
                   "processes": trainer.world_size},
        "figures": {k: os.path.basename(v) for k, v in figures.items()},
        "figures_not_drawn": not_drawn,
        "explorer": explorer,
        "history": trainer.history,
    }
    if args.eval_samples:
        start_ll = time.perf_counter()
        with tqdm(total=len(test_ready), desc=f"log p(x), K={args.eval_samples}", unit="img",
                  disable=True if args.no_progress else None) as bar:
            ll = log_likelihood(vae.model, vae.guide, test_ready, num_samples=args.eval_samples,
                                progress=lambda done: bar.update(done - bar.n))
        metrics["test_log_likelihood"] = -ll.nll()
        metrics["test_log_likelihood_stderr"] = float(ll.stderr.pow(2).mean().sqrt() / len(ll.stderr) ** 0.5)
        metrics["test_log_likelihood_samples"] = args.eval_samples
        metrics["test_log_likelihood_seconds"] = time.perf_counter() - start_ll
        print(f"test log-likelihood {-ll.nll():.3f} nats/datapoint (K={args.eval_samples} importance "
              f"samples, median ESS {ll.ess.median().item():.0f}, {metrics['test_log_likelihood_seconds']:.0f} s)")
    with open(os.path.join(args.out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    print(f"test ELBO {final['elbo']:.3f} nats/datapoint = recon {final['recon']:.3f} - KL {final['kl']:.3f} "
          f"({final['bits_per_dim']:.4f} bits/dim); figures, {'explorer.html, ' if explorer else ''}metrics.json and "
          f"checkpoint.pt in {args.out}")
    return 0


def run(argv=None) -> int:
    """:func:`main` with every expected error as one line on stderr and exit code 2
    (``--debug`` prints the traceback first); Ctrl-C outside training exits 130."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        return main(argv)
    except KeyboardInterrupt:
        print("interrupted; nothing more was written (an earlier checkpoint, if any, is intact)", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 -- the CLI's promise: one line, exit code 2
        if "--debug" in argv:
            traceback.print_exc()
        message = " ".join(str(err).split()) or type(err).__name__  # one line, whatever the source
        flags = flags_for(err)
        if not isinstance(err, EXPECTED_ERRORS):
            message = f"unexpected error (please report with --debug): {type(err).__name__}: {message}"
        elif flags:
            message += f" (command line: {', '.join(flags)})"
        print(f"error: {message}", file=sys.stderr)
        return 2
    finally:
        distributed.shutdown()  # main() has returned: its trainer is gone


if __name__ == "__main__":
    sys.exit(run())
