r"""A Pyro model and guide as one thing to train: their parameters, their calls and their checks.

:class:`~pyro_vae.training.trainer.Trainer` trains a :class:`Program`: any ``model`` and
``guide`` that take the same arguments, as :class:`pyro.infer.SVI` would, called by the
Trainer as ``model(*args, **kwargs, num_data=N)`` on each minibatch
(:mod:`~pyro_vae.data.batches`). Their trainable parameters are

- those of the :class:`~torch.nn.Module` each one is, or is a method of (``vae.model``),
  which are optimized, checkpointed by :meth:`~torch.nn.Module.state_dict` and averaged
  across processes in a distributed run; and
- whatever they keep in Pyro's param store only (``pyro.param``, or ``pyro.module`` of a
  module that is neither), found by name at the first step, optimized and checkpointed too.

:class:`VAEProgram` is the program of one of this library's pixel models (``Trainer(vae)``):
it adds the model's own input checks and its guide contract (:mod:`pyro_vae.inference.guide_contract`).
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Dict, List, Optional, Set, Tuple, cast

import pyro
import torch
from pyro import poutine
from torch import nn

from pyro_vae.data.batches import Batch, check_tensors
from pyro_vae.data.images import check_finite, check_pixels
from pyro_vae.errors import ConfigError, InvalidDataError
from pyro_vae.inference.guide_contract import GuideError
from pyro_vae.inference.sites import SiteError, check_latent_match, full_size, model_sites
from pyro_vae.rng import rng_fork


def accepts_num_data(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` can be called with ``num_data=`` (a parameter of that name, or ``**kwargs``)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # a builtin or C callable: assume Pyro's convention
        return True
    return any(p.name == "num_data" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def _owner(fn: Callable[..., Any]) -> Optional[nn.Module]:
    """The module ``fn`` is, or is a bound method of."""
    if isinstance(fn, nn.Module):
        return fn
    owner = getattr(fn, "__self__", None)
    return owner if isinstance(owner, nn.Module) else None


def _name(fn: Callable[..., Any]) -> str:
    owner = getattr(fn, "__self__", None)
    if owner is not None:
        return f"{type(owner).__name__}.{getattr(fn, '__name__', '?')}"
    return getattr(fn, "__qualname__", type(fn).__name__)


def _body(model: Callable[..., Any], guide: Callable[..., Any]) -> nn.Module:
    """One module holding every parameter the owners of model and guide have."""
    owners = [m for m in (_owner(model), _owner(guide)) if m is not None]
    if len(owners) == 2 and owners[0] is owners[1]:
        return owners[0]
    body = nn.Module()
    for role, fn in (("model", model), ("guide", guide)):
        if _owner(fn) is not None:
            body.add_module(role, _owner(fn))
    return body


class Program:
    """A model and a guide paired for training (see the module docstring).

    :param model: ``model(*args, **kwargs, num_data=None)``, the joint :math:`p(x, z)`.
    :param guide: the variational distribution :math:`q(z|x)`, taking the same arguments.
    """

    #: pixels per datapoint, for bits per dimension; None where that is not the measure
    x_dim: Optional[int] = None
    #: the binarization a run uses when none is configured
    natural_binarization: str = "none"

    def __init__(self, model: Callable[..., Any], guide: Callable[..., Any]) -> None:
        for role, fn in (("model", model), ("guide", guide)):
            if not callable(fn):
                raise ConfigError(
                    f"the {role} must be callable, a function or a method of an nn.Module "
                    f"taking the data as arguments; got a {type(fn).__name__}"
                )
        self.model, self.guide = model, guide
        #: the module whose parameters are optimized and checkpointed (an empty one for pure functions)
        self.module = _body(model, guide)
        #: whether model and guide take ``num_data``, through which a minibatch is scaled by N/B
        self.takes_num_data = accepts_num_data(model) and accepts_num_data(guide)

    def num_data_arg(self, num_data: int) -> Optional[int]:
        """What model and guide are called with as ``num_data``: nothing where they take no such
        argument (trained on the whole data set: :meth:`check` refuses them a minibatch)."""
        return num_data if self.takes_num_data else None

    @property
    def config(self) -> Dict[str, Any]:
        """What identifies the program in a checkpoint: the names of model and guide, and the
        module's own ``config`` (its constructor's settings) where it has one, else the shapes of
        its parameters; a resume names what differs."""
        own = getattr(self.module, "config", None)
        if isinstance(own, dict):
            return {"model": _name(self.model), "guide": _name(self.guide), **own}
        return {
            "model": _name(self.model),
            "guide": _name(self.guide),
            "parameters": {name: list(p.shape) for name, p in self.module.state_dict().items()},
        }

    def check_objective(self, elbo: Any) -> None:
        """Refuse an objective this program cannot be trained with (any ELBO can, here)."""

    def parts(self, batch: Batch, num_data: int) -> List[Tuple[str, Batch, int]]:
        """A step's batch as separate calls ``(name, arguments, num_data)`` of model and guide, for
        checks and diagnoses: the one call ``model(*batch, num_data)`` here; M2's unlabelled and
        labelled minibatches (:class:`~pyro_vae.models.ssvae.SSVAEProgram`)."""
        return [("", batch, num_data)]

    def prepare(self, batch: Batch, what: str, binarize: Optional[str]) -> Batch:
        """Check data before training: every floating tensor finite; the first one, the images,
        in [0, 1] when it is to be binarized (``binarize`` None: a transform prepares it)."""
        check_tensors(batch, what)
        if binarize not in (None, "none"):
            check_pixels(batch.first, what)
        for t in batch.tensors:
            if t.is_floating_point():  # not pixels: any model's data
                check_finite(t, f"the {what}", value="value", rows="rows")
        return batch

    def check(self, batch: Batch, num_data: int) -> None:
        """Before the first step, on two rows of the first minibatch ``batch`` of a run over
        ``num_data`` datapoints: model and guide run, on the call the Trainer will make, with
        matching latent sites, and a minibatch that is scaled is scaled alike by both."""
        scaled = num_data > batch.size
        rows = batch.select(slice(0, 2))
        if scaled and not self.takes_num_data:
            lacking = [role for role, fn in (("model", self.model), ("guide", self.guide)) if not accepts_num_data(fn)]
            raise ConfigError(
                f"the {' and the '.join(lacking)} take{'s' if len(lacking) == 1 else ''} no num_data argument, so "
                f"a minibatch of your {num_data} datapoints cannot be scaled by N/B to the whole data set; add "
                f"num_data=None to the signature of model and guide and build the plate over datapoints from "
                f"it, e.g. `with pyro_vae.models.plate.data_plate(len(x), num_data, x.device)`, or train on the full "
                f"batch (batch_size={num_data})",
                settings=("batch_size",),
            )
        n = num_data if scaled else None
        with rng_fork(0), torch.no_grad(), pyro.validation_enabled(True):
            guide_trace = _run("guide", lambda: rows.call(poutine.trace(self.guide).get_trace, n), n)
            model_trace = _run(
                "model", lambda: rows.call(poutine.trace(poutine.replay(self.model, trace=guide_trace)).get_trace, n), n
            )
        _check_sites(model_trace, guide_trace)
        if scaled:
            _check_scale(model_trace, guide_trace, num_data, batch.size)


def _run(role: str, fn: Callable[[], Any], num_data: Optional[int]) -> Any:
    try:
        return fn()
    except (ConfigError, GuideError, InvalidDataError):
        raise
    except Exception as err:
        text = (str(err).strip().splitlines() or [""])[0]
        call = f"{role}(*batch{f', num_data={num_data}' if num_data is not None else ''})"
        raise ConfigError(
            f"the {role} raised {type(err).__name__} when called by the Trainer as {call} on a few "
            f"rows of the first minibatch: {text}"
        ) from err


def _check_sites(model_trace: Any, guide_trace: Any) -> None:
    """Every latent site of the model the guide samples (or the model enumerates), and no other."""
    try:
        check_latent_match(model_trace, guide_trace, enumerated_in_model=True)
    except SiteError as err:
        raise GuideError(str(err)) from None


def _check_scale(model_trace: Any, guide_trace: Any, num_data: int, batch: int) -> None:
    """On a minibatch of ``batch`` of ``num_data``: the model's plate over datapoints has full
    size ``num_data``, and every latent site the guide samples in it, the guide's too."""
    try:
        sites = model_sites(model_trace)
    except SiteError:  # no plate over datapoints to be found: nothing to compare
        return
    observed_full = cast(
        Set[int], {full_size(model_trace.nodes[name], sites.plate) for name in sites.observed} - {None}
    )
    if observed_full and num_data not in observed_full:
        raise ConfigError(
            f"the Trainer called the model with num_data={num_data} on a minibatch of {batch}, but its plate "
            f"{sites.plate!r} has full size {sorted(observed_full)[0]}, so log p(x|z) is not scaled by N/B to "
            f"the whole data set; build the plate from num_data, e.g. "
            f"`with pyro_vae.models.plate.data_plate(len(x), num_data, x.device)`",
            settings=("batch_size",),
        )
    for name in sites.latent:
        p_full = full_size(model_trace.nodes[name], sites.plate)
        if p_full is None or name not in guide_trace.nodes:
            continue  # outside the plate: no N/B scale to match
        q_full = full_size(guide_trace.nodes[name], sites.plate)
        if q_full != p_full:
            raise GuideError(
                f"the Trainer called the guide with num_data={num_data} on a minibatch of {batch}: at site "
                f"{name!r} the guide's plate {sites.plate!r} has full size {q_full} but the model's has "
                f"{p_full}, so the guide's log q is not scaled by N/B like the model's log p; build the plate "
                f"from num_data in the guide as in the model, e.g. "
                f"`with pyro_vae.models.plate.data_plate(len(x), num_data, x.device)`"
            )


