"""Seed item 9: with the plate scaled by N/B, the minibatch ELBO is unbiased for the full-data ELBO."""

import math

import torch
from pyro.infer import TraceMeanField_ELBO

from pyro_vae import VAE, binarize, elbo_terms


def test_scaled_minibatch_elbo_is_unbiased_for_the_full_data_elbo(mnist):
    torch.manual_seed(0)
    n, b, num_batches = 500, 25, 600
    x = binarize(mnist.train_images[:n], "dynamic", torch.Generator().manual_seed(0))
    vae = VAE(z_dim=8, hidden_dims=(64,))

    with torch.no_grad():
        # The exact full-data ELBO up to the MC error of the reconstruction term:
        # KL(q||p(z)) in closed form, E_q[log p(x|z)] averaged over 200 draws per image.
        full = elbo_terms(vae.model, vae.guide, x, num_particles=200)
        full_elbo = float(full.elbo.sum())
        full_se = math.sqrt(n) * float(elbo_terms(vae.model, vae.guide, x).recon.std()) / math.sqrt(200)

        # TraceMeanField_ELBO uses the same analytic KL; the plate does the N/B scaling.
        scaled, unscaled = [], []
        for _ in range(num_batches):
            idx = torch.randperm(n)[:b]
            scaled.append(-TraceMeanField_ELBO().loss(vae.model, vae.guide, x[idx], num_data=n))
            unscaled.append(-TraceMeanField_ELBO().loss(vae.model, vae.guide, x[idx]))
    scaled = torch.tensor(scaled)
    tolerance = 4 * math.sqrt(scaled.var().item() / num_batches + full_se**2)
    assert abs(scaled.mean().item() - full_elbo) < tolerance, (scaled.mean().item(), full_elbo, tolerance)
    # The test has power: without the N/B scale the estimate misses by a factor B/N.
    assert abs(torch.tensor(unscaled).mean().item() - full_elbo) > 100 * tolerance
