r"""Pix2Pix on edges2fashion: Fashion-MNIST edge maps -> garments (paired translation).

  jaxgen-train --config=configs/pix2pix_edges2fashion.py --workdir=runs/pix2pix

Variants (`--config=configs/pix2pix_edges2fashion.py:VARIANT`):
  (none)  pix2pix's settings scaled to 32 px: U-Net 64 wide, 5 halvings (32 -> 1 px),
          instance norm, dropout on the block next to the innermost; a conditional PatchGAN
          with 2 stride-2 layers (6x6 patches); Adam 2e-4, beta1 0.5, the rate constant for
          half the steps, then linearly to 0; batch 64 (pix2pix trains at batch 1).
  demo    `make pix2pix-demo`: U-Net and PatchGAN 32 wide, 1,500 steps (about 10 minutes
          on 2 CPU cores), grids of 16 test pairs every 500 steps.
  tiny    a few steps of minute networks: what the tests run.

edges2fashion is built from the Fashion-MNIST IDX files on first use (no download); the
28 px images are padded to 32 (black, as both the edges and the garments' backgrounds
are), and pix2pix's jitter is resized to 36 then cropped back to 32 (286 -> 256 scaled).
"""

import common
import ml_collections


def adam(**overrides) -> ml_collections.ConfigDict:
  """pix2pix's Adam: 2e-4, beta1 0.5, no warm-up, constant then linear decay to 0."""
  return common.adamw(**{**dict(learning_rate=2e-4, warmup_steps=0, decay='linear',
                                decay_start=0.5, end_lr_ratio=0.0, b1=0.5, b2=0.999,
                                grad_clip=0.0), **overrides})


def patchgan() -> ml_collections.ConfigDict:
  """A PatchGAN scaled to 28-32 px: 2 stride-2 layers (5x5-6x6 patches), instance norm."""
  return ml_collections.ConfigDict({'name': 'patchgan', 'ch': 64, 'num_layers': 2,
                                    'norm': 'instance', 'compute_dtype': 'float32'})


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = common.check_variant(arg, ('demo', 'tiny'))
  config = common.run('pix2pix', total_steps=20_000, global_batch_size=64)
  config.data = common.tfds_images(
      name='edges2fashion', source_key='edges', target_key='image', label_key='',
      image_size=32, resize='pad', jitter_size=36, random_flip=True)

  config.model = ml_collections.ConfigDict()  # the generator
  config.model.name = 'pix2pix_unet'
  config.model.ch = 64
  config.model.num_downs = 5
  config.model.norm = 'instance'  # 'instance' | 'group' | 'layer' | 'none'
  config.model.dropout_blocks = 1  # dropout 0.5 on this many blocks next to the innermost
  config.model.compute_dtype = 'float32'

  config.discriminator = patchgan()  # conditional: on (source, image)

  config.pix2pix = ml_collections.ConfigDict()
  config.pix2pix.loss = 'vanilla'  # 'vanilla' (BCE, pix2pix's) | 'lsgan'
  config.pix2pix.l1_weight = 100.0

  config.optimizer = adam()  # the generator's
  config.discriminator_optimizer = adam()

  if variant == 'demo':
    config.update(dict(total_steps=1_500, log_every=100, sample_every=500,
                       checkpoint_every=500, num_sample_images=16))
    config.model.ch = config.discriminator.ch = 32
  if variant == 'tiny':
    common.tiny(config)
    config.model.ch = 4
    config.discriminator.ch = 4
  return config
