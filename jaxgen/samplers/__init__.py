"""Samplers, looked up by name: (denoise(x, sigma) -> x0_hat, sigmas, x, rng, **options) -> x
at sigma = 0, knowing nothing of how the model was trained (the protocol: solvers.py).

`ddpm` is ancestral sampling (Euler-ancestral with eta 1, which on the trained DDPM levels is
DDPM's posterior step exactly) and `ddim` is the Euler step with DDIM's eta (0: DDIM).
"""

from jaxgen.samplers import solvers


def ddpm(denoise, sigmas, x, rng, **unused):
  del unused
  return solvers.euler(denoise, sigmas, x, rng, eta=1.0)


SAMPLERS = {'ddpm': ddpm, 'ddim': solvers.euler, **solvers.SOLVERS}


def sample_vp(model_fn, schedule, prediction: str, rng, shape, *, sampler: str, spacing: str,
              steps: int, eta: float = 0.0, clip: bool = True):
  """Images in [-1, 1] from a model trained on the VP `schedule` (model_fn(x_t, t) -> eps or
  v): its noise levels (`spacing`, `steps`), its denoiser, x_T ~ N(0, I) in its own scale."""
  import jax
  import jax.numpy as jnp

  from jaxgen.samplers import schedules

  if sampler not in SAMPLERS:
    raise ValueError(f'sample option sampler={sampler!r}: use one of {", ".join(SAMPLERS)}')
  sigmas = schedules.vp_sigmas(schedule, spacing, steps)
  denoise = schedules.vp_denoiser(schedule, prediction, model_fn, clip=clip,
                                  snap=spacing == 'trained')
  init_rng, loop_rng = jax.random.split(rng)
  # x_T ~ N(0, I) in the trained (variance-preserving) scale is x_T / alpha_T here.
  x = jax.random.normal(init_rng, shape, jnp.float32) * float((1.0 + sigmas[0] ** 2) ** 0.5)
  out = SAMPLERS[sampler](denoise, sigmas, x, loop_rng, eta=eta)
  return jnp.clip(out, -1.0, 1.0) if clip else out
