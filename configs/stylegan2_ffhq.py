r"""StyleGAN2 at 256x256 with StyleGAN2-ADA's `paper256` settings (FFHQ/LSUN at 256): a
layout for accelerators, checked with --compile_only (not trained here).

Run (on an accelerator, with a 256x256 face dataset prepared as TFDS array_record under
the name in data.name, e.g. FFHQ resized to 256 through a TFDS ImageFolder/custom builder):
  jaxgen-train --config=configs/stylegan2_ffhq.py:gpu8 --workdir=runs/sg2_ffhq \
      --config.data.name=<your dataset>

Settings (train.py's `paper256` spec): batch 64, channel_base 16384 (widths 512 up to 32 px,
then 256, 128, 64 at 256 px), mapping depth 8, Adam lr 0.0025 (betas 0, 0.99), R1 gamma 1
every 16 steps, path length 2 every 4, style mixing 0.9, G EMA half-life 20 kimg (no
ramp-up), minibatch-stddev group 8, ADA (bgc, target 0.6), x-flips.

Variants (after the colon):
  (none)   batch split over all devices, parameters replicated.
  tpu      a v4-8 / v5e-8 slice.
  gpu8     one node with 8 GPUs: mesh data=8.
  fsdp8    8 devices with parameters, EMA and Adam state sharded 8 ways (mesh fsdp=8).
Check a variant fits before launching it:
  jaxgen-train --config=configs/stylegan2_ffhq.py:gpu8 --compile_only --num_cpu_devices=8 \
      --device_memory_gb=16
"""

import common
import dcgan_fashion_mnist
import ml_collections
import stylegan2_fashion_mnist


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = common.check_variant(arg, ('tpu', 'gpu8', 'fsdp8'))
  config = common.run('gan', total_steps=25_000_000 // 64, global_batch_size=64,
                      sample_every=5_000, checkpoint_every=5_000)
  config.sharding.fsdp_min_size = 2**18
  config.data = common.tfds_images(name='ffhq', manual_dir='', label_key='', image_size=256,
                                   channels=3, random_flip=True, num_threads=16)
  config.model = stylegan2_fashion_mnist.generator(channel_base=16384, mapping_layers=8)
  config.discriminator = stylegan2_fashion_mnist.discriminator(channel_base=16384,
                                                                mbstd_group_size=8)
  config.gan = dcgan_fashion_mnist.gan(r1_gamma=1.0, pl_weight=2.0, style_mixing=0.9,
                                       ema_kimg=20.0, ema_rampup=0.0, augment='ada')
  config.optimizer = dcgan_fashion_mnist.adam(learning_rate=0.0025, b1=0.0, b2=0.99)
  config.discriminator_optimizer = dcgan_fashion_mnist.adam(learning_rate=0.0025, b1=0.0,
                                                            b2=0.99)
  config.num_sample_images = 16
  common.accelerator_layout(config, variant)

  config.lock()
  return config
