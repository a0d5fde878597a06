"""The base config (every key with its default) and its validation.

`configs/NAME.py` files start from `base_config()` and override what they need.
The shared sections (model, data, train) are defined here; each model family adds
its own section (`gan`, `vae`, ...) and checks it (`aigc_jax.trainers.family`).
`validate` runs before anything compiles: each bad value gets one `UserError`
naming the key and what is allowed.
"""

from __future__ import annotations

import ml_collections

from aigc_jax import images
from aigc_jax.errors import UserError, check_seed

# Label classes of each dataset (0: unlabelled); synthetic has those of its source, image_folder
# its subfolders (data.labels='folders').
DATASET_CLASSES = {"digits": 10, "mnist_idx": 10, "mnist": 10, "fashion_mnist": 10, "cifar10": 10,
                   "celeb_a": 0}
DATASETS = (*DATASET_CLASSES, "image_folder", "synthetic")
IMAGE_SIZES = (8, 16, 28, 32, 64, 128, 256)  # powers of two from 8 to 256, and MNIST's 28
FOLDER_LABELS = ("folders", "none")
FOLDER_CROPS = ("center", "none")
COMPUTE_DTYPES = ("float32", "bfloat16")
# What a resumed run may change: when it stops, how often it logs, checkpoints, samples and
# evaluates, what it keeps, what it evaluates against, how many steps a dispatch holds (the same
# steps, scanned), how the state is laid out over the devices, whether batches are gathered on the
# devices (the same batches) and where its data lives (another machine's path to the same files).
# Any other key changes the run's mathematics (train.grad_accum_steps too: batch statistics are
# per micro-batch).
RESUME_SAFE_KEYS = ("train.num_steps", "train.log_every", "train.checkpoint_every",
                    "train.keep_checkpoints", "train.sample_every", "train.num_sample_images",
                    "train.eval_every", "train.eval_num_samples", "data.eval_split",
                    "train.steps_per_dispatch", "train.fsdp_devices", "data.on_device",
                    "data.data_dir", "data.manual_dir")


def base_config() -> ml_collections.ConfigDict:
  """Returns the config with every key and its default (a small DCGAN on digits)."""
  c = ml_collections.ConfigDict()
  c.seed = 0

  c.model = ml_collections.ConfigDict()
  c.model.family = "gan"          # a family of aigc_jax.trainers (gan, vae, classifier, ...)
  c.model.name = "dcgan"          # one of the family's model_names
  c.model.latent_dim = 64
  c.model.width = 32              # base channel count (ngf = ndf for the DCGAN)
  c.model.num_classes = 0         # > 0: class-conditional model
  c.model.d_norm = "batch"        # discriminator normalisation: batch | none | spectral
  c.model.g_norm = "batch"        # generator normalisation: batch | none
  c.model.d_minibatch_std = 0     # > 0: D sees the feature std over groups of this many examples

  c.data = ml_collections.ConfigDict()
  c.data.dataset = "digits"
  c.data.split = "train"
  c.data.eval_split = "train"     # reference images for evaluation and reconstructions
  c.data.data_dir = ml_collections.config_dict.placeholder(str)    # TFDS data_dir
  c.data.manual_dir = ml_collections.config_dict.placeholder(str)  # mnist_idx: folder of IDX files
  c.data.image_size = 16
  c.data.channels = 1
  c.data.random_flip = False
  c.data.shuffle_buffer = 10_000
  c.data.on_device = False        # keep the whole preprocessed split on the devices (in-memory splits)
  c.data.synthetic_spec = ""      # synthetic: transform spec applied to the source images
  c.data.synthetic_source = "digits"  # synthetic: "digits" or "noise"
  # image_folder (your own images):
  c.data.folder = ml_collections.config_dict.placeholder(str)  # a folder or .zip of images
  c.data.labels = "none"          # "folders" (first-level subfolders are the classes) | "none"
  c.data.crop = "center"          # "center" (the centre square) | "none" (the whole image, squeezed)
  c.data.background = "white"     # PIL colour that transparent pixels are composited on
  c.data.skip_bad_images = False  # leave unreadable files out (and say so) instead of stopping
  c.data.max_pixels = images.MAX_PIXELS  # larger images are refused unread (decompression bombs)
  c.data.class_names = []         # set by validate (data.labels='folders'), kept in config.json

  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 64         # global, over all devices and processes
  c.train.num_steps = 1000
  c.train.learning_rate = 2e-4
  c.train.b1 = 0.5
  c.train.b2 = 0.999
  c.train.log_every = 50
  c.train.checkpoint_every = 500
  c.train.keep_checkpoints = 3
  c.train.sample_every = 500
  c.train.num_sample_images = 64
  c.train.eval_every = 0          # 0: no periodic evaluation
  c.train.eval_num_samples = 2000 # periodic evaluation: generated images per evaluation (capped at the reference split's size)
  c.train.steps_per_dispatch = 1  # > 1: run k steps per jitted call with lax.scan
  c.train.grad_accum_steps = 1    # > 1: each step's batch as k micro-batches, gradients averaged before one update
  c.train.fsdp_devices = 1        # > 1: parameters and optimiser states sharded over groups of this many devices
  c.train.fsdp_min_kib = 1024     # fsdp: state leaves smaller than this (KiB) stay replicated
  c.train.compute_dtype = "float32"
  # A shipped model's name or an exported NAME.msgpack (NAME.json beside it): a new run starts from
  # the weights it keeps (fine-tuning); "": random initialisation.
  c.train.init_from = ""

  from aigc_jax import trainers  # The families import this module for `fail`.
  for family in trainers.families().values():
    if family.section:
      c[family.section] = family.defaults()
  return c


