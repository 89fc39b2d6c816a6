"""Throughput of the recursive segmenter: eager per-step loop vs scan, full_fov vs cropped.

Prints one JSON object. Every timing is the median of `--repeats` runs after a warm-up run;
compile time is reported separately. Modes:
  * eager: the thesis' way: one region at a time (batch 1), one jitted step per spiral step
    called from Python; training runs the forward loop, then a backward loop of jitted per-step
    VJPs (each step rematerialised, as the scan does with remat) and one Adam update.
  * scan: `Segmenter.apply` / `value_and_grad(Segmenter.loss)` + Adam under one `jax.jit`,
    natively batched over regions.

  python benchmarks/segmenter_bench.py --quick
"""

import argparse
import json
import os
import platform
import statistics
import time

import flax
import jax
import jax.numpy as jnp
import jaxlib
import numpy as np
import optax

from spiralnet_jax import segmenter as segmenter_lib

import bench_common



def _segmenter(step, loss="final", cpu_conv_vjp="auto"):
  config = bench_common.default_config()
  config.segmenter.step, config.segmenter.loss = step, loss
  config.segmenter.cpu_conv_vjp = cpu_conv_vjp
  return segmenter_lib.Segmenter.from_config(config)


def _timed(fn, repeats):
  """(first-call seconds, median seconds of `repeats` later calls)."""
  start = time.perf_counter()
  jax.block_until_ready(fn())
  first = time.perf_counter() - start
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return first, statistics.median(times)


def _record(num_regions, first, median, compile_s=None):
  return {"batch": num_regions, "median_s": round(median, 4),
          "regions_per_s": round(num_regions / median, 3),
          "compile_s": round(first - median if compile_s is None else compile_s, 3)}


def _data(batch, shape, seed=0):
  rng = np.random.default_rng(seed)
  regions = jnp.asarray(rng.random((batch,) + shape), jnp.float32)
  labels = jnp.asarray(np.eye(3, dtype=np.float32)[rng.integers(0, 3, (batch,) + shape)])
  return regions, labels


def _step_gflop(segmenter, params):
  """XLA's FLOP count of one spiral step for one region (scan bodies are counted once)."""
  height, width = segmenter.region_shape
  image_canvas = segmenter.to_canvas(jnp.zeros((1, height, width, 1)))
  mask_canvas = jnp.zeros(image_canvas.shape[:-1] + (3,))
  offset = np.asarray(segmenter.offsets[0], np.int32)
  cost = jax.jit(segmenter.step_fn).lower(params, image_canvas, mask_canvas,
                                          offset).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return cost.get("flops", float("nan")) / 1e9


def _compiled(fn, *args):
  """(compiled function, compile seconds) via AOT lowering."""
  start = time.perf_counter()
  compiled = jax.jit(fn).lower(*args).compile()
  return compiled, time.perf_counter() - start


# --- eager (thesis) ---------------------------------------------------------------------------
def eager_forward(segmenter, params, regions, step_fn, batch=1):
  """Segments `batch` regions at a time, one jitted step call per spiral step."""
  outputs = []
  for start in range(0, len(regions), batch):
    image_canvas = segmenter.to_canvas(regions[start:start + batch, :, :, None])
    mask_canvas = jnp.zeros(image_canvas.shape[:-1] + (3,), jnp.float32)
    for offset in segmenter.offsets:
      mask_canvas = step_fn(params, image_canvas, mask_canvas, np.asarray(offset, np.int32))
    outputs.append(segmenter.from_canvas(mask_canvas))
  return jnp.concatenate(outputs)


def make_eager_train(segmenter, optimizer):
  """One training step on regions one at a time: per-step forward calls, per-step VJP calls."""

  def step(params, image_canvas, canvases, offset):
    mask_canvas, logit_canvas = canvases
    logits = segmenter.block_logits(params, image_canvas, mask_canvas, offset)
    return (segmenter.write_block(mask_canvas, jax.nn.sigmoid(logits), offset),
            segmenter.write_block(logit_canvas, logits, offset))

  forward = jax.jit(step)

  @jax.jit
  def backward(params, image_canvas, canvases, offset, cotangent):
    _, vjp = jax.vjp(lambda p, c: step(p, image_canvas, c, offset), params, canvases)
    return vjp(cotangent)

  @jax.jit
  def final_loss_grad(logit_canvas, labels):
    def loss(logit_canvas):
      logits = segmenter.from_canvas(logit_canvas)
      return optax.sigmoid_binary_cross_entropy(logits, labels).mean()
    return jax.value_and_grad(loss)(logit_canvas)

  @jax.jit
  def update(params, opt_state, grads):
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  def train_step(params, opt_state, regions, labels):
    """Regions one at a time; grads averaged over them, then one Adam update."""
    total_loss, total_grads = 0.0, jax.tree.map(jnp.zeros_like, params)
    offsets = [np.asarray(o, np.int32) for o in segmenter.offsets]
    for region, label in zip(regions, labels):
      image_canvas = segmenter.to_canvas(region[None, :, :, None])
      mask_canvas = jnp.zeros(image_canvas.shape[:-1] + (3,), jnp.float32)
      history = [(mask_canvas, jnp.zeros_like(mask_canvas))]
      for offset in offsets:
        history.append(forward(params, image_canvas, history[-1], offset))
      loss, d_logits = final_loss_grad(history[-1][1], label[None])
      cotangent = (jnp.zeros_like(d_logits), d_logits)
      for offset, canvases in zip(reversed(offsets), reversed(history[:-1])):
        d_params, cotangent = backward(params, image_canvas, canvases, offset, cotangent)
        total_grads = jax.tree.map(jnp.add, total_grads, d_params)
      total_loss += loss
    grads = jax.tree.map(lambda g: g / len(regions), total_grads)
    params, opt_state = update(params, opt_state, grads)
    return params, opt_state, total_loss / len(regions)

  return train_step


