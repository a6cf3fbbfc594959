"""The generative models by name, and rebuilding one from its ``config``.

* ``"vae"`` -- :class:`~pyro_vae.models.vae.VAE`: one Gaussian latent layer (``prior="standard"``
  or ``"vamp"``);
* ``"hvae"`` -- :class:`~pyro_vae.models.hvae.HVAE`: two stochastic layers, Burda et al.'s
  architecture (``prior="standard"`` or ``"vamp"`` over the top layer).

Every model shares the door of :class:`~pyro_vae.models.vae.VAEBase` and the interface a trainer
uses: ``model``/``guide``, ``config``, ``x_dim``, ``z_dim``, ``posterior``, ``decode``,
``sample_prior``.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Mapping

from pyro_vae.errors import ConfigError
from pyro_vae.models.hvae import HVAE
from pyro_vae.models.vae import VAE, VAEBase

#: The models by name (the ``"model"`` key of a ``config``; absent means ``"vae"``).
MODELS: Dict[str, Callable[..., VAEBase]] = {"vae": VAE, "hvae": HVAE}


def get_model(name: str, **options: Any) -> VAEBase:
    """The model called ``name`` (a key of :data:`MODELS`), built with ``options``."""
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; choose one of {sorted(MODELS)}", settings=("model",))
    return MODELS[name](**options)


def build_model(config: Mapping[str, Any]) -> VAEBase:
    """Rebuild a model from its ``config`` (``vae.config``, as a checkpoint stores it)."""
    options = dict(config)
    return get_model(options.pop("model", "vae"), **options)
