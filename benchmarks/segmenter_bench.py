"""Segmenter throughput: eager per-step loop vs scan+vmap, `full_fov` vs `cropped`, by batch size.

One section of benchmarks/suite.py (also runnable alone; prints one JSON object). Every timing
is the median of several runs after a warm-up run; compile time is reported apart. Variants:
  * eager: the thesis' way: one region at a time (batch 1), one jitted step per spiral step
    called from Python; training runs the forward loop, then a backward loop of jitted per-step
    VJPs (each step rematerialised, as the scan does with remat) and one Adam update.
  * scan: `Segmenter.apply` / `value_and_grad(Segmenter.loss)` + Adam under one `jax.jit`,
    vmapped over regions (bitwise the batch-native scan, `Segmenter.apply_batch`), at several batch sizes;
    `cropped` hoists the image branch out of the forward scan (default; training never
    hoists), `cropped_unhoisted` does not,
    `cropped_grouped` runs independent spiral steps together, `cropped_bf16` computes in bf16.

  python benchmarks/segmenter_bench.py --mode=quick
"""

import argparse
import dataclasses
import json
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from spiralnet_jax import segmenter as segmenter_lib
from spiralnet_jax import spiral

import bench_common

# Batch sizes per mode; "mid" is where the variants are compared.
BATCHES = {
    "quick": {"forward": (1, 4, 16, 64), "train": (4, 16, 32), "full_fov_forward": (4,),
              "full_fov_train": (4,), "mid_forward": 16, "mid_train": 16, "eager_regions": 2,
              "repeats": 3},
    "full": {"forward": (16, 64, 256, 1024), "train": (32, 128, 512), "full_fov_forward": (4, 16, 64),
             "full_fov_train": (4, 16), "mid_forward": 256, "mid_train": 128, "eager_regions": 4,
             "repeats": 5},
}


def _segmenter(step, loss="final", dtype="float32", **fields):
  config = bench_common.default_config()
  config.segmenter.step, config.segmenter.loss = step, loss
  config.segmenter.dtype = dtype
  return dataclasses.replace(segmenter_lib.Segmenter.from_config(config), **fields)


def _data(batch, shape, seed=0):
  rng = np.random.default_rng(seed)
  regions = jnp.asarray(rng.random((batch,) + shape), jnp.float32)
  labels = jnp.asarray(np.eye(3, dtype=np.float32)[rng.integers(0, 3, (batch,) + shape)])
  return regions, labels


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


# --- FLOPs -------------------------------------------------------------------------------------
def hand_gflop_per_region(segmenter) -> float:
  """Multiply-adds x 2 of the convolutions of all spiral steps of one region (by hand).

  Per step, each conv on the input-to-output path of `spiral.step_kernel_sizes` runs on its
  output size: VALID windows shrink by k - 1 per conv (`cropped`), SAME keeps H x W
  (`full_fov`). Hoisted: the image conv and the image half of the merge conv run once on the
  canvas instead of in every step. Bias adds and activations are not counted.
  """
  net = segmenter.net
  kernels = spiral.step_kernel_sizes(net.num_skip_modules)
  channels = [(1 + 3, net.branch_features * 2), (2 * net.branch_features, net.features)]
  for _ in range(net.num_skip_modules):
    channels += [(net.features, net.skip_features), (net.skip_features, net.features)]
  channels.append((net.features, 3))
  height, width = segmenter.window_shape
  valid = segmenter.step == "cropped"
  macs, canvas = 0, 0
  for layer, (k, (cin, cout)) in enumerate(zip(kernels, channels)):
    if valid:
      height, width = height - (k - 1), width - (k - 1)
    per_pixel = k * k * cin * cout
    if layer == 0:
      per_pixel = k * k * (1 * net.branch_features + 3 * net.branch_features)
    if segmenter.hoisted and layer in (0, 1):
      image_share = (k * k * net.branch_features if layer == 0
                     else k * k * net.branch_features * net.features)
      per_pixel -= image_share
      (top, bottom), (left, right) = segmenter.canvas_pads
      crop = 2 * (layer + 1)
      canvas += image_share * ((segmenter.region_shape[0] + top + bottom - crop)
                               * (segmenter.region_shape[1] + left + right - crop))
    macs += per_pixel * height * width
  return 2 * (macs * len(segmenter.offsets) + canvas) / 1e9


