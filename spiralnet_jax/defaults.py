"""The one source of defaults: the SpiralNet method exactly as docs/design.md pins it down.

Every config file in configs/ derives from `get_config()` here and changes only what differs
(configs/default.py re-exports it). It lives in the package so that a config.json written by an
older version can be upgraded by merging it over these defaults (`upgrade_config`): a field the
file lacks then takes the value that reproduces what that version did.
This config is not meant to be trained directly; see configs/spiral.py, unet.py, demo.py.
"""

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


def get_config() -> ml_collections.ConfigDict:
  """Returns the default configuration (thesis numbers, full BBBC039)."""
  config = ml_collections.ConfigDict()
  config.seed = 0
  # Which stages train.py trains, in order.
  config.stages = ("scorer", "segmenter")

  # --- data -----------------------------------------------------------------------------
  config.data = ml_collections.ConfigDict()
  # "bbbc039": the full data set from data_dir (else $SPIRALNET_BBBC039_DIR);
  # "sample": the BBBC039 fields bundled with the package; "tfds": the TFDS builder;
  # "synthetic": generated nuclei (tests, tiny configs).
  config.data.source = "bbbc039"
  config.data.data_dir = ""
  config.data.tfds_data_dir = ""
  config.data.train_split = "training"
  config.data.eval_splits = ("validation", "test")
  # Synthetic data (source == "synthetic").
  config.data.synthetic_num_train = 8
  config.data.synthetic_num_eval = 4
  config.data.synthetic_shape = (128, 160)
  # Chance that a nucleus is placed touching an earlier one (the rest lie apart). 0.2 matches
  # BBBC039's crowding (spiralnet_jax.data.synthetic.DEFAULT_TOUCH_PROBABILITY).
  config.data.synthetic_touch_probability = 0.2
  # Limit the number of images per split (0 = all); used by demo/CPU configs.
  config.data.max_images = 0
  # Per-image intensity normalisation: the (low, high) percentiles are mapped to 0 and 1 and
  # values outside are clipped. (0, 100) is the thesis' min-max; (1, 99.8) ignores a few hot or
  # saturated pixels, which under min-max squash every real intensity towards 0.
  config.data.normalize_percentiles = (0.0, 100.0)

  # --- Stage 1: regions -------------------------------------------------------------------
  config.regions = ml_collections.ConfigDict()
  config.regions.height = 52
  config.regions.width = 58
  config.regions.stride = 16
  config.regions.pad = 28
  config.regions.score_window = 5  # c in thesis formula (2).

  # --- Stage 1: scorer ----------------------------------------------------------------------
  config.scorer = ml_collections.ConfigDict()
  config.scorer.hidden = 128
  config.scorer.threshold = 0.4
  _optimizer(config.scorer, learning_rate=1e-4, epochs=100, batch_size=256)

  # --- Stage 2: segmenter -------------------------------------------------------------------
  config.segmenter = ml_collections.ConfigDict()
  config.segmenter.update_size = 8  # n: the n x n block written per spiral step.
  config.segmenter.branch_features = 32  # image and mask branches.
  config.segmenter.features = 64  # concat conv and skip-module output.
  config.segmenter.skip_features = 32  # first conv of a skip module.
  config.segmenter.num_skip_modules = 2  # K.
  config.segmenter.step = "cropped"  # "cropped" (exact receptive field) or "full_fov".
  # Run spiral steps that cannot interact in one scan iteration (exact; 49 instead of 56
  # sequential steps at the default geometry; helps only a latency-bound GPU, not the CPU).
  config.segmenter.group_steps = False
  config.segmenter.loss = "final"  # "final" (BCE on final mask) or "per_step" (FFN-style).
  config.segmenter.remat = True  # jax.checkpoint each spiral step in the "final" loss.
  # Use the custom-VJP convolution whose backward pass avoids XLA:CPU's slow path inside
  # scan ("auto": on CPU only).
  config.segmenter.cpu_conv_vjp = "auto"
  config.segmenter.train_regions = "label"  # select training regions by "label" or "scorer".
  _optimizer(config.segmenter, learning_rate=1e-4, epochs=100, batch_size=32)
  # > 0: the initial mask state marks the region's centre with a disk of this radius in the
  # central channel (segmenter.Segmenter.seed_radius); 0 = zeros, as in the thesis.
  config.segmenter.seed_radius = 0
  # Random vertical and horizontal flips of training regions (labels flip with the image).
  config.segmenter.flip = False
  # Each training region whose central nucleus touches another nucleus appears this many times
  # per epoch (1 = once, like every other region).
  config.segmenter.touching_repeat = 1
  # > 0: train each epoch on a fresh random subset of this many selected regions.
  config.segmenter.max_train_regions = 0
  # > 0: the loss weighs pixels within `boundary_radius` px of both the central nucleus and
  # another one (where touching nuclei meet) 1 + boundary_weight times (U-Net's weight map,
  # Ronneberger et al. 2015, in the segmenter's central/other terms); 0 = uniform (the thesis).
  config.segmenter.boundary_weight = 0.0
  config.segmenter.boundary_radius = 3
  config.segmenter.dtype = "float32"

  # --- continuation and assembly -------------------------------------------------------------
  config.continuation = ml_collections.ConfigDict()
  config.continuation.enabled = True
  config.continuation.max_moves = 4
  config.continuation.threshold = 0.5  # central object = channel 0 > threshold.
  # Keep only the part of that mask 4-connected to the region's centre window (or, for a moved
  # region, to its parent's object): disconnected blobs belong to other nuclei.
  config.continuation.connected_only = True

  config.assembly = ml_collections.ConfigDict()
  config.assembly.threshold = 0.5
  config.assembly.merge_iou = 0.5
  config.assembly.merge_containment = 0.8
  config.assembly.min_size = 15
  # Withdraw a candidate that contains two or more candidates that are not the same nucleus
  # (spiralnet_jax.assembly): it is a merger of them. False = the thesis' merge rule alone.
  config.assembly.split_containers = False
  # How much of a candidate must lie inside another for the rule to count it as contained.
  config.assembly.split_containment = 0.8

  # --- prediction ------------------------------------------------------------------------------
  config.predict = ml_collections.ConfigDict()
  # Regions per jitted segmenter call (bounds memory). Small on CPU: XLA:CPU's convolutions slow
  # down per region as the batch outgrows the cache (one BBBC039 field, demo model, 2-core CPU:
  # 2.3 s at 8, 3.1 s at 16, 6.7 s at 256). configs/spiral.py raises it for a GPU.
  config.predict.region_batch_size = 8
  config.predict.shape_bucket = 128  # images are padded up to multiples of this for scoring.
  # Region stride at prediction (training uses regions.stride). 16 is the thesis grid; 8 also
  # centres a region on small nuclei that the 16-px grid misses, for 4× the regions.
  config.predict.stride = 16
  # Where regions are centred (spiralnet_jax.seeding): "grid", every region of the stride-
  # `predict.stride` grid whose score passes (the thesis); "peaks", one region per maximum of
  # the distance transform of the passing cells of the score map at stride `peak_stride`, at
  # least `peak_min_distance` cells apart (about one per nucleus).
  config.predict.seeds = "grid"
  config.predict.peak_stride = 4
  config.predict.peak_min_distance = 1
  # A second look at candidates with two or more lobes (maxima of their distance transform at
  # least `lobe_min_depth` px deep, `lobe_min_distance` px apart, at most `max_lobes`): a region
  # centred on each lobe, so that assembly.split_containers can split a merger of two nuclei.
  config.predict.lobes = False
  config.predict.lobe_min_distance = 6
  config.predict.lobe_min_depth = 3.0
  config.predict.max_lobes = 4
  # Region-grid rows scored at once; a streamed chunk of regions also spans at most this many
  # rows (bounds the image window each chunk holds).
  config.predict.stripe_rows = 64
  # Selected regions segmented per streamed chunk: with their continuation pieces, the working
  # set of prediction (assembly keeps only their thresholded claims).
  config.predict.chunk_regions = 1024
  # U-Net prediction tile (pixels, rounded up to a multiple of 2^depth); each tile also sees
  # predict.unet_margin(depth) = 10·2^depth pixels of context per side.
  config.predict.unet_tile = 512

  # --- U-Net baseline ----------------------------------------------------------------------------
  config.unet = ml_collections.ConfigDict()
  config.unet.base_features = 64  # 64 ... 1024 over 4 levels.
  config.unet.depth = 4
  _optimizer(config.unet, learning_rate=1e-5, epochs=100, batch_size=4)
  config.unet.crop_size = 0  # 0 = whole images; else random square crops of this size.
  config.unet.threshold = 0.5

  # --- training loop / logging ---------------------------------------------------------------------
  config.train = ml_collections.ConfigDict()
  config.train.log_every_steps = 50
  config.train.checkpoint_every_epochs = 1
  # > 0: also checkpoint every this many steps (mid-epoch), so a crash loses at most that many.
  config.train.checkpoint_every_steps = 0
  # Checkpoints kept per stage (older ones are deleted); >= 2 lets a damaged newest one fall
  # back to the previous.
  config.train.max_to_keep = 3
  config.train.eval_every_epochs = 10
  config.train.max_steps = 0  # > 0 stops each stage after this many steps (smoke tests).
  config.train.max_eval_regions = 0  # > 0: validation loss on a fixed random region subset.
  # > 0: clip gradients to this global norm before Adam (0 = off).
  config.train.grad_clip_norm = 0.0
  # Resume a workdir whose config.json differs from this config in fields that change the run
  # (training.workdir.RESUMABLE_FIELDS lists those that do not); otherwise that is refused.
  config.train.allow_config_change = False
  # When checkpoints of a stage exist but none restores: train it from scratch instead of
  # stopping with an error.
  config.train.allow_fresh_start = False
  # An exported weights directory (spiralnet_jax.pretrained): each stage trained here starts
  # from its parameters there instead of a fresh initialisation (fine-tuning; a resumed run
  # continues from its own checkpoints). "" = fresh initialisation.
  config.train.init_weights = ""

  # --- evaluation ---------------------------------------------------------------------------------
  config.eval = ml_collections.ConfigDict()
  config.eval.splits = ("validation", "test")
  config.eval.num_figures = 2
  # Baselines evaluated beside the trained models: "otsu_watershed" (spiralnet_jax.classical).
  config.eval.baselines = ()

  # --- classical baseline (Otsu + watershed) -------------------------------------------------------
  config.classical = ml_collections.ConfigDict()
  config.classical.sigma = 1.0
  config.classical.min_distance = 7
  config.classical.min_size = 15
  return config


def upgrade_config(saved: dict) -> ml_collections.ConfigDict:
  """A saved config (the dict of a config.json) merged over the current defaults.

  Fields the saved config lacks (it was written before they existed) take their defaults,
  which reproduce the behaviour of the version that wrote it; every saved value is kept.
  """
  if not isinstance(saved, dict):
    raise ValueError(f"a config must be a JSON object, got {type(saved).__name__}")
  missing = [k for k in ("regions", "scorer", "segmenter") if not isinstance(saved.get(k), dict)]
  if missing:
    # Not written by train.py (every version wrote these): defaults would silently stand in.
    raise ValueError(f"config has no {', '.join(missing)} section; not written by train.py")
  config = get_config().to_dict()

  def merge(base: dict, new: dict) -> dict:
    for key, value in new.items():
      if isinstance(value, dict) and isinstance(base.get(key), dict):
        merge(base[key], value)
      else:
        base[key] = value
    return base

  return ml_collections.ConfigDict(merge(config, saved))
