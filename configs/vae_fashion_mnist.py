r"""A VAE on 8-bit Fashion-MNIST (discretised logistic likelihood), reported in bits/dim.

Run (CPU demo, ~13 minutes on 2 cores):
  jaxgen-train --config=configs/vae_fashion_mnist.py:demo --workdir=runs/vae_demo
Then the test-set bounds, reconstructions and latent walks:
  jaxgen-eval --workdir=runs/vae_demo
  jaxgen-sample --workdir=runs/vae_demo --interpolate

Variants (after the colon):
  demo     0.2M-parameter VAE, 16-d latent, batch 128, 2,400 steps (5 epochs).
  tiny     a few steps of a minute VAE: what the tests run.
  (none)   a longer run: 32-d latent, wider network, 50k steps.

beta-VAE: --config.vae.beta=4. Binarised data: --config.vae.likelihood=bernoulli.
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = arg or 'default'
  if variant not in ('default', 'demo', 'tiny'):
    raise ValueError(f'unknown variant {variant!r}; use demo, tiny or nothing')
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.objective = 'vae'
  config.total_steps = 50_000
  config.global_batch_size = 128
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

  config.mesh = ml_collections.ConfigDict({'data': -1, 'fsdp': 1})
  config.sharding = ml_collections.ConfigDict()
  config.sharding.rules = (('.*', 'fsdp'),)
  config.sharding.fsdp_min_size = 2**16

  config.data = ml_collections.ConfigDict()
  config.data.name = 'fashion_mnist'
  config.data.split = 'train'
  config.data.eval_split = 'test'  # reconstruction grids, jaxgen-eval bounds, interpolation
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
  config.model.ch = 64
  config.model.ch_mult = (1, 2, 2)  # 28 -> 14 -> 7, then a dense layer to the latent
  config.model.num_res_blocks = 2
  config.model.latent = 'dense'
  config.model.latent_dim = 32
  config.model.compute_dtype = 'float32'

  config.vae = ml_collections.ConfigDict()
  config.vae.likelihood = 'logistic'  # 'logistic' (8-bit) | 'gaussian' | 'bernoulli'
  config.vae.gaussian_scale = 0.0  # gaussian only: > 0 fixes sigma; 0 learns it per pixel
  config.vae.beta = 1.0  # > 1: beta-VAE
  config.vae.kl_warmup_steps = 2_000  # beta rises linearly from 0 over these steps
  config.vae.iw_samples = 100  # k of the importance-weighted bound jaxgen-eval reports

  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.learning_rate = 1e-3
  config.optimizer.warmup_steps = 500
  config.optimizer.decay = 'cosine'
  config.optimizer.end_lr_ratio = 0.1
  config.optimizer.b1 = 0.9
  config.optimizer.b2 = 0.999
  config.optimizer.eps = 1e-8
  config.optimizer.weight_decay = 0.0
  config.optimizer.grad_clip = 1.0

  if variant == 'demo':
    config.total_steps = 2_400
    config.log_every = 100
    config.sample_every = 800
    config.checkpoint_every = 400
    config.data.num_threads = 1
    config.model.ch = 16
    config.model.num_res_blocks = 1
    config.model.latent_dim = 16
    config.vae.kl_warmup_steps = 500
    config.optimizer.warmup_steps = 100
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
    config.model.latent_dim = 4
    config.vae.kl_warmup_steps = 4
    config.vae.iw_samples = 4
    config.optimizer.warmup_steps = 2

  config.lock()
  return config
