r"""CycleGAN on TFDS cycle_gan/horse2zebra at 256x256 with CycleGAN's own settings: a layout
for accelerators, checked with --compile_only (not trained here).

  tfds build cycle_gan/horse2zebra --file_format=array_record   # once, with the internet
  jaxgen-train --config=configs/cyclegan_horse2zebra.py:gpu8 --workdir=runs/horse2zebra
Your own trainA/trainB/testA/testB folders: `jaxgen-data cyclegan --input_dir=DIR --name=NAME`,
then add --config.data.name=NAME.

Settings (pytorch-CycleGAN-and-pix2pix's `--model cycle_gan`): two ResNet generators
(`resnet_9blocks`, 64 wide, reflection padding), two 70x70 PatchGANs (3 stride-2 layers),
instance norm, LSGAN, cycle loss 10 both ways, identity loss 0.5 x 10, image pools of 50,
jitter 286 -> 256 with flips, Adam 2e-4 (beta1 0.5), 200 epochs of the larger domain (1,334
zebras) with the rate constant for the first 100. Batch 8 (CycleGAN: 1) at the same rate.

Variants (after the colon):
  (none)   the batch split over all devices.
  tpu      a v4-8 / v5e-8 slice.
  gpu8     one node with 8 GPUs: mesh data=8.
Check a variant fits before launching it:
  jaxgen-train --config=configs/cyclegan_horse2zebra.py:gpu8 --compile_only --num_cpu_devices=8 \
      --device_memory_gb=16
"""

import common
import cyclegan_sneaker2boot
import ml_collections

EPOCHS, EPOCH_IMAGES, BATCH = 200, 1_334, 8


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = common.check_variant(arg, ('tpu', 'gpu8'))
  config = cyclegan_sneaker2boot.get_config()
  config.update(dict(total_steps=EPOCHS * EPOCH_IMAGES // BATCH, global_batch_size=BATCH,
                     sample_every=1_000, checkpoint_every=1_000, num_sample_images=16))
  config.data = common.tfds_images(
      name='cycle_gan/horse2zebra', manual_dir='', split='trainA', target_split='trainB',
      eval_split='testA', target_eval_split='testB', label_key='', image_size=256,
      channels=3, resize='resize', jitter_size=286, random_flip=True, num_threads=8)
  config.model.update(dict(ch=64, num_blocks=9))
  config.discriminator.update(dict(ch=64, num_layers=3))
  common.accelerator_layout(config, variant)
  return config
