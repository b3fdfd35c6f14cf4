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

import common
import ml_collections
import vae_fashion_mnist


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = common.check_variant(arg, ('demo', 'f8', 'tiny'))
  # grad_accum_steps must stay 1: the discriminator step needs the whole batch. The grids
  # are of reconstructions (an autoencoder has no samples).
  config = common.run('autoencoder_kl', total_steps=50_000, global_batch_size=64)
  config.data = common.tfds_images()
  # ch_mult (1, 2, 2): downsampling factor 2**(len - 1) = 4; 3 latent channels.
  config.model = vae_fashion_mnist.encoder_decoder(latent='spatial', latent_dim=3)

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

  # LDM's Adam betas for both networks, a constant rate after the warm-up, no clipping.
  config.optimizer = common.adamw(learning_rate=4.5e-4, warmup_steps=500, decay='constant',
                                  end_lr_ratio=1.0, b1=0.5, b2=0.9, grad_clip=0.0)
  config.discriminator_optimizer = ml_collections.ConfigDict(config.optimizer.to_dict())

  if variant in ('demo', 'f8'):
    config.update(dict(total_steps=3_000, sample_every=1_000, checkpoint_every=500))
    config.data.num_threads = 1
    config.model.update(dict(ch=16, num_res_blocks=1))
    config.autoencoder.disc_start = 1_500
    config.discriminator.ch = 16
    config.optimizer.warmup_steps = 100
    config.discriminator_optimizer.warmup_steps = 100
    if variant == 'f8':
      config.data.update(dict(image_size=32, resize='pad'))
      config.model.update(dict(ch_mult=(1, 2, 2, 4), latent_dim=4))
  elif variant == 'tiny':
    common.tiny(config)
    config.model.update(dict(ch=8, ch_mult=(1, 2), num_res_blocks=1))
    config.autoencoder.disc_start = 3
    config.discriminator.ch = 8

  config.lock()
  return config
