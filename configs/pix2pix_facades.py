r"""Pix2Pix on facades at 256x256 with pix2pix's own settings: a layout for accelerators,
checked with --compile_only (not trained here).

facades comes as pix2pix's folder of A|B images (photo | label map; pix2pix trains it
B -> A, labels to photos). Make it a TFDS dataset once, then train:
  jaxgen-data pix2pix --input_dir=datasets/facades --name=facades
  jaxgen-train --config=configs/pix2pix_facades.py:gpu8 --workdir=runs/facades

Settings (pytorch-CycleGAN-and-pix2pix's `--model pix2pix --direction BtoA`): the U-Net
`unet_256` (8 halvings, 64 wide, dropout on the 3 blocks next to the innermost), the 70x70
PatchGAN (3 stride-2 layers), instance norm in both (pix2pix uses batch norm at batch 1,
which is instance norm with running statistics), vanilla GAN loss, L1 weight 100, jitter
286 -> 256 with flips, Adam 2e-4 (beta1 0.5), 200 epochs of the 400 training pairs with
the rate constant for the first 100. Batch 8 (pix2pix: 1) at the same learning rate.

Variants (after the colon):
  (none)   the batch split over all devices.
  tpu      a v4-8 / v5e-8 slice.
  gpu8     one node with 8 GPUs: mesh data=8.
Check a variant fits before launching it:
  jaxgen-train --config=configs/pix2pix_facades.py:gpu8 --compile_only --num_cpu_devices=8 \
      --device_memory_gb=16
"""

import common
import ml_collections
import pix2pix_edges2fashion

EPOCHS, TRAIN_PAIRS, BATCH = 200, 400, 8


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = common.check_variant(arg, ('tpu', 'gpu8'))
  config = pix2pix_edges2fashion.get_config()
  config.update(dict(total_steps=EPOCHS * TRAIN_PAIRS // BATCH, global_batch_size=BATCH,
                     sample_every=1_000, checkpoint_every=1_000, num_sample_images=16))
  config.data = common.tfds_images(
      name='facades', manual_dir='', source_key='b', target_key='a', label_key='',
      split='train', eval_split='val', image_size=256, channels=3, resize='resize',
      jitter_size=286, random_flip=True, num_threads=8)
  config.model.update(dict(ch=64, num_downs=8, dropout_blocks=3))
  config.discriminator.update(dict(ch=64, num_layers=3))
  common.accelerator_layout(config, variant)
  return config
