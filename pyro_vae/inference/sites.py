r"""Which sites of a Pyro program are data, which are latent, and which plate runs over datapoints.

A latent variable model written in Pyro has observed sample sites (``obs=`` given: the data
:math:`x`), latent sample sites (the code; one site :math:`z` in a VAE, several
:math:`z_1, \dots, z_L` in a hierarchy) and a plate over the datapoints of a batch,

.. math::

    p(x_{1..B}, z_{1..B}) = \prod_{i=1}^B p(z_i)\, p(x_i \mid z_i)
    \qquad \text{(every site inside the data plate)} .

Every evaluation of ``pyro_vae`` (:func:`~pyro_vae.inference.evaluate.log_likelihood`,
:func:`~pyro_vae.inference.elbo.elbo_terms`, :func:`~pyro_vae.inference.evaluate.kl_per_dimension`, the guide
contract) reads these roles off a trace of the model, so the site names are free: the
VAE's ``"z"``/``"x"``, Pyro's tutorial's ``"latent"``/``"obs"``, a hierarchy's ``"z1"``,
``"z2"``. The data plate is the plate named ``plate=`` when a caller names it, else the
plate named ``"data"`` if the data sit in one, else the outermost plate of the first
observed site (the first ``pyro.plate`` the model enters; it gets ``dim=-1`` when the model
lets Pyro allocate dimensions).

Plates that evaluation code adds around a model to vectorize particles
(:data:`PARTICLE_PLATES`) are never the data plate.
"""

from __future__ import annotations

from typing import Any, List, NamedTuple, Optional, Tuple

from pyro.poutine.runtime import Message
from pyro.poutine.util import site_is_subsample

from pyro_vae.errors import PyroVAEError

#: Plates wrapped around a model to draw particles in parallel: pyro_vae's importance
#: sampling and Pyro's ``vectorize_particles``.
PARTICLE_PLATES = ("particles", "num_particles_vectorized")


class SiteError(PyroVAEError, ValueError):
    """A model whose data sites or data plate cannot be found, or a site name that does not exist."""


def is_latent(site: Message) -> bool:
    """Whether a trace node is a latent sample site (not observed, not a plate's subsample site)."""
    return site["type"] == "sample" and not site["is_observed"] and not site_is_subsample(site)


def is_observed(site: Message) -> bool:
    """Whether a trace node is an observed sample site (``obs=`` given; ``pyro.factor`` too)."""
    return site["type"] == "sample" and site["is_observed"] and not site_is_subsample(site)


def latent_sites(trace) -> List[str]:
    """Names of the latent sample sites of ``trace``, in the order the program sampled them."""
    return [name for name, site in trace.nodes.items() if is_latent(site)]


def observed_sites(trace) -> List[str]:
    """Names of the observed sample sites of ``trace``, in the order the program visited them."""
    return [name for name, site in trace.nodes.items() if is_observed(site)]


def plate_frames(site: Message) -> List[Any]:
    """The vectorized plates around ``site``, outermost first, without :data:`PARTICLE_PLATES`."""
    # Pyro prepends each enclosing plate's frame from the innermost out: the stack is
    # outermost first, whatever dims the plates were given.
    return [f for f in site["cond_indep_stack"] if f.vectorized and f.name not in PARTICLE_PLATES]


def frame_named(site: Message, name: str) -> Optional[Any]:
    """The frame of plate ``name`` around ``site``, or ``None``."""
    frames = [f for f in site["cond_indep_stack"] if f.name == name]
    return frames[0] if frames else None


def full_size(site: Message, name: str) -> Optional[int]:
    """The full size of plate ``name`` around ``site`` (the data set's :math:`N` when a minibatch
    is subsampled, else the batch), or ``None`` outside that plate."""
    frame = frame_named(site, name)
    return None if frame is None else (frame.full_size or frame.size)


class ModelSites(NamedTuple):
    """The roles of a model's sites, read off one trace of it."""

    observed: Tuple[str, ...]  #: the data: observed sample sites, in order
    latent: Tuple[str, ...]  #: latent sample sites, in the order the model samples them
    plate: str  #: the name of the plate over datapoints


def data_plate_name(trace, plate: Optional[str] = None) -> str:
    """The name of the model's plate over datapoints (see the module docstring).

    :param plate: the name, when the caller gives it (checked to exist around the data).
    :raises SiteError: the model observes nothing, its data sit in no plate, or ``plate`` is
        not a plate around them.
    """
    observed = observed_sites(trace)
    if not observed:
        raise SiteError(
            "the model has no observed sample site; observe the data with "
            "`pyro.sample(name, distribution, obs=x)` inside the plate over datapoints"
        )
    first = trace.nodes[observed[0]]
    frames = plate_frames(first)
    names = [f.name for f in frames]
    if plate is not None:
        if plate not in names:
            raise SiteError(
                f"the model's observed site {observed[0]!r} is not inside a plate named {plate!r} "
                f"(its plates: {names}); pass plate= the name of the plate over datapoints"
            )
        return plate
    if "data" in names:
        return "data"
    if not frames:
        raise SiteError(
            f"the model's observed site {observed[0]!r} is inside no plate, so it has no "
            f"log-density per datapoint; wrap the model's sites in "
            f'`with pyro.plate("data", B):`'
        )
    return frames[0].name


def model_sites(trace, plate: Optional[str] = None) -> ModelSites:
    """The observed and latent sites and the data plate of a model's ``trace``."""
    name = data_plate_name(trace, plate)
    return ModelSites(tuple(observed_sites(trace)), tuple(latent_sites(trace)), name)


def check_latent_match(model_trace, guide_trace, enumerated_in_model: bool = False) -> None:
    """Refuse a guide that lacks a latent site of the model, or samples one the model does not
    sample as latent: the ELBO needs q for every latent site of p, and only for those.

    :param enumerated_in_model: a site the model marks for enumeration
        (``infer={"enumerate": ...}``, summed out by ``TraceEnum_ELBO``) needs no guide site.
    :raises SiteError: naming the sites on either side.
    """
    model_latent, guide_latent = latent_sites(model_trace), latent_sites(guide_trace)
    missing = [
        name
        for name in model_latent
        if name not in guide_latent and not (enumerated_in_model and model_trace.nodes[name]["infer"].get("enumerate"))
    ]
    if missing:
        raise SiteError(
            f"the guide does not sample the model's latent sites {missing} (its latent sites: "
            f"{guide_latent}); the ELBO needs q for every latent site of the model"
        )
    extra = [name for name in guide_latent if name not in model_latent]
    if extra:
        raise SiteError(
            f"the guide samples latent sites {extra} that the model does not sample as latent "
            f"(its latent sites: {model_latent}); remove them from the guide"
        )


def choose_latent(trace, site: Optional[str], role: str = "guide") -> str:
    """The latent site ``site`` of ``trace``, or its only latent site when ``site`` is ``None``.

    :raises SiteError: no such latent site, or several and none named.
    """
    latent = latent_sites(trace)
    if site is None:
        if len(latent) == 1:
            return latent[0]
        if not latent:
            raise SiteError(f"the {role} samples no latent site")
        raise SiteError(
            f"the {role} samples {len(latent)} latent sites {latent}; pass site= the one to "
            f"evaluate, e.g. site={latent[0]!r}"
        )
    if site not in latent:
        raise SiteError(f"the {role} has no latent sample site {site!r} (its latent sites: {latent})")
    return site
