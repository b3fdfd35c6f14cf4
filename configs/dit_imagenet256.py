r"""DiT-XL/2 on ImageNet 256x256 latents (Peebles & Xie 2023): class-conditional, 28 blocks of
width 1152 on 32x32x4 latents (16x16 tokens of 2x2 latents), AdamW 1e-4 constant, no weight
decay, batch 256, EMA 0.9999, 7M steps for their FID 2.27 (cfg 1.5, 250 DDPM steps). Here it
trains as DDPM with their linear schedule (as the paper) by default; --config.diffusion.*
switches it to EDM or flow.

The latents are those of a KL-f8 autoencoder run with 4 latent channels at 256 px
(autoencoder.workdir; the paper used Stable Diffusion's VAE, whose weights this project
cannot fetch), and ImageNet must be prepared as TFDS array_record at 256 px.

Run (on an accelerator):
  jaxgen-train --config=configs/dit_imagenet256.py:tpu --workdir=runs/dit_xl2 \
      --config.autoencoder.workdir=runs/ae_imagenet256

Variants (after the colon):
  (none)   float32, batch over all devices.
  tpu      a v4-8 / v5e-8 slice: bfloat16 compute, parameters, EMA and Adam state
           fsdp-sharded 4 ways (mesh data=-1, fsdp=4), the batch in 8 micro-batches.
  gpu8     8 GPUs: bfloat16 compute, mesh data=8.
Check the denoiser's step fits (on 32x32x4 inputs, without the autoencoder's encoder):
  jaxgen-train --config=configs/dit_imagenet256.py:gpu8 --compile_only --num_cpu_devices=8 \
      --device_memory_gb=80 --config.autoencoder.workdir= --config.data.image_size=32 \
      --config.data.channels=4
"""

import common
import ddpm_fashion_mnist
import dit_fashion_mnist
import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = common.check_variant(arg, ('tpu', 'gpu8'))
  config = common.run('diffusion', total_steps=7_000_000, global_batch_size=256,
                      sample_every=50_000, checkpoint_every=50_000)
  config.sharding.fsdp_min_size = 2**18
  config.data = common.tfds_images(name='imagenet2012', manual_dir='', image_size=256,
                                   channels=3, resize='resize', random_flip=True,
                                   num_threads=16, eval_split='validation')
  config.model = dit_fashion_mnist.dit(size='XL', patch=2, num_classes=1000)
  config.diffusion = ddpm_fashion_mnist.ddpm(sampler='ddpm', sample_steps=250,
                                             guidance_scale=1.5)
  config.optimizer = common.adamw(learning_rate=1e-4, warmup_steps=0, decay='constant',
                                  end_lr_ratio=1.0, grad_clip=0.0)
  config.ema = ddpm_fashion_mnist.ema(decay=0.9999, warmup=False)
  config.autoencoder = ml_collections.ConfigDict(dict(workdir='runs/ae_imagenet256', step=0))

  if variant in ('tpu', 'gpu8'):
    config.model.compute_dtype = 'bfloat16'
  if variant == 'tpu':
    config.mesh.fsdp = 4
    config.grad_accum_steps = 8
  common.accelerator_layout(config, variant)
  config.lock()
  return config
