r"""A pixel-space DiT (Peebles & Xie 2023) on Fashion-MNIST, trained as a rectified flow.

Run (CPU demo):
  jaxgen-train --config=configs/dit_fashion_mnist.py:demo --workdir=runs/dit_demo

Variants (after the colon):
  demo     a 6-block DiT of width 128 on 4 x 4 patches (7 x 7 tokens), class-conditional.
  tiny     two blocks of width 32: what the tests run.
  (none)   DiT-S/2 (14 x 14 tokens), class-conditional, batch 256, 400k steps: an
           accelerator run.
"""

import common
import ddpm_fashion_mnist
import ml_collections


def dit(**overrides) -> ml_collections.ConfigDict:
  model = ml_collections.ConfigDict()
  model.name = 'dit'
  # 'S' | 'B' | 'L' | 'XL': the published (hidden, depth, heads); 'custom': the three below.
  model.size = 'S'
  model.hidden = 384
  model.depth = 12
  model.heads = 6
  model.patch = 2  # 2 | 4 | 8 pixels (or latents) per token side
  model.mlp_ratio = 4.0
  model.num_classes = 0  # > 0: class-conditional, with classifier-free guidance
  model.compute_dtype = 'float32'
  model.remat = 'none'  # 'none' | 'full' | 'dots': recompute block activations in backward
  model.update(overrides)
  return model


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = common.check_variant(arg, ('demo', 'tiny'))
  config = common.run('diffusion', total_steps=400_000, global_batch_size=256)
  config.data = common.tfds_images()
  config.model = dit(num_classes=10)
  config.diffusion = ddpm_fashion_mnist.ddpm(
      formulation='flow', sampler='heun', spacing='time_uniform', sample_steps=18)
  # DiT's recipe: AdamW at a constant 1e-4, no weight decay; EMA 0.9999.
  config.optimizer = common.adamw(learning_rate=1e-4, weight_decay=0.0, warmup_steps=0,
                                  decay='constant', end_lr_ratio=1.0)
  config.ema = ddpm_fashion_mnist.ema()

  if variant == 'demo':
    config.update(dict(total_steps=1_600, global_batch_size=64, log_every=50,
                       sample_every=400, checkpoint_every=200))
    config.data.num_threads = 1
    config.model.update(dict(size='custom', hidden=128, depth=6, heads=4, patch=4))
    config.optimizer.update(dict(learning_rate=1e-3, warmup_steps=100, decay='cosine',
                                 end_lr_ratio=0.1))
    config.ema.decay = 0.995
  elif variant == 'tiny':
    common.tiny(config)
    config.model.update(dict(size='custom', hidden=32, depth=2, heads=2, patch=4))
    config.diffusion.sample_steps = 3
    config.ema.decay = 0.9

  config.lock()
  return config
