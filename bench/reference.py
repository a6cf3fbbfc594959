"""The plain-PyTorch VAE that the benchmarks measure pyro_vae against.

Written the way a VAE is usually hand-written in PyTorch (as in pytorch/examples' vae):
no Pyro, eager mode, ``torch.optim.Adam`` with its defaults, the Bernoulli log-likelihood
as ``binary_cross_entropy_with_logits`` and the KL to N(0, I) in closed form. The
architecture is pyro_vae's default, layer for layer: encoder 784-400-(50+50) with softplus,
scale = softplus(.) + 1e-6, decoder 50-400-784 with softplus. The loss is the negative
ELBO of the minibatch scaled by N/B, the value pyro_vae's training step returns.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F


def _mlp(sizes: Sequence[int]) -> nn.Sequential:
    layers = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(nn.Softplus())
    return nn.Sequential(*layers)


class ReferenceVAE(nn.Module):
    def __init__(self, x_dim: int = 784, z_dim: int = 50, hidden_dims: Sequence[int] = (400,)) -> None:
        super().__init__()
        self.encoder = _mlp([x_dim, *hidden_dims, 2 * z_dim])
        self.decoder = _mlp([z_dim, *hidden_dims, x_dim])

    def forward(self, x: torch.Tensor, num_data: int) -> torch.Tensor:
        """-ELBO of the minibatch ``x`` (binary pixels), scaled by ``num_data / B``."""
        loc, raw_scale = self.encoder(x).chunk(2, dim=-1)
        scale = F.softplus(raw_scale) + 1e-6
        z = loc + scale * torch.randn_like(loc)
        recon = F.binary_cross_entropy_with_logits(self.decoder(z), x, reduction="sum")
        kl = 0.5 * (loc.pow(2) + scale.pow(2) - 1).sum() - scale.log().sum()
        return (recon + kl) * (num_data / x.shape[0])


class ReferenceTrainer:
    """One Adam step per call on the reference VAE (``fused=True`` for the fused CPU/GPU kernel)."""

    def __init__(self, lr: float = 1e-3, fused: bool = False, device: str = "cpu") -> None:
        self.vae = ReferenceVAE().to(device)
        self.optimizer = torch.optim.Adam(self.vae.parameters(), lr=lr, fused=fused or None)

    def step(self, x: torch.Tensor, num_data: int) -> torch.Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.vae(x, num_data)
        loss.backward()
        self.optimizer.step()
        return loss.detach()


def gemm_shapes(batch_size: int, x_dim: int = 784, z_dim: int = 50, hidden: int = 400):
    """The (m, k, n) of every matrix product of one training step of the default VAE.

    Forward: one product per linear layer. Backward: the weight gradient of every layer,
    and the input gradient of every layer except the encoder's first (the data needs none).
    """
    layers = [(x_dim, hidden), (hidden, 2 * z_dim), (z_dim, hidden), (hidden, x_dim)]
    shapes = []
    for i, (n_in, n_out) in enumerate(layers):
        shapes.append((batch_size, n_in, n_out))  # forward: [B, in] @ [in, out]
        shapes.append((n_out, batch_size, n_in))  # weight gradient: [out, B] @ [B, in]
        if i > 0:
            shapes.append((batch_size, n_out, n_in))  # input gradient: [B, out] @ [out, in]
    return shapes


def step_flops(batch_size: int) -> float:
    """Floating-point operations of the matrix products of one step (2 m k n each)."""
    return float(sum(2 * m * k * n for m, k, n in gemm_shapes(batch_size)))


def model_flops(batch_size: int, x_dim: int = 784, z_dim: int = 50, hidden: int = 400) -> float:
    """The usual count, 6 x batch x weights (forward 2, backward 4 per weight and datapoint; the
    issue's 0.53 GFLOP at batch 128). It includes the data layer's input gradient, which is
    never computed, so it exceeds :func:`step_flops` by 18 %."""
    weights = x_dim * hidden + hidden * 2 * z_dim + z_dim * hidden + hidden * x_dim
    return 6.0 * batch_size * weights


def copy_weights(reference: ReferenceVAE, vae: nn.Module) -> ReferenceVAE:
    """Load a pyro_vae ``VAE``'s (default diagonal guide's) weights into ``reference``, layer for layer."""
    mine = [p for n, p in vae.named_parameters() if n.startswith("encoder")] + list(vae.decoder.parameters())
    theirs = list(reference.encoder.parameters()) + list(reference.decoder.parameters())
    if [p.shape for p in mine] != [p.shape for p in theirs]:
        raise ValueError("the VAE's architecture differs from the reference's")
    with torch.no_grad():
        for a, b in zip(theirs, mine):
            a.copy_(b)
    return reference


@torch.no_grad()
def reference_log_likelihood(
    vae: ReferenceVAE, x: torch.Tensor, num_samples: int, batch_size: int = 100, max_elements: int = 5_000
) -> torch.Tensor:
    """Importance-sampled log p(x_i) (Burda et al. 2015) for binary ``x``, in plain PyTorch:
    the encoder once per datapoint, ``num_samples`` draws in chunks of at most
    ``max_elements`` particle x datapoint rows (pyro_vae's default), running log-sum-exps."""
    out = []
    for batch in x.split(batch_size):
        loc, raw_scale = vae.encoder(batch).chunk(2, dim=-1)
        scale = F.softplus(raw_scale) + 1e-6
        chunk = max(1, min(num_samples, max_elements // batch.shape[0]))
        log_sum = torch.full((batch.shape[0],), -float("inf"))
        done = 0
        while done < num_samples:
            k = min(chunk, num_samples - done)
            eps = torch.randn(k, *loc.shape)
            z = loc + scale * eps
            logits = vae.decoder(z)
            log_px_z = -F.binary_cross_entropy_with_logits(logits, batch.expand_as(logits), reduction="none").sum(-1)
            log_pz = -0.5 * (z.pow(2).sum(-1) + z.shape[-1] * math.log(2 * math.pi))
            log_qz = -0.5 * (eps.pow(2).sum(-1) + z.shape[-1] * math.log(2 * math.pi)) - scale.log().sum(-1)
            log_sum = torch.logaddexp(log_sum, torch.logsumexp(log_px_z + log_pz - log_qz, 0))
            done += k
        out.append(log_sum - math.log(num_samples))
    return torch.cat(out)
