r"""CycleGAN on sneaker2boot: Fashion-MNIST sneakers (A) <-> ankle boots (B), unpaired.

  jaxgen-train --config=configs/cyclegan_sneaker2boot.py --workdir=runs/cyclegan

Variants (`--config=configs/cyclegan_sneaker2boot.py:VARIANT`):
  (none)  CycleGAN's settings at 28 px: two ResNet generators (ch 64, 6 residual blocks,
          instance norm, reflection padding), two PatchGANs (ch 64, 2 stride-2 layers: 5x5
          patches), LSGAN, cycle loss lambda 10 both ways, identity loss 0.5 lambda, image
          pools of 50 generated images per domain; Adam 2e-4, beta1 0.5, the rate constant
          for half the steps, then linearly to 0; batch 16 (CycleGAN trains at batch 1).
  demo    `make cyclegan-demo`: generators 16 wide with 3 residual blocks, PatchGANs 16
          wide, 2,500 steps (about 9 minutes on 2 CPU cores), grids every 500 steps.
  tiny    a few steps of minute networks: what the tests run.

sneaker2boot is built from the Fashion-MNIST IDX files on first use (no download). It has
TFDS cycle_gan's splits and features: `--config.data.name=cycle_gan/horse2zebra
--config.data.channels=3 --config.data.image_size=256 --config.data.resize=resize
--config.data.jitter_size=286` trains on horse2zebra once it is prepared as array_record.
"""

import common
import ml_collections
import pix2pix_edges2fashion


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = common.check_variant(arg, ('demo', 'tiny'))
  config = common.run('cyclegan', total_steps=20_000, global_batch_size=16)
  config.data = common.tfds_images(
      name='sneaker2boot', split='trainA', target_split='trainB', eval_split='testA',
      target_eval_split='testB', label_key='', random_flip=True)

  config.model = ml_collections.ConfigDict()  # both generators
  config.model.name = 'cyclegan_resnet'
  config.model.ch = 64
  config.model.num_blocks = 6  # CycleGAN: 6 below 256 px, 9 at 256
  config.model.norm = 'instance'
  config.model.compute_dtype = 'float32'

  config.discriminator = pix2pix_edges2fashion.patchgan()  # both discriminators

  config.cyclegan = ml_collections.ConfigDict()
  config.cyclegan.loss = 'lsgan'  # 'lsgan' (CycleGAN's) | 'vanilla'
  config.cyclegan.lambda_cycle = 10.0
  config.cyclegan.lambda_identity = 0.5  # x lambda_cycle; 0 turns the identity loss off
  config.cyclegan.pool_size = 50  # generated images kept per domain; 0: no pool

  config.optimizer = pix2pix_edges2fashion.adam()  # both generators
  config.discriminator_optimizer = pix2pix_edges2fashion.adam()  # both discriminators

  if variant == 'demo':
    config.update(dict(total_steps=2_500, log_every=100, sample_every=500,
                       checkpoint_every=500, num_sample_images=16))
    config.model.update(dict(ch=16, num_blocks=3))
    config.discriminator.ch = 16
  if variant == 'tiny':
    common.tiny(config)
    config.model.update(dict(ch=4, num_blocks=1))
    config.discriminator.ch = 4
    config.cyclegan.pool_size = 20  # fills in 2 tiny steps (batch 16), then swaps
  return config