class VAEProgram(Program):
    """The program of one of pyro_vae's pixel models (:class:`~pyro_vae.models.vae.VAEBase`): its
    ``model`` and ``guide`` behind the model's door, its checkpoint identity ``vae.config``."""

    def __init__(self, vae: Any) -> None:
        if not vae.require_reparameterized:
            raise ConfigError(
                "the VAE was built with require_reparameterized=False, but every objective of the "
                "Trainer differentiates through z; build it with the default True, or train the "
                "score-function guide with your own pyro.infer.SVI"
            )
        super().__init__(vae.model, vae.guide)
        self.vae = vae
        self.x_dim = vae.x_dim if vae.likelihood.discrete else None  # bits/dim: a code length only of discrete data
        self.natural_binarization = {"bernoulli": "dynamic"}.get(vae.likelihood.name, "none")

    @property
    def config(self) -> Dict[str, Any]:
        return self.vae.config

    def prepare(self, batch: Batch, what: str, binarize: Optional[str]) -> Batch:
        """Flatten the images, refuse NaN/out-of-range pixels and, without binarization, pixels
        outside the likelihood's support (``binarize`` None: a transform prepares them, so only
        NaN and infinite values are refused here)."""
        if len(batch.tensors) != 1:
            raise InvalidDataError(
                f"the {what} of {type(self.vae).__name__} are its images alone, one tensor; "
                f"got {len(batch.tensors)} tensors"
            )
        x = self.vae.flatten(batch.first)
        if binarize is None:
            check_finite(x, f"the {what}")
            return Batch((x,), {})
        if binarize == "none" and not self.vae.likelihood.pixels:  # a table's features, counts
            check_finite(x, f"the {what}", value="value", rows="rows")
        else:  # pixel intensities in [0, 1]
            check_pixels(x, what)
        if binarize == "none":
            self.vae.likelihood.check_support(x)
        return Batch((x,), {})

    def check(self, batch: Batch, num_data: int) -> None:
        """The guide contract, for the call training makes (:meth:`~pyro_vae.models.vae.VAEBase.check_guide`)."""
        self.vae.check_guide(batch.first, num_data)


