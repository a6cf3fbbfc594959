"""Why a training step went non-finite: which distribution's parameter, which ELBO term.

When :class:`~pyro_vae.training.step.CheckedStep` refuses a step, :func:`diagnose` replays it
on its own batch with the step's own noise and splits the objective into the ELBO's two terms,
reconstruction and KL, to name the one that is non-finite, in value or in gradient. The
:class:`~pyro_vae.errors.NonFiniteError` that reaches the user (:func:`non_finite_error`)
says where training stopped, what went bad, and where the last good checkpoint is.
"""

from __future__ import annotations

import math
from typing import Any, List, Optional, Tuple, cast

import pyro
import torch
from pyro import poutine
from torch.distributions import Distribution

from pyro_vae.data.batches import Batch
from pyro_vae.errors import NonFiniteError
from pyro_vae.inference.elbo import elbo_terms
from pyro_vae.rng import rng_fork


def grad_norm(grads: List[torch.Tensor]) -> torch.Tensor:
    """The total 2-norm of ``grads`` (as :func:`torch.nn.utils.clip_grad_norm_` computes it),
    from one fused kernel (``torch._foreach_norm``) and one reduction."""
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))


def refused_parameter(err: BaseException) -> Optional[str]:
    """If ``err`` is torch's argument validation refusing a NaN or infinite parameter, say which
    (``"the scale of Normal"``); else None. Read from the refusing constructor's frame -- the
    distribution and the tensor it was given -- not from the message's wording."""
    tb, found = err.__traceback__, None
    while tb is not None:
        local = tb.tb_frame.f_locals
        if tb.tb_frame.f_code.co_name == "__init__" and isinstance(local.get("self"), Distribution):
            value = local.get("value")
            if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
                found = f"the {local.get('param', 'parameter')} of {type(local['self']).__name__}"
        tb = tb.tb_next
    return found


TERMS = (
    ("reconstruction", "the reconstruction term E_q[log p(x|z)]", "recon"),
    ("KL", "the KL term KL(q(z|x) || p(z))", "kl"),
)


def diagnose(
    program: Any, batch: Batch, num_data: int, noise: torch.Tensor, analytic_kl: bool
) -> Tuple[Optional[str], str]:
    """``(term, detail)``: which part of the ELBO, ``"reconstruction"`` or ``"KL"``, is non-finite
    on ``batch`` -- in value, or in gradient at the training scale (the batch sum times
    ``num_data / B``) -- and a sentence saying so.

    The guide redraws the step's own noise (``noise``, the CPU RNG state from before the
    step), the KL is the Monte Carlo one unless ``analytic_kl``, and validation is off, so
    NaN flows instead of raising. Nothing here moves the caller's random stream.
    """
    with rng_fork(0), pyro.validation_enabled(False):
        torch.set_rng_state(noise)
        try:
            with poutine.trace(param_only=True) as capture:
                terms = elbo_terms(program.model, program.guide, *batch.args, analytic_kl=analytic_kl, **batch.kwargs)
        except Exception as err:  # a diagnosis must not hide the error it explains
            return None, f"evaluating its ELBO raised {type(err).__name__}: {str(err).splitlines()[0]}"
        # a param site's value is the param store's constrained tensor, which carries unconstrained()
        params = [cast(Any, site["value"]).unconstrained() for site in capture.trace.nodes.values()]
        params = [p for p in params if p.requires_grad]
        bad, parts, norms, grads_of = [], [], {}, {}
        scale = num_data / batch.size
        for name, label, field in TERMS:
            per_point = getattr(terms, field)
            value = float(per_point.detach().mean())
            if not math.isfinite(value):
                bad.append(name)
                parts.append(f"{label} is {value}")
                continue
            grads = torch.autograd.grad(per_point.sum() * scale, params, allow_unused=True, retain_graph=True)
            grads_of[name] = grads
            norms[name] = float(grad_norm([g for g in grads if g is not None]))
            if math.isfinite(norms[name]):
                parts.append(f"{label} is finite ({value:.4g} nats per datapoint)")
            else:
                bad.append(name)
                parts.append(f"{label} is {value:.4g} nats per datapoint but its gradient norm is {norms[name]}")
    detail = " and ".join(parts)
    if bad:
        return " and ".join(bad), f"{detail}: the {' and '.join(bad)} term{'s' if len(bad) > 1 else ''} went bad"
    # The loss is KL - reconstruction: is its gradient finite too?
    loss_grads = [
        (0 if k is None else k) - (0 if r is None else r)
        for k, r in zip(grads_of["KL"], grads_of["reconstruction"])
        if k is not None or r is not None
    ]
    total = float(grad_norm(loss_grads))
    if math.isfinite(total):
        return None, (
            f"{detail}, and so is the loss's gradient (norm {total:.3g}): replaying the step "
            f"with its own noise did not reproduce the failure here"
        )
    # Each term's gradient is finite alone, but not their sum: name the larger one.
    term = max(norms, key=norms.__getitem__)
    sizes = ", ".join(f"{norms[k]:.3g} for {k}" for k in norms)
    return term, f"{detail}, with gradient norms {sizes} that overflow together: the {term} term dominates"


def diagnose_parts(
    program: Any, batch: Batch, num_data: int, noise: torch.Tensor, analytic_kl: bool
) -> Tuple[Optional[str], str]:
    """:func:`diagnose` of each part of a step's batch (:meth:`Program.parts
    <pyro_vae.training.program.Program.parts>`: one for most models; M2's unlabelled and labelled
    minibatches), naming the first part whose term went bad."""
    parts = program.parts(batch, num_data)
    if len(parts) == 1:
        return diagnose(program, parts[0][1], parts[0][2], noise, analytic_kl)
    details = []
    for name, part, n in parts:
        term, detail = diagnose(program, part, n, noise, analytic_kl)
        if term is not None:
            return term, f"on its {name} minibatch, {detail}"
        details.append(f"on its {name} minibatch, {detail}")
    return None, "; ".join(details)


def non_finite_error(
    reason: str,
    term: Optional[str],
    detail: str,
    epoch: int,
    step: int,
    last_checkpoint: Optional[Tuple[str, int, int]],
    checkpoint_path: Optional[str],
) -> NonFiniteError:
    """The error training stops with: the step, what went bad, and the last good checkpoint."""
    if last_checkpoint is None:
        if checkpoint_path is None:
            where = "no checkpoint path was given (pass checkpoint= to fit)"
        else:
            where = f"no checkpoint was written yet (the first would have been {checkpoint_path})"
        path = done = None
    else:
        path, done, at = last_checkpoint
        when = f"epoch {done + 1}, step {at}" if at else f"epoch {done}"
        where = f"the last good checkpoint is {path} ({when})"
    return NonFiniteError(
        f"training stopped at epoch {epoch}, step {step}: {reason}; re-evaluated on that batch, "
        f"{detail}. Nothing was written after it: {where}. Retry with a lower learning rate (lr) "
        f"or gradient clipping (clip_norm), or check the data.",
        epoch=epoch,
        step=step,
        term=term,
        checkpoint=path,
        checkpoint_epoch=done,
        settings=("lr", "clip_norm"),
    )