def fail(key: str, value, allowed: str) -> None:
  """Raises the UserError for config key `key`: its value and what is allowed."""
  raise UserError(f"config.{key}={value!r} is not valid: {allowed}")


def _positive(config: ml_collections.ConfigDict, *keys: str) -> None:
  for key in keys:
    section, name = key.split(".")
    value = config[section][name]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
      fail(key, value, "must be a positive number")


def _positive_int(config: ml_collections.ConfigDict, *keys: str) -> None:
  for key in keys:
    section, name = key.split(".")
    value = config[section][name]
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
      fail(key, value, "must be a positive integer")


def validate(config: ml_collections.ConfigDict, num_devices: int | None = None) -> None:
  """Raises UserError naming the first key whose value cannot work; sets data.class_names.

  For data.dataset='image_folder' it lists data.folder (its classes are needed to check
  model.num_classes) and records their names in data.class_names, which config.json keeps.
  """
  from aigc_jax import trainers
  check_seed("config.seed", config.seed)
  family = trainers.get_family(config)
  if config.model.name not in family.model_names:
    fail("model.name", config.model.name,
         f"model.family={family.name!r} allows {', '.join(family.model_names)}")
  if config.data.dataset not in DATASETS:
    fail("data.dataset", config.data.dataset, f"choose one of {', '.join(DATASETS)}")
  if config.data.image_size not in IMAGE_SIZES:
    fail("data.image_size", config.data.image_size,
         f"the models produce {', '.join(map(str, IMAGE_SIZES))} px (powers of two from 8 to 256, and 28)")
  if config.data.channels not in (1, 3):
    fail("data.channels", config.data.channels, "must be 1 or 3")
  if config.data.on_device and config.data.dataset == "synthetic":
    fail("data.on_device", True, "needs a TFDS dataset: synthetic batches are generated, not loaded")
  _validate_image_folder(config.data)
  _positive(config, "model.latent_dim", "model.width", "train.batch_size", "train.num_steps",
            "train.learning_rate", "train.log_every", "train.checkpoint_every",
            "train.keep_checkpoints", "train.sample_every", "train.num_sample_images",
            "train.steps_per_dispatch", "train.eval_num_samples", "data.shuffle_buffer")
  _positive_int(config, "train.grad_accum_steps", "train.fsdp_devices")
  if config.train.batch_size % config.train.grad_accum_steps:
    fail("train.grad_accum_steps", config.train.grad_accum_steps,
         f"must divide train.batch_size ({config.train.batch_size})")
  min_kib = config.train.fsdp_min_kib
  if isinstance(min_kib, bool) or not isinstance(min_kib, (int, float)) or min_kib < 0:
    fail("train.fsdp_min_kib", min_kib, "must be a size in KiB, >= 0")
  k = config.train.steps_per_dispatch
  for key in ("num_steps", "log_every", "checkpoint_every", "sample_every"):
    if config.train[key] % k:
      fail(f"train.{key}", config.train[key],
           f"must be a multiple of train.steps_per_dispatch ({k})")
  if config.train.eval_every % k:
    fail("train.eval_every", config.train.eval_every,
         f"must be a multiple of train.steps_per_dispatch ({k})")
  if config.model.num_classes < 0:
    fail("model.num_classes", config.model.num_classes, "must be 0 (unconditional) or positive")
  labels = dataset_classes(config.data)
  if config.model.num_classes and not labels:
    fail("model.num_classes", config.model.num_classes,
         f"data.dataset={config.data.dataset!r} has no class labels: use 0 (unconditional)"
          + (" or data.labels='folders'" if config.data.dataset == "image_folder" else ""))
  if 0 < config.model.num_classes < labels:
    fail("model.num_classes", config.model.num_classes,
         f"data.dataset={config.data.dataset!r} has {labels} classes: use 0 or at least {labels}")
  if config.train.eval_every < 0:
    fail("train.eval_every", config.train.eval_every, "must be 0 (off) or positive")
  if not 0 <= config.train.b1 < 1 or not 0 <= config.train.b2 < 1:
    fail("train.b1/b2", (config.train.b1, config.train.b2), "Adam betas must be in [0, 1)")
  if config.train.compute_dtype not in COMPUTE_DTYPES:
    fail("train.compute_dtype", config.train.compute_dtype, f"choose one of {', '.join(COMPUTE_DTYPES)}")
  if not isinstance(config.train.init_from, str):
    fail("train.init_from", config.train.init_from, "a shipped model's name, a path to NAME.msgpack, or ''")
  family.validate(config)
  if num_devices is not None:
    _check_devices(config.train, num_devices)


