"""The one source of defaults: the SpiralNet method exactly as docs/design.md pins it down.

Every config file in configs/ derives from `get_config()` here and changes only what differs
(configs/default.py re-exports it). It lives in the package so that a config.json written by an
older version can be upgraded by merging it over these defaults (`upgrade_config`): a field the
file lacks then takes the value that reproduces what that version did.
This config is not meant to be trained directly; see configs/spiral.py, unet.py, demo.py.
"""

from typing import Any

import ml_collections


def _optimizer(section: ml_collections.ConfigDict, learning_rate: float, epochs: int,
               batch_size: int) -> None:
  """A stage's optimiser fields: Adam at `learning_rate`, constant (the thesis) unless
  `lr_schedule` is "cosine" (linear warm-up over `warmup_epochs`, then cosine decay to 0)."""
  section.learning_rate = learning_rate
  section.epochs = epochs
  section.batch_size = batch_size
  section.lr_schedule = "constant"
  section.warmup_epochs = 0.0


def _data(section: ml_collections.ConfigDict) -> None:
  """Where the images come from and how they are normalised."""
  # "bbbc039": the full data set from data_dir (else $SPIRALNET_BBBC039_DIR);
  # "sample": the BBBC039 fields bundled with the package; "tfds": the TFDS builder;
  # "synthetic": generated nuclei (tests, tiny configs).
  section.source = "bbbc039"
  section.data_dir = ""
  section.tfds_data_dir = ""
  section.train_split = "training"
  section.validation_split = "validation"  # What training validates on (eval.splits: eval.py).
  # Synthetic data (source == "synthetic").
  section.synthetic_num_train = 8
  section.synthetic_num_eval = 4
  section.synthetic_shape = (128, 160)
  # Chance that a nucleus is placed touching an earlier one (the rest lie apart). 0.2 matches
  # BBBC039's crowding (spiralnet_jax.data.synthetic.DEFAULT_TOUCH_PROBABILITY).
  section.synthetic_touch_probability = 0.2
  # Limit the number of images per split (0 = all); used by demo/CPU configs.
  section.max_images = 0
  # Per-image intensity normalisation: the (low, high) percentiles are mapped to 0 and 1 and
  # values outside are clipped. (0, 100) is the thesis' min-max; (1, 99.8) ignores a few hot or
  # saturated pixels, which under min-max squash every real intensity towards 0.
  section.normalize_percentiles = (0.0, 100.0)
  # The median equivalent diameter (px) of the training labels' nuclei (tools/nucleus_diameter.py;
  # BBBC039's training split: 28.25 over 12,001 nuclei). `--diameter` rescales an image so that
  # its nuclei match it; 0 = not recorded (then --diameter is refused).
  section.nucleus_diameter = 28.25


def _regions(section: ml_collections.ConfigDict) -> None:
  """Stage 1's region geometry (thesis: 52×58 every 16 px)."""
  section.update(height=52, width=58)  # A region's shape, then its grid.
  section.stride = 16
  section.pad = 28
  section.score_window = 5  # c in thesis formula (2).


def _scorer(section: ml_collections.ConfigDict) -> None:
  """Stage 1's MLP scorer."""
  section.hidden = 128
  section.threshold = 0.4
  _optimizer(section, learning_rate=1e-4, epochs=100, batch_size=256)


def _segmenter(section: ml_collections.ConfigDict) -> None:
  """Stage 2's recursive segmenter and its training."""
  section.update_size = 8  # n: the n x n block written per spiral step.
  section.branch_features = 32  # image and mask branches.
  section.features = 64  # concat conv and skip-module output.
  section.skip_features = 32  # first conv of a skip module.
  section.num_skip_modules = 2  # K.
  section.step = "cropped"  # "cropped" (exact receptive field) or "full_fov".
  # Run spiral steps that cannot interact in one scan iteration (exact; 49 instead of 56
  # sequential steps at the default geometry; helps only a latency-bound GPU, not the CPU).
  section.group_steps = False
  section.loss = "final"  # "final" (BCE on final mask) or "per_step" (FFN-style).
  section.remat = True  # jax.checkpoint each spiral step in the "final" loss.
  # Use the custom-VJP convolution whose backward pass avoids XLA:CPU's slow path inside
  # scan ("auto": on CPU only).
  section.cpu_conv_vjp = "auto"
  section.train_regions = "label"  # select training regions by "label" or "scorer".
  _optimizer(section, learning_rate=1e-4, epochs=100, batch_size=32)
  # > 0: the initial mask state marks the region's centre with a disk of this radius in the
  # central channel (segmenter.Segmenter.seed_radius); 0 = zeros, as in the thesis.
  section.seed_radius = 0
  # Random vertical and horizontal flips of training regions (labels flip with the image).
  section.flip = False
  # Each training region whose central nucleus touches another nucleus appears this many times
  # per epoch (1 = once, like every other region).
  section.touching_repeat = 1
  # > 0: train each epoch on a fresh random subset of this many selected regions.
  section.max_train_regions = 0
  # > 0: the loss weighs pixels within `boundary_radius` px of both the central nucleus and
  # another one (where touching nuclei meet) 1 + boundary_weight times (U-Net's weight map,
  # Ronneberger et al. 2015, in the segmenter's central/other terms); 0 = uniform (the thesis).
  section.update(boundary_weight=0.0, boundary_radius=3)
  section.dtype = "float32"


