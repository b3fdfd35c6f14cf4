r"""DDPM on CIFAR-10 with the published recipe (Ho et al. 2020): the 35.7M-parameter UNet.

Run (on an accelerator; CIFAR-10 must be prepared as array_record first, e.g.
`tfds build cifar10 --file_format=array_record`, which needs the internet):
  jaxgen-train --config=configs/ddpm_cifar10.py --workdir=runs/ddpm_cifar10

Variants (after the colon) set the layout for a machine; nothing else changes:
  (none)   float32, batch split over all devices, parameters replicated: runs anywhere.
  tpu      a v4-8 (4 chips) or v5e-8 (8 chips) slice: bfloat16 compute, batch 128 split
           over all chips (32 / 16 per chip), parameters replicated (the model is small).
  gpu8     one node with 8 GPUs: bfloat16 compute, mesh data=8.
  fsdp8    8 devices with parameters, EMA and Adam state sharded 8 ways (mesh fsdp=8):
           the layout for models that do not fit replicated.
Check a variant fits before launching it:
  jaxgen-train --config=configs/ddpm_cifar10.py:tpu --compile_only --num_cpu_devices=8 \
      --device_memory_gb=16

Benchmark its training step (see benchmarks/train_step.py):
  python benchmarks/train_step.py --config=configs/ddpm_cifar10.py --batch_size=8
"""

import common
import ddpm_fashion_mnist
import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = common.check_variant(arg, ('tpu', 'gpu8', 'fsdp8'))
  config = common.run('diffusion', total_steps=800_000, sample_every=10_000,
                      checkpoint_every=10_000)
  config.sharding.fsdp_min_size = 2**18
  config.data = common.tfds_images(name='cifar10', manual_dir='', image_size=32, channels=3,
                                     random_flip=True, num_threads=8)
  config.model = ddpm_fashion_mnist.unet(ch=128, ch_mult=(1, 2, 2, 2), attn_resolutions=(16,))
  config.diffusion = ddpm_fashion_mnist.ddpm(sampler='ddpm', sample_steps=1000, eta=1.0)
  config.optimizer = common.adamw(warmup_steps=5_000, decay='constant', end_lr_ratio=1.0)
  config.ema = ddpm_fashion_mnist.ema(warmup=False)

  if variant in ('tpu', 'gpu8', 'fsdp8'):
    config.model.compute_dtype = 'bfloat16'
  common.accelerator_layout(config, variant)

  config.lock()
  return config