def _check_devices(train: ml_collections.ConfigDict, num_devices: int) -> None:
  """The train keys that depend on how many devices the run has."""
  if train.batch_size % num_devices:
    fail("train.batch_size", train.batch_size,
          f"the global batch must be divisible by the device count ({num_devices})")
  if num_devices % train.fsdp_devices:
    fail("train.fsdp_devices", train.fsdp_devices, f"must divide the device count ({num_devices})")
  per_device = train.batch_size // num_devices
  if per_device % train.grad_accum_steps:
    # Micro-batches are strided (examples i, i + k, ...), so each takes as many examples from every
    # device's block and none moves between devices.
    fail("train.grad_accum_steps", train.grad_accum_steps,
          f"must divide the per-device batch (train.batch_size {train.batch_size} / "
          f"{num_devices} devices = {per_device})")


def _validate_image_folder(data: ml_collections.ConfigDict) -> None:
  """Checks the image_folder keys; for data.dataset='image_folder', records data.class_names."""
  if data.labels not in FOLDER_LABELS:
    fail("data.labels", data.labels, f"choose one of {', '.join(FOLDER_LABELS)}")
  if data.crop not in FOLDER_CROPS:
    fail("data.crop", data.crop, f"choose one of {', '.join(FOLDER_CROPS)}")
  try:
    images.parse_color(data.background)
  except (ValueError, AttributeError):
    fail("data.background", data.background, "a PIL colour: a name ('white'), '#rrggbb' or 'rgb(r,g,b)'")
  if not isinstance(data.skip_bad_images, bool):
    fail("data.skip_bad_images", data.skip_bad_images, "must be True or False")
  limit = images.pil_pixel_limit()
  if isinstance(data.max_pixels, bool) or not isinstance(data.max_pixels, int) or not 0 < data.max_pixels <= limit:
    fail("data.max_pixels", data.max_pixels, f"must be a pixel count from 1 to {limit:,} (PIL's own limit)")
  if data.dataset != "image_folder":
    return
  if data.folder is None:
    fail("data.folder", None, "data.dataset='image_folder' needs a folder or .zip of images")
  from aigc_jax import image_files
  files = image_files.list_images(data.folder)
  if not files:
    fail("data.folder", data.folder, "it holds no PNG, JPEG, WebP or BMP images")
  names = image_files.class_names(data.folder, files) if data.labels == "folders" else ()
  data.class_names = list(names)


def dataset_classes(data: ml_collections.ConfigDict) -> int:
  """How many label classes `data`'s images come with (0: unlabelled)."""
  if data.dataset == "image_folder":
    return len(data.class_names)
  if data.dataset != "synthetic":
    return DATASET_CLASSES[data.dataset]
  if data.synthetic_source == "noise":
    from aigc_jax.transforms.noise import TEXTURES  # Labelled by texture kind.
    return len(TEXTURES)
  return DATASET_CLASSES["digits"]


def resume_safe_keys(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The keys a resume of a run with `config` may change: RESUME_SAFE_KEYS and its family's sampling keys."""
  from aigc_jax import trainers
  family = trainers.get_family(config)
  return RESUME_SAFE_KEYS + tuple(f"{family.section}.{key}" for key in family.sampling_keys)


def complete(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Returns `config` with keys it lacks (a run saved before they existed) set to their defaults."""
  full = base_config()
  for section, values in config.items():
    if isinstance(values, ml_collections.ConfigDict) and section in full:
      for key, value in values.items():
        full[section][key] = value
    else:
      full[section] = values
  return full