def _continuation(section: ml_collections.ConfigDict) -> None:
  """Following objects out of their regions."""
  section.enabled = True
  section.max_moves = 4
  section.threshold = 0.5  # central object = channel 0 > threshold.
  # Keep only the part of that mask 4-connected to the region's centre window (or, for a moved
  # region, to its parent's object): disconnected blobs belong to other nuclei.
  section.connected_only = True


def _assembly(section: ml_collections.ConfigDict) -> None:
  """Merging per-region objects into instances."""

  section.threshold = 0.5
  section.merge_iou = 0.5
  section.merge_containment = 0.8
  section.min_size = 15
  # Withdraw a candidate that contains two or more candidates that are not the same nucleus
  # (spiralnet_jax.assembly): it is a merger of them. False = the thesis' merge rule alone.
  section.split_containers = False
  # How much of a candidate must lie inside another for the rule to count it as contained.
  section.split_containment = 0.8
  # Split an instance where a dimmer valley than its parts' own intensity crosses it: two
  # touching nuclei the segmenter took for one (spiralnet_jax.valleys). False = the thesis.
  section.split_valleys = False
  # Parts are the watershed of the instance's distance transform from maxima this deep / apart.
  section.update(valley_min_depth=2.0, valley_min_distance=4)
  # Parts split when their valley < valley_ratio x the lower part's level (this percentile).
  section.update(valley_ratio=0.86, valley_level_percentile=75.0)


def _predict(section: ml_collections.ConfigDict) -> None:
  """Prediction: batching, seeding, streaming."""
  # Regions per jitted segmenter call (bounds memory). Small on CPU: XLA:CPU's convolutions slow
  # down per region as the batch outgrows the cache (one BBBC039 field, demo model, 2-core CPU:
  # 2.3 s at 8, 3.1 s at 16, 6.7 s at 256). configs/spiral.py raises it for a GPU.
  section.region_batch_size = 8
  # Segmenter batches (and score-map stripes) in flight at once, each called from its own thread;
  # 0: on the CPU one per core this process may use, elsewhere 1. XLA:CPU keeps about one core
  # busy per spiral batch (docs/design.md); fewer regions than threads × region_batch_size are
  # split into smaller batches so that every thread has one (continuation.run_batched).
  section.threads = 0
  # What XLA:CPU may hand to YNNPACK when it compiles the spiral (spiralnet_jax.xla_cpu):
  # "eltwise", only elementwise fusions, which leaves the convolutions to XLA's own kernels
  # (the cropped step 1.3-1.5x faster, same outputs); "default", XLA's choice (faster for the
  # full_fov step); "auto", the faster of the two for segmenter.step. No effect off the CPU.
  section.cpu_ynn_fusion = "auto"
  # Under continuation.connected_only, a fresh region's spiral stops after any of these rings of
  # blocks (1 .. the second last) once its object lies inside it (spiralnet_jax.early_exit:
  # exact). () runs every spiral to the end: on the 2-core CPU, the exit's bookkeeping costs
  # more than the ≤ 7% of steps it saves (benchmarks/README.md).
  section.exit_rings = ()
  section.shape_bucket = 128  # images are padded up to multiples of this for scoring.
  # Region stride at prediction (training uses regions.stride). 16 is the thesis grid; 8 also
  # centres a region on small nuclei that the 16-px grid misses, for 4× the regions.
  section.stride = 16
  # Where regions are centred (spiralnet_jax.seeding): "grid", every region of the stride-
  # `predict.stride` grid whose score passes (the thesis); "peaks", one region per maximum of
  # the distance transform of the passing cells of the score map at stride `peak_stride`, at
  # least `peak_min_distance` cells apart (about one per nucleus).
  section.seeds = "grid"
  section.peak_stride = 4
  section.peak_min_distance = 1
  # A second look at candidates with two or more lobes (maxima of their distance transform at
  # least `lobe_min_depth` px deep, `lobe_min_distance` px apart, at most `max_lobes`): a region
  # centred on each lobe, so that assembly.split_containers can split a merger of two nuclei.
  section.update(lobes=False, lobe_min_distance=6, lobe_min_depth=3.0, max_lobes=4)
  # Only candidates of solidity (area / convex hull area) at most this get lobe regions: two
  # touching nuclei have a neck, one elongated nucleus has several ridge maxima but no neck
  # (1.0: every candidate with two lobes, as before).
  section.lobe_max_solidity = 1.0
  # Whether a lobe region's object is followed over region edges (continuation) like a seed's.
  section.follow_lobes = True
  # Region-grid rows scored at once; a streamed chunk of regions also spans at most this many
  # rows (bounds the image window each chunk holds).
  section.stripe_rows = 64
  # Selected regions segmented per streamed chunk: with their continuation pieces, the working
  # set of prediction (assembly keeps only their thresholded claims).
  section.chunk_regions = 1024
  # Chunks segmented at once (each on its own thread): one's host work overlaps another's spirals.
  # Memory: this many chunks' working sets.
  section.chunks_in_flight = 2
  # U-Net prediction tile (pixels, rounded up to a multiple of 2^depth); each tile also sees
  # predict.unet_margin(depth) = 10·2^depth pixels of context per side.
  section.unet_tile = 512


