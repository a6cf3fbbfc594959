"""The models and their guides, each a Pyro ``model`` and ``guide``.

=============================  ==============================================================
:mod:`.vae`                    :class:`~pyro_vae.models.vae.VAE`: p(z) p(x|z) and q(z|x), behind one door
:mod:`.hvae`                   the two-layer hierarchical VAE (Burda et al.'s architecture)
:mod:`.ssvae`                  M2, the semi-supervised VAE (Kingma et al.)
:mod:`.cvae`                   the conditional VAE of Pyro's tutorial, and its baseline
:mod:`.linear_gaussian`        probabilistic PCA: an exact model, log p(x) in closed form
:mod:`.linear_gaussian_chain`  a hierarchy of linear-Gaussian layers, exact too
:mod:`.priors`                 the VampPrior
:mod:`.likelihoods`            p(x|z) by name: Bernoulli pixels, Normal, Laplace, Student-t
                               features, Poisson and negative-binomial counts, categories
:mod:`.discretized_logistic`   the distribution of 8-bit images, one logistic per pixel
:mod:`.networks`               the MLPs and the Gaussian encoder
:mod:`.guides`                 the built-in guides: diagonal, convolutional, full covariance, IAF
:mod:`.plate`                  the data plate scaled by N/B, and ``pyro.module`` made safe
:mod:`.registry`               the models by name, for the command line
=============================  ==============================================================
"""
