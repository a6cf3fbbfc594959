"""The command line of the examples: options to settings, settings to flags, one-line errors.

The library's errors name *settings* (:attr:`pyro_vae.errors.PyroVAEError.settings`); this
module is where they become the flags a command-line user typed (:data:`SETTING_FLAGS`).
:func:`training_run` turns parsed options into a :class:`~pyro_vae.models.vae.VAE` and its
:class:`~pyro_vae.training.trainer.Trainer`, new or continued from a checkpoint; :func:`run` calls
an example's ``main`` with the command line's promise: every error is one line on stderr
with exit code 2, a signal that stopped training exits with 128 + its number.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import re
import sys
import traceback
from typing import Any, Callable, Dict, List, NoReturn, Optional, Sequence, Tuple

import pyro
import torch

from pyro_vae.data.images import MNISTData, fallback_notice, load_mnist
from pyro_vae.errors import ConfigError, OutputDirError, PyroVAEError, TrainingInterrupted, check_count, check_positive
from pyro_vae.inference.objectives import OBJECTIVES
from pyro_vae.models.guides import GUIDES
from pyro_vae.models.registry import MODELS, build_model
from pyro_vae.models.vae import VAE, VAEBase
from pyro_vae.training import TrainConfig, Trainer, distributed
from pyro_vae.training.callbacks import write_json
from pyro_vae.training.checkpoint import check_writable_dir, load_checkpoint

#: Errors that name their problem and fix; any other exception is reported as unexpected.
EXPECTED_ERRORS = (PyroVAEError, ValueError, TypeError, FloatingPointError, OSError)
#: The command-line flag of each setting the library's errors name.
SETTING_FLAGS = {
    "lr": "--lr",
    "clip_norm": "--clip-norm",
    "epochs": "--epochs",
    "batch_size": "--batch-size",
    "test_every": "--test-every",
    "z_dim": "--z-dim",
    "hidden_dims": "--hidden",
    "likelihood": "--likelihood",
    "binarize": "--binarize",
    "num_particles": "--particles",
    "train_size": "--train-size",
    "test_size": "--test-size",
    "checkpoint": "--out",
    "distributed": "--distributed",
    "device": "--device",
    "beta": "--beta",
    "kl_warmup": "--kl-warmup",
    "objective": "--objective",
    "guide": "--guide",
    "activation": "--activation",
    "seed": "--seed",
    "model": "--model",
    "prior": "--prior",
    "num_pseudo_inputs": "--pseudo-inputs",
    "eval_samples": "--eval-samples",
    # examples/ss_vae.py and examples/cvae.py
    "num_labels": "--labels",
    "alpha": "--alpha",
    "num_inputs": "--quadrants",
    "num_samples": "--samples",
    "validation": "--validation",
    "patience": "--patience",
    "label_seed": "--label-seed",
    "average_from": "--average-from",
    "start_epoch": "--average-from",
    "num_labelled": "--labels",
    "labelled_data": "--label-seed",
    "labelled_batch_size": "--batch-size",
    "shift_labelled": "--shift-labelled",
    "shift": "--shift-labelled",
    "data_dir": "--data-dir",
    # examples/your_data.py
    "data": "--data",
    "label_column": "--label-column",
    "test_fraction": "--test-fraction",
}
#: The options that build the model (VAE's keywords) and the training run (TrainConfig's).
MODEL_SETTINGS = ("model", "z_dim", "hidden_dims", "likelihood", "activation", "guide", "prior", "num_pseudo_inputs")
#: Settings of the one-layer VAE that the two-layer HVAE, Burda et al.'s architecture, does not take.
ONE_LAYER_ONLY = ("z_dim", "hidden_dims", "guide")
TRAIN_SETTINGS = ("lr", "binarize", "seed", "objective", "num_particles", "beta", "kl_warmup", "clip_norm")


def default(fn: Callable[..., Any], name: str) -> Any:
    """The default of keyword ``name`` of ``fn``: the library's defaults are the CLI's."""
    return inspect.signature(fn).parameters[name].default


def load_data(args: argparse.Namespace, verbose: bool = True) -> MNISTData:
    """MNIST as ``--data-dir`` and ``--no-download`` ask (:func:`pyro_vae.data.images.load_mnist`), the
    embedded sample announced in the command line's words."""
    data = load_mnist(args.data_dir, download=not args.no_download, verbose=False)
    if verbose and data.fallback is not None:
        print(fallback_notice(data, "--data-dir DIR"), file=sys.stderr)
    return data


