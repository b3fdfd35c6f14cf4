r"""The KL autoencoder of latent diffusion on Fashion-MNIST: 28x28 -> 7x7x3 latents (f=4).

Run (CPU demo, ~10 minutes on 2 cores):
  jaxgen-train --config=configs/autoencoder_kl_fashion_mnist.py:demo --workdir=runs/ae_demo
  jaxgen-eval --workdir=runs/ae_demo            # test-split PSNR
  jaxgen-sample --workdir=runs/ae_demo --interpolate

Variants (after the colon):
  demo     f=4, 3 latent channels, batch 64, 3,000 steps, discriminator from step 1,500.
  f8       f=8: images padded to 32x32 -> 4x4x4 latents (a demo-sized run).
  tiny     a few steps of a minute autoencoder: what the tests run.
  (none)   a longer run: wider network, 50k steps, discriminator from step 25k.

The objective has two networks (params/autoencoder, params/discriminator) and two optimizer
states (opt_state/autoencoder, opt_state/discriminator); the sharding rules see both.
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = arg or 'default'
  if variant not in ('default', 'demo', 'f8', 'tiny'):
    raise ValueError(f'unknown variant {variant!r}; use demo, f8, tiny or nothing')
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.objective = 'autoencoder_kl'
  config.total_steps = 50_000
  config.global_batch_size = 64
  config.grad_accum_steps = 1  # must stay 1: the discriminator step needs the whole batch
  config.log_every = 100
  config.sample_every = 5_000  # grids of reconstructions (an autoencoder has no samples)
  config.num_sample_images = 64
  config.checkpoint_every = 5_000
  config.keep_checkpoints = 3
  config.async_checkpointing = True
  # A step with a NaN/Inf loss, gradient or parameter is never applied; 'stop' ends the run
  # with an error naming it, 'skip' counts it (nonfinite_steps) and goes on.
  config.nonfinite_policy = 'stop'

  config.mesh = ml_collections.ConfigDict({'data': -1, 'fsdp': 1})
  config.sharding = ml_collections.ConfigDict()
  config.sharding.rules = (('.*', 'fsdp'),)
  config.sharding.fsdp_min_size = 2**16

  config.data = ml_collections.ConfigDict()
  config.data.name = 'fashion_mnist'
  config.data.split = 'train'
  config.data.eval_split = 'test'
  config.data.data_dir = ''
  config.data.manual_dir = '/usr/share/datasets/fashion-mnist'
  config.data.image_key = 'image'
  config.data.label_key = 'label'
  config.data.image_size = 28
  config.data.channels = 1
  config.data.resize = 'none'
  config.data.random_flip = False
  config.data.num_threads = 4

  config.model = ml_collections.ConfigDict()
  config.model.name = 'vae'
  config.model.latent = 'spatial'
  config.model.ch = 64
  config.model.ch_mult = (1, 2, 2)  # downsampling factor 2**(len - 1) = 4
  config.model.num_res_blocks = 2
  config.model.latent_dim = 3  # latent channels
  config.model.compute_dtype = 'float32'

  config.autoencoder = ml_collections.ConfigDict()
  config.autoencoder.reconstruction = 'l1'  # 'l1' | 'l2'
  config.autoencoder.kl_weight = 1e-6  # LDM's: a barely regularised latent
  config.autoencoder.disc_start = 25_000  # step from which the PatchGAN loss is on
  config.autoencoder.disc_weight = 0.5
  config.autoencoder.adaptive_disc_weight = True

  config.discriminator = ml_collections.ConfigDict()
  config.discriminator.name = 'patchgan'
  config.discriminator.ch = 64
  config.discriminator.num_layers = 2  # stride-2 layers: 28x28 -> 5x5 patch logits
  config.discriminator.compute_dtype = 'float32'

  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.learning_rate = 4.5e-4
  config.optimizer.warmup_steps = 500
  config.optimizer.decay = 'constant'
  config.optimizer.end_lr_ratio = 1.0
  config.optimizer.b1 = 0.5  # LDM's Adam betas for both networks
  config.optimizer.b2 = 0.9
  config.optimizer.eps = 1e-8
  config.optimizer.weight_decay = 0.0
  config.optimizer.grad_clip = 0.0
  config.discriminator_optimizer = ml_collections.ConfigDict(config.optimizer.to_dict())

  if variant in ('demo', 'f8'):
    config.total_steps = 3_000
    config.log_every = 100
    config.sample_every = 1_000
    config.checkpoint_every = 500
    config.data.num_threads = 1
    config.model.ch = 16
    config.model.ch_mult = (1, 2, 2)
    config.model.num_res_blocks = 1
    config.autoencoder.disc_start = 1_500
    config.discriminator.ch = 16
    config.optimizer.warmup_steps = 100
    config.discriminator_optimizer.warmup_steps = 100
    if variant == 'f8':
      config.data.image_size = 32
      config.data.resize = 'pad'
      config.model.ch_mult = (1, 2, 2, 4)
      config.model.latent_dim = 4
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
    config.autoencoder.disc_start = 3
    config.discriminator.ch = 8
    config.optimizer.warmup_steps = 2
    config.discriminator_optimizer.warmup_steps = 2

  config.lock()
  return config
