"""pyro_vae: the variational autoencoder written as a Pyro model and guide.

``from pyro_vae import VAE`` gives the model/guide pair; :class:`Trainer` fits it
by SVI on the ELBO; :func:`load_mnist` finds the data. :mod:`pyro_vae.information`
computes information, entropy and KL; :mod:`pyro_vae.linear_gaussian` is an exact
model on which every identity of the ELBO can be checked. The equations of the seed
(docs/equations.md) map onto these modules one concept each.
"""

from .data import MNISTData, binarize, load_mnist
from .elbo import ELBOTerms, bits_per_dim, elbo_terms
from .errors import CheckpointError, DataNotFoundError, InvalidDataError, PyroVAEError
from .information import cross_entropy, entropy, information_content, kl_divergence
from .linear_gaussian import LinearGaussianGuide, LinearGaussianModel
from .reparameterization import reparameterize
from .train import Trainer
from .vae import VAE, data_plate

__version__ = "0.1.0"

__all__ = [
    "VAE",
    "data_plate",
    "Trainer",
    "load_mnist",
    "MNISTData",
    "binarize",
    "elbo_terms",
    "ELBOTerms",
    "bits_per_dim",
    "information_content",
    "entropy",
    "cross_entropy",
    "kl_divergence",
    "reparameterize",
    "LinearGaussianModel",
    "LinearGaussianGuide",
    "PyroVAEError",
    "DataNotFoundError",
    "InvalidDataError",
    "CheckpointError",
]
