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

import common
import ml_collections


def encoder_decoder(**overrides) -> ml_collections.ConfigDict:
  """The convolutional encoder/decoder pair of jaxgen/models/vae.py."""
  model = ml_collections.ConfigDict()
  model.name = 'vae'
  model.ch = 64
  model.ch_mult = (1, 2, 2)  # 28 -> 14 -> 7
  model.num_res_blocks = 2
  model.latent = 'dense'  # 'dense': a latent_dim vector; 'spatial': latent_dim channels
  model.latent_dim = 32
  model.compute_dtype = 'float32'
  model.update(overrides)
  return model


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = common.check_variant(arg, ('demo', 'tiny'))
  config = common.run('vae', total_steps=50_000)
  config.data = common.tfds_images()
  config.model = encoder_decoder()

  config.vae = ml_collections.ConfigDict()
  config.vae.likelihood = 'logistic'  # 'logistic' (8-bit) | 'gaussian' | 'bernoulli'
  config.vae.gaussian_scale = 0.0  # gaussian only: > 0 fixes sigma; 0 learns it per pixel
  config.vae.beta = 1.0  # > 1: beta-VAE
  config.vae.kl_warmup_steps = 2_000  # beta rises linearly from 0 over these steps
  config.vae.iw_samples = 100  # k of the importance-weighted bound jaxgen-eval reports

  config.optimizer = common.adamw(learning_rate=1e-3, warmup_steps=500)

  if variant == 'demo':
    config.update(dict(total_steps=2_400, sample_every=800, checkpoint_every=400))
    config.data.num_threads = 1
    config.model.update(dict(ch=16, num_res_blocks=1, latent_dim=16))
    config.vae.kl_warmup_steps = 500
    config.optimizer.warmup_steps = 100
  elif variant == 'tiny':
    common.tiny(config)
    config.model.update(dict(ch=8, ch_mult=(1,), num_res_blocks=1, latent_dim=4))
    config.vae.kl_warmup_steps = 4
    config.vae.iw_samples = 4

  config.lock()
  return config