def flags_for(err: Optional[BaseException]) -> List[str]:
    """The command-line flags of the settings an error names (also when Pyro re-raised it)."""
    while err is not None and not getattr(err, "settings", ()):
        err = err.__cause__
    return [SETTING_FLAGS[s] for s in getattr(err, "settings", ()) if s in SETTING_FLAGS]


class OneLineParser(argparse.ArgumentParser):
    """argparse, with its usage errors as one line on stderr (exit code 2, like every error here)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message}; see {self.prog} --help\n")


def add_model_options(p: argparse.ArgumentParser) -> None:
    """The model's settings (unset options take the checkpoint's value on --resume, else the model's default)."""
    p.add_argument(
        "--model",
        default=None,
        choices=sorted(MODELS),
        help="vae: one Gaussian latent layer (default); hvae: two stochastic layers, Burda et al.'s "
        "architecture (100 and 50 units; --z-dim, --hidden and --guide are the vae's)",
    )
    p.add_argument(
        "--prior",
        default=None,
        choices=["standard", "vamp"],
        help="p(z): standard N(0, I) (default), or vamp, the VampPrior, a mixture of the guide's "
        "posteriors at learned pseudo-inputs (over z2 for hvae)",
    )
    p.add_argument(
        "--pseudo-inputs",
        dest="num_pseudo_inputs",
        type=int,
        default=None,
        help=f"pseudo-inputs K of the VampPrior (default {default(VAE, 'num_pseudo_inputs')})",
    )
    p.add_argument("--z-dim", type=int, default=None, help=f"latent dimension (default {default(VAE, 'z_dim')})")
    p.add_argument(
        "--hidden",
        dest="hidden_dims",
        type=int,
        nargs="+",
        default=None,
        help=f"hidden layer widths (default {' '.join(map(str, default(VAE, 'hidden_dims')))})",
    )
    p.add_argument(
        "--activation",
        default=None,
        choices=["softplus", "relu", "tanh", "elu"],
        help=f"hidden nonlinearity (default {default(VAE, 'activation')})",
    )
    p.add_argument(
        "--likelihood",
        default=None,
        metavar="NAME",
        help="p(x|z): bernoulli for binarized pixels (default), continuous_bernoulli for grey levels, "
        "discretized_logistic for 8-bit grey levels; normal, normal_heteroscedastic, laplace, "
        "student_t for real values; poisson, negative_binomial for counts; categorical:K for features "
        "of K categories",
    )
    p.add_argument(
        "--guide",
        default=None,
        choices=sorted(GUIDES),
        help="q(z|x): diagonal Normal MLP (default), conv, full_covariance, iaf",
    )


