r"""StyleGAN2 on Fashion-MNIST, images padded to 32x32 (a power of two).

Run:
  jaxgen-train --config=configs/stylegan2_fashion_mnist.py --workdir=runs/sg2_fmnist
  jaxgen-sample --workdir=runs/sg2_fmnist --sample.truncation_psi=0.7

Variants (after the colon):
  demo     narrow networks (widths 32), z = w = 64, batch 32, 2,000 steps: a CPU-sized
           StyleGAN2 (~3 steps/s on one CPU device of a 2-core AMD EPYC); `make gan-demo`.
  tiny     a few steps of minute networks: what the tests run.
  (none)   StyleGAN2-ADA's small-data settings at 32x32: widths 512, mapping depth 2,
           batch 64, lr 0.0025, gamma 0.01, ADA (bgc, target 0.6); path-length
           regularisation and style mixing on.

Networks: config.model is the generator (mapping + skip synthesis), config.discriminator
the residual discriminator; the GAN fields are configs/dcgan_fashion_mnist.py's `gan()`.
"""

import common
import dcgan_fashion_mnist
import ml_collections


def generator(**overrides) -> ml_collections.ConfigDict:
  model = ml_collections.ConfigDict()
  model.name = 'stylegan2'
  model.z_dim = 512
  model.w_dim = 512
  model.mapping_layers = 2  # StyleGAN2-ADA: 8 for FFHQ-like data, 2 for small datasets
  model.mapping_lr_multiplier = 0.01
  # Width at resolution r: min(channel_base / r, channel_max).
  model.channel_base = 16384
  model.channel_max = 512
  model.num_classes = 0  # > 0: a label embedding joins z in the mapping network
  model.compute_dtype = 'float32'
  model.update(overrides)
  return model


def discriminator(**overrides) -> ml_collections.ConfigDict:
  disc = ml_collections.ConfigDict()
  disc.name = 'stylegan2'
  disc.architecture = 'resnet'  # 'resnet' (residual blocks) | 'orig' (no skip: ADA's cifar)
  disc.channel_base = 16384
  disc.channel_max = 512
  disc.mbstd_group_size = 32  # minibatch-stddev group (min with the batch); ADA's cifar: 32
  disc.mbstd_channels = 1
  disc.cmap_dim = 0  # class-conditional projection width; 0: the 4x4 width
  disc.mapping_layers = 8  # of the label mapping (class-conditional only)
  disc.compute_dtype = 'float32'
  disc.update(overrides)
  return disc


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = common.check_variant(arg, ('demo', 'tiny'))
  config = common.run('gan', total_steps=100_000, global_batch_size=64)
  config.data = common.tfds_images(image_size=32, resize='pad')
  config.model = generator()
  config.discriminator = discriminator()
  config.gan = dcgan_fashion_mnist.gan(r1_gamma=0.01, pl_weight=2.0, style_mixing=0.9,
                                       ema_kimg=20.0, augment='ada')
  adam = dict(learning_rate=0.0025, b1=0.0, b2=0.99)
  config.optimizer = dcgan_fashion_mnist.adam(**adam)
  config.discriminator_optimizer = dcgan_fashion_mnist.adam(**adam)

  if variant == 'demo':
    config.update(dict(total_steps=2_000, global_batch_size=32, log_every=100,
                       sample_every=500, checkpoint_every=500))
    config.data.num_threads = 1
    config.model.update(dict(z_dim=64, w_dim=64, channel_base=1024, channel_max=32))
    config.discriminator.update(dict(channel_base=1024, channel_max=32, mbstd_group_size=4))
    config.gan.ema_kimg = 10.0
  elif variant == 'tiny':
    common.tiny(config)
    config.model.update(dict(z_dim=8, w_dim=8, mapping_layers=1, channel_base=64,
                             channel_max=8))
    config.discriminator.update(dict(channel_base=64, channel_max=8, mbstd_group_size=4))
    # Both regularisers at steps 0 and 4 of the 6; ADA moves p fast, every 2 steps (so a
    # resume at step 3 restores half-accumulated sign statistics).
    config.gan.update(dict(d_reg_interval=4, g_reg_interval=4, ada_interval=2, ada_kimg=1.0,
                           ada_p_init=0.2))

  config.lock()
  return config
