"""The two Pyro conventions every model and guide of pyro_vae share.

* :func:`data_plate` -- the plate ``"data"`` over a minibatch, scaled by ``N/B`` so that a
  minibatch ELBO is an unbiased estimate of the full-data ELBO (seed item 9);
* :func:`register_module` -- ``pyro.module`` made safe for several models in one process.

:func:`registration_skipped` lets a caller that optimizes the modules' parameters itself
(:class:`pyro_vae.training.trainer.Trainer`, with a ``torch.optim`` optimizer) skip the registration, which
only :class:`pyro.infer.SVI`'s param-store optimizers need.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator, Optional

import pyro
import torch
from pyro.params.param_store import param_with_module_name
from torch import nn

_skip = threading.local()


@contextmanager
def registration_skipped(skip: bool = True) -> Iterator[None]:
    """Within this block (in this thread), :func:`register_module` returns the module untouched.

    For training loops that hand the modules' parameters to a ``torch.optim`` optimizer
    themselves: the model and guide run unchanged (same sites, same log-densities), minus
    the param-store bookkeeping, which walks every parameter on every call.
    ``registration_skipped(False)`` registers again inside such a block (the guide
    contract's check must see the guide's parameters as param sites).
    """
    before = getattr(_skip, "active", False)
    _skip.active = skip
    try:
        yield
    finally:
        _skip.active = before


def register_module(name: str, module: nn.Module) -> nn.Module:
    """``pyro.module(name, module)``, making sure the param store holds *this* module's tensors.

    Pyro's param store is global and keyed by name: a second VAE in the same
    process would otherwise have its optimizer step the first VAE's tensors
    (which ``pyro.module`` silently returns for a name it has seen). Stale entries
    under our names are dropped so that the module being run owns them.
    """
    if getattr(_skip, "active", False):
        return module
    store = pyro.get_param_store()
    for param_name, param in module.named_parameters():
        full_name = param_with_module_name(name, param_name)
        if full_name in store and store._params[full_name] is not param:
            del store[full_name]
    return pyro.module(name, module)


def data_plate(batch_size: int, num_data: Optional[int], device: torch.device) -> pyro.plate:
    """``pyro.plate("data")`` over a minibatch of ``batch_size`` out of ``num_data`` datapoints.

    With ``num_data = N > B`` the plate scales every log-density inside it by
    ``N / B``, so the minibatch ELBO is an unbiased estimate of the full-data ELBO
    (seed item 9). Model and guide must both use it, with the same arguments.
    """
    if num_data is None or num_data == batch_size:
        return pyro.plate("data", batch_size)
    if num_data < batch_size:
        raise ValueError(f"num_data={num_data} is smaller than the batch ({batch_size})")
    return pyro.plate("data", num_data, subsample=torch.arange(batch_size, device=device))
