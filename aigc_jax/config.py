"""The base config (every key with its default) and its validation.

`configs/NAME.py` files start from `base_config()` and override what they need.
`validate` runs before anything compiles: each bad value gets one `UserError`
naming the key and what is allowed.
"""

from __future__ import annotations

import ml_collections

from aigc_jax.errors import UserError

MODEL_FAMILIES = {"gan": ("dcgan",), "vae": ("conv_vae",), "classifier": ("lenet",)}
# Label classes of each dataset (0: unlabelled); synthetic has those of its source.
DATASET_CLASSES = {"digits": 10, "mnist_idx": 10, "mnist": 10, "fashion_mnist": 10, "cifar10": 10,
                   "celeb_a": 0}
DATASETS = (*DATASET_CLASSES, "synthetic")
IMAGE_SIZES = (8, 16, 28, 32, 64)
GAN_LOSSES = ("non_saturating", "hinge", "least_squares", "wgan_gp")
GAN_AUGMENTS = ("none", "diffaugment", "ada")
DIFFAUGMENT_OPS = ("translation", "cutout", "color")
ADA_PIPELINES = ("blit", "geom", "color", "bg", "bgc")  # StyleGAN2-ADA's --augpipe names
VAE_LIKELIHOODS = ("bernoulli", "gaussian")
D_NORMS = ("batch", "none", "spectral")
COMPUTE_DTYPES = ("float32", "bfloat16")
# What a resumed run may change: when it stops, how often it logs, checkpoints, samples and
# evaluates, what it keeps, how many steps a dispatch holds (the same steps, scanned), whether
# batches are gathered on the devices (the same batches) and where its data lives (another
# machine's path to the same files). Any other key changes the run's mathematics.
RESUME_SAFE_KEYS = ("train.num_steps", "train.log_every", "train.checkpoint_every",
                    "train.keep_checkpoints", "train.sample_every", "train.num_sample_images",
                    "train.eval_every", "train.eval_num_samples", "train.steps_per_dispatch",
                    "data.on_device", "data.data_dir", "data.manual_dir")


def base_config() -> ml_collections.ConfigDict:
  """Returns the config with every key and its default (a small DCGAN on digits)."""
  c = ml_collections.ConfigDict()
  c.seed = 0

  c.model = ml_collections.ConfigDict()
  c.model.family = "gan"          # gan | vae | classifier
  c.model.name = "dcgan"          # dcgan (gan) | conv_vae (vae) | lenet (classifier)
  c.model.latent_dim = 64
  c.model.width = 32              # base channel count (ngf = ndf for the DCGAN)
  c.model.num_classes = 0         # > 0: class-conditional model
  c.model.d_norm = "batch"        # discriminator normalisation: batch | none | spectral
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
  c.train.compute_dtype = "float32"

  c.gan = ml_collections.ConfigDict()
  c.gan.loss = "non_saturating"
  c.gan.d_learning_rate = 2e-4
  c.gan.gp_weight = 10.0          # wgan_gp: weight of the gradient penalty on real/fake interpolates
  c.gan.r1_gamma = 0.0            # R1 penalty gamma/2 * E||grad D(real)||^2; 0: off
  c.gan.r1_every = 16             # lazy R1: apply every k steps, scaled by k
  c.gan.n_critic = 1              # discriminator updates per generator update
  c.gan.ema_half_life_images = 0  # generator EMA half-life in images (StyleGAN2-ADA's ema_kimg*1000); 0: off
  c.gan.ema_rampup = 0.05         # EMA half-life is at most this fraction of the images seen; 0: no ramp-up
  c.gan.augment = "none"          # augmentation of D's inputs: none | diffaugment | ada
  c.gan.diffaugment = "translation,cutout,color"  # diffaugment: comma-separated policy
  c.gan.ada_pipeline = "bgc"      # ada: op groups (StyleGAN2-ADA's --augpipe): blit | geom | color | bg | bgc
  c.gan.ada_target = 0.6          # ada: target for E[sign(D(real))]
  c.gan.ada_speed_images = 100_000  # ada: images over which p can move from 0 to 1

  c.vae = ml_collections.ConfigDict()
  c.vae.likelihood = "bernoulli"
  c.vae.beta = 1.0
  c.vae.decoder_std = 0.1         # gaussian likelihood: the decoder's standard deviation (initial value if learned)
  c.vae.learn_decoder_std = False # gaussian likelihood: learn one log-std parameter instead of fixing it
  c.vae.kl_warmup_steps = 0       # KL weight rises linearly from 0 to beta over this many steps; 0: off
  return c


