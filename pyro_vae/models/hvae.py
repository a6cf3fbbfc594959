r"""A hierarchical VAE with two stochastic layers, as Burda, Grosse & Salakhutdinov built it.

The generative model goes top-down and the guide bottom-up:

.. math::

    p_\psi(x, z_1, z_2) = p(z_2)\; p_\psi(z_1 \mid z_2)\; p_\psi(x \mid z_1),
    \qquad
    q_\phi(z_1, z_2 \mid x) = q_\phi(z_1 \mid x)\; q_\phi(z_2 \mid z_1),

with diagonal Gaussians for both conditional layers,

.. math::

    p_\psi(z_1 \mid z_2) = \mathcal N\big(\mu_\psi(z_2), \operatorname{diag}\sigma_\psi(z_2)^2\big),
    \quad
    q_\phi(z_1 \mid x) = \mathcal N\big(\mu_\phi(x), \operatorname{diag}\sigma_\phi(x)^2\big),
    \quad
    q_\phi(z_2 \mid z_1) = \mathcal N\big(\mu'_\phi(z_1), \operatorname{diag}\sigma'_\phi(z_1)^2\big),

and :math:`p(z_2) = \mathcal N(0, I)`, or the VampPrior (``prior="vamp"``,
:mod:`pyro_vae.models.priors`) over the top layer. Burda et al.'s MNIST sizes are the defaults:
:math:`z_1` has 100 units and :math:`z_2` 50; two deterministic layers of 200 units sit
between :math:`x` and :math:`z_1` (in :math:`q(z_1|x)` and in :math:`p(x|z_1)`), and two of
100 between :math:`z_1` and :math:`z_2` (in :math:`q(z_2|z_1)` and :math:`p(z_1|z_2)`), with
``tanh`` units.

The ELBO has one KL-like term per layer (:func:`pyro_vae.inference.elbo.elbo_terms`),

.. math::

    \mathcal L(x) = \mathbb E_q[\log p(x|z_1)]
    - \underbrace{\mathbb E_q[\log q(z_1|x) - \log p(z_1|z_2)]}_{\text{site } z_1}
    - \underbrace{\mathbb E_q[\log q(z_2|z_1) - \log p(z_2)]}_{\text{site } z_2},

and the :math:`z_1` term is always a Monte Carlo estimate: :math:`p(z_1|z_2)` depends on
:math:`z_1` itself through :math:`z_2 \sim q(z_2|z_1)`. Both sites are Pyro sample sites
inside :func:`~pyro_vae.models.plate.data_plate`, so ``Trace_ELBO``, IWAE, the guide contract and
the importance-sampled log-likelihood work unchanged; the model shares the VAE's door
(:class:`~pyro_vae.models.vae.VAEBase`).

The VampPrior of the top layer needs :math:`q(z_2|u)` for a pseudo-input image :math:`u`,
which the bottom-up guide defines only through :math:`z_1`; here
:math:`q(z_2|u_k) := q_\phi(z_2 \mid z_1 = \mu_\phi(u_k))`, the top encoder at the mean of
the bottom one (Tomczak & Welling's hierarchical VampPrior uses a guide that maps
:math:`x` to :math:`z_2` directly).

Reference: Burda, Grosse & Salakhutdinov (2016), "Importance Weighted Autoencoders", section 5
and appendix; Tomczak & Welling (2018), "VAE with a VampPrior".
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple, cast

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from pyro_vae.errors import ConfigError, check_positive
from pyro_vae.models.likelihoods import get_likelihood
from pyro_vae.models.networks import GaussianEncoder, check_activation, check_hidden_dims, mlp
from pyro_vae.models.plate import data_plate, register_module
from pyro_vae.models.priors import VampPrior, check_prior, standard_normal
from pyro_vae.models.vae import VAEBase


class HVAE(VAEBase):
    r"""Two stochastic layers: model :math:`p(z_2)p(z_1|z_2)p(x|z_1)`, guide :math:`q(z_1|x)q(z_2|z_1)`.

    Sites ``"z2"``, ``"z1"`` (model order) and ``"x"`` inside plate ``"data"``. ``z_dim`` is
    the size of :math:`z_1`, the code the decoder reads: :meth:`~pyro_vae.models.vae.VAEBase.posterior` is
    :math:`q(z_1|x)`, and :meth:`~pyro_vae.models.vae.VAEBase.decode` takes :math:`z_1`.

    :param x_dim: number of pixels.
    :param z_dims: ``(size of z1, size of z2)``; Burda et al.: ``(100, 50)``.
    :param hidden_dims: ``(widths between x and z1, widths between z1 and z2)``; Burda et
        al.: ``((200, 200), (100, 100))``.
    :param likelihood: ``"bernoulli"`` or ``"continuous_bernoulli"`` (:mod:`pyro_vae.models.likelihoods`).
    :param activation: nonlinearity of the deterministic layers (Burda et al.: ``tanh``).
    :param prior: ``"standard"`` (:math:`p(z_2) = \mathcal N(0, I)`) or ``"vamp"``.
    :param num_pseudo_inputs: :math:`K` of the VampPrior.
    :param name: prefix of the parameter names in Pyro's param store.
    """

    code_site = "z1"

    def __init__(
        self,
        x_dim: int = 784,
        z_dims: Sequence[int] = (100, 50),
        hidden_dims: Sequence[Sequence[int]] = ((200, 200), (100, 100)),
        likelihood: str = "bernoulli",
        activation: str = "tanh",
        prior: str = "standard",
        num_pseudo_inputs: int = 500,
        name: str = "hvae",
    ) -> None:
        super().__init__()
        self.x_dim = check_positive("x_dim", x_dim, example=784)
        if isinstance(z_dims, (str, bytes)) or len(z_dims) != 2:
            raise ConfigError(
                f"z_dims must be (size of z1, size of z2), got {z_dims!r}; pass e.g. z_dims=(100, 50)",
                settings=("z_dims",),
            )
        self.z_dims: Tuple[int, int] = tuple(check_positive("each of z_dims", d, example=50) for d in z_dims)
        self.z_dim = self.z_dims[0]
        if isinstance(hidden_dims, (str, bytes)) or len(hidden_dims) != 2:
            raise ConfigError(
                f"hidden_dims must be (widths between x and z1, widths between z1 and z2), got {hidden_dims!r}; "
                f"pass e.g. hidden_dims=((200, 200), (100, 100))",
                settings=("hidden_dims",),
            )
        self.hidden_dims = (check_hidden_dims(hidden_dims[0]), check_hidden_dims(hidden_dims[1]))
        self.likelihood = get_likelihood(likelihood, self.x_dim)
        self.activation = check_activation(activation)
        self.name = name
        (k1, k2), (h1, h2) = self.z_dims, self.hidden_dims
        # the generative networks, top-down, then the guide's, bottom-up
        self.decoder = mlp([k1, *h1[::-1], self.x_dim * self.likelihood.params_per_feature], activation)  # p(x|z1)
        self.decoder_z1 = GaussianEncoder(k2, k1, h2[::-1], activation)  # p(z1|z2)
        self.encoder_z1 = GaussianEncoder(self.x_dim, k1, h1, activation)  # q(z1|x)
        self.encoder_z2 = GaussianEncoder(k1, k2, h2, activation)  # q(z2|z1)
        self.prior = check_prior(prior)
        self.vamp: Optional[VampPrior] = VampPrior(num_pseudo_inputs, self.x_dim) if prior == "vamp" else None
        self.require_reparameterized = True
        self.guide_checked = False

    @property
    def config(self) -> Dict[str, Any]:
        """What is needed to rebuild this model (:func:`pyro_vae.models.registry.build_model` reads ``"model"``)."""
        config = {
            "model": "hvae",
            "x_dim": self.x_dim,
            "z_dims": list(self.z_dims),
            "hidden_dims": [list(h) for h in self.hidden_dims],
            "likelihood": self.likelihood.name,
            "activation": self.activation,
            "prior": self.prior,
        }
        if self.vamp is not None:
            config["num_pseudo_inputs"] = self.vamp.num_pseudo_inputs
        return config

    # ---- the layers as distributions ------------------------------------------------------

    def q_z1(self, x: torch.Tensor) -> dist.TorchDistribution:
        r""":math:`q(z_1|x)` for flattened ``x`` ``[..., x_dim]``."""
        return dist.Normal(*self.encoder_z1(x)).to_event(1)

    def q_z2(self, z1: torch.Tensor) -> dist.TorchDistribution:
        r""":math:`q(z_2|z_1)`."""
        return dist.Normal(*self.encoder_z2(z1)).to_event(1)

    def p_z1(self, z2: torch.Tensor) -> dist.TorchDistribution:
        r""":math:`p(z_1|z_2)`."""
        return dist.Normal(*self.decoder_z1(z2)).to_event(1)

    def _vamp_components(self, u: torch.Tensor) -> dist.TorchDistribution:
        r""":math:`q(z_2|u) := q(z_2 \mid z_1 = \mu(u))` for pseudo-inputs ``u`` ``[K, x_dim]``."""
        loc_z1, _ = self.encoder_z1(u)
        return self.q_z2(loc_z1)

    def prior_z2(self, like: torch.Tensor, batch: int) -> dist.TorchDistribution:
        r""":math:`p(z_2)` for ``batch`` datapoints: :math:`\mathcal N(0, I)` or the VampPrior."""
        if self.vamp is None:
            return standard_normal(like, batch, self.z_dims[1])
        return self.vamp.distribution(self._vamp_components).expand([batch])

    # ---- the two programs -----------------------------------------------------------------

    def _model(self, x: torch.Tensor, num_data: Optional[int] = None) -> torch.Tensor:
        register_module(f"{self.name}.decoder", self.decoder)
        register_module(f"{self.name}.decoder_z1", self.decoder_z1)
        if self.vamp is not None:
            register_module(f"{self.name}.prior", self.vamp)
        batch = x.shape[0]
        with data_plate(batch, num_data, x.device):
            z2 = pyro.sample("z2", self.prior_z2(x, batch))
            z1 = pyro.sample("z1", self.p_z1(z2))
            logits = self.decoder(z1)
            pyro.sample("x", self.likelihood(logits), obs=x)
        return logits

    def _guide(self, x: torch.Tensor, num_data: Optional[int] = None) -> torch.Tensor:
        register_module(f"{self.name}.encoder_z1", self.encoder_z1)
        register_module(f"{self.name}.encoder_z2", self.encoder_z2)
        with data_plate(x.shape[0], num_data, x.device):
            z1 = pyro.sample("z1", self.q_z1(x))
            pyro.sample("z2", self.q_z2(z1))
        return z1

    def sample_prior(self, num_samples: int) -> torch.Tensor:
        r"""Decoder means of ancestral samples :math:`z_2 \sim p(z_2)`, :math:`z_1 \sim p(z_1|z_2)`."""
        weight = cast(nn.Linear, self.decoder[0]).weight
        with torch.no_grad():
            z2 = self.prior_z2(weight, num_samples).sample()
            z1 = self.p_z1(z2).sample()
        return self.decoded_mean(z1)
