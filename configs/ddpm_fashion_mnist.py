r"""DDPM on Fashion-MNIST: the project's spine config.

Run (CPU demo, ~11 minutes on 2 cores):
  jaxgen-train --config=configs/ddpm_fashion_mnist.py:demo --workdir=runs/demo

Variants (after the colon):
  demo     0.7M-parameter UNet, batch 64, 1,600 steps: the `make demo` run.
  tiny     a few steps of a minute UNet: what the tests run.
  (none)   a real accelerator run: 9M-parameter UNet, batch 128, 100k steps.

Any field can be overridden, e.g. `--config.total_steps=500 --config.mesh.fsdp=2`.
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = arg or 'default'
  if variant not in ('default', 'demo', 'tiny'):
    raise ValueError(f'unknown variant {variant!r}; use demo, tiny or nothing')
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.objective = 'diffusion'
  config.total_steps = 100_000
  config.global_batch_size = 128
  # > 1: the batch is processed in this many sequential micro-batches (same update, less
  # activation memory).
  config.grad_accum_steps = 1
  config.log_every = 100
  config.sample_every = 5_000
  config.num_sample_images = 64
  config.checkpoint_every = 5_000
  config.keep_checkpoints = 3
  config.async_checkpointing = True
  # A step with a NaN/Inf loss, gradient or parameter is never applied; 'stop' ends the run
  # with an error naming it, 'skip' counts it (nonfinite_steps) and goes on.
  config.nonfinite_policy = 'stop'

  # Devices are arranged as a (data, fsdp) mesh; -1 takes whatever is left.
  config.mesh = ml_collections.ConfigDict({'data': -1, 'fsdp': 1})
  # How the state is laid out: (regex on the path in the state, rule); see jaxgen/sharding.py.
  # 'fsdp' splits tensors of >= fsdp_min_size elements over the fsdp axis (a no-op when the
  # axis has size 1); the batch is always split over (data, fsdp).
  config.sharding = ml_collections.ConfigDict()
  config.sharding.rules = (('.*', 'fsdp'),)
  config.sharding.fsdp_min_size = 2**16

  config.data = ml_collections.ConfigDict()
  config.data.name = 'fashion_mnist'  # any TFDS image dataset prepared as array_record
  config.data.split = 'train'
  config.data.data_dir = ''  # TFDS data_dir; '' means TFDS's default (~/tensorflow_datasets)
  config.data.manual_dir = '/usr/share/datasets/fashion-mnist'  # IDX files when TFDS has none
  config.data.image_key = 'image'
  config.data.label_key = 'label'
  config.data.image_size = 28
  config.data.channels = 1
  config.data.resize = 'none'  # 'none' | 'pad' | 'resize' (centre crop + bicubic)
  config.data.random_flip = False
  config.data.num_threads = 4

  config.model = ml_collections.ConfigDict()
  config.model.name = 'unet'
  config.model.ch = 64
  config.model.ch_mult = (1, 2, 2)
  config.model.num_res_blocks = 2
  config.model.attn_resolutions = (7,)
  config.model.dropout = 0.1
  config.model.num_classes = 0  # > 0: class-conditional, with classifier-free guidance
  # Mixed precision: parameters and optimizer state stay float32; convolutions, matmuls
  # and activations run in compute_dtype ('float32' or 'bfloat16'); softmax and norms in f32.
  config.model.compute_dtype = 'float32'
  config.model.remat = 'none'  # 'none' | 'full' | 'dots': recompute block activations in backward

  config.diffusion = ml_collections.ConfigDict()
  config.diffusion.schedule = 'linear'  # 'linear' | 'cosine'
  config.diffusion.timesteps = 1000
  config.diffusion.beta_start = 1e-4
  config.diffusion.beta_end = 0.02
  config.diffusion.prediction = 'eps'  # 'eps' | 'v'
  config.diffusion.label_dropout = 0.1
  config.diffusion.guidance_scale = 1.0
  config.diffusion.sampler = 'ddim'  # 'ddim' | 'ddpm'; for sample grids and jaxgen-sample
  config.diffusion.sample_steps = 50
  config.diffusion.eta = 0.0

  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.learning_rate = 2e-4
  config.optimizer.warmup_steps = 1_000
  config.optimizer.decay = 'cosine'  # 'cosine' | 'constant'
  config.optimizer.end_lr_ratio = 0.1
  config.optimizer.b1 = 0.9
  config.optimizer.b2 = 0.999
  config.optimizer.eps = 1e-8
  config.optimizer.weight_decay = 0.0
  config.optimizer.grad_clip = 1.0

  config.ema = ml_collections.ConfigDict()
  config.ema.decay = 0.9999
  config.ema.warmup = True  # decay = min(decay, (1 + step) / (10 + step))

  if variant == 'demo':
    config.total_steps = 1_600
    config.global_batch_size = 64
    config.log_every = 50
    config.sample_every = 400
    config.checkpoint_every = 200
    config.data.num_threads = 1
    # Ancestral sampling: deterministic DDIM (eta=0) leaves speckle on a model this young.
    config.diffusion.sampler = 'ddpm'
    config.model.ch = 16
    config.model.ch_mult = (1, 2, 4)
    config.model.num_res_blocks = 1
    config.model.dropout = 0.0
    config.optimizer.learning_rate = 1e-3
    config.optimizer.warmup_steps = 100
    config.ema.decay = 0.995
  elif variant == 'tiny':
    config.total_steps = 6
    config.global_batch_size = 16
    config.log_every = 2
    config.sample_every = 6
    config.num_sample_images = 8
    config.checkpoint_every = 3
    config.data.num_threads = 1
    config.model.ch = 8
    config.model.ch_mult = (1, 2)
    config.model.num_res_blocks = 1
    config.model.attn_resolutions = (14,)
    config.diffusion.sample_steps = 4
    config.optimizer.warmup_steps = 2
    config.ema.decay = 0.9

  config.lock()
  return config