# --- scan --------------------------------------------------------------------------------------
def make_scan_train(segmenter, optimizer):
  def train_step(params, opt_state, regions, labels):
    loss, grads = jax.value_and_grad(segmenter.loss)(params, regions, labels)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss
  return train_step


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="small batches, few repeats")
  parser.add_argument("--batch", type=int, default=0, help="scan batch (default 8, quick 4)")
  parser.add_argument("--repeats", type=int, default=0, help="timed runs (default 5, quick 3)")
  parser.add_argument("--skip_full_fov_train", action="store_true")
  args = parser.parse_args()
  batch = args.batch or (4 if args.quick else 8)
  repeats = args.repeats or (3 if args.quick else 5)
  eager_regions = 1 if args.quick else 2
  shape = (bench_common.default_config().regions.height, bench_common.default_config().regions.width)
  optimizer = optax.adam(bench_common.default_config().segmenter.learning_rate)
  results = {
      "device": {"backend": jax.default_backend(), "kind": jax.devices()[0].device_kind,
                 "cpu_count": os.cpu_count(), "machine": platform.machine(),
                 "load_average_at_start": [round(x, 2) for x in os.getloadavg()]},
      "versions": {"jax": jax.__version__, "jaxlib": jaxlib.__version__,
                   "flax": flax.__version__, "optax": optax.__version__,
                   "python": platform.python_version()},
      "git_commit": bench_common.git_commit(),
      "settings": {"quick": args.quick, "scan_batch": batch, "eager_batch": 1,
                   "eager_regions": eager_regions, "repeats": repeats, "region": shape,
                   "num_steps": None},
      "forward": {}, "train": {},
  }
  regions, labels = _data(batch, shape)

  for step in ("full_fov", "cropped"):
    segmenter = _segmenter(step)
    results["settings"]["num_steps"] = len(segmenter.offsets)
    params = segmenter.init(jax.random.key(0))
    step_fn = jax.jit(segmenter.step_fn)
    gflop_per_region = _step_gflop(segmenter, params) * len(segmenter.offsets)
    results["forward"][f"gflop_per_region_{step}"] = round(gflop_per_region, 3)
    first, median = _timed(
        lambda: eager_forward(segmenter, params, regions[:eager_regions], step_fn), repeats)
    results["forward"][f"eager_{step}"] = _record(eager_regions, first, median)
    # The same Python step loop on the whole batch: isolates what the scan itself saves.
    first, median = _timed(lambda: eager_forward(segmenter, params, regions, step_fn, batch),
                           repeats)
    results["forward"][f"eager_batched_{step}"] = _record(batch, first, median)
    apply, compile_s = _compiled(segmenter.apply, params, regions)
    first, median = _timed(lambda: apply(params, regions), repeats)
    results["forward"][f"scan_{step}"] = _record(batch, first, median, compile_s)
    for name in (f"eager_{step}", f"eager_batched_{step}", f"scan_{step}"):
      record = results["forward"][name]
      record["gflop_per_s"] = round(record["regions_per_s"] * gflop_per_region, 1)

  train_variants = [("cropped", "final", "auto"), ("cropped", "per_step", "auto"),
                    ("cropped", "final", "off")]
  if not args.skip_full_fov_train:
    train_variants.insert(0, ("full_fov", "final", "auto"))
  for step, loss, vjp in train_variants:
    segmenter = _segmenter(step, loss, vjp)
    params = segmenter.init(jax.random.key(0))
    opt_state = optimizer.init(params)
    name = f"{step}_{loss}" + ("_conv_vjp_off" if vjp == "off" else "")
    if loss == "final" and vjp == "auto":
      eager = make_eager_train(segmenter, optimizer)
      first, median = _timed(
          lambda: eager(params, opt_state, regions[:eager_regions], labels[:eager_regions]),
          repeats)
      results["train"][f"eager_{name}"] = _record(eager_regions, first, median)
    train, compile_s = _compiled(make_scan_train(segmenter, optimizer), params, opt_state,
                                 regions, labels)
    first, median = _timed(lambda: train(params, opt_state, regions, labels), repeats)
    results["train"][f"scan_{name}"] = _record(batch, first, median, compile_s)

  def ratio(table, a, b):
    if a in table and b in table:
      return round(table[a]["regions_per_s"] / table[b]["regions_per_s"], 2)
    return None

  fwd, train = results["forward"], results["train"]
  results["ratios"] = {
      "forward_cropped_over_full_fov": ratio(fwd, "scan_cropped", "scan_full_fov"),
      "forward_scan_over_eager_cropped": ratio(fwd, "scan_cropped", "eager_cropped"),
      "forward_scan_over_eager_full_fov": ratio(fwd, "scan_full_fov", "eager_full_fov"),
      "train_cropped_over_full_fov": ratio(train, "scan_cropped_final", "scan_full_fov_final"),
      "train_scan_over_eager_cropped": ratio(train, "scan_cropped_final",
                                             "eager_cropped_final"),
      "train_scan_over_eager_full_fov": ratio(train, "scan_full_fov_final",
                                              "eager_full_fov_final"),
      "train_conv_vjp_on_over_off_cropped": ratio(train, "scan_cropped_final",
                                                  "scan_cropped_final_conv_vjp_off"),
  }
  results["device"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
  print(json.dumps(results, indent=2))


if __name__ == "__main__":
  main()