def add_training_options(p: argparse.ArgumentParser) -> None:
    """TrainConfig's settings and the fit's, with their library defaults."""
    fit = Trainer.fit
    p.add_argument("--epochs", type=int, default=100, help="train until this epoch (default 100)")
    p.add_argument(
        "--batch-size",
        type=int,
        default=default(fit, "batch_size"),
        help=f"minibatch size (default {default(fit, 'batch_size')})",
    )
    p.add_argument("--lr", type=float, default=None, help=f"Adam learning rate (default {TrainConfig.lr:g})")
    p.add_argument(
        "--binarize",
        default=None,
        choices=["dynamic", "fixed", "none"],
        help="dynamic (fresh Bernoulli draw each epoch; default for bernoulli), fixed "
        "(threshold 0.5), none (default for continuous_bernoulli)",
    )
    p.add_argument(
        "--objective",
        default=None,
        choices=sorted(OBJECTIVES),
        help="elbo (Trace_ELBO, default), meanfield (analytic KL), iwae, jit_elbo, jit_meanfield",
    )
    p.add_argument(
        "--particles",
        dest="num_particles",
        type=int,
        default=None,
        help="particles of the objective; K of iwae (default 5), 1 for the ELBOs",
    )
    p.add_argument("--beta", type=float, default=None, help="weight of the KL term in training (default 1)")
    p.add_argument(
        "--kl-warmup",
        type=int,
        default=None,
        help="epochs over which the KL weight rises linearly from 0 to --beta (default 0)",
    )
    p.add_argument(
        "--clip-norm",
        type=float,
        default=None,
        help="clamp every gradient entry to [-C, C] (pyro.optim.ClippedAdam; default: no clipping)",
    )
    p.add_argument("--seed", type=int, default=None, help=f"random seed (default {TrainConfig.seed})")
    p.add_argument(
        "--test-every", type=int, default=default(fit, "test_every"), help="evaluate the test ELBO every N epochs"
    )
    p.add_argument(
        "--device",
        default="cpu",
        help="cpu or cuda (default cpu); with --distributed, cuda gives each process the GPU of its LOCAL_RANK",
    )
    p.add_argument(
        "--distributed",
        action="store_true",
        help="data-parallel training across the processes torchrun starts (gloo on cpu, "
        "NCCL on cuda); e.g. torchrun --nproc_per_node=2 examples/mnist_svi.py --distributed",
    )
    add_resume_options(p, "continue from OUT/checkpoint.pt")
    p.add_argument(
        "--tensorboard",
        metavar="DIR",
        default=None,
        help="also log to TensorBoard in DIR (needs: pip install 'pyro_vae[tensorboard]')",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--debug", action="store_true", help="show full tracebacks on errors")


def add_resume_options(p: argparse.ArgumentParser, resume_help: str) -> None:
    """``--resume`` and ``--overwrite``, one or neither: what to do with a run already in OUT
    (:func:`output_dir` refuses to replace it unasked)."""
    group = p.add_mutually_exclusive_group()
    group.add_argument("--resume", action="store_true", help=resume_help)
    group.add_argument(
        "--overwrite", action="store_true", help="start afresh even if OUT holds a run, replacing its checkpoints"
    )


def add_data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-dir",
        default=None,
        help="MNIST in torchvision's layout (DIR/MNIST/raw); default $PYRO_VAE_DATA, then "
        "~/.cache/pyro_vae (downloading), then the embedded 5,000-digit sample",
    )
    p.add_argument("--no-download", action="store_true", help="never try to download MNIST")
    p.add_argument(
        "--train-size",
        type=int,
        default=None,
        help="use only N training images, class-balanced: each digit's first images in turn",
    )
    p.add_argument(
        "--test-size", type=int, default=None, help="use only N test images, class-balanced like --train-size"
    )


def check_options(args: argparse.Namespace) -> None:
    """The checks argparse cannot express, as the library words them (then mapped to flags)."""
    for name, example in (("epochs", 10), ("batch_size", 128), ("test_every", 1)):
        check_positive(name, getattr(args, name), example=example)
    for name in ("train_size", "test_size"):
        value = getattr(args, name, None)
        if value is not None and value <= 0:
            raise ConfigError(
                f"{name} must be a positive number of images, got {value}; leave it unset to use them all",
                settings=(name,),
            )
    if hasattr(args, "eval_samples"):
        check_count("eval_samples", args.eval_samples, example=5000, zero="no importance-sampled evaluation")


def device_of(args: argparse.Namespace) -> Tuple[int, torch.device]:
    """``(rank, device)``: joins torchrun's process group with ``--distributed``."""
    try:
        device_type = torch.device(args.device).type
    except RuntimeError:
        device_type = None
    if device_type not in ("cpu", "cuda"):
        raise ConfigError(
            f"device {args.device} is not supported; use cpu, or cuda (cuda:N for one GPU)", settings=("device",)
        )
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"device {args.device} was asked for, but CUDA is not available here; use cpu", settings=("device",)
        )
    if args.distributed:
        rank, _, device = distributed.init_from_env(args.device)
        return rank, device
    return 0, torch.device(args.device)


