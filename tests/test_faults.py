"""Training that survives faults: SIGKILL and exact resume, damaged checkpoints, non-finite
losses and gradients, gradient clipping, resuming under a changed config.

All runs train the scorer of configs/test.py (40 regions, batch 8: 5 steps per epoch).
"""

import dataclasses
import json
import logging
import os
import pathlib
import signal
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from configs import test as test_config
from spiralnet_jax import checkpoints
from spiralnet_jax import data as data_lib
from spiralnet_jax import train_state
from spiralnet_jax.training import errors as training_errors
from spiralnet_jax.training import input_pipeline
from spiralnet_jax.training import loop
from spiralnet_jax.training import workdir as workdir_lib

REPO = pathlib.Path(__file__).resolve().parents[1]
STEPS_PER_EPOCH = 5


def _config(**train):
  config = test_config.get_config()
  config.stages = ("scorer",)
  config.scorer.epochs = 4
  config.train.max_steps = 0
  for key, value in train.items():
    config.train[key] = value
  return config


def _steps(workdir):
  path = checkpoints.checkpoint_dir(workdir, "scorer")
  return sorted(int(p.name) for p in path.iterdir() if p.name.isdigit())


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """The parameters after step k (1 <= k <= 13) of one uninterrupted run."""
  workdir = tmp_path_factory.mktemp("reference")
  config = _config(max_steps=13, checkpoint_every_steps=1, max_to_keep=13)
  loop.train_and_evaluate(config, workdir)
  abstract = train_state.abstract_state("scorer", config)

  def params_at(step):
    with checkpoints.checkpoint_manager(workdir, "scorer", config) as mngr:
      return mngr.restore(step, args=ocp.args.StandardRestore(abstract)).params

  params_at.workdir = workdir  # Its metrics.jsonl is the uninterrupted run's log.
  return params_at