def xla_gflop_per_region(segmenter, params) -> float:
  """XLA's FLOP count for one region: the hoisted canvas part plus K x one scan iteration
  (cost analysis counts a scan body once, so the step is compiled on its own)."""
  height, width = segmenter.region_shape
  image_canvas = segmenter.to_canvas(jnp.zeros((1, height, width, 1)))
  mask_canvas = jnp.zeros(image_canvas.shape[:-1] + (3,))
  source_fn = lambda p, c: segmenter.image_source(p, c, segmenter.hoisted)
  canvas_flops = 0.0
  if segmenter.hoisted:
    canvas_flops = bench_common.cost_flops(jax.jit(source_fn).lower(params, image_canvas).compile())
  source = source_fn(params, image_canvas)
  offsets = jnp.asarray([segmenter.offsets[0]], jnp.int32)

  def step(p, src, mask):
    logits = segmenter._group_logits(p, src, mask, offsets, segmenter.hoisted)  # pylint: disable=protected-access
    return segmenter._write_group(mask, jax.nn.sigmoid(logits), offsets)  # pylint: disable=protected-access

  step_flops = bench_common.cost_flops(jax.jit(step).lower(params, source, mask_canvas).compile())
  return (canvas_flops + len(segmenter.offsets) * step_flops) / 1e9


# --- the section -------------------------------------------------------------------------------
def _record(batch, timing, compile_s, gflop_per_region, peak_gflops, memory=None):
  record = {"batch": batch, **timing, "compile_s": round(compile_s, 3),
            "regions_per_s": round(batch / timing["median_s"], 3)}
  if gflop_per_region:
    record["gflop_per_s"] = round(record["regions_per_s"] * gflop_per_region, 1)
    if peak_gflops:
      record["fraction_of_peak"] = round(record["gflop_per_s"] / peak_gflops, 3)
  if memory is not None:
    record["memory"] = memory
  return record


