"""Model families as objectives: small bundles of pure functions the trainer calls."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

State = dict[str, Any]
Batch = dict[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class Objective:
  """What the training loop needs from a model family.

  init(rng) -> state: the whole train state (params, optimizer state, EMA, step).
  train_step(state, batch, rng) -> (state, metrics): one update; metrics are scalars.
  sample(params, rng, n) -> uint8 images [n, H, W, C].
  sample_params(state) -> the parameters `sample` uses (EMA weights where there are any).
  batch_shapes(global_batch_size) -> {name: (shape, dtype)} of a training batch, so a step
    can be compiled ahead of time without data.

  Optional, for families that have them (None otherwise):
  sample: None for a model that does not generate from noise (an autoencoder).
  encode(params, images) -> latents: images float [-1, 1]; the posterior mean.
  decode(params, latents) -> uint8 images. With `encode`, the trainer also writes grids of
    reconstructions of fixed evaluation images, and jaxgen-sample can interpolate.
  test_metrics(params, batch, rng) -> {name: [B] per-example values}: what jaxgen-eval
    averages over the evaluation split (a VAE's bounds in bits/dim, an autoencoder's PSNR).
  prior_latents(params, rng, n, **sample options) -> latents: latents drawn from the prior
    (a GAN's mapped, truncated w [n, layers, w_dim]), which `decode` turns into images:
    jaxgen-sample --interpolate walks between pairs of them.
  style_ranges: {name: (first, stop)} of the latent's layer axis whose styles can be swapped
    (a StyleGAN's coarse / middle / fine resolutions): jaxgen-sample --style_mixing.
  translate(params, source, rng, direction='a2b') -> uint8 images: an image-to-image
    model's outputs for float [-1, 1] source images (`params`: sample_params), in one of
    its `translation_directions` ('a2b'; a two-way model also 'b2a'). With it, the trainer
    writes grids of fixed evaluation examples (source | output | target, or for a two-way
    model A | A->B | B | B->A) and its batches hold `source` and `target` images.

  What the family declares, so shared code never tests its name:
  progress_metrics: the metrics printed on the progress line, in order.
  sample_options: {name: type} of the keyword options `sample` takes (a sampler, a number of
    steps, a truncation psi); jaxgen-sample and jaxgen-eval accept them as
    `--sample.NAME=VALUE`, checked and converted against this.
  best_metric: (jaxgen-eval result key, lower_is_better) that marks a run's best checkpoint
    when there is no FID; None leaves it to the generated-image metrics.
  snapshot(state) -> a pytree the trainer keeps every `snapshot_every` steps (and at the
    last), never deleted, in <workdir>/snapshots: a diffusion model's power-function EMAs,
    for post-hoc EMA reconstruction (jaxgen/posthoc_ema.py). None: no snapshots.
  frozen: a latent.Frozen for a family that reads fixed arrays besides its state (latent
    diffusion's autoencoder): the trainer loads them once, lays them out on the run's mesh,
    and passes them to train_step(state, batch, rng, frozen) and sample(..., frozen=...),
    never donated and never saved with the run.
  gates_updates: train_step updates its parameters, optimizer state and EMAs
    (nonfinite.DERIVED) through nonfinite.update_if_finite, after every metric and the
    rest of its new state are known, so the non-finite guard need not choose between the
    whole new state and the old one (which copies the updated state each step).
  sample_classes: a class-conditional model's number of classes (0: unconditional). Its
    default labels cycle through the classes (class_labels): grids put one class per row,
    and batches of samples hold whole cycles.
  """

  init: Callable[[jax.Array], State]
  train_step: Callable[[State, Batch, jax.Array], tuple[State, dict[str, jax.Array]]]
  sample: Callable[..., jax.Array] | None
  sample_params: Callable[[State], Any]
  batch_shapes: Callable[[int], dict[str, tuple[tuple[int, ...], Any]]]
  encode: Callable[[Any, jax.Array], jax.Array] | None = None
  decode: Callable[[Any, jax.Array], jax.Array] | None = None
  test_metrics: Callable[[Any, Batch, jax.Array], dict[str, jax.Array]] | None = None
  progress_metrics: tuple[str, ...] = ('loss',)
  sample_options: Mapping[str, type] = dataclasses.field(default_factory=dict)
  best_metric: tuple[str, bool] | None = None
  prior_latents: Callable[..., jax.Array] | None = None
  style_ranges: Mapping[str, tuple[int, int]] = dataclasses.field(default_factory=dict)
  translate: Callable[..., jax.Array] | None = None
  translation_directions: tuple[str, ...] = ('a2b',)
  sample_classes: int = 0
  snapshot: Callable[[State], Any] | None = None
  snapshot_every: int = 0
  frozen: Any = None
  gates_updates: bool = False


class Partial(NamedTuple):
  """A metric computed on some steps only (a lazy regulariser every k steps, a
  discriminator before it starts): `present` is 1.0 on the steps where `value` means
  something. The trainer averages it over those steps alone, with no host sync."""

  value: jax.Array
  present: jax.Array


def only_when(present: jax.Array, value: jax.Array) -> Partial:
  return Partial(jnp.asarray(value, jnp.float32), jnp.asarray(present, jnp.float32))


def to_uint8(images: jax.Array) -> jax.Array:
  """[-1, 1] floats -> uint8 [0, 255], rounding to nearest."""
  return jnp.clip(jnp.round((images + 1.0) * 127.5), 0, 255).astype(jnp.uint8)


def class_labels(labels, n: int, num_classes: int) -> jax.Array | None:
  """[n] int labels from None (0, 1, 2, ... cycled), an int, or a string like '3' or '0,5';
  None for a model that is not class-conditional (num_classes=0), which takes no labels."""
  if not num_classes:
    if labels is not None:
      raise ValueError('sample option labels: this model is not class-conditional '
                       '(model.num_classes=0)')
    return None
  if labels is None:
    return jnp.arange(n) % num_classes
  if isinstance(labels, str):
    try:
      values = [int(part) for part in labels.split(',') if part.strip()]
    except ValueError:
      values = []
    if not values or not all(0 <= v < num_classes for v in values):
      raise ValueError(f'sample option labels={labels!r}: give class indices in '
                       f'[0, {num_classes}), e.g. 3 or 0,1,2')
    return jnp.asarray(values * (-(-n // len(values))), jnp.int32)[:n]
  return jnp.broadcast_to(jnp.asarray(labels, jnp.int32), (n,))


def image_shape(data_cfg) -> tuple[int, int, int]:
  """(H, W, C) of the images of a `config.data` section."""
  return (data_cfg.image_size, data_cfg.image_size, data_cfg.channels)


def image_batch_shapes(config) -> Callable[[int], dict[str, tuple[tuple[int, ...], Any]]]:
  """`batch_shapes` of a family trained on the images (and labels, if any) of config.data."""
  data = config.data

  def batch_shapes(batch_size: int):
    shapes = {'image': ((batch_size, *image_shape(data)), jnp.float32)}
    if data.label_key:
      shapes['label'] = ((batch_size,), jnp.int32)
    return shapes
  return batch_shapes
