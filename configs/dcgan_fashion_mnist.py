r"""DCGAN on Fashion-MNIST (28x28), non-saturating loss with lazy R1 and DiffAugment.

Run (CPU demo):
  jaxgen-train --config=configs/dcgan_fashion_mnist.py:demo --workdir=runs/dcgan_demo
  jaxgen-sample --workdir=runs/dcgan_demo --sample.truncation_psi=0.7
  jaxgen-eval --workdir=runs/dcgan_demo --num_samples=10000

Variants (after the colon):
  demo     a small class-conditional DCGAN, batch 64: the CPU demo (`make gan-demo`).
  tiny     a few steps of minute networks: what the tests run.
  (none)   a full-width DCGAN (ch 64), 50k steps at batch 64.

The objective has two networks (params/g, params/d), two optimizer states (opt_state/g,
opt_state/d), G's EMA (ema_params) and the GAN's own state (gan/: w_avg, pl_mean, aug_p);
the sharding rules see all of them. `gan()` and `adam()` are shared by the StyleGAN2 configs.
"""

import common
import ml_collections


def gan(**overrides) -> ml_collections.ConfigDict:
  """The GAN objective's fields, StyleGAN2-ADA's defaults where it has them."""
  cfg = ml_collections.ConfigDict()
  cfg.loss = 'logistic'  # 'logistic' (non-saturating) | 'hinge' | 'wgan_gp'
  cfg.gp_weight = 10.0  # wgan_gp only: weight of (||grad D(x_hat)|| - 1)^2
  cfg.r1_gamma = 0.1  # R1 = gamma / 2 ||grad D(real)||^2; 0 turns it off
  cfg.d_reg_interval = 16  # R1 every this many steps (lazy regularisation); 1: every step
  cfg.pl_weight = 0.0  # path-length regularisation (StyleGAN2: 2); 0 turns it off
  cfg.g_reg_interval = 4
  cfg.pl_decay = 0.01  # of the running mean of path lengths (the target)
  cfg.pl_batch_shrink = 2  # PL runs on batch / this many fakes
  cfg.style_mixing = 0.0  # probability of mixing two latents' styles (StyleGAN2: 0.9)
  cfg.w_avg_beta = 0.995  # the tracked mean of w (truncation's centre)
  cfg.ema_kimg = 10.0  # half-life of G's EMA in thousands of images
  cfg.ema_rampup = 0.05  # half-life at most this x images seen so far; 0: no ramp-up
  cfg.augment = 'diffaugment'  # 'none' | 'diffaugment' | 'ada'
  cfg.diffaugment_policy = 'color,translation,cutout'
  cfg.ada_pipeline = 'bgc'  # ADA's operations: 'bgc' | 'bg' | 'blit' | 'geom' | 'color'
  cfg.ada_target = 0.6  # ADA: the r_t = E[sign D(real)] it steers p towards; 0: p fixed
  cfg.ada_interval = 4  # steps between adjustments of p
  cfg.ada_kimg = 500.0  # p can go from 0 to 1 in this many thousand images
  cfg.ada_p_init = 0.0
  cfg.truncation_psi = 1.0  # sampling default; jaxgen-sample --sample.truncation_psi
  cfg.truncation_cutoff = 0  # truncate only the first this many w layers; 0: all
  cfg.update(overrides)
  return cfg


def adam(**overrides) -> ml_collections.ConfigDict:
  """Adam at a constant rate, no warm-up, no clipping (GANs' usual optimizer)."""
  return common.adamw(**{**dict(learning_rate=2e-4, warmup_steps=0, decay='constant',
                                end_lr_ratio=1.0, b1=0.5, b2=0.999, grad_clip=0.0), **overrides})


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = common.check_variant(arg, ('demo', 'tiny'))
  config = common.run('gan', total_steps=50_000, global_batch_size=64)
  config.data = common.tfds_images()

  config.model = ml_collections.ConfigDict()  # the generator
  config.model.name = 'dcgan'
  config.model.z_dim = 64
  config.model.ch = 64  # width at full resolution; x2 per halving
  config.model.norm = 'group'  # 'group' | 'layer' | 'none' (no BatchNorm: it holds state)
  config.model.num_classes = 0  # > 0: class-conditional G and (projection) D
  config.model.compute_dtype = 'float32'

  config.discriminator = ml_collections.ConfigDict()
  config.discriminator.name = 'dcgan'
  config.discriminator.ch = 64
  config.discriminator.norm = 'none'
  config.discriminator.cmap_dim = 128  # class-conditional: the projection's width
  config.discriminator.mbstd_group_size = 0  # > 0: minibatch-stddev feature over groups this size
  config.discriminator.compute_dtype = 'float32'

  config.gan = gan()
  config.optimizer = adam()  # the generator's
  config.discriminator_optimizer = adam()

  if variant == 'demo':
    # Chosen by 2,000-step trials at batch 64 (10,000 samples each, 2-core AMD EPYC):
    # G 16 wide (GroupNorm), D 64, R1 gamma 1 every 4 steps, no augmentation: FD-FMNIST 88.7,
    # recall 0.29; the same class-conditional: 19.3, recall 0.38; then G 32 wide with
    # LayerNorm and D's minibatch stddev: 12.4, recall 0.43.
    # 2,000 steps, so that the first `make gan-demo` (which also trains the classifier)
    # fits in 15 minutes on 2 CPU cores: see README for what it measured.
    config.update(dict(total_steps=2_000, log_every=100, sample_every=500,
                       checkpoint_every=500))
    config.data.num_threads = 1
    config.model.update(dict(ch=32, norm='layer', num_classes=10))
    config.discriminator.update(dict(ch=64, mbstd_group_size=4))
    config.gan.update(dict(augment='none', r1_gamma=1.0, d_reg_interval=4))
  elif variant == 'tiny':
    common.tiny(config)
    config.model.update(dict(z_dim=8, ch=4))
    config.discriminator.ch = 4
    # Both regularisers run at step 0 and 4 of the 6, so the tests see both kinds of step.
    config.gan.update(dict(d_reg_interval=4, pl_weight=2.0, g_reg_interval=4))

  config.lock()
  return config
