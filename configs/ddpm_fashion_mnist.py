r"""DDPM on Fashion-MNIST: the project's spine config.

Run (CPU demo: its training took 9m08s on a 2-core Intel Xeon, README "Benchmark"):
  jaxgen-train --config=configs/ddpm_fashion_mnist.py:demo --workdir=runs/demo

Variants (after the colon):
  demo     0.7M-parameter UNet, batch 64, 1,600 steps: `make demo DEMO_CONFIG=...` (the EDM
           config's demo, on the same UNet, is `make demo`'s run).
  tiny     a few steps of a minute UNet: what the tests run.
  (none)   a real accelerator run: 9M-parameter UNet, batch 128, 100k steps.

Any field can be overridden, e.g. `--config.total_steps=500 --config.mesh.fsdp=2`.
"""

import common
import ml_collections


def unet(**overrides) -> ml_collections.ConfigDict:
  model = ml_collections.ConfigDict()
  model.name = 'unet'
  model.ch = 64
  model.ch_mult = (1, 2, 2)
  model.num_res_blocks = 2
  model.attn_resolutions = (7,)
  model.dropout = 0.1
  model.num_classes = 0  # > 0: class-conditional, with classifier-free guidance
  # Mixed precision: parameters and optimizer state stay float32; convolutions, matmuls
  # and activations run in compute_dtype ('float32' or 'bfloat16'); softmax and norms in f32.
  model.compute_dtype = 'float32'
  model.remat = 'none'  # 'none' | 'full' | 'dots': recompute block activations in backward
  model.update(overrides)
  return model


def ddpm(**overrides) -> ml_collections.ConfigDict:
  diffusion = ml_collections.ConfigDict()
  # 'ddpm' (variance preserving, the schedule below) | 'edm' (Karras et al. 2022: the edm
  # section) | 'flow' (rectified flow as in SD3: the flow section);
  # jaxgen/objectives/formulations.py.
  diffusion.formulation = 'ddpm'
  diffusion.schedule = 'linear'  # 'linear' | 'cosine'
  diffusion.timesteps = 1000
  diffusion.beta_start = 1e-4
  diffusion.beta_end = 0.02
  diffusion.prediction = 'eps'  # 'eps' | 'v'
  diffusion.label_dropout = 0.1
  diffusion.guidance_scale = 1.0
  # For sample grids and jaxgen-sample: 'ddim' (= 'euler') | 'ddpm' | 'heun' | 'dpmpp_2m' |
  # 'dpmpp_3m', at noise levels 'trained' (evenly spaced trained timesteps; ddpm only) |
  # 'karras' | 'log_snr' | 'time_uniform' (flow only) (jaxgen/samplers/).
  diffusion.sampler = 'ddim'
  diffusion.spacing = 'trained'
  diffusion.sample_steps = 50
  diffusion.eta = 0.0
  # EDM (its Table 1): data std, ln(sigma) ~ N(p_mean, p_std^2) in training, sampling levels
  # between sigma_min and sigma_max (Karras rho).
  diffusion.edm = ml_collections.ConfigDict(dict(
      sigma_data=0.5, p_mean=-1.2, p_std=1.2, sigma_min=0.002, sigma_max=80.0, rho=7.0))
  # Rectified flow (SD3): t = sigmoid(n), n ~ N(logit_mean, logit_std^2) in training; the
  # timestep shift at sampling (SD3 uses 3.0 at 1024 px; 1.0 is no shift).
  diffusion.flow = ml_collections.ConfigDict(dict(logit_mean=0.0, logit_std=1.0, shift=1.0))
  diffusion.update(overrides)
  return diffusion


def ema(**overrides) -> ml_collections.ConfigDict:
  ema = ml_collections.ConfigDict()
  ema.decay = 0.9999
  ema.warmup = True  # decay = min(decay, (1 + step) / (10 + step))
  # EDM2's power-function EMAs: two relative widths tracked (e.g. (0.05, 0.1)) and snapshots
  # of both every snapshot_every steps, from which `jaxgen-eval posthoc_ema` averages the
  # run at any other width after training (jaxgen/posthoc_ema.py). (): none.
  ema.power_sigma_rels = ()
  ema.snapshot_every = 0
  ema.update(overrides)
  return ema


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = common.check_variant(arg, ('demo', 'tiny'))
  config = common.run('diffusion')
  config.data = common.tfds_images()
  config.model = unet()
  config.diffusion = ddpm()
  config.optimizer = common.adamw()
  config.ema = ema()

  if variant == 'demo':
    config.update(dict(total_steps=1_600, global_batch_size=64, log_every=50,
                       sample_every=400, checkpoint_every=200))
    config.data.num_threads = 1
    # The 60,000 training images decoded once (~3.3 s, ~80 MB): a batch of 64 then costs
    # 2.1-2.8 ms of host CPU instead of 9.6-10.2, on the cores the step runs on (2-core AMD
    # EPYC; README, "Data" and "What the loop adds").
    config.data.cache_in_memory = True
    # Ancestral sampling: deterministic DDIM (eta=0) leaves speckle on a model this young.
    config.diffusion.sampler = 'ddpm'
    config.model.update(dict(ch=16, ch_mult=(1, 2, 4), num_res_blocks=1, dropout=0.0))
    config.optimizer.learning_rate = 1e-3
    config.optimizer.warmup_steps = 100
    config.ema.decay = 0.995
  elif variant == 'tiny':
    common.tiny(config)
    # One level, no attention: compiles in half the time of two levels with attention; the
    # tests of the loop do not need more (tests/test_unet.py covers a multi-level UNet).
    config.model.update(dict(ch=8, ch_mult=(1,), num_res_blocks=1, attn_resolutions=()))
    config.diffusion.sample_steps = 4
    config.ema.decay = 0.9

  config.lock()
  return config
