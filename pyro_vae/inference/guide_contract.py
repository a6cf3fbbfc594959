r"""The guide contract: what a guide must do to pair with a model, checked in one place.

A *guide* is any callable taking the model's arguments, ``guide(x, num_data=None)``,
that on a batch of :math:`B` datapoints, for **every latent site** of the model (``"z"``
for the VAE; ``"z1"`` and ``"z2"`` for a two-layer hierarchy; the names are read off a
trace of the model, :mod:`pyro_vae.inference.sites`)

1. samples that site, under the model's name;
2. inside the model's plate over datapoints (``pyro.plate("data")`` for pyro_vae's models),
   at the model's ``dim``; and, on a call whose ``num_data`` exceeds the batch (a minibatch of
   a larger data set), with the model's full size :math:`N`, so that both scale the minibatch
   by :math:`N/B` (:func:`pyro_vae.models.plate.data_plate` builds such a plate). A guide that
   ignores ``num_data`` is right wherever no minibatch is scaled, and is judged so;
3. from a distribution with the model's event shape there (``(z_dim,)`` for the VAE: one
   ``z_dim``-vector per datapoint) and the model's batch shape (``(B,)``);
4. that is reparameterized (``fn.has_rsample``) when the objective differentiates
   through the sample -- every objective of :mod:`pyro_vae.inference.objectives` does
   (``Trace_ELBO``, ``TraceMeanField_ELBO``, IWAE);

and, as a whole,

5. has no latent sample site that the model lacks (the ELBO
   :math:`\mathbb E_q[\log p(x, z) - \log q(z|x)]` needs every guide variable in the model);
6. registers its parameters with Pyro: if it is an :class:`~torch.nn.Module` with
   trainable parameters, they appear as param sites of its trace (through
   ``pyro.module`` or :func:`pyro_vae.models.plate.register_module`); otherwise SVI never
   updates them.

:func:`check_guide` runs the guide and the model once on a small batch and raises
:class:`GuideError`, naming the rule broken and the fix, at the first violation. It judges the
call that is made: the scale of rule 2 is checked with the ``num_data`` of that call, never
with one the check invented.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Tuple, cast

import torch
from pyro import poutine
from torch import nn
from torch.distributions import Distribution

from pyro_vae.errors import PyroVAEError
from pyro_vae.inference.sites import frame_named, full_size, latent_sites, model_sites

PLATE_HINT = (
    'wrap the sample in `with pyro.plate("data", ...)` or '
    "`with pyro_vae.models.plate.data_plate(B, num_data, x.device)`"
)


class GuideError(PyroVAEError, ValueError):
    """A guide that breaks the guide contract (:mod:`pyro_vae.inference.guide_contract`)."""


def _dist_name(fn: Any) -> str:
    """``Independent(VonMises)`` rather than just ``Independent``: name what breaks the rule."""
    base = getattr(fn, "base_dist", None)
    return f"{type(fn).__name__}({_dist_name(base)})" if base is not None else type(fn).__name__


def _trace_guide(guide: Callable[..., Any], x: torch.Tensor, num_data: Optional[int]):
    try:
        return poutine.trace(guide).get_trace(x, num_data=num_data)
    except GuideError:
        raise
    except Exception as err:
        text = str(err).strip()
        text = text.splitlines()[0] if text else ""  # Pyro appends a trace-shape table; the cause is chained
        if "Shape mismatch inside plate" in text:
            fix = (
                "a distribution over the z_dim coordinates needs `.to_event(1)` inside the plate, "
                "e.g. dist.Normal(loc, scale).to_event(1)"
            )
        else:
            fix = (
                "a guide must accept the model's arguments (x, num_data=None), e.g. `def guide(x, num_data=None): ...`"
            )
        raise GuideError(
            f"the guide raised {type(err).__name__} when called as guide(x, num_data={num_data}) with "
            f"the model's arguments: {text}; {fix}"
        ) from err


def _plate_hint(plate: str) -> str:
    if plate == "data":
        return PLATE_HINT
    return f'wrap the sample in `with pyro.plate("{plate}", ...)`, the model\'s plate over datapoints'


def _check_site(
    guide_trace,
    model_trace,
    name: str,
    plate: str,
    expected_event: Tuple[int, ...],
    z_dim_told: bool,
    reparameterized_required: bool,
) -> None:
    """Rules 1-4 at the model's latent site ``name``."""
    site = guide_trace.nodes.get(name)
    # Rule 1: the guide samples the site.
    if site is None or site["type"] != "sample" or site["is_observed"]:
        found = latent_sites(guide_trace)
        raise GuideError(
            f"rule 1 (site {name!r}): the guide has no latent sample site {name!r} (its latent sites: "
            f'{found}); sample the code as `pyro.sample("{name}", ...)`, the name the model uses'
        )
    fn = site["fn"]
    model_site = model_trace.nodes[name]
    # Rule 3: shapes. The event shape first, since a missing .to_event(1) shows up there.
    event = tuple(fn.event_shape)
    if event != expected_event:
        if z_dim_told:
            why = "(one z_dim-vector per datapoint)"
        else:
            why = f"(the model's event shape at site {name!r})"
        n = len(expected_event)
        if n == 0:
            fix = "sample one scalar per datapoint, without `.to_event`"
        else:
            coordinates = f"{expected_event[0]} coordinates" if n == 1 else f"trailing {n} dimensions {expected_event}"
            fix = (
                f"declare the {coordinates} one event with `.to_event({n})`, e.g. dist.Normal(loc, scale).to_event({n})"
            )
        raise GuideError(
            f"rule 3 (event shape): site {name!r} has event shape {event}, expected {expected_event} {why}; {fix}"
        )
    batch_shape = tuple(model_site["fn"].batch_shape)
    if tuple(fn.batch_shape) != batch_shape:
        batch = batch_shape[0] if len(batch_shape) == 1 else batch_shape
        params = list(batch_shape) + list(expected_event)
        raise GuideError(
            f"rule 3 (batch shape): site {name!r} has batch shape {tuple(fn.batch_shape)} for a batch of "
            f"{batch}, expected {batch_shape}: one distribution per datapoint, with parameters of shape "
            f"{params}"
        )
    # Rule 2: the model's plate over datapoints.
    frame, model_frame = frame_named(site, plate), frame_named(model_site, plate)
    if model_frame is None:  # a latent the model shares across datapoints: the guide samples it outside too
        if frame is not None:
            raise GuideError(
                f"rule 2 (plate {plate!r}): site {name!r} is inside plate {plate!r} but the model samples it "
                f"outside, once for all datapoints; sample it outside the plate as the model does"
            )
    elif frame is None:
        raise GuideError(f"rule 2 (plate {plate!r}): site {name!r} is not inside plate {plate!r}; {_plate_hint(plate)}")
    elif frame.dim != model_frame.dim or frame.size != model_frame.size:
        raise GuideError(
            f"rule 2 (plate {plate!r}): site {name!r} is in plate {plate!r} with dim={frame.dim}, size={frame.size}; "
            f"expected dim={model_frame.dim} over the batch of {model_frame.size}; {_plate_hint(plate)}"
        )
    # Rule 4: reparameterized.
    if reparameterized_required and not fn.has_rsample:
        raise GuideError(
            f"rule 4 (reparameterized): site {name!r} is drawn from {_dist_name(fn)}, which has no rsample, so "
            f"the objective cannot differentiate through {name}; use a reparameterizable distribution "
            f"(Normal, MultivariateNormal, a TransformedDistribution of one, ...), or pass "
            f"reparameterized_required=False for a score-function objective such as TraceGraph_ELBO"
        )


