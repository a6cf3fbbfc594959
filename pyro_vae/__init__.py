"""pyro_vae: the variational autoencoder written as a Pyro model and guide.

``from pyro_vae import VAE`` gives the model/guide pair, with built-in or your own
guides (:mod:`pyro_vae.guides`, :mod:`pyro_vae.guide_contract`); :class:`Trainer` fits
it by SVI on the ELBO or another objective (:mod:`pyro_vae.objectives`);
:func:`log_likelihood` estimates test log-likelihoods; :func:`load_mnist` finds the data. :mod:`pyro_vae.information`
computes information, entropy and KL; :mod:`pyro_vae.linear_gaussian` is an exact
model on which every identity of the ELBO can be checked. The equations of the seed
(docs/equations.md) map onto these modules one concept each.
"""

from .data import MNISTData, balanced_prefix, binarize, load_mnist
from .elbo import ELBOTerms, bits_per_dim, elbo_terms
from .errors import (
    CheckpointError,
    ConfigError,
    DataNotFoundError,
    InvalidDataError,
    NonFiniteError,
    OutputDirError,
    PyroVAEError,
    TrainingInterrupted,
)
from .evaluate import LogLikelihood, active_units, active_units_per_site, kl_per_dimension, log_likelihood, posterior_means
from .guide_contract import GuideError, check_guide
from .guides import ConvolutionalGuide, DiagonalNormalGuide, FullCovarianceGuide, IAFGuide
from .information import cross_entropy, entropy, information_content, kl_divergence
from .hvae import HVAE
from .linear_gaussian import LinearGaussianGuide, LinearGaussianModel
from .linear_gaussian_chain import HierarchicalLinearGaussianGuide, HierarchicalLinearGaussianModel
from .models import MODELS, build_model, get_model
from .objectives import IWAE_ELBO, get_objective, kl_weighted
from .plate import data_plate, register_module
from .priors import VampPrior
from .reparameterization import reparameterize
from .training import Callback, ConsoleLog, MetricsFile, ProgressBar, TrainConfig, Trainer
from .cvae import CVAE
from .sites import SiteError
from .ssvae import SSVAE
from .vae import VAE, VAEBase

__version__ = "0.1.0"

__all__ = [
    "VAE",
    "VAEBase",
    "HVAE",
    "VampPrior",
    "SSVAE",
    "CVAE",
    "MODELS",
    "build_model",
    "get_model",
    "data_plate",
    "register_module",
    "DiagonalNormalGuide",
    "ConvolutionalGuide",
    "FullCovarianceGuide",
    "IAFGuide",
    "check_guide",
    "GuideError",
    "Trainer",
    "TrainConfig",
    "Callback",
    "ProgressBar",
    "ConsoleLog",
    "MetricsFile",
    "get_objective",
    "IWAE_ELBO",
    "kl_weighted",
    "log_likelihood",
    "LogLikelihood",
    "active_units",
    "kl_per_dimension",
    "active_units_per_site",
    "posterior_means",
    "load_mnist",
    "MNISTData",
    "balanced_prefix",
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
    "HierarchicalLinearGaussianModel",
    "HierarchicalLinearGaussianGuide",
    "SiteError",
    "PyroVAEError",
    "DataNotFoundError",
    "InvalidDataError",
    "CheckpointError",
    "ConfigError",
    "OutputDirError",
    "NonFiniteError",
    "TrainingInterrupted",
]
