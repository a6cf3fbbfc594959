"""Side streams of random numbers that leave the main stream untouched."""

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
