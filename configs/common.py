"""What every experiment config shares (big_vision's `common` idea): the run, mesh and
sharding fields, a data section, AdamW, and the `tiny` test sizes. An experiment file
imports it (`import common`: jaxgen puts a config's own directory on the import path) and
states only what is its own.
"""

import ml_collections


def run(objective: str, **overrides) -> ml_collections.ConfigDict:
  """The top-level fields the trainer reads, the mesh and the sharding rules."""
  config = ml_collections.ConfigDict()
  config.seed = 0  # parameter init, the per-step RNG (folded with the step), the shuffle
  config.objective = objective
  config.total_steps = 100_000
  config.global_batch_size = 128
  # > 1: the batch is processed in this many sequential micro-batches (same update, less
  # activation memory).
  config.grad_accum_steps = 1
  config.log_every = 100
  config.sample_every = 5_000  # sample (or reconstruction) grids; 0: never
  config.num_sample_images = 64
  config.checkpoint_every = 5_000
  config.keep_checkpoints = 3
  config.async_checkpointing = True
  # A step with a NaN/Inf loss, gradient or parameter is never applied; 'stop' ends the run
  # with an error naming it, 'skip' counts it (nonfinite_steps) and goes on.
  config.nonfinite_policy = 'stop'
  # How many dispatched steps may wait for the devices (the host blocks on the step this
  # many back): bounds device queues without a sync per step.
  config.max_steps_in_flight = 2

  # Devices are arranged as a (data, fsdp) mesh; -1 takes whatever is left.
  config.mesh = ml_collections.ConfigDict({'data': -1, 'fsdp': 1})
  # How the state is laid out: (regex on the path in the state, rule); see jaxgen/sharding.py.
  # 'fsdp' splits tensors of >= fsdp_min_size elements over the fsdp axis (a no-op when the
  # axis has size 1); the batch is always split over (data, fsdp).
  config.sharding = ml_collections.ConfigDict()
  config.sharding.rules = (('.*', 'fsdp'),)
  config.sharding.fsdp_min_size = 2**16
  config.update(overrides)
  return config


def tfds_images(**overrides) -> ml_collections.ConfigDict:
  """A TFDS image dataset; by default Fashion-MNIST (read from the Debian package's IDX
  files when TFDS has not prepared it)."""
  data = ml_collections.ConfigDict()
  data.name = 'fashion_mnist'  # any TFDS image dataset prepared as array_record
  data.split = 'train'
  data.eval_split = 'test'  # reconstruction grids, jaxgen-eval test metrics, interpolation
  data.data_dir = ''  # TFDS data_dir; '' means TFDS's default (~/tensorflow_datasets)
  data.manual_dir = '/usr/share/datasets/fashion-mnist'  # IDX files when TFDS has none
  data.image_key = 'image'
  data.label_key = 'label'  # '' for none
  data.image_size = 28
  data.channels = 1
  data.resize = 'none'  # 'none' | 'pad' | 'resize' (centre crop + bicubic)
  data.random_flip = False
  data.jitter_size = 0  # > image_size: resize to it, then random crop back (pix2pix's jitter)
  # Image-to-image translation. Paired: two image features of each example, source_key ->
  # target_key. Unpaired: two domains, split and target_split (of target_name, or of this
  # dataset when ''), shuffled apart; eval_split / target_eval_split for evaluation.
  data.source_key = ''
  data.target_key = ''
  data.target_name = ''
  data.target_split = ''
  data.target_eval_split = ''
  data.num_threads = 4
  # Read and decode the whole split once at start and keep it in host memory (every process
  # holds all of it): for small datasets, whose per-batch reads would otherwise share the
  # cores with the step (Fashion-MNIST's train split: 60,000 examples, ~80 MB of host memory).
  data.cache_in_memory = False
  data.update(overrides)
  return data


def adamw(**overrides) -> ml_collections.ConfigDict:
  """AdamW with linear warm-up, then cosine decay to end_lr_ratio x lr (or a constant)."""
  optimizer = ml_collections.ConfigDict()
  optimizer.learning_rate = 2e-4
  optimizer.warmup_steps = 1_000
  optimizer.decay = 'cosine'  # 'cosine' | 'constant' | 'linear' (constant, then linear)
  optimizer.decay_start = 0.5  # 'linear': the fraction of total_steps the decay starts at
  optimizer.end_lr_ratio = 0.1
  optimizer.b1 = 0.9
  optimizer.b2 = 0.999
  optimizer.eps = 1e-8
  optimizer.weight_decay = 0.0
  optimizer.grad_clip = 1.0  # global norm; 0 disables
  optimizer.update(overrides)
  return optimizer


def tiny(config: ml_collections.ConfigDict) -> None:
  """The sizes the tests run: 6 steps at batch 16, a log line every 2 steps, checkpoints at
  3 and 6, one grid of 8 at the end. Each config shrinks its own networks."""
  config.update(dict(total_steps=6, global_batch_size=16, log_every=2, sample_every=6,
                     num_sample_images=8, checkpoint_every=3))
  config.data.num_threads = 1
  for name in ('optimizer', 'discriminator_optimizer'):
    if name in config:
      config[name].warmup_steps = 2


def accelerator_layout(config: ml_collections.ConfigDict, variant: str) -> None:
  """The machine variants the accelerator configs share: `tpu` (the batch over all chips,
  16 reader threads), `gpu8` (mesh data=8), `fsdp8` (parameters, EMA and optimizer state
  sharded 8 ways: mesh fsdp=8)."""
  if variant == 'tpu':
    config.data.num_threads = 16
  elif variant == 'gpu8':
    config.mesh.data = 8
  elif variant == 'fsdp8':
    config.mesh.data, config.mesh.fsdp = 1, 8


def check_variant(arg: str | None, variants: tuple[str, ...]) -> str:
  """The variant after the colon of --config=file.py:variant; 'default' for none."""
  variant = arg or 'default'
  if variant not in ('default', *variants):
    raise ValueError(f'unknown variant {variant!r}; use {", ".join(variants)} or nothing')
  return variant
