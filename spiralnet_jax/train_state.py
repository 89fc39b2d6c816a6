"""What a checkpoint holds (`TrainState`) and the optimiser that shapes it.

Both sides need this: training creates and updates states, `checkpoints` restores them (the
restore target needs the optimizer state's layout). It holds no loop and no data pipeline.
"""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from spiralnet_jax import stages


class TrainState(flax.struct.PyTreeNode):
  """What a checkpoint holds: the update counter, the parameters and the optimizer state."""

  step: jax.Array  # int32 scalar: number of updates applied.
  params: Any
  opt_state: optax.OptState


def create_train_state(params: Any, tx: optax.GradientTransformation) -> TrainState:
  """A fresh state at step 0."""
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))


LR_SCHEDULES = ("constant", "cosine")


def learning_rate_fn(learning_rate: float, lr_schedule: str, total_steps: int,
                     warmup_steps: int) -> optax.ScalarOrSchedule:
  """The stage's rate: a constant, or a linear warm-up then cosine decay to 0 at total_steps."""
  if lr_schedule not in LR_SCHEDULES:
    raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {lr_schedule!r}")
  if lr_schedule == "constant":
    return learning_rate
  warmup_steps = min(max(0, warmup_steps), max(total_steps - 1, 0))
  return optax.warmup_cosine_decay_schedule(0.0, learning_rate, warmup_steps,
                                            max(total_steps, warmup_steps + 1))


def make_optimizer(learning_rate: optax.ScalarOrSchedule,
                   grad_clip_norm: float = 0.0) -> optax.GradientTransformation:
  """Adam, as in the thesis for every stage; gradients clipped to a global norm if > 0."""
  if grad_clip_norm > 0:
    return optax.chain(optax.clip_by_global_norm(grad_clip_norm), optax.adam(learning_rate))
  # Off: plain Adam, the state layout of checkpoints written before clipping existed.
  return optax.adam(learning_rate)


def grad_clip_norm(config: ml_collections.ConfigDict) -> float:
  """The global gradient-norm clip of every stage (`train.grad_clip_norm`; 0 = off)."""
  return float(config.train.grad_clip_norm)


def stage_optimizer(stage: str, config: ml_collections.ConfigDict, total_steps: int = 1,
                    steps_per_epoch: int = 1) -> optax.GradientTransformation:
  """A stage's optimizer from its config section (which holds its own rate schedule).

  The optimizer state's layout does not depend on the step counts, so a restore target may
  leave them at 1.
  """
  section = config[stage]
  lr = learning_rate_fn(section.learning_rate, section.lr_schedule, total_steps,
                        round(float(section.warmup_epochs) * steps_per_epoch))
  return make_optimizer(lr, grad_clip_norm(config))


def abstract_state(stage: str, config: ml_collections.ConfigDict) -> TrainState:
  """Shapes and dtypes of a stage's TrainState (the restore target), computed without FLOPs."""
  spec = stages.get(stage)
  tx = stage_optimizer(spec.name, config)
  return jax.eval_shape(
      lambda: create_train_state(spec.init_params(config, spec.init_rng(config)), tx))