def _assert_params_equal(workdir, expected):
  got = checkpoints.load_params(workdir, "scorer", _config())
  assert jax.tree.structure(got) == jax.tree.structure(expected)
  for x, y in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _records(workdir):
  lines = (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()
  return [json.loads(line) for line in lines]


# --- SIGKILL and exact resume --------------------------------------------------------------------

# A training process that sends itself `signal` when it fetches the batch of step `kill_at`.
# SIGKILL: right after the save of step kill_at - 1 started (asynchronously), in the middle of
# the second epoch. SIGTERM (as `timeout` or a cluster scheduler sends): the run finishes that
# step, saves it, and exits with 128 + 15.
_SIGNALLED_RUN = textwrap.dedent("""
    import os, signal, sys
    from configs import test as test_config
    from spiralnet_jax.training import errors as training_errors
    from spiralnet_jax.training import input_pipeline
    from spiralnet_jax.training import loop
    config = test_config.get_config()
    config.stages = ("scorer",)
    config.scorer.epochs = 4
    config.train.max_steps = {end}
    config.train.checkpoint_every_steps = {every}
    kill_at, calls = {kill_at}, []
    real_batch = input_pipeline.ScorerData.batch
    def batch(self, items, rng, rows=slice(None)):
      calls.append(None)
      if len(calls) == kill_at:
        os.kill(os.getpid(), signal.{signal})
      return real_batch(self, items, rng, rows)
    input_pipeline.ScorerData.batch = batch
    try:
      loop.train_and_evaluate(config, sys.argv[1])
    except training_errors.Stopped as e:
      print(e, file=sys.stderr)
      sys.exit(128 + e.signum)
""")


def _signalled_run(workdir, signal_name, end, kill_at, every):
  script = _SIGNALLED_RUN.format(end=end, kill_at=kill_at, every=every, signal=signal_name)
  return subprocess.run([sys.executable, "-c", script, str(workdir)], cwd=REPO,
                        capture_output=True, text=True, timeout=300, check=False)


def test_sigkill_mid_epoch_then_restart_equals_uninterrupted_run(tmp_path, reference):
  end, kill_at = 13, 9
  killed = tmp_path / "killed"
  proc = _signalled_run(killed, "SIGKILL", end, kill_at, every=2)
  assert proc.returncode == -signal.SIGKILL, proc.stderr
  # Saves at steps 2, 4, 5 (epoch end), 6 and 8; the save of step 8 may not have completed.
  # Either way the newest complete checkpoint is mid-epoch (epoch 1, batch 1 or 3).
  assert _steps(killed)[-1] in (6, 8)
  assert max(r["step"] for r in _records(killed)) == kill_at - 1

  config = _config(max_steps=end, checkpoint_every_steps=2)
  loop.train_and_evaluate(config, killed)
  _assert_params_equal(killed, reference(end))
  assert _steps(killed)[-1] == end
  # The log reads as the uninterrupted run's: replayed steps once, same values (bitwise: same
  # device count); only the measured speed differs.
  untimed = lambda records: [{k: v for k, v in r.items() if k != "regions_per_s"}
                             for r in records]
  assert untimed(_records(killed)) == untimed(_records(reference.workdir))


# SIGKILL from a timer thread `delay` s after the batch of step `kill_at` (counted from this
# run's start) is fetched: mid-step, mid-save or between them, wherever the delay falls.
_TIMED_KILL_RUN = textwrap.dedent("""
    import os, signal, sys, threading
    from configs import test as test_config
    from spiralnet_jax.training import input_pipeline
    from spiralnet_jax.training import loop
    config = test_config.get_config()
    config.stages = ("scorer",)
    config.scorer.epochs = 4
    config.train.max_steps = {end}
    config.train.checkpoint_every_steps = 1
    kill_at, delay, calls = {kill_at}, {delay}, []
    real_batch = input_pipeline.ScorerData.batch
    def batch(self, items, rng, rows=slice(None)):
      calls.append(None)
      if len(calls) == kill_at:
        threading.Timer(delay, os.kill, (os.getpid(), signal.SIGKILL)).start()
      return real_batch(self, items, rng, rows)
    input_pipeline.ScorerData.batch = batch
    loop.train_and_evaluate(config, sys.argv[1])
""")


def test_several_sigkills_at_random_moments_then_resume_equals_uninterrupted_run(
    tmp_path, reference):
  end, rng = 13, __import__("random").Random(1234)
  for _ in range(3):
    script = _TIMED_KILL_RUN.format(end=end, kill_at=rng.randint(3, 5),
                                    delay=round(rng.uniform(0.0, 0.1), 3))
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode in (-signal.SIGKILL, 0), proc.stderr[-2000:]
  loop.train_and_evaluate(_config(max_steps=end, checkpoint_every_steps=1), tmp_path)
  _assert_params_equal(tmp_path, reference(end))
  untimed = lambda records: [{k: v for k, v in r.items() if k != "regions_per_s"}
                             for r in records]
  assert untimed(_records(tmp_path)) == untimed(_records(reference.workdir))


def test_sigterm_saves_the_step_it_stopped_at_then_restart_equals_uninterrupted_run(
    tmp_path, reference):
  end, kill_at = 13, 7
  proc = _signalled_run(tmp_path, "SIGTERM", end, kill_at, every=0)
  assert proc.returncode == 128 + signal.SIGTERM, proc.stderr
  where = checkpoints.checkpoint_dir(tmp_path, "scorer")
  assert proc.stderr.strip().splitlines()[-1] == (
      f"scorer: stopped by signal {int(signal.SIGTERM)} at step {kill_at} of {end}; saved in "
      f"{where}; run the same command to resume")
  # Checkpoints only at epoch ends (step 5) and at the stop: the step in flight was kept.
  assert _steps(tmp_path) == [5, kill_at]
  _assert_params_equal(tmp_path, reference(kill_at))

  loop.train_and_evaluate(_config(max_steps=end), tmp_path)
  _assert_params_equal(tmp_path, reference(end))


def test_stop_request_restores_the_previous_handler():
  before = signal.getsignal(signal.SIGTERM)
  with training_errors.StopRequest() as stop:
    assert signal.getsignal(signal.SIGTERM) != before
    os.kill(os.getpid(), signal.SIGTERM)
    assert stop.signum == signal.SIGTERM
  assert signal.getsignal(signal.SIGTERM) == before


def test_unfinished_save_is_not_a_step(tmp_path):
  # Orbax writes a save to `<step>.orbax-checkpoint-tmp-*` and renames it when complete; a kill
  # mid-save leaves such a directory behind, which must neither count nor be restored.
  config = _config(max_steps=2)
  loop.train_and_evaluate(config, tmp_path)
  where = checkpoints.checkpoint_dir(tmp_path, "scorer")
  unfinished = where / "4.orbax-checkpoint-tmp-1234567"
  (unfinished / "default").mkdir(parents=True)
  (unfinished / "default" / "manifest.ocdbt").write_bytes(b"\0" * 10)
  with checkpoints.checkpoint_manager(tmp_path, "scorer", config) as mngr:
    assert mngr.all_steps() == [2]
  assert _steps(tmp_path) == [2]
  checkpoints.load_params(tmp_path, "scorer", config)


def test_rerunning_a_finished_stage_logs_nothing_twice(tmp_path):
  config = _config(max_steps=7, eval_every_epochs=1)
  loop.train_and_evaluate(config, tmp_path)
  first = _records(tmp_path)
  assert [r["step"] for r in first if "val_loss" in r] == [5, 7]  # Epoch end, stage end.
  loop.train_and_evaluate(config, tmp_path)
  assert _records(tmp_path) == first


def test_metrics_log_rewind_keeps_other_stages(tmp_path):
  log = workdir_lib.MetricsLog(tmp_path)
  for stage in ("scorer", "segmenter"):
    for step in (1, 2, 3):
      log.write(stage, step, loss=step / 10)
    log.write(stage, 3, val_loss=0.5)
  log.rewind("scorer", 2, final_validation=False)
  log.write("scorer", 3, loss=0.3)
  log.rewind("segmenter", 3, final_validation=True)
  log.close()
  steps = [(r["stage"], r["step"], "val_loss" in r) for r in _records(tmp_path)]
  assert steps == [("scorer", 1, False), ("scorer", 2, False),
                   ("segmenter", 1, False), ("segmenter", 2, False), ("segmenter", 3, False),
                   ("scorer", 3, False)]


def test_metrics_log_cuts_a_partial_last_line(tmp_path):
  (tmp_path / "metrics.jsonl").write_text('{"stage": "scorer", "step": 1, "loss": 0.5}\n{"sta')
  log = workdir_lib.MetricsLog(tmp_path)
  log.write("scorer", 2, loss=0.25)
  log.close()
  assert _records(tmp_path) == [{"stage": "scorer", "step": 1, "loss": 0.5},
                                {"stage": "scorer", "step": 2, "loss": 0.25}]


# --- damaged checkpoints -------------------------------------------------------------------------


def _truncate_every_file(step_dir):
  for path in step_dir.rglob("*"):
    if path.is_file():
      os.truncate(path, path.stat().st_size // 2)


def _flip_bytes_of_largest_array_file(step_dir):
  # The scorer's hidden kernel (52*58*8 float32) is the largest chunk file; its bytes carry no
  # checksum of Orbax's own, so only `checkpoints`' per-leaf CRC-32 can notice.
  path = max((p for p in step_dir.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
  data = bytearray(path.read_bytes())
  middle = len(data) // 2
  data[middle:middle + 4] = bytes(b ^ 0xFF for b in data[middle:middle + 4])
  path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [_truncate_every_file, _flip_bytes_of_largest_array_file])
def test_damaged_newest_checkpoint_falls_back_to_previous_and_says_so(damage, tmp_path, caplog,
                                                                     reference):
  resumed = tmp_path
  loop.train_and_evaluate(_config(max_steps=4, checkpoint_every_steps=2), resumed)
  assert _steps(resumed) == [2, 4]
  where = checkpoints.checkpoint_dir(resumed, "scorer")
  damage(where / "4")

  caplog.set_level(logging.WARNING)
  loop.train_and_evaluate(_config(max_steps=7, checkpoint_every_steps=2), resumed)
  warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
  assert any(m.startswith("scorer: checkpoint step 4 cannot be restored (") for m in warnings)
  assert "scorer: fell back to checkpoint step 2 (newer unrestorable: 4)" in warnings
  # The damaged step is set aside, not deleted, and training went on from step 2.
  assert (where.parent / "scorer.corrupt" / "4").is_dir()
  # The log was rewound to step 2: steps 3 and 4 of the first run are replaced by the replay.
  assert [r["step"] for r in _records(resumed) if "loss" in r] == [1, 2, 3, 4, 5, 6, 7]
  _assert_params_equal(resumed, reference(7))


def test_no_restorable_checkpoint_stops_unless_fresh_start_allowed(tmp_path, caplog, reference):
  loop.train_and_evaluate(_config(max_steps=2), tmp_path)
  _truncate_every_file(checkpoints.checkpoint_dir(tmp_path, "scorer") / "2")
  with pytest.raises(training_errors.CheckpointError,
                     match=r"^scorer: no checkpoint under .* restores \(unrestorable steps: 2\); pass "
                     r"--config.train.allow_fresh_start=True"):
    loop.train_and_evaluate(_config(max_steps=2), tmp_path)
  assert _steps(tmp_path) == [2]  # Refusing leaves the workdir as it was.
  with pytest.raises(training_errors.CheckpointError,
                     match=r"^scorer: no checkpoint under .* restores \(unrestorable steps: 2\)$"):
    checkpoints.load_params(tmp_path, "scorer", _config())

  caplog.set_level(logging.WARNING)
  loop.train_and_evaluate(_config(max_steps=2, allow_fresh_start=True), tmp_path)
  assert "scorer: no checkpoint restores; training from scratch" in caplog.messages
  _assert_params_equal(tmp_path, reference(2))


# --- numerical safety ----------------------------------------------------------------------------


def test_injected_nan_stops_naming_stage_and_step_and_keeps_last_good_checkpoint(
    tmp_path, monkeypatch, reference):
  real_batch = input_pipeline.ScorerData.batch
  calls = []

  def batch_with_nan_labels_at_step_4(self, items, rng, rows=slice(None)):
    batch = real_batch(self, items, rng, rows)
    calls.append(None)
    if len(calls) == 4:
      batch["scores"] = np.full_like(batch["scores"], np.nan)
    return batch

  monkeypatch.setattr(input_pipeline.ScorerData, "batch", batch_with_nan_labels_at_step_4)
  where = checkpoints.checkpoint_dir(tmp_path, "scorer")
  with pytest.raises(FloatingPointError) as error:
    loop.train_and_evaluate(_config(max_steps=6, checkpoint_every_steps=2), tmp_path)
  assert str(error.value) == (
      "scorer: non-finite loss at step 4 (loss nan, gradient norm nan); stopped without saving "
      f"this step, last good checkpoint: step 2 in {where}")
  assert isinstance(error.value, training_errors.TrainingError)
  monkeypatch.undo()

  # Step 3 was good but is not a checkpoint; step 2 is, and it is the uninterrupted step 2.
  assert _steps(tmp_path) == [2]
  _assert_params_equal(tmp_path, reference(2))


def test_non_finite_gradient_with_finite_loss_stops(tmp_path):
  config = _config(max_steps=3)
  examples = data_lib.load_examples(config.data, "training")
  stage = loop.build_stage("scorer", config, examples, examples[:1])
  scorer_loss = stage.loss_fn

  def loss_with_nan_gradient(params, batch):
    # 0 * sqrt(0 * x) is 0, but its gradient is 0 * inf = nan.
    leaf = jax.tree.leaves(params)[0]
    return scorer_loss(params, batch) + 0.0 * jnp.sqrt(0.0 * jnp.sum(leaf))

  stage = dataclasses.replace(stage, loss_fn=loss_with_nan_gradient)
  log = workdir_lib.MetricsLog(tmp_path)
  with pytest.raises(training_errors.NonFiniteError,
                     match=r"^scorer: non-finite gradient norm at step 1 \(loss [0-9.]+, "
                     r"gradient norm nan\); stopped without saving this step, no checkpoint "
                     r"was saved before it$"):
    loop.train_stage(stage, config, tmp_path, log)
  log.close()
  assert _steps(tmp_path) == []


def test_grad_clipping_clips_the_global_norm_before_adam():
  params = {"a": jnp.zeros(2), "b": jnp.zeros((1, 1))}
  big = {"a": jnp.array([3.0, 0.0]), "b": jnp.array([[4.0]])}  # Global norm 5.
  small = jax.tree.map(lambda g: g * 0.04, big)  # Global norm 0.2: under the limit.

  def last_update(tx, grads):
    state = tx.init(params)
    for g in grads:
      update, state = tx.update(g, state, params)
    return update

  adam = optax.adam(0.1)
  clipped = last_update(train_state.make_optimizer(0.1, grad_clip_norm=0.5), [big, small])
  # Adam on big scaled to norm 0.5, then on small unchanged.
  expected = last_update(adam, [jax.tree.map(lambda g: g * 0.1, big), small])
  jax.tree.map(np.testing.assert_array_equal, clipped, expected)
  unclipped = last_update(adam, [big, small])
  assert not np.allclose(unclipped["a"], expected["a"], rtol=1e-3)
  # Off (0): plain Adam, so checkpoints keep Adam's state layout.
  plain = train_state.make_optimizer(0.1, grad_clip_norm=0.0)
  jax.tree.map(np.testing.assert_array_equal, last_update(plain, [big, small]), unclipped)
  assert jax.tree.structure(plain.init(params)) == jax.tree.structure(adam.init(params))


def test_clipped_training_checkpoints_restore(tmp_path):
  config = _config(max_steps=1, grad_clip_norm=1.0)
  loop.train_and_evaluate(config, tmp_path)
  params = checkpoints.load_params(tmp_path, "scorer", config)
  assert (jax.tree.structure(params)
          == jax.tree.structure(train_state.abstract_state("scorer", config).params))


# --- resuming under a changed config -------------------------------------------------------------


def test_config_changes_lists_fields_that_change_the_run():
  old = {"seed": 0, "stages": ["scorer"], "scorer": {"learning_rate": 1e-4, "epochs": 4},
         "train": {"max_steps": 2, "grad_clip_norm": 0.0}, "eval": {"splits": ["test"]}}
  new = {"seed": 0, "stages": ["scorer", "segmenter"],
         "scorer": {"learning_rate": 1e-3, "epochs": 9},
         "train": {"max_steps": 0, "grad_clip_norm": 1.0, "new_field": 1},
         "eval": {"splits": ["validation"]}}
  assert workdir_lib.config_changes(old, new) == [
      "scorer.learning_rate: 0.0001 -> 0.001", "train.grad_clip_norm: 0.0 -> 1.0",
      "train.new_field: (absent) -> 1"]
  assert workdir_lib.config_changes(old, old) == []


def test_resuming_under_a_changed_config_is_refused_unless_allowed(tmp_path):
  loop.train_and_evaluate(_config(max_steps=1), tmp_path)
  changed = _config(max_steps=2)
  changed.scorer.learning_rate = 1e-3
  with pytest.raises(training_errors.ConfigMismatchError) as error:
    loop.train_and_evaluate(changed, tmp_path)
  message = str(error.value)
  assert "\n" not in message
  assert "(scorer.learning_rate: 0.0001 -> 0.001)" in message
  assert "--config.train.allow_config_change=True" in message
  assert _steps(tmp_path) == [1]
  assert checkpoints.load_config(tmp_path).scorer.learning_rate == 1e-4

  # Fields that keep resuming exact may change: here where to stop and how often to log.
  loop.train_and_evaluate(_config(max_steps=2, log_every_steps=5), tmp_path)
  assert _steps(tmp_path) == [1, 2]
  changed.train.allow_config_change = True
  loop.train_and_evaluate(changed, tmp_path)
  assert _steps(tmp_path) == [1, 2]  # Already at max_steps: nothing to train, nothing refused.
  assert checkpoints.load_config(tmp_path).scorer.learning_rate == 1e-3


def test_train_py_reports_a_refused_resume_in_one_line(tmp_path):
  config = _config(max_steps=1)
  config.seed = 7
  (tmp_path / "config.json").write_text(config.to_json_best_effort())
  proc = subprocess.run(
      [sys.executable, str(REPO / "train.py"), "--config=configs/test.py",
       f"--workdir={tmp_path}", "--config.stages=('scorer',)", "--config.scorer.epochs=4",
       "--config.train.max_steps=1"],
      cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 1
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1, proc.stderr
  assert lines[0].startswith(f"train.py: error: {tmp_path} was written by a different config "
                             "(seed: 7 -> 0)")