def _fail(key: str, value, allowed: str) -> None:
  raise UserError(f"config.{key}={value!r} is not valid: {allowed}")


def _positive(config: ml_collections.ConfigDict, *keys: str) -> None:
  for key in keys:
    section, name = key.split(".")
    value = config[section][name]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
      _fail(key, value, "must be a positive number")


def validate(config: ml_collections.ConfigDict, num_devices: int | None = None) -> None:
  """Raises UserError naming the first key whose value cannot work."""
  if config.model.family not in MODEL_FAMILIES:
    _fail("model.family", config.model.family, f"choose one of {sorted(MODEL_FAMILIES)}")
  names = MODEL_FAMILIES[config.model.family]
  if config.model.name not in names:
    _fail("model.name", config.model.name,
          f"model.family={config.model.family!r} allows {', '.join(names)}")
  if config.data.dataset not in DATASETS:
    _fail("data.dataset", config.data.dataset, f"choose one of {', '.join(DATASETS)}")
  if config.data.image_size not in IMAGE_SIZES:
    _fail("data.image_size", config.data.image_size,
          f"the models produce {', '.join(map(str, IMAGE_SIZES))} px")
  if config.data.channels not in (1, 3):
    _fail("data.channels", config.data.channels, "must be 1 or 3")
  if config.data.on_device and config.data.dataset == "synthetic":
    _fail("data.on_device", True, "needs a TFDS dataset: synthetic batches are generated, not loaded")
  _positive(config, "model.latent_dim", "model.width", "train.batch_size", "train.num_steps",
            "train.learning_rate", "train.log_every", "train.checkpoint_every",
            "train.keep_checkpoints", "train.sample_every", "train.num_sample_images",
            "train.steps_per_dispatch", "train.eval_num_samples", "gan.d_learning_rate", "data.shuffle_buffer")
  if config.model.d_norm not in D_NORMS:
    _fail("model.d_norm", config.model.d_norm, f"choose one of {', '.join(D_NORMS)}")
  k = config.train.steps_per_dispatch
  for key in ("num_steps", "log_every", "checkpoint_every", "sample_every"):
    if config.train[key] % k:
      _fail(f"train.{key}", config.train[key],
            f"must be a multiple of train.steps_per_dispatch ({k})")
  if config.train.eval_every % k:
    _fail("train.eval_every", config.train.eval_every,
          f"must be a multiple of train.steps_per_dispatch ({k})")
  group = config.model.d_minibatch_std
  if isinstance(group, bool) or not isinstance(group, int) or group < 0:
    _fail("model.d_minibatch_std", group, "must be 0 (off) or a positive group size")
  if group and config.train.batch_size % group:
    _fail("model.d_minibatch_std", group,
          f"the group size must divide train.batch_size ({config.train.batch_size})")
  if config.model.num_classes < 0:
    _fail("model.num_classes", config.model.num_classes, "must be 0 (unconditional) or positive")
  labels = dataset_classes(config.data)
  if config.model.num_classes and not labels:
    _fail("model.num_classes", config.model.num_classes,
          f"data.dataset={config.data.dataset!r} has no class labels: use 0 (unconditional)")
  if 0 < config.model.num_classes < labels:
    _fail("model.num_classes", config.model.num_classes,
          f"data.dataset={config.data.dataset!r} has {labels} classes: use 0 or at least {labels}")
  if config.train.eval_every < 0:
    _fail("train.eval_every", config.train.eval_every, "must be 0 (off) or positive")
  if not 0 <= config.train.b1 < 1 or not 0 <= config.train.b2 < 1:
    _fail("train.b1/b2", (config.train.b1, config.train.b2), "Adam betas must be in [0, 1)")
  if config.train.compute_dtype not in COMPUTE_DTYPES:
    _fail("train.compute_dtype", config.train.compute_dtype, f"choose one of {', '.join(COMPUTE_DTYPES)}")
  _validate_gan(config)
  if config.vae.likelihood not in VAE_LIKELIHOODS:
    _fail("vae.likelihood", config.vae.likelihood, f"choose one of {', '.join(VAE_LIKELIHOODS)}")
  if config.vae.decoder_std <= 0:
    _fail("vae.decoder_std", config.vae.decoder_std, "must be a positive number")
  if config.vae.beta < 0:
    _fail("vae.beta", config.vae.beta, "must be >= 0")
  if config.vae.learn_decoder_std and config.vae.likelihood != "gaussian":
    _fail("vae.learn_decoder_std", True, "needs vae.likelihood='gaussian'")
  if config.vae.kl_warmup_steps < 0:
    _fail("vae.kl_warmup_steps", config.vae.kl_warmup_steps, "must be 0 (off) or positive")
  if num_devices is not None and config.train.batch_size % num_devices:
    _fail("train.batch_size", config.train.batch_size,
          f"the global batch must be divisible by the device count ({num_devices})")


