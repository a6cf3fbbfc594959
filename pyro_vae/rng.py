"""Random streams: side streams that leave the main one untouched, and the named streams of a training run."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch


@contextmanager
def rng_fork(seed: int) -> Iterator[None]:
    """Run a block on its own seeded torch RNG stream, then restore the caller's stream.

    Checks and warm-ups that sample (the guide contract, JIT compilation, a NaN
    diagnosis) run inside one, so that whether and when they ran never changes the
    numbers a training run or a user's own SVI loop draws.
    """
    cpu_state = torch.get_rng_state()
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.set_rng_state(cpu_state)
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)


# ---- the named streams of a training run ---------------------------------------------
# Every random number a run draws comes from one of these, each seeded from the run's
# seed and its own index, so that no stream's draws depend on another's: an epoch's data
# does not depend on the epochs before it (a resumed run draws exactly the same data),
# evaluation and JIT warm-up never move the latent noise of training, and each process of
# a distributed run draws its own latent noise.

#: The test set is binarized once with this seed, whatever the training seed: test
#: figures of runs with different seeds are on the same data.
TEST_BINARIZATION_SEED = 20151101
_DATA_STRIDE = 1_000_003  # a prime: (seed, epoch) and (seed, rank) pairs never collide below it
_JIT_WARMUP_OFFSET = 104_729
_EVALUATION_OFFSET = 7919


def data_order_generator(seed: int, epoch: int, device: torch.device = torch.device("cpu")) -> torch.Generator:
    """Epoch ``epoch``'s stream: its data order and its dynamic binarization, alike on every rank."""
    return torch.Generator(device=device).manual_seed(seed * _DATA_STRIDE + epoch)


def latent_noise_seed(seed: int, rank: int) -> int:
    """The seed of the global torch stream that draws a process's latent noise ``z``."""
    return seed + _DATA_STRIDE * rank


def jit_warmup_seed(seed: int) -> int:
    """The side stream a JIT objective is compiled on (see :func:`rng_fork`)."""
    return seed + _JIT_WARMUP_OFFSET


def evaluation_seed(seed: int, rank: int) -> int:
    """The side stream of the test ELBO's noise: repeated evaluations agree."""
    return seed + _EVALUATION_OFFSET + rank
