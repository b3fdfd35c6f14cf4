r"""Latent diffusion on Fashion-MNIST: a class-conditional DiT trained as a rectified flow
on the 7x7x3 latents of the KL autoencoder of `make ae-demo` (Rombach et al. 2022).

Run (CPU demo; the autoencoder first):
  make ae-demo    # runs/ae_demo
  jaxgen-train --config=configs/ldm_fashion_mnist.py:demo --workdir=runs/ldm_demo
  jaxgen-eval --workdir=runs/ldm_demo --num_samples=10000    # in pixel space

The autoencoder's parameters are read once from autoencoder.workdir (at autoencoder.step;
0: its latest checkpoint), frozen, laid out on this run's mesh and never saved with it; the
latents are scaled to unit std on the first batch (LDM's scale_by_std, kept in the state).
Samples are decoded to pixels for the grids, jaxgen-sample and jaxgen-eval.

Variants (after the colon): demo, tiny and (none), the DiT sizes of dit_fashion_mnist.py
with one latent per token (patch 1: 49 tokens; tiny: patch 2 on the tiny autoencoder's
14x14 latents).
"""

import dit_fashion_mnist
import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = dit_fashion_mnist.get_config(arg)
  with config.unlocked():
    config.autoencoder = ml_collections.ConfigDict(dict(workdir='runs/ae_demo', step=0))
  config.model.patch = 2 if arg == 'tiny' else 1
  return config
