r"""A linear Gaussian chain :math:`z_2 \to z_1 \to x`: a two-latent model whose posterior is exact.

It stacks two latent layers of :mod:`pyro_vae.models.linear_gaussian`'s model,
with sites ``"z2"``, ``"z1"``, ``"x"``: the structure of a two-stochastic-layer VAE, again
with a closed-form evidence, posterior (:meth:`~HierarchicalLinearGaussianModel.posterior_guide`,
bottom-up as such a VAE's guide) and ELBO per site
(:meth:`~HierarchicalLinearGaussianModel.decompose`), on which the evaluation of models with
several latent sites is checked exactly.

It is to the two-stochastic-layer VAE (:class:`~pyro_vae.models.hvae.HVAE`) what
:class:`~pyro_vae.models.linear_gaussian.LinearGaussianModel` is to the VAE.
"""

from __future__ import annotations

import math
from typing import Any, Dict, NamedTuple, Optional, Tuple, Union

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from pyro_vae.models.linear_gaussian import _check_data
from pyro_vae.models.plate import data_plate, register_module


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
    :func:`~pyro_vae.models.plate.data_plate`, so :func:`~pyro_vae.inference.evaluate.log_likelihood` and
    :func:`~pyro_vae.inference.elbo.elbo_terms` can be checked against these closed forms.

    :param A: ``[k1, k2]``; :param a: ``[k1]``; :param s: scale of :math:`z_1|z_2`, ``> 0``;
    :param W: ``[d, k1]``; :param b: ``[d]``; :param sigma: observation noise, ``> 0``.
    """

    A: torch.Tensor
    a: torch.Tensor
    s: torch.Tensor
    W: torch.Tensor
    b: torch.Tensor
    sigma: torch.Tensor

    def __init__(
        self,
        A: torch.Tensor,
        a: torch.Tensor,
        s: Union[float, torch.Tensor],
        W: torch.Tensor,
        b: torch.Tensor,
        sigma: Union[float, torch.Tensor],
    ) -> None:
        super().__init__()
        W = torch.as_tensor(W)
        if not W.is_floating_point():
            W = W.to(torch.get_default_dtype())
        opts: Dict[str, Any] = dict(dtype=W.dtype, device=W.device)
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
        opts: Dict[str, Any] = dict(dtype=self.W.dtype, device=self.W.device, generator=generator)
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
        recon = -0.5 * self.x_dim * torch.log(2 * math.pi * var) - (
            resid.pow(2).sum(-1) + (self.W @ S1 @ self.W.T).trace()
        ) / (2 * var)
        G = torch.cat([torch.eye(k1, dtype=m.dtype, device=m.device), -self.A], 1)  # z1 - A z2 = G u
        sq = (m @ G.T - self.a).pow(2).sum(-1) + (G @ S @ G.T).trace()
        kl_z1 = (
            -_gaussian_entropy(guide.scale_tril1())
            + 0.5 * k1 * torch.log(2 * math.pi * self.s**2)
            + sq / (2 * self.s**2)
        )
        kl_z2 = (
            -_gaussian_entropy(guide.scale_tril2())
            + 0.5 * k2 * math.log(2 * math.pi)
            + 0.5 * (m2.pow(2).sum(-1) + S[k1:, k1:].trace())
        )
        elbo = recon - kl_z1 - kl_z2
        precision = self.posterior_precision()
        delta = self.posterior(x).loc - m
        gap = 0.5 * (
            (precision @ S).trace()
            + ((delta @ precision) * delta).sum(-1)
            - (k1 + k2)
            - torch.logdet(S)
            - torch.logdet(precision)
        )
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
