"""Training: pure steps, per-stage data, the workdir guard and logs, the loop.

Three stages train one after another (`config.stages`): "scorer" (MSE on region score labels),
"segmenter" (`Segmenter.loss` on the regions whose score passes the threshold, against their
3-channel central labels) and "unet" (BCE on the foreground of whole images or random crops).
Each stage keeps its own checkpoints (`spiralnet_jax.checkpoints`) and resumes from the newest
one that restores and matches its checksums. Batches are a pure function of (seed, stage,
epoch, batch index), so a run stopped after any step -- cleanly or by SIGKILL -- and restarted
ends with exactly the parameters of an uninterrupted run. SIGTERM (a scheduler's or `timeout`'s
polite kill) stops a single-process run after the current step with a checkpoint of that step,
so no work is lost. Training is data-parallel over a `jax.sharding.Mesh` of all devices (one
"data" axis): batches are split along it, parameters and optimizer state are replicated; the
same code runs on one device, several local devices and several hosts (after
`jax.distributed.initialize()`).

Modules: `steps` (losses, train and eval steps), `input_pipeline` (per-stage data and batch
order), `sharding` (the data mesh), `workdir` (the config guard, metrics logs), `errors` (the
failures train.py reports in one line, the SIGTERM stop), `loop` (the stage loop and
`train_and_evaluate`). Inference never imports this package: models come from
`spiralnet_jax.stages`, checkpoints from `spiralnet_jax.checkpoints`.
"""
