"""On-device augmentation: DiffAugment and ADA are the identity at p = 0, keep shapes and
dtypes, are differentiable, draw per example, and ADA's transforms do what they say."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen import augment


@pytest.mark.parametrize('name', ['color', 'translation', 'cutout'])
def test_each_diffaugment_group(name):
  rng = np.random.default_rng(0)
  images = jnp.asarray(np.repeat(rng.uniform(-1, 1, (1, 32, 32, 3)), 8, axis=0), jnp.float32)
  key = jax.random.key(3)
  same = augment.diff_augment(key, images, name, p=0.0)
  assert same.dtype == images.dtype and same.shape == images.shape
  np.testing.assert_array_equal(same, images)
  out = augment.diff_augment(key, images, name)
  assert out.shape == images.shape and out.dtype == images.dtype
  # Per example: eight copies of one image come out (mostly) different from each other.
  distinct = {np.asarray(o).tobytes() for o in out}
  assert len(distinct) >= 6, name
  # Differentiable: a gradient reaches the input, and it is finite.
  weights = jnp.asarray(rng.normal(size=images.shape), jnp.float32)
  grad = jax.grad(lambda x: jnp.sum(augment.diff_augment(key, x, name) * weights))(images)
  assert np.isfinite(grad).all() and float(jnp.abs(grad).sum()) > 0


def test_translation_and_cutout_move_and_blank_pixels():
  image = jnp.arange(64, dtype=jnp.float32).reshape(8, 8, 1) + 1  # no zeros of its own

  def shifted_by(dy, dx):  # content moved by (dy, dx), zeros filling in
    out = np.zeros((8, 8, 1), np.float32)
    out[max(dy, 0):8 + min(dy, 0), max(dx, 0):8 + min(dx, 0)] = \
        np.asarray(image)[max(-dy, 0):8 + min(-dy, 0), max(-dx, 0):8 + min(-dx, 0)]
    return out
  seen = set()
  for seed in range(20):  # 8 px x 1/8: shifts of -1, 0 or 1 each way
    out = np.asarray(augment.translation(jax.random.key(seed), image))
    match = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)
             if np.array_equal(out, shifted_by(dy, dx))]
    assert len(match) == 1, seed
    seen.add(match[0])
  assert len(seen) >= 5
  for seed in range(10):
    cut = np.asarray(augment.cutout(jax.random.key(seed), image))[..., 0]
    rows, cols = np.nonzero(cut == 0)
    assert 0 < len(rows) <= 16  # at most a 4x4 square of an 8x8 image
    assert len(rows) == (np.ptp(rows) + 1) * (np.ptp(cols) + 1)  # one solid rectangle
    kept = cut != 0
    np.testing.assert_array_equal(cut[kept], np.asarray(image)[..., 0][kept])


@pytest.mark.parametrize('pipeline', ['bgc', 'blit', 'geom', 'color'])
def test_ada_pipelines(pipeline):
  rng = np.random.default_rng(0)
  images = jnp.asarray(np.repeat(rng.uniform(-1, 1, (1, 16, 16, 3)), 8, axis=0), jnp.float32)
  key = jax.random.key(1)
  np.testing.assert_array_equal(augment.ada_augment(key, images, 0.0, pipeline), images)
  out = augment.ada_augment(key, images, 1.0, pipeline)
  assert out.shape == images.shape and out.dtype == images.dtype
  assert len({np.asarray(o).tobytes() for o in out}) == 8  # every example its own draw
  weights = jnp.asarray(rng.normal(size=images.shape), jnp.float32)
  grad = jax.grad(lambda x: jnp.sum(augment.ada_augment(key, x, 0.7, pipeline) * weights))(
      images)
  assert np.isfinite(grad).all() and float(jnp.abs(grad).sum()) > 0


def test_ada_probability_is_per_operation_and_example():
  images = jnp.asarray(np.random.default_rng(2).uniform(-1, 1, (256, 8, 8, 1)), jnp.float32)
  out = augment.ada_augment(jax.random.key(0), images, 0.2, 'blit')
  changed = np.mean([not np.array_equal(a, b) for a, b in zip(out, images)])
  # xflip, rotate90 and xint each fire with p = 0.2, and then change the image 1/2, 3/4
  # and ~all of the time: 1 - (1 - 0.1)(1 - 0.15)(1 - 0.2) = 0.39 of the examples change.
  assert 0.3 < changed < 0.48, changed


def test_ada_geometry_is_exact_for_pixel_blits_and_resamples_anti_aliased():
  rng = np.random.default_rng(3)
  image = jnp.asarray(rng.uniform(-1, 1, (16, 16, 1)), jnp.float32)
  np.testing.assert_allclose(augment._warp(image, jnp.eye(3)), image, atol=1e-5)
  shifted = augment._warp(image, augment._translate2d(-2.0, 0.0))  # 2 px right
  np.testing.assert_allclose(shifted[:, 2:], image[:, :-2], atol=1e-5)
  yy, xx = np.mgrid[0:16, 0:16]
  smooth = jnp.asarray(np.sin(xx / 3.0) * np.cos(yy / 4.0), jnp.float32)[..., None]
  flipped = augment._warp(smooth, augment._scale2d(-1.0, 1.0))
  # sym6 is not linear-phase: a mirrored image comes back within a few percent (as in ADA).
  np.testing.assert_allclose(flipped, smooth[:, ::-1], atol=0.05)


def test_ada_color_matrix_on_one_channel():
  # A brightness-only transform adds b to every pixel of an L image.
  spec = {'brightness': 1}
  color = augment._color(jax.random.key(4), 1.0, spec, 1)
  b = float(color[0, 3])
  assert b != 0.0
  image = jnp.linspace(-1, 1, 16).reshape(4, 4, 1)
  np.testing.assert_allclose(augment._apply_color(image, color), image + b, atol=1e-6)
  # Luma flip of a grey pixel v: v - 2 (v . l) l, l = (1, 1, 1) / sqrt(3): x -> -x.
  eye = jnp.eye(4)
  luma = jnp.asarray(augment._LUMA)
  flip = eye - 2 * jnp.outer(luma, luma)
  np.testing.assert_allclose(augment._apply_color(image, flip), -image, atol=1e-6)
