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


def run_sampler(sampler: str, denoise, sigmas, initial_std: float, rng, shape, *,
                clip: bool = True, **options):
  """Images from pure noise N(0, initial_std^2) at sigmas[0] down to sigma = 0 (in [-1, 1]
  when `clip`): the formulation gives the denoiser, the levels and the starting std.
  `options` go to the sampler (eta; Heun's s_churn, s_tmin, s_tmax, s_noise); None means
  its default."""
  import jax
  import jax.numpy as jnp

  if sampler not in SAMPLERS:
    raise ValueError(f'sample option sampler={sampler!r}: use one of {", ".join(SAMPLERS)}')
  init_rng, loop_rng = jax.random.split(rng)
  x = jax.random.normal(init_rng, shape, jnp.float32) * initial_std
  options = {k: v for k, v in options.items() if v is not None}
  out = SAMPLERS[sampler](denoise, sigmas, x, loop_rng, **options)
  return jnp.clip(out, -1.0, 1.0) if clip else out

