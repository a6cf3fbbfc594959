r"""The linear Gaussian latent variable model (probabilistic PCA): a VAE whose posterior is exact.

The model has the VAE's structure (seed items 5 and 10) with a linear decoder,

.. math::

    z \sim p(z) = \mathcal N(0, I_k), \qquad
    x \mid z \sim p(x \mid z) = \mathcal N(W z + b, \sigma^2 I_d),

and, unlike the VAE (seed item 6), everything is tractable:

* the evidence :math:`p(x) = \int p(x|z)\,p(z)\,dz = \mathcal N(b,\; W W^\top + \sigma^2 I_d)`;
* the posterior by Bayes' rule (seed item 1), :math:`p(z|x) = p(x|z)\,p(z)/p(x)`.
  As a function of :math:`z`,

  .. math::

      \log p(z) + \log p(x|z)
      = -\tfrac12 z^\top \Lambda z + z^\top W^\top (x - b)/\sigma^2 + \text{const},
      \qquad \Lambda = I_k + W^\top W / \sigma^2,

  a Gaussian in :math:`z` up to a constant; completing the square gives
  :math:`p(z|x) = \mathcal N\big(\Lambda^{-1} W^\top (x - b)/\sigma^2,\; \Lambda^{-1}\big)`,
  and the constant that normalizes it is :math:`\log p(x)`;
* for any Gaussian :math:`q(z|x) = \mathcal N(m, S)`, :math:`S = L L^\top`, the ELBO
  (seed items 8 and 9) in closed form,

  .. math::

      \mathbb E_q[\log p(x|z)] = -\tfrac d2 \log(2\pi\sigma^2)
          - \frac{\lVert x - b - W m\rVert^2 + \operatorname{tr}(W S W^\top)}{2\sigma^2},
      \qquad
      \mathrm{KL}(q\,\|\,p(z)) = \tfrac12\big(\operatorname{tr} S + m^\top m - k - \log\det S\big),

  and the gap :math:`\mathrm{KL}(q\,\|\,p(z|x)) = \tfrac12\big(\operatorname{tr}(\Lambda S)
  + (\mu - m)^\top \Lambda (\mu - m) - k - \log\det S - \log\det\Lambda\big)`, so that
  :math:`\log p(x) = \mathrm{ELBO}(q) + \mathrm{KL}(q\,\|\,p(z|x))` (seed item 8) can be
  checked to rounding error.

:class:`LinearGaussianModel.model` uses the VAE's site names and plate (``"z"``,
``"x"``, ``pyro.plate("data")``, the same ``num_data`` scaling), so the guides and
objectives written for :class:`~pyro_vae.vae.VAE` run on it unchanged and can be
measured against these exact answers. :class:`LinearGaussianGuide` is an amortized
guide whose family contains the exact posterior whenever :math:`W^\top W` is
diagonal (orthogonal columns of :math:`W`): then :math:`\Lambda` is diagonal and
the posterior mean is linear in :math:`x`.

:class:`HierarchicalLinearGaussianModel` stacks two latent layers, :math:`z_2 \to z_1 \to x`,
with sites ``"z2"``, ``"z1"``, ``"x"``: the structure of a two-stochastic-layer VAE, again
with a closed-form evidence, posterior (:meth:`~HierarchicalLinearGaussianModel.posterior_guide`,
bottom-up as such a VAE's guide) and ELBO per site
(:meth:`~HierarchicalLinearGaussianModel.decompose`), on which the evaluation of models with
several latent sites is checked exactly.

Reference: Tipping & Bishop (1999), "Probabilistic Principal Component Analysis";
Bishop (2006), *Pattern Recognition and Machine Learning*, section 2.3.3 and 12.2.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Optional, Tuple, Union

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from pyro import poutine

from .elbo import ELBOTerms, elbo_terms
from .errors import InvalidDataError
from .plate import data_plate, register_module


def _check_data(x: torch.Tensor, x_dim: int) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise InvalidDataError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 2 or x.shape[1] != x_dim or not x.is_floating_point():
        raise InvalidDataError(
            f"x must be a float tensor of shape [batch, {x_dim}], got {tuple(x.shape)} {x.dtype}"
        )
    return x


class LinearGaussianModel(nn.Module):
    r"""Probabilistic PCA: :math:`z \sim \mathcal N(0, I_k)`, :math:`x|z \sim \mathcal N(Wz + b, \sigma^2 I)`.

    The parameters are fixed buffers (``.double()`` converts them); the class answers
    every question of seed items 1 and 6-8 exactly.

    :param W: ``[d, k]`` loading matrix.
    :param b: ``[d]`` offset.
    :param sigma: observation noise standard deviation, ``> 0``.
    """

    def __init__(
        self,
        W: torch.Tensor,
        b: torch.Tensor,
        sigma: Union[float, torch.Tensor],
    ) -> None:
        super().__init__()
        W = torch.as_tensor(W)
        if not W.is_floating_point():
            W = W.to(torch.get_default_dtype())
        if W.dim() != 2:
            raise ValueError(f"W must be a [x_dim, z_dim] matrix, got shape {tuple(W.shape)}")
        b = torch.as_tensor(b, dtype=W.dtype, device=W.device)
        if b.shape != W.shape[:1]:
            raise ValueError(f"b must have shape [{W.shape[0]}], got {tuple(b.shape)}")
        sigma = torch.as_tensor(sigma, dtype=W.dtype, device=W.device)
        if sigma.dim() != 0 or not sigma > 0:
            raise ValueError(f"sigma must be a positive scalar, got {sigma}")
        self.register_buffer("W", W)
        self.register_buffer("b", b)
        self.register_buffer("sigma", sigma)

    @property
    def x_dim(self) -> int:
        return self.W.shape[0]

    @property
    def z_dim(self) -> int:
        return self.W.shape[1]

    # ---- the generative model (seed items 5 and 1's numerator) ------------------------------

    def prior(self) -> dist.TorchDistribution:
        r"""The prior :math:`p(z) = \mathcal N(0, I_k)`, event shape ``(k,)``."""
        zeros = self.W.new_zeros(self.z_dim)
        return dist.Normal(zeros, torch.ones_like(zeros)).to_event(1)

    def likelihood(self, z: torch.Tensor) -> dist.TorchDistribution:
        r"""The likelihood :math:`p(x|z) = \mathcal N(Wz + b, \sigma^2 I_d)`, event shape (d,)."""
        return dist.Normal(z @ self.W.T + self.b, self.sigma).to_event(1)

    def model(self, x: torch.Tensor, num_data: Optional[int] = None) -> torch.Tensor:
        r"""The joint :math:`p(x, z) = p(z)\,p(x|z)` as a Pyro model with the VAE's sites and plate."""
        x = _check_data(x, self.x_dim)
        batch_size = x.shape[0]
        with data_plate(batch_size, num_data, x.device):
            prior = dist.Normal(x.new_zeros(()), x.new_ones(())).expand([batch_size, self.z_dim])
            z = pyro.sample("z", prior.to_event(1))
            pyro.sample("x", self.likelihood(z), obs=x)
        return z

    def sample(
        self, num_samples: int, generator: Union[int, torch.Generator, None] = None
    ) -> torch.Tensor:
        r"""Draw ``[num_samples, d]`` data by ancestral sampling: :math:`z \sim p(z)`, then
        :math:`x \sim p(x|z)`.

        :param generator: a ``torch.Generator``, an integer seed, or ``None`` (global RNG).
        """
        if isinstance(generator, int):
            generator = torch.Generator(device=self.W.device).manual_seed(generator)
        opts = dict(dtype=self.W.dtype, device=self.W.device, generator=generator)
        z = torch.randn(num_samples, self.z_dim, **opts)
        noise = torch.randn(num_samples, self.x_dim, **opts)
        return z @ self.W.T + self.b + self.sigma * noise

    # ---- exact inference (seed items 1 and 6) ----------------------------------------------

    def evidence(self) -> dist.MultivariateNormal:
        r"""The evidence :math:`p(x) = \int p(x|z)p(z)\,dz = \mathcal N(b, W W^\top + \sigma^2 I)`."""
        eye = torch.eye(self.x_dim, dtype=self.W.dtype, device=self.W.device)
        covariance = self.W @ self.W.T + self.sigma**2 * eye
        return dist.MultivariateNormal(self.b, covariance_matrix=covariance)

    def log_evidence(self, x: torch.Tensor) -> torch.Tensor:
        r""":math:`\log p(x_i)` per datapoint, shape ``[batch]``."""
        return self.evidence().log_prob(_check_data(x, self.x_dim))

    def posterior_precision(self) -> torch.Tensor:
        r"""The posterior precision :math:`\Lambda = I_k + W^\top W/\sigma^2`, the same for every x."""
        eye = torch.eye(self.z_dim, dtype=self.W.dtype, device=self.W.device)
        return eye + self.W.T @ self.W / self.sigma**2

    def posterior(self, x: torch.Tensor) -> dist.MultivariateNormal:
        r"""The exact posterior :math:`p(z|x) = p(x|z)\,p(z)/p(x)` by Bayes' rule (seed item 1).

        Completing the square in :math:`\log p(z) + \log p(x|z)` (see the module
        docstring) gives :math:`\mathcal N(\Lambda^{-1} W^\top (x-b)/\sigma^2, \Lambda^{-1})`
        with :math:`\Lambda = I + W^\top W/\sigma^2`. Batch shape ``[batch]``, event ``(k,)``.
        """
        x = _check_data(x, self.x_dim)
        precision = self.posterior_precision()
        chol = torch.linalg.cholesky(precision)
        # Solve Λ μ = Wᵀ(x − b)/σ² for every row of x at once.
        loc = torch.cholesky_solve(((x - self.b) @ self.W / self.sigma**2).T, chol).T
        return dist.MultivariateNormal(loc, precision_matrix=precision)

    def posterior_guide(self, x: torch.Tensor, num_data: Optional[int] = None) -> torch.Tensor:
        r"""A guide sampling ``"z"`` from the exact posterior: with it the ELBO is :math:`\log p(x)`."""
        x = _check_data(x, self.x_dim)
        with data_plate(x.shape[0], num_data, x.device):
            return pyro.sample("z", self.posterior(x))

    # ---- the ELBO and its gap in closed form (seed items 7-9) ------------------------------

    def _check_q(
        self, x: torch.Tensor, q_loc: torch.Tensor, q_scale_tril: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = _check_data(x, self.x_dim)
        k = self.z_dim
        if q_loc.shape != (x.shape[0], k):
            raise ValueError(f"q_loc must have shape [{x.shape[0]}, {k}], got {tuple(q_loc.shape)}")
        if q_scale_tril.shape[-2:] != (k, k) or q_scale_tril.dim() not in (2, 3):
            raise ValueError(
                f"q_scale_tril must be [{k}, {k}] or [batch, {k}, {k}], "
                f"got {tuple(q_scale_tril.shape)}; "
                "for a diagonal q pass torch.diag_embed(scale)"
            )
        diag = q_scale_tril.diagonal(dim1=-2, dim2=-1)
        if not torch.equal(q_scale_tril, q_scale_tril.tril()) or not (diag > 0).all():
            raise ValueError("q_scale_tril must be lower triangular with a positive diagonal")
        return x, q_loc, q_scale_tril

    def analytic_elbo_terms(
        self, x: torch.Tensor, q_loc: torch.Tensor, q_scale_tril: torch.Tensor
    ) -> ELBOTerms:
        r"""Closed forms of :math:`\mathbb E_q[\log p(x_i|z)]`, :math:`\mathrm{KL}(q\|p(z))` and the ELBO.

        For :math:`q(z|x_i) = \mathcal N(m_i, L_i L_i^\top)`, any lower-triangular
        :math:`L_i` (``torch.diag_embed(scale)`` for a diagonal guide).
        """
        x, m, L = self._check_q(x, q_loc, q_scale_tril)
        d, k = self.x_dim, self.z_dim
        var = self.sigma**2
        resid = x - self.b - m @ self.W.T
        # tr(W S Wᵀ) = ‖W L‖²_F: the decoder's spread of q's uncertainty.
        trace_wsw = (self.W @ L).pow(2).sum((-2, -1))
        expected_sq_error = resid.pow(2).sum(-1) + trace_wsw  # E_q ‖x − b − W z‖²
        recon = -0.5 * d * torch.log(2 * math.pi * var) - expected_sq_error / (2 * var)
        log_det_s = 2 * L.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        kl = 0.5 * (L.pow(2).sum((-2, -1)) + m.pow(2).sum(-1) - k - log_det_s)
        return ELBOTerms(recon=recon, kl=kl, elbo=recon - kl)

    def analytic_elbo(
        self, x: torch.Tensor, q_loc: torch.Tensor, q_scale_tril: torch.Tensor
    ) -> torch.Tensor:
        r""":math:`\mathrm{ELBO}_i = \mathbb E_q[\log p(x_i|z)] - \mathrm{KL}(q(z|x_i)\|p(z))`, ``[batch]``."""
        return self.analytic_elbo_terms(x, q_loc, q_scale_tril).elbo

    def kl_to_posterior(
        self, x: torch.Tensor, q_loc: torch.Tensor, q_scale_tril: torch.Tensor
    ) -> torch.Tensor:
        r""":math:`\mathrm{KL}(q(z|x_i)\,\|\,p(z|x_i))` in closed form, ``[batch]`` (seed items 7-8)."""
        x, m, L = self._check_q(x, q_loc, q_scale_tril)
        precision = self.posterior_precision()
        mu = self.posterior(x).loc
        delta = mu - m
        trace_term = ((precision @ L) * L).sum((-2, -1))  # tr(Λ L Lᵀ)
        mahalanobis = ((delta @ precision) * delta).sum(-1)
        log_det_s = 2 * L.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        log_det_precision = torch.logdet(precision)
        return 0.5 * (trace_term + mahalanobis - self.z_dim - log_det_s - log_det_precision)


class ExactDecomposition(NamedTuple):
    r"""Per-datapoint terms of :math:`\log p(x_i) = \mathrm{ELBO}_i + \mathrm{KL}(q(z|x_i)\,\|\,p(z|x_i))`, in nats."""

    log_evidence: torch.Tensor  #: log p(x_i), exact
    elbo: torch.Tensor  #: recon - kl_prior
    kl_posterior: torch.Tensor  #: KL(q(z|x_i) || p(z|x_i)), the gap of the bound
    recon: torch.Tensor  #: E_q[log p(x_i|z)]
    kl_prior: torch.Tensor  #: KL(q(z|x_i) || p(z))
    exact: bool  #: True when every term is a closed form (Gaussian q), False for MC estimates


def _gaussian_loc_scale_tril(q: Any) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
    """``(loc, scale_tril)`` of a diagonal or full-covariance Gaussian, else ``None``."""
    if isinstance(q, dist.MultivariateNormal):
        return q.loc, q.scale_tril
    base, reinterpreted = q, 0
    while isinstance(base, dist.Independent):
        reinterpreted += base.reinterpreted_batch_ndims
        base = base.base_dist
    if isinstance(base, dist.Normal) and reinterpreted == 1:
        return base.loc, torch.diag_embed(base.scale)
    return None


def decompose(
    model: "LinearGaussianModel",
    guide: Callable[..., Any],
    x: torch.Tensor,
    num_particles: int = 1000,
) -> ExactDecomposition:
    r"""Split the exact :math:`\log p(x_i)` into the ELBO of ``guide`` and its gap (seed items 7-9).

    ``guide`` is any guide with the VAE's site ``"z"`` and plate ``"data"``. When its
    :math:`q(z|x)` is Gaussian (``Normal(...).to_event(1)`` or ``MultivariateNormal``)
    every term is a closed form; otherwise the ELBO is estimated with
    ``num_particles`` samples by :func:`pyro_vae.elbo.elbo_terms` and the gap is
    :math:`\log p(x) - \mathrm{ELBO}`.
    """
    q = poutine.trace(guide).get_trace(x).nodes["z"]["fn"]
    log_evidence = model.log_evidence(x)
    params = _gaussian_loc_scale_tril(q)
    if params is not None:
        loc, scale_tril = params
        terms = model.analytic_elbo_terms(x, loc, scale_tril.expand(x.shape[0], -1, -1))
        gap = model.kl_to_posterior(x, loc, scale_tril.expand(x.shape[0], -1, -1))
        return ExactDecomposition(log_evidence, terms.elbo, gap, terms.recon, terms.kl, True)
    terms = elbo_terms(model.model, guide, x, num_particles=num_particles)
    return ExactDecomposition(
        log_evidence, terms.elbo, log_evidence - terms.elbo, terms.recon, terms.kl, False
    )


class LinearGaussianGuide(nn.Module):
    r"""Amortized linear guide :math:`q(z|x) = \mathcal N(A x + c, \operatorname{diag}(\mathrm{softplus}(s))^2)`.

    Linear in :math:`x` with an :math:`x`-independent diagonal covariance: the family
    of :class:`LinearGaussianModel`'s exact posterior when that posterior is diagonal
    (:math:`W` with orthogonal columns). For a general :math:`W` the posterior
    covariance :math:`\Lambda^{-1}` is not diagonal and the best such guide keeps a
    positive :math:`\mathrm{KL}(q\|p(z|x))`.

    Call it as ``guide(x, num_data=None)``; it samples ``"z"`` in the VAE's plate and
    registers its parameters with ``pyro.module(name, ...)``.
    """

    def __init__(self, x_dim: int, z_dim: int, name: str = "linear_gaussian_guide") -> None:
        super().__init__()
        self.x_dim, self.z_dim, self.name = x_dim, z_dim, name
        self.linear = nn.Linear(x_dim, z_dim)  # A and c
        self.raw_scale = nn.Parameter(torch.zeros(z_dim))  # s; softplus keeps the scale positive

    def loc_scale(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """The mean ``[B, k]`` and standard deviation ``[B, k]`` of :math:`q(z|x)`."""
        loc = self.linear(x)
        return loc, F.softplus(self.raw_scale).expand_as(loc)

    def loc_scale_tril(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(q_loc, q_scale_tril)`` in the form :meth:`LinearGaussianModel.analytic_elbo` takes."""
        loc, scale = self.loc_scale(x)
        return loc, torch.diag_embed(scale)

    def forward(
        self, x: torch.Tensor, num_data: Optional[int] = None
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        x = _check_data(x, self.x_dim)
        register_module(self.name, self)
        with data_plate(x.shape[0], num_data, x.device):
            loc, scale = self.loc_scale(x)
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))
        return loc, scale


def _gaussian_entropy(scale_tril: torch.Tensor) -> torch.Tensor:
    r""":math:`H(\mathcal N(m, LL^\top)) = \tfrac k2 \log(2\pi e) + \sum_j \log L_{jj}`."""
    k = scale_tril.shape[-1]
    return 0.5 * k * (1.0 + math.log(2 * math.pi)) + scale_tril.diagonal(dim1=-2, dim2=-1).log().sum(-1)


class HierarchicalDecomposition(NamedTuple):
    r"""Per-datapoint closed forms for the two-latent chain, in nats:
    :math:`\log p(x_i) = \mathrm{ELBO}_i + \mathrm{KL}(q(z_1, z_2|x_i)\,\|\,p(z_1, z_2|x_i))`."""

    log_evidence: torch.Tensor  #: log p(x_i)
    elbo: torch.Tensor  #: recon - kl_z1 - kl_z2
    kl_posterior: torch.Tensor  #: KL(q || p(z1, z2 | x_i)), the gap of the bound
    recon: torch.Tensor  #: E_q[log p(x_i|z1)]
    kl_z1: torch.Tensor  #: E_q[log q(z1|x_i) - log p(z1|z2)]
    kl_z2: torch.Tensor  #: E_q[log q(z2|z1) - log p(z2)]


class HierarchicalLinearGaussianModel(nn.Module):
    r"""Two latent layers in a linear Gaussian chain :math:`z_2 \to z_1 \to x`, everything exact.

    .. math::

        z_2 \sim \mathcal N(0, I_{k_2}), \qquad
        z_1 \mid z_2 \sim \mathcal N(A z_2 + a,\; s^2 I_{k_1}), \qquad
        x \mid z_1 \sim \mathcal N(W z_1 + b,\; \sigma^2 I_d),

    the shape of a two-stochastic-layer VAE (Burda et al., 2015) with linear networks. The
    stacked code :math:`u = (z_1, z_2)` is Gaussian a priori and, as a function of
    :math:`u`, :math:`\log p(x, u)` is the quadratic :math:`-\tfrac12 u^\top \Lambda u + u^\top \eta(x)
    + \text{const}` with

    .. math::

        \Lambda = \begin{pmatrix} I/s^2 + W^\top W/\sigma^2 & -A/s^2 \\ -A^\top/s^2 & I + A^\top A/s^2 \end{pmatrix},
        \qquad
        \eta(x) = \begin{pmatrix} a/s^2 + W^\top (x - b)/\sigma^2 \\ -A^\top a/s^2 \end{pmatrix},

    so the posterior is :math:`p(u|x) = \mathcal N(\Lambda^{-1}\eta(x), \Lambda^{-1})` (Bayes' rule,
    seed item 1), and the evidence is
    :math:`p(x) = \mathcal N\big(W a + b,\; W (A A^\top + s^2 I) W^\top + \sigma^2 I\big)`.
    Because :math:`x` depends on :math:`z_2` only through :math:`z_1`, the exact posterior
    factorizes bottom-up as :math:`p(z_1|x)\,p(z_2|z_1)`, the order of a hierarchical VAE's
    guide: :meth:`posterior_guide` is a :class:`HierarchicalLinearGaussianGuide` set to it.

    :meth:`model` samples ``"z2"``, then ``"z1"``, and observes ``"x"``, inside
    :func:`~pyro_vae.plate.data_plate`, so :func:`~pyro_vae.evaluate.log_likelihood` and
    :func:`~pyro_vae.elbo.elbo_terms` can be checked against these closed forms.

    :param A: ``[k1, k2]``; :param a: ``[k1]``; :param s: scale of :math:`z_1|z_2`, ``> 0``;
    :param W: ``[d, k1]``; :param b: ``[d]``; :param sigma: observation noise, ``> 0``.
    """

    def __init__(self, A: torch.Tensor, a: torch.Tensor, s: float, W: torch.Tensor, b: torch.Tensor,
                 sigma: float) -> None:
        super().__init__()
        W = torch.as_tensor(W)
        if not W.is_floating_point():
            W = W.to(torch.get_default_dtype())
        opts = dict(dtype=W.dtype, device=W.device)
        A, a, b = (torch.as_tensor(t, **opts) for t in (A, a, b))
        s, sigma = torch.as_tensor(s, **opts), torch.as_tensor(sigma, **opts)
        if W.dim() != 2 or A.dim() != 2 or A.shape[0] != W.shape[1]:
            raise ValueError(f"W must be [d, k1] and A [k1, k2]; got {tuple(W.shape)} and {tuple(A.shape)}")
        if a.shape != A.shape[:1] or b.shape != W.shape[:1]:
            raise ValueError(f"a must be [{A.shape[0]}] and b [{W.shape[0]}]; got {tuple(a.shape)}, {tuple(b.shape)}")
        if s.dim() != 0 or sigma.dim() != 0 or not (s > 0 and sigma > 0):
            raise ValueError(f"s and sigma must be positive scalars, got {s} and {sigma}")
        for name, value in dict(A=A, a=a, s=s, W=W, b=b, sigma=sigma).items():
            self.register_buffer(name, value)

    @property
    def x_dim(self) -> int:
        return self.W.shape[0]

    @property
    def z_dims(self) -> Tuple[int, int]:
        """``(k1, k2)``."""
        return self.A.shape[0], self.A.shape[1]

    def model(self, x: torch.Tensor, num_data: Optional[int] = None) -> torch.Tensor:
        r""":math:`p(z_2)\,p(z_1|z_2)\,p(x|z_1)` as a Pyro model, top-down, sites ``"z2"``, ``"z1"``, ``"x"``."""
        x = _check_data(x, self.x_dim)
        batch, k2 = x.shape[0], self.z_dims[1]
        with data_plate(batch, num_data, x.device):
            z2 = pyro.sample("z2", dist.Normal(x.new_zeros(()), x.new_ones(())).expand([batch, k2]).to_event(1))
            z1 = pyro.sample("z1", dist.Normal(z2 @ self.A.T + self.a, self.s).to_event(1))
            pyro.sample("x", dist.Normal(z1 @ self.W.T + self.b, self.sigma).to_event(1), obs=x)
        return z1

    def sample(self, num_samples: int, generator: Union[int, torch.Generator, None] = None) -> torch.Tensor:
        """``[num_samples, d]`` data by ancestral sampling, top-down."""
        if isinstance(generator, int):
            generator = torch.Generator(device=self.W.device).manual_seed(generator)
        opts = dict(dtype=self.W.dtype, device=self.W.device, generator=generator)
        k1, k2 = self.z_dims
        z2 = torch.randn(num_samples, k2, **opts)
        z1 = z2 @ self.A.T + self.a + self.s * torch.randn(num_samples, k1, **opts)
        return z1 @ self.W.T + self.b + self.sigma * torch.randn(num_samples, self.x_dim, **opts)

    # ---- exact inference ---------------------------------------------------------------------

    def evidence(self) -> dist.MultivariateNormal:
        r""":math:`p(x) = \mathcal N(W a + b,\; W (A A^\top + s^2 I) W^\top + \sigma^2 I)`."""
        k1 = self.z_dims[0]
        eye_z, eye_x = (torch.eye(n, dtype=self.W.dtype, device=self.W.device) for n in (k1, self.x_dim))
        cov_z1 = self.A @ self.A.T + self.s**2 * eye_z
        return dist.MultivariateNormal(self.W @ self.a + self.b, self.W @ cov_z1 @ self.W.T + self.sigma**2 * eye_x)

    def log_evidence(self, x: torch.Tensor) -> torch.Tensor:
        r""":math:`\log p(x_i)`, ``[batch]``."""
        return self.evidence().log_prob(_check_data(x, self.x_dim))

    def posterior_precision(self) -> torch.Tensor:
        r""":math:`\Lambda`, the precision of :math:`p(z_1, z_2|x)` (the same for every x), ``[k, k]``."""
        k1, k2 = self.z_dims
        eye1, eye2 = (torch.eye(n, dtype=self.W.dtype, device=self.W.device) for n in (k1, k2))
        top = torch.cat([eye1 / self.s**2 + self.W.T @ self.W / self.sigma**2, -self.A / self.s**2], 1)
        bottom = torch.cat([-self.A.T / self.s**2, eye2 + self.A.T @ self.A / self.s**2], 1)
        return torch.cat([top, bottom], 0)

    def posterior(self, x: torch.Tensor) -> dist.MultivariateNormal:
        r""":math:`p(z_1, z_2 | x) = \mathcal N(\Lambda^{-1}\eta(x), \Lambda^{-1})` over the stacked
        :math:`u = (z_1, z_2)`, batch ``[batch]``, event ``(k1 + k2,)``."""
        x = _check_data(x, self.x_dim)
        precision = self.posterior_precision()
        eta1 = self.a / self.s**2 + (x - self.b) @ self.W / self.sigma**2
        eta2 = (-self.a @ self.A / self.s**2).expand(x.shape[0], -1)
        loc = torch.linalg.solve(precision, torch.cat([eta1, eta2], 1).T).T
        return dist.MultivariateNormal(loc, precision_matrix=precision)

    def posterior_guide(self, name: str = "hierarchical_posterior") -> "HierarchicalLinearGaussianGuide":
        r"""The exact posterior as a bottom-up guide :math:`q(z_1|x)\,q(z_2|z_1)`.

        :math:`q(z_1|x)` is the :math:`z_1`-marginal of :math:`p(u|x)`, linear in :math:`x`
        with covariance :math:`(\Lambda^{-1})_{11}`; :math:`q(z_2|z_1) = p(z_2|z_1, x) = p(z_2|z_1)`
        is the Gaussian conditional :math:`\mathcal N\big(\Lambda_{22}^{-1}(\eta_2 - \Lambda_{21} z_1),
        \Lambda_{22}^{-1}\big)`, which does not involve :math:`x`.
        """
        k1, k2 = self.z_dims
        precision = self.posterior_precision()
        cov = torch.linalg.inv(precision)
        cov11 = cov[:k1, :k1]
        C = cov11 @ self.W.T / self.sigma**2  # ∂m1/∂x
        eta0 = torch.cat([self.a / self.s**2 - self.b @ self.W / self.sigma**2, -self.a @ self.A / self.s**2])
        c = cov[:k1] @ eta0
        lam22 = precision[k1:, k1:]
        cov22 = torch.linalg.inv(lam22)
        E = -cov22 @ precision[k1:, :k1]
        e = cov22 @ (-self.a @ self.A / self.s**2)
        guide = HierarchicalLinearGaussianGuide(self.x_dim, k1, k2, name=name).to(self.W)
        guide.set(C, c, torch.linalg.cholesky(cov11), E, e, torch.linalg.cholesky(cov22))
        return guide

    def decompose(self, guide: "HierarchicalLinearGaussianGuide", x: torch.Tensor) -> HierarchicalDecomposition:
        r"""Every term of :math:`\log p(x_i) = \mathrm{ELBO}_i + \mathrm{KL}(q\,\|\,p(z_1, z_2|x_i))` in closed form.

        The guide :math:`q(z_1|x) = \mathcal N(m_1, S_1)`, :math:`q(z_2|z_1) = \mathcal N(E z_1 + e, S_2)`
        is jointly Gaussian over :math:`u`: mean :math:`m = (m_1, E m_1 + e)`, covariance
        :math:`S = \begin{pmatrix} S_1 & S_1 E^\top \\ E S_1 & E S_1 E^\top + S_2 \end{pmatrix}`. Then, with
        :math:`\mathbb E_q\lVert G u - g\rVert^2 = \lVert G m - g\rVert^2 + \operatorname{tr}(G S G^\top)`,

        .. math::

            \mathbb E_q[\log p(x|z_1)] = -\tfrac d2\log(2\pi\sigma^2)
                - \tfrac{\lVert x - b - W m_1\rVert^2 + \operatorname{tr}(W S_1 W^\top)}{2\sigma^2},

            \mathrm{KL}_{z_1} = -H(q(z_1|x)) + \tfrac{k_1}2\log(2\pi s^2)
                + \tfrac{\mathbb E_q\lVert z_1 - A z_2 - a\rVert^2}{2 s^2},
            \qquad
            \mathrm{KL}_{z_2} = -H(S_2) + \tfrac{k_2}2\log 2\pi + \tfrac{\lVert m_2\rVert^2 + \operatorname{tr} S_{22}}2,

        and :math:`\mathrm{KL}(\mathcal N(m, S)\|\mathcal N(\mu, \Lambda^{-1})) = \tfrac12\big(\operatorname{tr}(\Lambda S)
        + (\mu - m)^\top\Lambda(\mu - m) - k - \log\det S - \log\det\Lambda\big)`.
        """
        x = _check_data(x, self.x_dim)
        k1, k2 = self.z_dims
        m, S = guide.joint(x)
        m1, m2 = m[:, :k1], m[:, k1:]
        S1 = S[:k1, :k1]
        var = self.sigma**2
        resid = x - self.b - m1 @ self.W.T
        recon = (-0.5 * self.x_dim * torch.log(2 * math.pi * var)
                 - (resid.pow(2).sum(-1) + (self.W @ S1 @ self.W.T).trace()) / (2 * var))
        G = torch.cat([torch.eye(k1, dtype=m.dtype, device=m.device), -self.A], 1)  # z1 - A z2 = G u
        sq = (m @ G.T - self.a).pow(2).sum(-1) + (G @ S @ G.T).trace()
        kl_z1 = -_gaussian_entropy(guide.scale_tril1()) + 0.5 * k1 * torch.log(2 * math.pi * self.s**2) + sq / (2 * self.s**2)
        kl_z2 = (-_gaussian_entropy(guide.scale_tril2()) + 0.5 * k2 * math.log(2 * math.pi)
                 + 0.5 * (m2.pow(2).sum(-1) + S[k1:, k1:].trace()))
        elbo = recon - kl_z1 - kl_z2
        precision = self.posterior_precision()
        delta = self.posterior(x).loc - m
        gap = 0.5 * ((precision @ S).trace() + ((delta @ precision) * delta).sum(-1) - (k1 + k2)
                     - torch.logdet(S) - torch.logdet(precision))
        return HierarchicalDecomposition(self.log_evidence(x), elbo, gap, recon, kl_z1, kl_z2)


class HierarchicalLinearGaussianGuide(nn.Module):
    r"""A bottom-up linear Gaussian guide for :class:`HierarchicalLinearGaussianModel`,

    .. math::

        q(z_1 \mid x) = \mathcal N(C x + c,\; L_1 L_1^\top), \qquad
        q(z_2 \mid z_1) = \mathcal N(E z_1 + e,\; L_2 L_2^\top),

    :math:`L_j` lower triangular with diagonal :math:`\exp(\cdot)`. The family holds the
    model's exact posterior (:meth:`HierarchicalLinearGaussianModel.posterior_guide`). Call it
    as ``guide(x, num_data=None)``: it samples ``"z1"``, then ``"z2"``, in the data plate.
    """

    def __init__(self, x_dim: int, k1: int, k2: int, name: str = "hierarchical_linear_guide") -> None:
        super().__init__()
        self.x_dim, self.k1, self.k2, self.name = x_dim, k1, k2, name
        self.C = nn.Parameter(torch.zeros(k1, x_dim))
        self.c = nn.Parameter(torch.zeros(k1))
        self.E = nn.Parameter(torch.zeros(k2, k1))
        self.e = nn.Parameter(torch.zeros(k2))
        self.tril1 = nn.Parameter(torch.zeros(k1, k1))  # strictly lower part, and the log-diagonal
        self.tril2 = nn.Parameter(torch.zeros(k2, k2))

    @staticmethod
    def _scale_tril(raw: torch.Tensor) -> torch.Tensor:
        return raw.tril(-1) + torch.diag_embed(raw.diagonal().exp())

    def scale_tril1(self) -> torch.Tensor:
        """:math:`L_1`."""
        return self._scale_tril(self.tril1)

    def scale_tril2(self) -> torch.Tensor:
        """:math:`L_2`."""
        return self._scale_tril(self.tril2)

    @torch.no_grad()
    def set(self, C, c, L1, E, e, L2) -> "HierarchicalLinearGaussianGuide":
        """Set every parameter (``L1``, ``L2`` lower triangular with a positive diagonal)."""
        for param, value in ((self.C, C), (self.c, c), (self.E, E), (self.e, e)):
            param.copy_(value)
        for param, L in ((self.tril1, L1), (self.tril2, L2)):
            param.copy_(L.tril(-1) + torch.diag_embed(L.diagonal().log()))
        return self

    def joint(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Mean ``[B, k1 + k2]`` and covariance ``[k1 + k2, k1 + k2]`` of :math:`q(z_1, z_2|x)`."""
        L1, L2 = self.scale_tril1(), self.scale_tril2()
        S1, S2 = L1 @ L1.T, L2 @ L2.T
        m1 = x @ self.C.T + self.c
        m2 = m1 @ self.E.T + self.e
        top = torch.cat([S1, S1 @ self.E.T], 1)
        bottom = torch.cat([self.E @ S1, self.E @ S1 @ self.E.T + S2], 1)
        return torch.cat([m1, m2], 1), torch.cat([top, bottom], 0)

    def forward(self, x: torch.Tensor, num_data: Optional[int] = None) -> torch.Tensor:
        x = _check_data(x, self.x_dim)
        register_module(self.name, self)
        with data_plate(x.shape[0], num_data, x.device):
            z1 = pyro.sample("z1", dist.MultivariateNormal(x @ self.C.T + self.c, scale_tril=self.scale_tril1()))
            return pyro.sample("z2", dist.MultivariateNormal(z1 @ self.E.T + self.e, scale_tril=self.scale_tril2()))