def check_guide(
    model: Callable[..., Any],
    guide: Callable[..., Any],
    x: torch.Tensor,
    z_dim: Optional[int] = None,
    reparameterized_required: bool = True,
    plate: Optional[str] = None,
    num_data: Optional[int] = None,
) -> None:
    """Raise :class:`GuideError` if ``guide`` breaks the contract of this module for ``model``
    on the call ``guide(x, num_data=num_data)``.

    The model is run once on its own (its prior) to find its latent sites, their shapes and
    its plate over datapoints; the guide is run on ``x[:2]`` as ``(x, num_data=None)``. When
    ``num_data`` exceeds ``len(x)``, the call scales a minibatch to a larger data set, and the
    guide is run once more with that ``num_data`` to check that its plate scales the
    minibatch as the model's does.

    :param model: the model, e.g. ``vae.model``.
    :param guide: the guide to check, called as ``guide(x, num_data=None)``.
    :param x: data the model accepts (a couple of rows suffice).
    :param z_dim: for a model with one latent site, the event shape ``(z_dim,)`` to require
        there (the VAE passes its ``z_dim``); ``None`` requires the model's own event shapes.
    :param reparameterized_required: whether rule 4 applies (it does for all of
        pyro_vae's objectives).
    :param plate: the name of the model's plate over datapoints, when it is not the plate
        named ``"data"`` or the outermost one (:mod:`pyro_vae.inference.sites`).
    :param num_data: the ``num_data`` of the call being checked, on the minibatch ``x``.
    """
    small = x[:2]
    batch = x.shape[0]
    guide_trace = _trace_guide(guide, small, None)
    model_trace = poutine.trace(model).get_trace(small, num_data=None)
    sites = model_sites(model_trace, plate)
    if z_dim is not None and len(sites.latent) != 1:
        raise GuideError(
            f"z_dim={z_dim} was given but the model has {len(sites.latent)} latent sites "
            f"{list(sites.latent)}; pass z_dim=None to check each against the model's event shape"
        )
    for name in sites.latent:
        expected = (
            (z_dim,) if z_dim is not None else tuple(cast(Distribution, model_trace.nodes[name]["fn"]).event_shape)
        )
        _check_site(guide_trace, model_trace, name, sites.plate, expected, z_dim is not None, reparameterized_required)

    # Rule 5: every latent site of the guide is a latent site of the model.
    model_latent = set(sites.latent)
    for name in latent_sites(guide_trace):
        if name not in model_latent:
            what = "observes it" if name in model_trace.nodes else "has no such site"
            raise GuideError(
                f"rule 5 (no extra latent sites): the guide samples latent site {name!r} but the model "
                f"{what}; the ELBO scores every guide site under the model, so remove {name!r} from "
                f"the guide (or add it to the model)"
            )

    if num_data is not None and num_data > batch:
        _check_scale(model, guide, small, batch, num_data, sites, model_trace)
    _check_registered(guide, guide_trace)