def training_run(args: argparse.Namespace, device: torch.device) -> Tuple[VAEBase, Trainer]:
    """The model and Trainer the options ask for: new, or, with ``--resume``, continued from
    ``OUT/checkpoint.pt`` with its settings (options that contradict them are refused, except
    ``--lr``, which continues the run at a new rate)."""
    model = {k: getattr(args, k) for k in MODEL_SETTINGS if getattr(args, k) is not None}
    train = {k: getattr(args, k) for k in TRAIN_SETTINGS if getattr(args, k) is not None}
    state = None
    if args.resume:
        state = load_checkpoint(os.path.join(args.out, "checkpoint.pt"))
        saved = {"model": "vae", **state["config"], **state["trainer"]}
        clash = {k: (v, saved.get(k)) for k, v in {**model, **train}.items() if k != "lr" and _differs(v, saved.get(k))}
        if clash:
            raise ConfigError(
                "resuming continues the saved run, but these settings differ from it: "
                + ", ".join(f"{k} {a} (checkpoint: {b})" for k, (a, b) in clash.items())
                + ". Leave them unset, or start another run in a new output directory.",
                settings=tuple(clash),
            )
        model = {"model": "vae", **state["config"]}
        train = {**{k: state["trainer"][k] for k in TRAIN_SETTINGS}, **train}
    elif model.get("model") == "hvae":
        wrong = [k for k in ONE_LAYER_ONLY if k in model]
        if wrong:
            raise ConfigError(
                f"the hvae has Burda et al.'s two layers (100 and 50 units) and takes no "
                f"{' or '.join(wrong)}, settings of the one-layer vae; leave them unset",
                settings=tuple(wrong),
            )
    config = TrainConfig(**train, distributed=args.distributed)  # every setting checked, the seed too
    pyro.set_rng_seed(config.seed)  # before the network: the seed governs the initial weights too
    vae = build_model(model).to(device)
    trainer = Trainer(vae, config=config)
    if state is not None:
        trainer.load_state_dict(state)
        trainer.last_checkpoint = (os.path.join(args.out, "checkpoint.pt"), trainer.epoch, trainer.step_in_epoch)
    return vae, trainer


def _differs(given: Any, saved: Any) -> bool:
    return (list(given) != list(saved)) if isinstance(given, (list, tuple)) else given != saved


def describe(vae: VAEBase, trainer: Trainer, batch_size: int, epochs: int) -> str:
    """One line: the model, the guide and how SVI trains them."""
    c = trainer.config
    model = ", ".join(f"{k}={list(v) if isinstance(v, tuple) else v}" for k, v in vae.config.items() if k != "x_dim")
    particles = f" K={trainer.loss.num_particles}" if trainer.loss.num_particles > 1 else ""
    warmup = f" (warm-up over {c.kl_warmup} epochs)" if c.kl_warmup else ""
    optimizer = "Adam" if c.clip_norm is None else f"ClippedAdam clip_norm={c.clip_norm}"
    processes = f", {trainer.world_size} processes" if c.distributed else ""
    return (
        f"model: {model}; binarize={c.binarize}; SVI {type(trainer.loss).__name__}{particles}, "
        f"beta={c.beta}{warmup}, {optimizer} lr={c.lr}, batch {batch_size}, {epochs} epochs, "
        f"{trainer.device}{processes}"
    )


