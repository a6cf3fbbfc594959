"""Inference: the ELBO and its terms, the objectives, importance sampling and evaluation.

==========================  ==============================================================
:mod:`.elbo`                the ELBO per datapoint: reconstruction and the KL of each latent site
:mod:`.objectives`          the training objectives by name; the KL weight beta; IWAE
:mod:`.importance`          importance weights log p(x, z) - log q(z|x), in bounded memory
:mod:`.evaluate`            log p(x) by importance sampling; active units; KL per dimension
:mod:`.information`         information content, entropy, cross-entropy, KL
:mod:`.reparameterization`  z = mu + sigma * eps, and why it carries gradients
:mod:`.sites`               which sites are data, which latent, which plate runs over datapoints
:mod:`.guide_contract`      what a guide must do to pair with a model, checked in one place
==========================  ==============================================================
"""
