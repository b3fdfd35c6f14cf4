r"""DDPM on CIFAR-10 with the published recipe (Ho et al. 2020): the 35.7M-parameter UNet.

Run (on an accelerator; CIFAR-10 must be prepared as array_record first, e.g.
`tfds build cifar10 --file_format=array_record`, which needs the internet):
  jaxgen-train --config=configs/ddpm_cifar10.py --workdir=runs/ddpm_cifar10

Variants (after the colon) set the layout for a machine; nothing else changes:
  (none)   float32, batch split over all devices, parameters replicated: runs anywhere.
  tpu      a v4-8 (4 chips) or v5e-8 (8 chips) slice: bfloat16 compute, batch 128 split
           over all chips (32 / 16 per chip), parameters replicated (the model is small).
  gpu8     one node with 8 GPUs: bfloat16 compute, mesh data=8.
  fsdp8    8 devices with parameters, EMA and Adam state sharded 8 ways (mesh fsdp=8):
           the layout for models that do not fit replicated.
Check a variant fits before launching it:
  jaxgen-train --config=configs/ddpm_cifar10.py:tpu --compile_only --num_cpu_devices=8 \
      --device_memory_gb=16

Benchmark its training step (see benchmarks/train_step.py):
  python benchmarks/train_step.py --config=configs/ddpm_cifar10.py --batch_size=8
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = arg or 'default'
  if variant not in ('default', 'tpu', 'gpu8', 'fsdp8'):
    raise ValueError(f'unknown variant {variant!r}; use tpu, gpu8, fsdp8 or nothing')
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.objective = 'diffusion'
  config.total_steps = 800_000
  config.global_batch_size = 128
  # > 1: the batch is processed in this many sequential micro-batches (same update, less
  # activation memory).
  config.grad_accum_steps = 1
  config.log_every = 100
  config.sample_every = 10_000
  config.num_sample_images = 64
  config.checkpoint_every = 10_000
  config.keep_checkpoints = 3
  config.async_checkpointing = True
  # A step with a NaN/Inf loss, gradient or parameter is never applied; 'stop' ends the run
  # with an error naming it, 'skip' counts it (nonfinite_steps) and goes on.
  config.nonfinite_policy = 'stop'

  config.mesh = ml_collections.ConfigDict({'data': -1, 'fsdp': 1})
  config.sharding = ml_collections.ConfigDict()
  config.sharding.rules = (('.*', 'fsdp'),)
  config.sharding.fsdp_min_size = 2**18

  config.data = ml_collections.ConfigDict()
  config.data.name = 'cifar10'
  config.data.split = 'train'
  config.data.data_dir = ''
  config.data.manual_dir = ''
  config.data.image_key = 'image'
  config.data.label_key = 'label'
  config.data.image_size = 32
  config.data.channels = 3
  config.data.resize = 'none'
  config.data.random_flip = True
  config.data.num_threads = 8

  config.model = ml_collections.ConfigDict()
  config.model.name = 'unet'
  config.model.ch = 128
  config.model.ch_mult = (1, 2, 2, 2)
  config.model.num_res_blocks = 2
  config.model.attn_resolutions = (16,)
  config.model.dropout = 0.1
  config.model.num_classes = 0
  # Mixed precision: parameters and optimizer state stay float32; convolutions, matmuls
  # and activations run in compute_dtype ('float32' or 'bfloat16'); softmax and norms in f32.
  config.model.compute_dtype = 'float32'
  config.model.remat = 'none'  # 'none' | 'full' | 'dots': recompute block activations in backward

  config.diffusion = ml_collections.ConfigDict()
  config.diffusion.schedule = 'linear'
  config.diffusion.timesteps = 1000
  config.diffusion.beta_start = 1e-4
  config.diffusion.beta_end = 0.02
  config.diffusion.prediction = 'eps'
  config.diffusion.label_dropout = 0.1
  config.diffusion.guidance_scale = 1.0
  config.diffusion.sampler = 'ddpm'
  config.diffusion.sample_steps = 1000
  config.diffusion.eta = 1.0

  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.learning_rate = 2e-4
  config.optimizer.warmup_steps = 5_000
  config.optimizer.decay = 'constant'
  config.optimizer.end_lr_ratio = 1.0
  config.optimizer.b1 = 0.9
  config.optimizer.b2 = 0.999
  config.optimizer.eps = 1e-8
  config.optimizer.weight_decay = 0.0
  config.optimizer.grad_clip = 1.0

  config.ema = ml_collections.ConfigDict()
  config.ema.decay = 0.9999
  config.ema.warmup = False

  if variant in ('tpu', 'gpu8', 'fsdp8'):
    config.model.compute_dtype = 'bfloat16'
  if variant == 'tpu':
    config.data.num_threads = 16
  elif variant == 'gpu8':
    config.mesh.data = 8
  elif variant == 'fsdp8':
    config.mesh.data, config.mesh.fsdp = 1, 8

  config.lock()
  return config