def dataset_classes(data: ml_collections.ConfigDict) -> int:
  """How many label classes `data`'s images come with (0: unlabelled)."""
  if data.dataset != "synthetic":
    return DATASET_CLASSES[data.dataset]
  if data.synthetic_source == "noise":
    from aigc_jax.transforms.noise import TEXTURES  # Labelled by texture kind.
    return len(TEXTURES)
  return DATASET_CLASSES["digits"]


def _validate_gan(config: ml_collections.ConfigDict) -> None:
  """Checks the gan.* keys (losses, regularisers, EMA, augmentation)."""
  g = config.gan
  if g.loss not in GAN_LOSSES:
    _fail("gan.loss", g.loss, f"choose one of {', '.join(GAN_LOSSES)}")
  if g.gp_weight < 0:
    _fail("gan.gp_weight", g.gp_weight, "must be >= 0")
  if g.r1_gamma < 0:
    _fail("gan.r1_gamma", g.r1_gamma, "must be >= 0 (0: no R1 penalty)")
  _positive(config, "gan.r1_every", "gan.n_critic", "gan.ada_speed_images")
  if g.ema_half_life_images < 0:
    _fail("gan.ema_half_life_images", g.ema_half_life_images, "must be 0 (no EMA) or positive")
  if g.ema_rampup < 0:
    _fail("gan.ema_rampup", g.ema_rampup, "must be 0 (no ramp-up) or positive")
  if g.augment not in GAN_AUGMENTS:
    _fail("gan.augment", g.augment, f"choose one of {', '.join(GAN_AUGMENTS)}")
  ops = [op.strip() for op in g.diffaugment.split(",") if op.strip()]
  if any(op not in DIFFAUGMENT_OPS for op in ops) or (g.augment == "diffaugment" and not ops):
    _fail("gan.diffaugment", g.diffaugment,
          f"a comma-separated list of {', '.join(DIFFAUGMENT_OPS)}")
  if g.ada_pipeline not in ADA_PIPELINES:
    _fail("gan.ada_pipeline", g.ada_pipeline, f"choose one of {', '.join(ADA_PIPELINES)}")
  if not 0 < g.ada_target < 1:
    _fail("gan.ada_target", g.ada_target, "must be in (0, 1)")
  if g.loss == "wgan_gp" and config.model.d_norm == "batch":
    _fail("model.d_norm", "batch", "gan.loss='wgan_gp' penalises per-example gradients, which batch "
          "norm couples: use model.d_norm='none' or 'spectral'")


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
