"""Pure losses and steps: one optimizer update, one validation loss (the loop jit-compiles them)."""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from spiralnet_jax import train_state

Batch = dict[str, np.ndarray]
LossFn = Callable[[Any, Batch], jax.Array]  # (params, batch) -> scalar.


def scorer_loss(model: Any, params: Any, batch: Batch) -> jax.Array:
  """Mean squared error between predicted and label scores of a batch of regions."""
  pred = model.apply({"params": params}, batch["regions"])
  return jnp.mean(jnp.square(pred - batch["scores"]))


def segmenter_loss(segmenter: Any, params: Any, batch: Batch) -> jax.Array:
  """The segmenter's own loss (`config.segmenter.loss`) on regions and 3-channel labels."""
  return segmenter.loss(params, batch["regions"], batch["labels"])


def unet_loss(model: Any, params: Any, batch: Batch) -> jax.Array:
  """Binary cross-entropy on the foreground, averaged over real (non-padding) pixels."""
  logits = model.apply({"params": params}, batch["images"])
  bce = optax.sigmoid_binary_cross_entropy(logits, batch["foreground"])
  weight = batch["weight"]
  return jnp.sum(bce * weight) / jnp.maximum(jnp.sum(weight), 1.0)


# Each stage's loss, (model, params, batch) -> scalar, by stage name (`stages.STAGES`).
LOSSES: dict[str, Callable[[Any, Any, Batch], jax.Array]] = {
    "scorer": scorer_loss, "segmenter": segmenter_loss, "unet": unet_loss}


def train_step(state: train_state.TrainState, batch: Batch, *, loss_fn: LossFn,
               tx: optax.GradientTransformation
               ) -> tuple[train_state.TrainState, dict[str, jax.Array]]:
  """One optimizer update on `loss_fn(params, batch)`; returns the new state, loss, grad norm."""
  loss, grads = jax.value_and_grad(loss_fn)(state.params, batch)
  # The norm of the raw gradient (before any clipping): the loop stops on a non-finite one.
  grad_norm = optax.tree.norm(grads)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
  return new_state, {"loss": loss, "grad_norm": grad_norm}


def eval_step(params: Any, batch: Batch, *, loss_fn: LossFn) -> jax.Array:
  """The loss of one batch, no update."""
  return loss_fn(params, batch)
