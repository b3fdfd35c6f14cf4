r"""Rectified flow (as in SD3, Esser et al. 2024) on Fashion-MNIST: the DDPM config's UNet
trained on straight paths x_t = (1 - t) x0 + t eps with logit-normal t to predict the
velocity eps - x0, sampled with Heun at time-uniform levels.

Run (CPU demo):
  jaxgen-train --config=configs/flow_fashion_mnist.py:demo --workdir=runs/flow_demo

Variants (after the colon): demo, tiny and (none), as in ddpm_fashion_mnist.py, whose fields
these are; only config.diffusion differs.
"""

import ddpm_fashion_mnist
import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = ddpm_fashion_mnist.get_config(arg)
  config.diffusion.update(dict(formulation='flow', sampler='heun', spacing='time_uniform',
                               sample_steps=18))
  if arg == 'tiny':
    config.diffusion.sample_steps = 3
  return config