def _check_scale(
    model: Callable[..., Any],
    guide: Callable[..., Any],
    small: torch.Tensor,
    batch: int,
    num_data: int,
    sites: Any,
    model_trace: Any,
) -> None:
    """Rule 2, continued: on a minibatch of a larger data set the guide scales like the model."""
    sub_guide = _trace_guide(guide, small, num_data)
    sub_model = poutine.trace(poutine.replay(model, trace=sub_guide)).get_trace(small, num_data=num_data)
    for name in sites.latent:
        if frame_named(model_trace.nodes[name], sites.plate) is None:
            continue  # outside the plate: no N/B scale to match
        q_full, p_full = full_size(sub_guide.nodes[name], sites.plate), full_size(sub_model.nodes[name], sites.plate)
        if q_full != p_full:
            raise GuideError(
                f"rule 2 (plate {sites.plate!r}): called as guide(x, num_data={num_data}) on a minibatch of "
                f"{batch}, the guide's plate {sites.plate!r} has full size {q_full} but the model's has "
                f"{p_full}, so the guide's log q is not scaled by N/B like the model's log p; build the plate "
                f"from num_data, e.g. `with pyro_vae.models.plate.data_plate(B, num_data, x.device)`"
            )


def _check_registered(guide: Callable[..., Any], guide_trace: Any) -> None:
    """Rule 6: an nn.Module guide's trainable parameters are Pyro params."""
    if isinstance(guide, nn.Module):
        registered = {id(site["value"]) for site in guide_trace.nodes.values() if site["type"] == "param"}
        missing = [n for n, p in guide.named_parameters() if p.requires_grad and id(p) not in registered]
        if missing:
            shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
            raise GuideError(
                f"rule 6 (registered parameters): {len(missing)} trainable parameters of the guide "
                f"{type(guide).__name__} ({shown}) are not Pyro params, so SVI would never update them; "
                f'call `pyro.module("guide", self)` or `pyro_vae.models.plate.register_module("guide", self)` '
                f"in the guide"
            )
