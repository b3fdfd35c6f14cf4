"""Samplers, looked up by name: (denoise_fn, schedule, rng, shape, **kw) -> images in [-1, 1]."""

from jaxgen.samplers.ddpm import ddim_sample, ddpm_sample

SAMPLERS = {'ddpm': ddpm_sample, 'ddim': ddim_sample}