def as_program(model: Any, guide: Optional[Callable[..., Any]] = None) -> Program:
    """``Trainer(vae)`` or ``Trainer(vae.model, vae.guide)``: a :class:`VAEProgram`;
    ``Trainer(ssvae)``: M2's :class:`~pyro_vae.models.ssvae.SSVAEProgram`; ``Trainer(model, guide)``:
    a :class:`Program`."""
    from pyro_vae.models.ssvae import SSVAE, SSVAEProgram  # the models import training's parts, not the other way round
    from pyro_vae.models.vae import VAEBase

    if guide is None:
        if isinstance(model, VAEBase):
            return VAEProgram(model)
        if isinstance(model, SSVAE):
            return SSVAEProgram(model)
        if isinstance(model, (tuple, list)) and len(model) == 2:
            raise ConfigError(
                "pass the model and the guide as two arguments, Trainer(model, guide), not as one "
                f"{type(model).__name__}"
            )
        raise ConfigError(
            f"Trainer(model, guide) needs a guide: {type(model).__name__} is not one of "
            f"pyro_vae's VAEs, which bring their own; pass Trainer(model, guide)"
        )
    owner = getattr(model, "__self__", None)
    if (
        isinstance(owner, VAEBase)
        # cast: comparing with an Any would widen owner, a VAEBase here, back to Any | None for mypy
        and cast(object, getattr(guide, "__self__", None)) is owner
        and getattr(model, "__func__", None) is type(owner).model
        and getattr(guide, "__func__", None) is type(owner).guide
    ):
        return VAEProgram(owner)
    return Program(model, guide)
