#!/usr/bin/env python
"""Write your own guide q(z|x), plug it into pyro_vae.VAE, and compare it with the default.

The guide below is written from scratch: a Student-t posterior with a learned number of
degrees of freedom (heavier tails than a Normal). It follows the guide contract
(docs/guides.md): called with the model's arguments (x, num_data=None), it samples site
"z" with event shape (z_dim,) inside plate "data", reparameterized, and registers its
parameters with Pyro. No closed-form KL(StudentT || Normal) exists, so the ELBO's KL term
is estimated by Monte Carlo; the default diagonal Normal guide gets it in closed form.

    python examples/custom_guide.py                     # embedded MNIST sample
    python examples/custom_guide.py --data-dir DIR      # full MNIST
"""

import argparse

import pyro
import pyro.distributions as dist
import torch
from torch import nn
from torch.nn import functional as F

from pyro_vae import VAE, Trainer, data_plate, load_mnist


class StudentTGuide(nn.Module):
    """q(z|x) = prod_d StudentT(nu, loc_d(x), scale_d(x)), nu > 2 learned."""

    def __init__(self, x_dim: int = 784, z_dim: int = 20, hidden: int = 400):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(x_dim, hidden), nn.Softplus(), nn.Linear(hidden, 2 * z_dim))
        self.raw_df = nn.Parameter(torch.tensor(1.0))

    def forward(self, x, num_data=None):
        pyro.module("student_t_guide", self)  # register the parameters with Pyro
        loc, raw_scale = self.net(x).chunk(2, dim=-1)
        df = 2.0 + F.softplus(self.raw_df)  # finite variance
        with data_plate(x.shape[0], num_data, x.device):  # the model's plate, same N/B scaling
            return pyro.sample("z", dist.StudentT(df, loc, F.softplus(raw_scale) + 1e-4).to_event(1))


def train(guide, data, args):
    pyro.clear_param_store()
    pyro.set_rng_seed(args.seed)
    vae = VAE(z_dim=args.z_dim, hidden_dims=(400,), guide=guide)
    trainer = Trainer(vae, seed=args.seed)
    train_x = data.train_images[: args.train_size]
    trainer.fit(
        train_x,
        data.test_images,
        epochs=args.epochs,
        test_every=args.epochs,
        progress=False,
        log=lambda line: print("  " + line),
    )
    return trainer.history[-1]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--z-dim", type=int, default=20)
    p.add_argument("--train-size", type=int, default=None)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    data = load_mnist(args.data_dir)
    print("default guide (diagonal Normal):")
    default = train(None, data, args)
    print("custom guide (Student-t):")
    custom = train(StudentTGuide(z_dim=args.z_dim), data, args)
    print(f"\ntest ELBO after {args.epochs} epochs (nats per datapoint):")
    for name, r in (("diagonal Normal", default), ("Student-t", custom)):
        print(f"  {name:16s} {r['test_elbo']:9.3f} = recon {r['test_recon']:9.3f} - KL {r['test_kl']:7.3f}")


if __name__ == "__main__":
    main()
