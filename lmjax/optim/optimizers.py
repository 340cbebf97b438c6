"""Optimizers built from the `optim` config section, assembled from optax parts.

The chain is: clip the loss gradient -> add coupled L2/L1 penalties -> optimizer.
Penalties come after clipping (as torch's coupled weight_decay does) so their strength
does not depend on the gradient norm. Decoupled weight_decay is added inside the
optimizer just before the lr scaling, as optax.adamw does, so a parameter shrinks by
lr * weight_decay * p per step. Every transform needs `params` in tx.update.
"""

import jax
import jax.numpy as jnp
import ml_collections
import optax

from lmjax.optim.schedules import build_schedule, require

NAMES = ('adamw', 'adam', 'sgd', 'rmsprop', 'muon')


def decay_mask(params):
    """True for leaves named 'kernel' (Dense/Conv weights), False for everything else.

    Biases, LayerNorm scale/bias and nn.Embed's 'embedding' are not decayed. Only dict
    keys count, so a kernel boxed in nn.Partitioned (path ends in .value) is still found.
    """
    def is_kernel(path, _):
        keys = [k.key for k in path if isinstance(k, jax.tree_util.DictKey)]
        return bool(keys) and keys[-1] == 'kernel'
    return jax.tree_util.tree_map_with_path(is_kernel, params)


def _add_l1(l1: float) -> optax.GradientTransformation:
    """g + l1 * sign(p): the (sub)gradient of l1 * |p|; optax has no transform for it."""
    def f(updates, params):
        return jax.tree.map(lambda g, p: g + l1 * jnp.sign(p).astype(g.dtype), updates, params)
    return optax.stateless(f)


def _decay(weight_decay: float) -> optax.GradientTransformation:
    if weight_decay == 0:
        return optax.identity()
    return optax.add_decayed_weights(weight_decay, mask=decay_mask)


def _validate(cfg: ml_collections.ConfigDict) -> None:
    require(cfg.name in NAMES, 'name', cfg.name, 'one of ' + ', '.join(NAMES))
    for field in ('b1', 'b2', 'momentum', 'rms_decay'):
        require(0 <= cfg[field] < 1, field, cfg[field], 'in [0, 1)')
    for field in ('eps', 'weight_decay', 'clip_norm', 'l1', 'l2', 'muon_learning_rate'):
        require(cfg[field] >= 0, field, cfg[field], '>= 0 (0 disables)')
    if cfg.name == 'adam' and cfg.weight_decay != 0:
        raise ValueError(f'optim.weight_decay={cfg.weight_decay!r} must be 0 for '
                         "optim.name='adam'; use optim.name='adamw' for weight decay")


def build_optimizer(cfg: ml_collections.ConfigDict, num_steps: int,
                    matrix_dims=None, trainable=None) -> optax.GradientTransformation:
    """The optimizer named by cfg.name with its lr schedule, clipping and penalties.

    adamw/adam: optax's (eps outside the sqrt, bias-corrected moments).
    sgd: m_t = mu m_{t-1} + (1 - mu) g_t, update = -lr (m_t / (1 - mu^t) + wd p);
        mu = 0 is plain SGD.
    muon: optax.contrib.muon for the matrices `matrix_dims` describes, AdamW for the rest.
    rmsprop: optax.rmsprop with weight decay inserted before the lr scaling:
        v_t = rho v_{t-1} + (1 - rho) g_t^2, u_t = lr (g_t / sqrt(v_t + eps) + wd p),
        and with momentum m_t = mu m_{t-1} + u_t, update = -m_t (else -u_t).
    `trainable(params)` -> tree of bools, when given, freezes the False leaves (LoRA): they get
    no update, no optimizer state, and no share of the clipping norm.
    """
    if trainable is not None:
        tx = build_optimizer(cfg, num_steps, matrix_dims)
        labels = lambda p: jax.tree.map(lambda t: 'train' if t else 'frozen', trainable(p))  # noqa: E731
        return optax.multi_transform({'train': tx, 'frozen': optax.set_to_zero()}, labels)
    _validate(cfg)
    lr = build_schedule(cfg, num_steps)
    parts = []
    if cfg.clip_norm > 0:
        parts.append(optax.clip_by_global_norm(cfg.clip_norm))
    if cfg.l2 > 0:
        parts.append(optax.add_decayed_weights(cfg.l2, mask=decay_mask))  # g + l2 * p
    if cfg.l1 > 0:
        parts.append(optax.masked(_add_l1(cfg.l1), decay_mask))

    if cfg.name == 'adamw':
        core = optax.adamw(lr, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                           weight_decay=cfg.weight_decay, mask=decay_mask)
    elif cfg.name == 'adam':
        core = optax.adam(lr, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps)
    elif cfg.name == 'sgd':
        # ema(debias=True) is Adam's bias-corrected first moment, so early steps are not
        # shrunk by the zero-initialised average.
        momentum = optax.ema(cfg.momentum, debias=True) if cfg.momentum > 0 else optax.identity()
        core = optax.chain(momentum, _decay(cfg.weight_decay), optax.scale_by_learning_rate(lr))
    elif cfg.name == 'muon':
        # Weight matrices: momentum orthogonalised by Newton-Schulz (optax.contrib.muon), at
        # their own peak rate on the same schedule. Everything else (embeddings, norms, biases:
        # the leaves matrix_dims maps to None) gets AdamW at the base rate.
        if matrix_dims is None:
            raise ValueError("optim.name='muon' needs the model's matrix layout (matrix_dims)")
        ratio = cfg.muon_learning_rate / cfg.learning_rate if cfg.learning_rate else 0.0
        core = optax.contrib.muon(
            lambda step: lr(step) * ratio, beta=cfg.momentum, weight_decay=cfg.weight_decay,
            weight_decay_mask=decay_mask, adam_b1=cfg.b1, adam_b2=cfg.b2, eps=cfg.eps,
            adam_learning_rate=lr, muon_weight_dimension_numbers=matrix_dims)
    else:
        momentum = optax.trace(cfg.momentum) if cfg.momentum > 0 else optax.identity()
        core = optax.chain(optax.scale_by_rms(cfg.rms_decay, cfg.eps), _decay(cfg.weight_decay),
                           optax.scale_by_learning_rate(lr), momentum)
    return optax.chain(*parts, core)
