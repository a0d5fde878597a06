"""Pieces the family trainers share: optimisers, applying modules with mutable state, and
gradient accumulation over micro-batches (`train.grad_accum_steps`)."""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax


def adam(config: ml_collections.ConfigDict, learning_rate: float) -> optax.GradientTransformation:
  """Adam with the config's betas."""
  return optax.adam(learning_rate, b1=config.train.b1, b2=config.train.b2)


def init_variables(module: nn.Module, key: jax.Array, *args, **kwargs) -> tuple[Any, dict]:
  """Initialises `module`; returns (params, the other collections such as batch_stats)."""
  variables = dict(module.init(key, *args, **kwargs))
  params = variables.pop("params")
  return params, variables


def apply_train(module: nn.Module, params: Any, collections: dict, *args, **kwargs) -> tuple[Any, dict]:
  """Applies `module` in training mode; returns (output, updated non-param collections)."""
  if not collections:
    return module.apply({"params": params}, *args, train=True, **kwargs), collections
  out, updated = module.apply({"params": params, **collections}, *args, train=True,
                              mutable=list(collections), **kwargs)
  return out, dict(updated)


def apply_eval(module: nn.Module, params: Any, collections: dict, *args, **kwargs) -> Any:
  """Applies `module` in inference mode (running statistics, no updates)."""
  return module.apply({"params": params, **collections}, *args, train=False, **kwargs)


def generator_inputs(config: ml_collections.ConfigDict, key: jax.Array | None, num: int,
                     labels: jax.Array | None, z: jax.Array | None) -> tuple[jax.Array, jax.Array | None]:
  """(z, labels) for generating `num` images: z ~ N(0, I) from `key` unless given; a conditional
  model without labels cycles through the classes (image i gets class i % num_classes)."""
  if z is None:
    z = jax.random.normal(key, (num, config.model.latent_dim), jnp.float32)
  if config.model.num_classes and labels is None:
    labels = jnp.arange(num, dtype=jnp.int32) % config.model.num_classes
  return z, labels


def split_micro_batches(batch: Any, num: int) -> Any:
  """Leaves [B, ...] -> [num, B // num, ...]: micro-batch i holds examples i, i + num, i + 2 num, ...

  Strided, not contiguous: a batch is split over the devices in contiguous blocks, and when `num`
  divides a block every micro-batch takes as many examples from each block, so none moves.
  """
  return jax.tree.map(
      lambda x: jnp.swapaxes(x.reshape((x.shape[0] // num, num) + x.shape[1:]), 0, 1), batch)


def merge_micro_batches(micro_batches: Any) -> Any:
  """The inverse of `split_micro_batches`: leaves [num, m, ...] -> [num * m, ...] in batch order."""
  return jax.tree.map(
      lambda x: jnp.swapaxes(x, 0, 1).reshape((x.shape[0] * x.shape[1],) + x.shape[2:]),
      micro_batches)


def accumulate_gradients(loss_fn: Callable, params: Any, batch: Any, num_micro_batches: int,
                         key: jax.Array | None = None) -> tuple[tuple[jax.Array, Any], Any]:
  """`jax.value_and_grad(loss_fn, has_aux=True)` of a batch, computed over `num_micro_batches` slices.

  `loss_fn(params, micro_batch) -> (loss, aux)`, or `loss_fn(params, micro_batch, key)` when `key`
  is given; `batch` is a pytree whose leaves have the examples on axis 0 (images, labels, and the
  step's per-example random draws made for the whole batch first, so that slicing leaves them as
  they are). The loss and every aux leaf (float metrics, updated collections) must be means over
  the micro-batch; the result `((loss, aux), grads)` holds their means over the micro-batches, the
  whole batch's means for per-example terms. The micro-batches run one after another (`lax.scan`),
  so only one micro-batch's activations are alive at a time. With one micro-batch this is the plain
  `value_and_grad` call on the whole batch with `key` itself; with more, micro-batch i gets
  `fold_in(key, i)`, so draws made inside `loss_fn` (dropout, augmentation) differ from the plain
  step's, and whatever couples examples (batch norm, minibatch std) sees micro-batch statistics.
  """
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def call(micro_batch, index):
    if key is None:
      return grad_fn(params, micro_batch)
    return grad_fn(params, micro_batch, key if num_micro_batches == 1 else jax.random.fold_in(key, index))

  if num_micro_batches == 1:
    return call(batch, 0)
  micro_batches = split_micro_batches(batch, num_micro_batches)

  def add(total, xs):
    return jax.tree.map(jnp.add, total, call(*xs)), None

  first = jax.tree.map(lambda x: x[0], micro_batches)
  zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(call, first, 0))
  total, _ = jax.lax.scan(add, zeros, (micro_batches, jnp.arange(num_micro_batches)))
  return jax.tree.map(lambda x: x / num_micro_batches, total)
