r"""EDM (Karras et al. 2022) on Fashion-MNIST: the DDPM config's UNet trained with EDM's
preconditioning, log-normal noise levels and loss weight, sampled with Heun at Karras levels.

Run (CPU demo):
  jaxgen-train --config=configs/edm_fashion_mnist.py:demo --workdir=runs/edm_demo

Variants (after the colon): demo, tiny and (none), as in ddpm_fashion_mnist.py, whose fields
these are; only config.diffusion differs.
"""

import ddpm_fashion_mnist
import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = ddpm_fashion_mnist.get_config(arg)
  # Heun at 18 Karras levels: 35 network evaluations (EDM's CIFAR-10 setting).
  config.diffusion.update(dict(formulation='edm', sampler='heun', spacing='karras',
                               sample_steps=18))
  # EDM2's power-function EMAs beside the usual one, with a snapshot at every checkpoint:
  # `jaxgen-eval posthoc_ema` picks the EMA width after training.
  config.ema.update(dict(power_sigma_rels=(0.05, 0.1), snapshot_every=config.checkpoint_every))
  if arg == 'tiny':
    config.diffusion.sample_steps = 3
    config.ema.snapshot_every = 2
  return config