def _unet(section: ml_collections.ConfigDict) -> None:
  """The U-Net baseline."""
  section.base_features = 64  # 64 ... 1024 over 4 levels.
  section.depth = 4
  _optimizer(section, learning_rate=1e-5, epochs=100, batch_size=4)
  section.crop_size = 0  # 0 = whole images; else random square crops of this size.
  section.threshold = 0.5


def _train(section: ml_collections.ConfigDict) -> None:
  """The training loop: logging, checkpoints, resuming."""
  section.log_every_steps = 50
  section.checkpoint_every_epochs = 1
  # > 0: also checkpoint every this many steps (mid-epoch), so a crash loses at most that many.
  section.checkpoint_every_steps = 0
  # Checkpoints kept per stage (older ones are deleted); >= 2 lets a damaged newest one fall
  # back to the previous.
  section.max_to_keep = 3
  section.eval_every_epochs = 10
  section.max_steps = 0  # > 0 stops each stage after this many steps (smoke tests).
  section.max_eval_regions = 0  # > 0: validation loss on a fixed random region subset.
  # > 0: clip gradients to this global norm before Adam (0 = off).
  section.grad_clip_norm = 0.0
  # Resume a workdir whose config.json differs from this config in fields that change the run
  # (training.workdir.RESUMABLE_FIELDS lists those that do not); otherwise that is refused.
  section.allow_config_change = False
  # When checkpoints of a stage exist but none restores: train it from scratch instead of
  # stopping with an error.
  section.allow_fresh_start = False
  # An exported weights directory (spiralnet_jax.pretrained): each stage trained here starts
  # from its parameters there instead of a fresh initialisation (fine-tuning; a resumed run
  # continues from its own checkpoints). "" = fresh initialisation.
  section.init_weights = ""


def _eval(section: ml_collections.ConfigDict) -> None:
  """What eval.py evaluates."""
  section.splits = ("validation", "test")
  section.num_figures = 2
  # Baselines evaluated beside the trained models: "otsu_watershed" (spiralnet_jax.classical).
  section.baselines = ()


def _classical(section: ml_collections.ConfigDict) -> None:
  """The classical baseline (Otsu + watershed)."""
  section.sigma = 1.0
  section.min_distance = 7
  section.min_size = 15


# The config's sections, in order, each with the function that fills in its defaults.
_SECTIONS = (("data", _data), ("regions", _regions), ("scorer", _scorer),
             ("segmenter", _segmenter), ("continuation", _continuation), ("assembly", _assembly),
             ("predict", _predict), ("unet", _unet), ("train", _train), ("eval", _eval),
             ("classical", _classical))


def get_config() -> ml_collections.ConfigDict:
  """Returns the default configuration (thesis numbers, full BBBC039)."""
  config = ml_collections.ConfigDict()
  config.seed = 0
  # Which stages train.py trains, in order.
  config.stages = ("scorer", "segmenter")
  for name, fill in _SECTIONS:
    config[name] = ml_collections.ConfigDict()
    fill(config[name])
  return config


def check_saved_config(saved: Any) -> None:
  """ValueError unless `saved` (a parsed config.json) can be a config train.py wrote."""
  if not isinstance(saved, dict):
    raise ValueError(f"a config must be a JSON object, got {type(saved).__name__}")
  missing = [k for k in ("regions", "scorer", "segmenter") if not isinstance(saved.get(k), dict)]
  if missing:
    # Not written by train.py (every version wrote these): defaults would silently stand in.
    raise ValueError(f"config has no {', '.join(missing)} section; not written by train.py")


def upgrade_config(saved: dict) -> ml_collections.ConfigDict:
  """A saved config (the dict of a config.json) merged over the current defaults.

  Fields the saved config lacks (it was written before they existed) take their defaults,
  which reproduce the behaviour of the version that wrote it; every saved value is kept.
  """
  check_saved_config(saved)
  config = get_config().to_dict()

  def merge(base: dict, new: dict) -> dict:
    for key, value in new.items():
      if isinstance(value, dict) and isinstance(base.get(key), dict):
        merge(base[key], value)
      else:
        base[key] = value
    return base

  return ml_collections.ConfigDict(merge(config, saved))
