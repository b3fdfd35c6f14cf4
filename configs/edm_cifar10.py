r"""EDM on CIFAR-10 with the published recipe (Karras et al. 2022, Table 7, "DDPM++ cond"/
"uncond", VP column): 128 channels, multipliers (2, 2, 2), 4 res blocks per resolution,
attention at 16x16, dropout 0.13, batch 512, Adam lr 1e-3 (warm-up over 10 Mimg), EMA
half-life 0.5 Mimg, 200 Mimg of training, Heun at 18 Karras levels (35 network
evaluations). Their FID at 35 NFE: 1.97 unconditional, 1.79 conditional
(--config.model.num_classes=10).

Differences, stated: jaxgen's UNet is DDPM's (res blocks with a time-embedding projection,
nearest-neighbour upsampling), not DDPM++'s (BigGAN-style resampling blocks, skip scaling),
at DDPM++'s widths and depths; EDM's non-leaking augmentation pipeline (p 0.12, with the
augmentation as a conditioning input) is not implemented: only x-flips are used.

Run (on an accelerator; CIFAR-10 must be prepared as array_record first):
  jaxgen-train --config=configs/edm_cifar10.py:gpu8 --workdir=runs/edm_cifar10

Variants (after the colon) set the layout for a machine, as in ddpm_cifar10.py:
  (none)   float32, batch split over all devices.
  tpu      bfloat16 compute, the batch over all chips of a slice.
  gpu8     one node with 8 GPUs: bfloat16 compute, mesh data=8.
Check a variant fits before launching it:
  jaxgen-train --config=configs/edm_cifar10.py:gpu8 --compile_only --num_cpu_devices=8 \
      --device_memory_gb=80
"""

import common
import ddpm_fashion_mnist
import ml_collections

BATCH = 512
MIMG = 1_000_000 // BATCH  # steps per million images


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = common.check_variant(arg, ('tpu', 'gpu8'))
  config = common.run('diffusion', total_steps=200 * MIMG, global_batch_size=BATCH,
                      sample_every=10_000, checkpoint_every=10_000)
  config.sharding.fsdp_min_size = 2**18
  config.data = common.tfds_images(name='cifar10', manual_dir='', image_size=32, channels=3,
                                   random_flip=True, num_threads=8)
  config.model = ddpm_fashion_mnist.unet(ch=128, ch_mult=(2, 2, 2), num_res_blocks=4,
                                         attn_resolutions=(16,), dropout=0.13)
  config.diffusion = ddpm_fashion_mnist.ddpm(formulation='edm', sampler='heun', spacing='karras',
                                             sample_steps=18)
  # Adam (no weight decay, no clipping), lr ramped up over 10 Mimg, then constant.
  config.optimizer = common.adamw(learning_rate=1e-3, warmup_steps=10 * MIMG, decay='constant',
                                  end_lr_ratio=1.0, eps=1e-8, grad_clip=0.0)
  # Half-life 0.5 Mimg: decay 0.5^(batch / 500k) per step; EDM2's power EMAs beside it.
  config.ema = ddpm_fashion_mnist.ema(decay=0.5 ** (BATCH / 500_000), warmup=False,
                                      power_sigma_rels=(0.05, 0.1), snapshot_every=10_000)

  if variant in ('tpu', 'gpu8'):
    config.model.compute_dtype = 'bfloat16'
  common.accelerator_layout(config, variant)
  config.lock()
  return config