def run(main: Callable[[Optional[Sequence[str]]], int], argv: Optional[Sequence[str]] = None) -> int:
    """``main(argv)`` with every expected error as one line on stderr and exit code 2 (``--debug``
    prints the traceback first); Ctrl-C outside training exits 130."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return main(argv)
    except KeyboardInterrupt:
        print("interrupted; nothing more was written (an earlier checkpoint, if any, is intact)", file=sys.stderr)
        return 130
    except TrainingInterrupted as stop:  # SIGINT/SIGTERM in a Trainer's fit: its checkpoint is written
        where = f"checkpoint at {stop.checkpoint}: rerun with --resume" if stop.checkpoint else "no checkpoint"
        print(f"interrupted at epoch {stop.epoch}, step {stop.step}; {where}", file=sys.stderr)
        return stop.exit_code
    except Exception as err:
        if "--debug" in argv:
            traceback.print_exc()
        message = " ".join(str(err).split()) or type(err).__name__  # one line, whatever the source
        flags = flags_for(err)
        if _out_of_memory(err):
            asked = re.search(r"tried to allocate (\d+) bytes|tried to allocate ([\d.]+ [KMGT]iB)", message, re.I)
            size = (f"{int(asked[1]) / 2**30:.1f} GiB" if asked[1] else asked[2]) if asked else None
            message = (
                f"out of memory{f' ({size} asked for at once)' if size else ''}; make the run smaller: "
                f"fewer or narrower layers, a smaller z_dim or batch_size"
            )
        elif not isinstance(err, EXPECTED_ERRORS):
            message = f"unexpected error (please report with --debug): {type(err).__name__}: {message}"
        elif flags:
            message += f" (command line: {', '.join(flags)})"
        print(f"error: {message}", file=sys.stderr)
        return 2
    finally:
        distributed.shutdown()  # main() has returned: its trainer is gone


def _out_of_memory(err: BaseException) -> bool:
    """torch's allocation failures: ``torch.OutOfMemoryError`` on a GPU, a ``RuntimeError`` on the CPU."""
    return isinstance(err, (MemoryError, torch.OutOfMemoryError)) or (
        isinstance(err, RuntimeError) and "can't allocate memory" in str(err)
    )


def output_dir(
    path: str,
    checkpoints: Sequence[str] = (),
    resume: bool = False,
    overwrite: bool = False,
    program: Optional[str] = None,
) -> str:
    """``path``, created if need be and checked writable before any work is done.

    Unless the run resumes or overwrites, ``path`` must not hold any of ``checkpoints`` (file
    names in it): rerunning a command without ``--resume`` would otherwise replace hours of
    training at the end of its first epoch. Unless it overwrites, ``path`` must not hold another
    ``program``'s ``metrics.json``, whose figures and record the run would replace.
    """
    check_writable_dir(path)
    held = [name for name in checkpoints if os.path.exists(os.path.join(path, name))]
    if held and not (resume or overwrite):
        raise OutputDirError(
            f"{path} already holds a run ({', '.join(held)}); continue it with --resume, "
            f"start afresh over it with --overwrite, or choose another --out"
        )
    record = _record(path)
    if program is not None and record is not None and record.get("program") != program and not overwrite:
        what = (
            f"is the record of a run of {record['program']}, which this run of {program} would replace"
            if isinstance(record.get("program"), str)
            else f"is not a record of {program} runs (unreadable, or another program's), and this run would replace it"
        )
        raise OutputDirError(
            f"{os.path.join(path, RECORD)} {what}; choose another --out, or replace it with --overwrite"
        )
    return path


#: The file in which each example records its run.
RECORD = "metrics.json"


def _record(path: str) -> Optional[Dict[str, Any]]:
    """``path``'s :data:`RECORD` as a dict; ``None`` if there is none, ``{}`` if it is not one."""
    try:
        with open(os.path.join(path, RECORD)) as f:
            record = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def earlier_rows(path: str, program: str, key: str, replaced: Sequence[str] = ()) -> Dict[str, Any]:
    """The rows under ``key`` (label counts, quadrants) of the :data:`RECORD` that earlier runs of
    ``program`` left in ``path``, less the ``replaced`` ones this run makes anew: a run of other
    rows into the same ``--out`` adds to the record instead of erasing it."""
    record = _record(path) or {}
    rows = record.get(key) if record.get("program") == program else None
    return {k: v for k, v in rows.items() if k not in replaced} if isinstance(rows, dict) else {}


def write_record(path: str, record: Dict[str, Any]) -> None:
    """Write ``record`` as ``path``'s :data:`RECORD`, atomically (:func:`~pyro_vae.training.callbacks.write_json`)."""
    write_json(os.path.join(path, RECORD), record)


def metrics_fields(program: str, data: Any, config: Dict[str, Any]) -> Dict[str, Any]:
    """What ``metrics.json`` says of the program that wrote it, the data and the run's settings."""
    return {
        "program": program,
        "data": data.source,
        "num_train": len(data.train_images),
        "num_test": len(data.test_images),
        "train_class_counts": torch.bincount(data.train_labels, minlength=10).tolist(),
        "test_class_counts": torch.bincount(data.test_labels, minlength=10).tolist(),
        "config": config,
    }
