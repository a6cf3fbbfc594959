r"""The guide contract: what a guide must do to pair with the VAE's model, checked in one place.

A *guide* is any callable taking the model's arguments, ``guide(x, num_data=None)``,
that on a batch of :math:`B` datapoints

1. samples the latent site ``"z"``;
2. inside ``pyro.plate("data")`` over the batch, at ``dim=-1``, built from
   ``num_data`` as the model builds it (:func:`pyro_vae.plate.data_plate`), so both
   scale a minibatch by :math:`N/B`;
3. from a distribution with event shape ``(z_dim,)`` and batch shape ``(B,)``
   (one ``z_dim``-vector per datapoint);
4. that is reparameterized (``fn.has_rsample``) when the objective differentiates
   through the sample -- every objective of :mod:`pyro_vae.objectives` does
   (``Trace_ELBO``, ``TraceMeanField_ELBO``, IWAE);
5. has no latent sample site that the model lacks (the ELBO
   :math:`\mathbb E_q[\log p(x, z) - \log q(z|x)]` needs every guide variable in the model);
6. registers its parameters with Pyro: if it is an :class:`~torch.nn.Module` with
   trainable parameters, they appear as param sites of its trace (through
   ``pyro.module`` or :func:`pyro_vae.plate.register_module`); otherwise SVI never
   updates them.

:func:`check_guide` runs guide and model once on a small batch and raises
:class:`GuideError`, naming the rule broken and the fix, at the first violation.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional

import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample
from torch import nn

from .errors import PyroVAEError

PLATE_HINT = (
    'wrap the sample in `with pyro.plate("data", ...)` or '
    "`with pyro_vae.plate.data_plate(B, num_data, x.device)`"
)


class GuideError(PyroVAEError, ValueError):
    """A guide that breaks the guide contract (:mod:`pyro_vae.guide_contract`)."""


def _latent_sites(trace) -> List[str]:
    return [
        name
        for name, site in trace.nodes.items()
        if site["type"] == "sample" and not site["is_observed"] and not site_is_subsample(site)
    ]


def _dist_name(fn: Any) -> str:
    """``Independent(VonMises)`` rather than just ``Independent``: name what breaks the rule."""
    base = getattr(fn, "base_dist", None)
    return f"{type(fn).__name__}({_dist_name(base)})" if base is not None else type(fn).__name__


def _data_frame(site: Dict[str, Any]) -> Optional[Any]:
    frames = [f for f in site["cond_indep_stack"] if f.name == "data"]
    return frames[0] if frames else None


def _trace_guide(guide: Callable[..., Any], x: torch.Tensor, num_data: Optional[int]):
    try:
        return poutine.trace(guide).get_trace(x, num_data=num_data)
    except GuideError:
        raise
    except Exception as err:
        text = str(err).strip()
        text = text.splitlines()[0] if text else ""  # Pyro appends a trace-shape table; the cause is chained
        if "Shape mismatch inside plate" in text:
            fix = ("a distribution over the z_dim coordinates needs `.to_event(1)` inside the plate, "
                   "e.g. dist.Normal(loc, scale).to_event(1)")
        else:
            fix = ("a guide must accept the model's arguments (x, num_data=None), e.g. "
                   "`def guide(x, num_data=None): ...`")
        raise GuideError(
            f"the guide raised {type(err).__name__} when called as guide(x, num_data={num_data}) with "
            f"the model's arguments: {text}; {fix}"
        ) from err


def _check_z_site(trace, x: torch.Tensor, z_dim: int, reparameterized_required: bool):
    batch = x.shape[0]
    site = trace.nodes.get("z")
    # Rule 1: the latent site "z".
    if site is None or site["type"] != "sample" or site["is_observed"]:
        found = _latent_sites(trace)
        raise GuideError(
            f"rule 1 (site 'z'): the guide has no latent sample site 'z' (its latent sites: {found}); "
            f'sample the code as `pyro.sample("z", ...)`, the name the model uses'
        )
    fn = site["fn"]
    # Rule 3: shapes. The event shape first, since a missing .to_event(1) shows up there.
    if tuple(fn.event_shape) != (z_dim,):
        raise GuideError(
            f"rule 3 (event shape): site 'z' has event shape {tuple(fn.event_shape)}, expected ({z_dim},) "
            f"(one z_dim-vector per datapoint); declare the {z_dim} coordinates one event with "
            f"`.to_event(1)`, e.g. dist.Normal(loc, scale).to_event(1)"
        )
    if tuple(fn.batch_shape) != (batch,):
        raise GuideError(
            f"rule 3 (batch shape): site 'z' has batch shape {tuple(fn.batch_shape)} for a batch of "
            f"{batch}, expected ({batch},): one distribution per datapoint, with parameters of shape "
            f"[{batch}, {z_dim}]"
        )
    # Rule 2: the data plate over the batch.
    frame = _data_frame(site)
    if frame is None:
        raise GuideError(f"rule 2 (plate 'data'): site 'z' is not inside plate 'data'; {PLATE_HINT}")
    if frame.dim != -1 or frame.size != batch:
        raise GuideError(
            f"rule 2 (plate 'data'): site 'z' is in plate 'data' with dim={frame.dim}, size={frame.size}; "
            f"expected dim=-1 over the batch of {batch}; {PLATE_HINT}"
        )
    # Rule 4: reparameterized.
    if reparameterized_required and not fn.has_rsample:
        raise GuideError(
            f"rule 4 (reparameterized): site 'z' is drawn from {_dist_name(fn)}, which has no rsample, so "
            f"the objective cannot differentiate through z; use a reparameterizable distribution "
            f"(Normal, MultivariateNormal, a TransformedDistribution of one, ...), or pass "
            f"reparameterized_required=False for a score-function objective such as TraceGraph_ELBO"
        )
    return site


def check_guide(
    model: Callable[..., Any],
    guide: Callable[..., Any],
    x: torch.Tensor,
    z_dim: int,
    reparameterized_required: bool = True,
) -> None:
    """Raise :class:`GuideError` if ``guide`` breaks the contract of this module for ``model``.

    Guide and model (replayed on the guide's sample) are run on ``x[:2]``, once as
    ``(x, num_data=None)`` and once with ``num_data`` larger than the batch, to check
    that the guide's plate scales the minibatch as the model's does.

    :param model: the model, e.g. ``vae.model``.
    :param guide: the guide to check, called as ``guide(x, num_data=None)``.
    :param x: data the model accepts (a couple of rows suffice).
    :param z_dim: the model's latent dimension.
    :param reparameterized_required: whether rule 4 applies (it does for all of
        pyro_vae's objectives).
    """
    small = x[:2]
    batch = small.shape[0]
    guide_trace = _trace_guide(guide, small, None)
    _check_z_site(guide_trace, small, z_dim, reparameterized_required)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(small, num_data=None)

    # Rule 5: every latent site of the guide is a latent site of the model.
    model_latent = set(_latent_sites(model_trace))
    for name in _latent_sites(guide_trace):
        if name not in model_latent:
            what = "observes it" if name in model_trace.nodes else "has no such site"
            raise GuideError(
                f"rule 5 (no extra latent sites): the guide samples latent site {name!r} but the model "
                f"{what}; the ELBO scores every guide site under the model, so remove {name!r} from "
                f"the guide (or add it to the model)"
            )

    # Rule 2, continued: under a subsampled plate the guide must scale like the model.
    num_data = 2 * batch
    sub_guide = _trace_guide(guide, small, num_data)
    sub_model = poutine.trace(poutine.replay(model, trace=sub_guide)).get_trace(small, num_data=num_data)
    q_frame, p_frame = _data_frame(sub_guide.nodes["z"]), _data_frame(sub_model.nodes["z"])
    q_full = None if q_frame is None else (q_frame.full_size or q_frame.size)
    p_full = None if p_frame is None else (p_frame.full_size or p_frame.size)
    if q_full != p_full:
        raise GuideError(
            f"rule 2 (plate 'data'): called with num_data={num_data} on a batch of {batch}, the guide's "
            f"plate 'data' has full size {q_full} but the model's has {p_full}, so the guide's log q "
            f"is not scaled by N/B like the model's log p; build the plate from num_data, e.g. "
            f"`with pyro_vae.plate.data_plate(B, num_data, x.device)`"
        )

    # Rule 6: an nn.Module guide's trainable parameters are Pyro params.
    if isinstance(guide, nn.Module):
        registered = {id(site["value"]) for site in guide_trace.nodes.values() if site["type"] == "param"}
        missing = [n for n, p in guide.named_parameters() if p.requires_grad and id(p) not in registered]
        if missing:
            shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
            raise GuideError(
                f"rule 6 (registered parameters): {len(missing)} trainable parameters of the guide "
                f"{type(guide).__name__} ({shown}) are not Pyro params, so SVI would never update them; "
                f'call `pyro.module("guide", self)` or `pyro_vae.plate.register_module("guide", self)` '
                f"in the guide"
            )
