r"""StyleGAN2-ADA's published CIFAR-10 settings (Karras et al. 2020, `--cfg=cifar`): the
anchor is their FID 2.92 unconditional, 2.42 class-conditional (--config.model.num_classes=10).

Run (on an accelerator; CIFAR-10 must be prepared as array_record first, e.g.
`tfds build cifar10 --file_format=array_record`, which needs the internet):
  jaxgen-train --config=configs/stylegan2_cifar10.py:gpu8 --workdir=runs/sg2_cifar10

Settings (train.py's `cifar` spec): batch 64, widths 512 at every resolution (channel_base
32768, max 512), mapping depth 2, Adam lr 0.0025 (betas 0, 0.99), R1 gamma 0.01 every 16
steps, G EMA half-life 500 kimg with ramp-up 0.05, minibatch-stddev group 32, ADA (bgc,
target 0.6), no path-length regularisation, no style mixing, the 'orig' discriminator (no
residual skips), x-flips of the data. StyleGAN2-ADA keeps G's lazy-regularisation scaling
(lr x 4/5, betas ^ 4/5) with path length off; so does this config, explicitly.

Variants (after the colon) set the layout for a machine; nothing else changes:
  (none)   float32, batch split over all devices, parameters replicated.
  tpu      a v4-8 / v5e-8 slice: the batch of 64 split over all chips.
  gpu8     one node with 8 GPUs: mesh data=8 (8 images per GPU).
Check a variant fits before launching it:
  jaxgen-train --config=configs/stylegan2_cifar10.py:gpu8 --compile_only --num_cpu_devices=8 \
      --device_memory_gb=16
"""

import common
import dcgan_fashion_mnist
import ml_collections
import stylegan2_fashion_mnist


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = common.check_variant(arg, ('tpu', 'gpu8'))
  config = common.run('gan', total_steps=100_000_000 // 64, global_batch_size=64,
                      sample_every=10_000, checkpoint_every=10_000)
  config.sharding.fsdp_min_size = 2**18
  config.data = common.tfds_images(name='cifar10', manual_dir='', image_size=32, channels=3,
                                   random_flip=True, num_threads=8)
  config.model = stylegan2_fashion_mnist.generator(channel_base=32768, mapping_layers=2)
  config.discriminator = stylegan2_fashion_mnist.discriminator(
      channel_base=32768, mbstd_group_size=32, architecture='orig')
  config.gan = dcgan_fashion_mnist.gan(r1_gamma=0.01, pl_weight=0.0, style_mixing=0.0,
                                       ema_kimg=500.0, ema_rampup=0.05, augment='ada')
  # G keeps StyleGAN2-ADA's c = 4/5 of its (idle) path-length interval.
  c = 4 / 5
  config.optimizer = dcgan_fashion_mnist.adam(learning_rate=0.0025 * c, b1=0.0, b2=0.99**c)
  config.discriminator_optimizer = dcgan_fashion_mnist.adam(learning_rate=0.0025, b1=0.0,
                                                            b2=0.99)
  common.accelerator_layout(config, variant)

  config.lock()
  return config
