"""Classifier-free guidance (Ho & Salimans 2022) and the label dropout that trains for it.

A class-conditional model is trained with each label replaced by the null class (index
`num_classes`, one extra embedding row) with probability `diffusion.label_dropout`, so one network
is both the conditional model f(x, level, y) and the unconditional f(x, level, null). Sampling
with guidance weight w uses

    f_w = f(x, level, null) + w (f(x, level, y) - f(x, level, null)),

for whichever output the objective's sampler integrates (EDM's D, flow's v, DDPM's eps, all
linear in the same way): w = 1 is the conditional model alone, w = 0 the unconditional one,
w > 1 pushes further towards the class.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

ConditionalModel = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]


def drop_labels(key: jax.Array, labels: jax.Array, rate: float, null_class: int) -> jax.Array:
  """Replaces each label by `null_class` with probability `rate`, independently."""
  dropped = jax.random.bernoulli(key, rate, labels.shape)
  return jnp.where(dropped, jnp.asarray(null_class, labels.dtype), labels)


def guided(model: ConditionalModel, weight: float, null_class: int) -> ConditionalModel:
  """The model with guidance `weight` on its labels: model(x, levels, labels) -> f_w."""
  if weight == 1:
    return model  # the conditional model alone: no unconditional evaluation
  if weight == 0:
    return lambda x, levels, labels: model(x, levels, jnp.full_like(labels, null_class))

  def combined(x: jax.Array, levels: jax.Array, labels: jax.Array) -> jax.Array:
    # One batch of both halves: a single network evaluation of twice the size.
    out = model(jnp.concatenate([x, x]), jnp.concatenate([levels, levels]),
                jnp.concatenate([labels, jnp.full_like(labels, null_class)]))
    cond, uncond = jnp.split(out, 2)
    return uncond + weight * (cond - uncond)

  return combined