def run(mode: str = "quick", repeats: int = 0) -> dict[str, Any]:
  """The segmenter section: forward and training throughput of every variant."""
  plan = BATCHES[mode]
  repeats = repeats or plan["repeats"]
  config = bench_common.default_config()
  shape = (config.regions.height, config.regions.width)
  optimizer = optax.adam(config.segmenter.learning_rate)
  peak = bench_common.device_peak().get("float32_gflops")
  peak_bf16 = bench_common.device_peak().get("bfloat16_gflops", peak)
  out = {"settings": {"mode": mode, "repeats": repeats, "region": shape,
                      "config": "configs/default.py (thesis widths 32/64/32, K = 2, n = 8)"},
         "gflop_per_region": {}, "forward": {}, "train": {}}
  variants = {
      "full_fov": dict(step="full_fov"),
      "cropped": dict(step="cropped"),
      "cropped_unhoisted": dict(step="cropped", hoist_image=False),
      "cropped_grouped": dict(step="cropped", group_steps=True),
      "cropped_bf16": dict(step="cropped", dtype="bfloat16"),
  }
  segmenters = {name: _segmenter(**kw) for name, kw in variants.items()}
  params = segmenters["cropped"].init(jax.random.key(0))
  out["settings"]["num_steps"] = len(segmenters["cropped"].offsets)
  out["settings"]["scan_iterations"] = {name: len(s.schedule) for name, s in segmenters.items()}
  gflop = {}
  for name in ("full_fov", "cropped", "cropped_unhoisted"):
    gflop[name] = xla_gflop_per_region(segmenters[name], params)
    out["gflop_per_region"][name] = {
        "xla": round(gflop[name], 4), "hand": round(hand_gflop_per_region(segmenters[name]), 4)}
  gflop["cropped_grouped"] = gflop["cropped_bf16"] = gflop["cropped"]
  out["gflop_per_region"]["train_factor"] = (
      "training ~= (3 + remat) x forward FLOPs (backward ~2x forward; remat recomputes it)")
  train_factor = 3 + int(segmenters["cropped"].remat)
  # The eager loops (`step_fn`) and the training loss never hoist: their FLOPs are unhoisted.
  plain_gflop = {name: gflop["full_fov" if name == "full_fov" else "cropped_unhoisted"]
                 for name in gflop}

  # Eager loops (batch 1): the thesis' per-step dispatch.
  eager_regions = plan["eager_regions"]
  regions, labels = _data(max(eager_regions, 1), shape)
  for name in ("full_fov", "cropped"):
    segmenter = segmenters[name]
    step_fn = jax.jit(segmenter.step_fn)
    count = 1 if name == "full_fov" else eager_regions
    timing = bench_common.timed(
        lambda: eager_forward(segmenter, params, regions[:count], step_fn), repeats)
    out["forward"][f"eager_{name}"] = _record(count, timing, timing["first_s"] - timing["median_s"],
                                              plain_gflop[name], peak)
    eager = make_eager_train(segmenter, optimizer)
    opt_state = optimizer.init(params)
    timing = bench_common.timed(
        lambda: eager(params, opt_state, regions[:count], labels[:count]), repeats)
    out["train"][f"eager_{name}"] = _record(count, timing, timing["first_s"] - timing["median_s"],
                                            train_factor * plain_gflop[name], peak)

  def scan_forward(name, batch):
    segmenter = segmenters[name]
    regions, _ = _data(batch, shape)
    apply, compile_s = bench_common.compiled_with_time(segmenter.apply, params, regions)
    timing = bench_common.timed(lambda: apply(params, regions), repeats)
    out["forward"][f"scan_{name}_b{batch}"] = _record(
        batch, timing, compile_s, gflop[name], peak_bf16 if "bf16" in name else peak,
        bench_common.memory(apply))

  def scan_train(name, batch, loss="final"):
    segmenter = dataclasses.replace(segmenters[name], loss_type=loss)
    regions, labels = _data(batch, shape)
    opt_state = optimizer.init(params)
    train, compile_s = bench_common.compiled_with_time(
        make_scan_train(segmenter, optimizer), params, opt_state, regions, labels)
    timing = bench_common.timed(lambda: train(params, opt_state, regions, labels), repeats)
    suffix = "" if loss == "final" else f"_{loss}"
    out["train"][f"scan_{name}{suffix}_b{batch}"] = _record(
        batch, timing, compile_s, train_factor * plain_gflop[name],
        peak_bf16 if "bf16" in name else peak, bench_common.memory(train))

  for batch in plan["full_fov_forward"]:
    scan_forward("full_fov", batch)
  for batch in plan["forward"]:
    scan_forward("cropped", batch)
  for name in ("cropped_unhoisted", "cropped_grouped", "cropped_bf16"):
    scan_forward(name, plan["mid_forward"])
  for batch in plan["full_fov_train"]:
    scan_train("full_fov", batch)
  for batch in plan["train"]:
    scan_train("cropped", batch)
  for name in ("cropped_grouped", "cropped_bf16"):  # (training never hoists)
    scan_train(name, plan["mid_train"])
  scan_train("cropped", plan["mid_train"], loss="per_step")
  out["ratios"] = ratios(out)
  return out


def _best(table, prefix):
  rates = [r["regions_per_s"] for k, r in table.items() if k.startswith(prefix)
           and k[len(prefix):].lstrip("_b").isdigit()]
  return max(rates) if rates else None


def ratios(out: dict[str, Any]) -> dict[str, Any]:
  """The target quotients (best batch of each variant: scan vs eager, vs full FOV) and the
  reformulations'."""
  def q(a, b):
    return round(a / b, 2) if a and b else None
  result = {}
  for part in ("forward", "train"):
    table = out[part]
    cropped, full = _best(table, "scan_cropped"), _best(table, "scan_full_fov")
    result[f"{part}_cropped_over_full_fov"] = q(cropped, full)
    result[f"{part}_scan_over_eager_cropped"] = q(cropped, table["eager_cropped"]["regions_per_s"])
    result[f"{part}_scan_over_eager_full_fov"] = q(full, table["eager_full_fov"]["regions_per_s"])
    mid = [k for k in table if k.startswith("scan_cropped_grouped_b")][0].rsplit("_b", 1)[1]
    base = table[f"scan_cropped_b{mid}"]["regions_per_s"]
    for name in ("unhoisted", "grouped", "bf16"):
      if f"scan_cropped_{name}_b{mid}" in table:
        result[f"{part}_{name}_over_cropped_b{mid}"] = q(
            table[f"scan_cropped_{name}_b{mid}"]["regions_per_s"], base)
  return result


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--mode", choices=sorted(BATCHES), default="quick")
  parser.add_argument("--repeats", type=int, default=0)
  args = parser.parse_args()
  result = bench_common.header(args.mode, contended=False)
  result["segmenter"] = run(args.mode, args.repeats)
  print(json.dumps(result, indent=2))


if __name__ == "__main__":
  main()
