"""A small Fashion-MNIST classifier whose penultimate features give FD-FMNIST.

The FID Inception weights cannot be downloaded on every machine; this network is trained
by the project itself (`jaxgen-eval train_classifier`, a few minutes on 2 CPU cores) and
saved as an orbax checkpoint. Its 128-d penultimate activations play the role of
Inception's pool features (a Frechet distance, "FD-FMNIST"), and its class predictions on
samples show which classes a generator covers.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import nnx

from jaxgen.data import fashion_mnist, pipeline
from jaxgen.eval import extract
from jaxgen.models.functional import FunctionalModel

NUM_CLASSES = 10
FEATURE_DIM = 128
CLASS_NAMES = ('t-shirt', 'trouser', 'pullover', 'dress', 'coat', 'sandal', 'shirt', 'sneaker',
               'bag', 'boot')


# The network's version, saved in the checkpoint's meta: features (and so FD-FMNIST) of
# different versions are on different scales, and their parameters do not fit each other.
# 2: one 3x3 conv per resolution (28, 14, 7 px), 2.2x fewer FLOPs than 1 at the same
# test accuracy (0.915 after 3 epochs); 1 had two per resolution at 28 and 14 px.
ARCHITECTURE = 2


class FashionClassifier(nnx.Module):
  """conv32 -> pool -> conv64 -> pool -> conv128 -> dense 128 (features) -> dense 10."""

  def __init__(self, rngs: nnx.Rngs):
    conv = lambda i, o: nnx.Conv(i, o, (3, 3), padding='SAME', rngs=rngs)
    self.convs = nnx.List([conv(1, 32), conv(32, 64), conv(64, 128)])
    self.features = nnx.Linear(7 * 7 * 128, FEATURE_DIM, rngs=rngs)
    self.head = nnx.Linear(FEATURE_DIM, NUM_CLASSES, rngs=rngs)

  def __call__(self, images: jax.Array) -> tuple[jax.Array, jax.Array]:
    """uint8 [N, 28, 28, 1] -> (features [N, 128], logits [N, 10])."""
    x = images.astype(jnp.float32) / 127.5 - 1.0
    for i, conv in enumerate(self.convs):
      x = jax.nn.relu(conv(x))
      if i < 2:
        x = nnx.max_pool(x, (2, 2), strides=(2, 2))
    features = jax.nn.relu(self.features(x.reshape(len(x), -1)))
    return features, self.head(features)


MODEL = FunctionalModel(FashionClassifier)


def data_config(data_dir: str = '', manual_dir: str = fashion_mnist.DEFAULT_IDX_DIR,
                name: str = 'fashion_mnist') -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({
      'name': name, 'split': 'train', 'data_dir': data_dir, 'manual_dir': manual_dir,
      'image_key': 'image', 'label_key': 'label'})


def load_split(cfg: ml_collections.ConfigDict, split: str, limit: int | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
  """uint8 images [N, H, W, C] and int labels [N] of a TFDS split (all images one size)."""
  source = pipeline.load_source(cfg, split)
  n = len(source) if limit is None else min(limit, len(source))
  examples = [pipeline.read_example(source, i, cfg, split) for i in range(n)]
  images = [np.asarray(e[cfg.image_key]) for e in examples]
  images = np.stack([x[..., None] if x.ndim == 2 else x for x in images])
  labels = np.asarray([e.get(cfg.label_key, -1) for e in examples], np.int32)
  return images.astype(np.uint8), labels


def predict(params: dict[str, Any], images: np.ndarray, batch_size: int = 512
            ) -> tuple[np.ndarray, np.ndarray]:
  """Features and logits of uint8 images, batched and sharded over the local devices."""
  return extract.batched_apply(MODEL.apply, params, images, batch_size)


class Splits(NamedTuple):
  """(uint8 images, labels) of the train and test splits, read once for a whole command."""
  train: tuple[np.ndarray, np.ndarray]
  test: tuple[np.ndarray, np.ndarray]


def load_splits(cfg: ml_collections.ConfigDict, limit: int | None = None) -> Splits:
  return Splits(load_split(cfg, 'train', limit), load_split(cfg, 'test', limit))


class Trained(NamedTuple):
  params: dict[str, Any]
  test_accuracy: float


def train(cfg: ml_collections.ConfigDict, *, epochs: int = 4, batch_size: int = 128,
          learning_rate: float = 1e-3, seed: int = 0, limit: int | None = None,
          splits: Splits | None = None) -> Trained:
  """Adam on the train split; returns the params and the test-split accuracy."""
  (images, labels), (test_images, test_labels) = splits or load_splits(cfg, limit)
  batch_size = min(batch_size, len(images) - len(images) % jax.device_count())
  if batch_size <= 0 or batch_size % jax.device_count():
    raise ValueError(f'batch_size={batch_size} must divide over {jax.device_count()} devices')
  batch_sharding, replicated = extract.batch_shardings()
  steps_per_epoch = len(images) // batch_size
  optimizer = optax.adam(optax.cosine_decay_schedule(learning_rate, epochs * steps_per_epoch))
  params = jax.device_put(MODEL.init(jax.random.key(seed)), replicated)
  opt_state = jax.device_put(optimizer.init(params), replicated)

  def loss_fn(params, x, y):
    _, logits = MODEL.apply(params, x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  def step(params, opt_state, x, y):
    loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  step = jax.jit(step, in_shardings=(replicated, replicated, batch_sharding, batch_sharding),
                 out_shardings=(replicated, replicated, replicated), donate_argnums=(0, 1))

  rng = np.random.default_rng(seed)
  for epoch in range(epochs):
    start, order, losses = time.perf_counter(), rng.permutation(len(images)), []
    for i in range(steps_per_epoch):
      idx = order[i * batch_size:(i + 1) * batch_size]
      x, y = jax.device_put((images[idx], labels[idx]), batch_sharding)
      params, opt_state, loss = step(params, opt_state, x, y)
      losses.append(loss)
      if len(losses) > 4:
        # Keep at most a few steps in flight: with hundreds queued, XLA:CPU's cross-device
        # all-reduce can wait forever for a participant (a rendezvous abort after 40 s).
        jax.block_until_ready(losses[-4])
    logging.info('classifier epoch %d: loss %.4f (%.0fs)', epoch + 1,
                 float(np.mean(jax.device_get(losses))), time.perf_counter() - start)
  _, logits = predict(params, test_images)
  return Trained(params, float((logits.argmax(1) == test_labels).mean()))


def save(directory: str | os.PathLike, trained: Trained, meta: dict[str, Any]) -> None:
  """An orbax checkpoint: `params` (StandardSave) and `meta` (JSON, with the accuracy)."""
  meta = {**meta, 'test_accuracy': trained.test_accuracy, 'feature_dim': FEATURE_DIM,
          'architecture': ARCHITECTURE}
  with ocp.CheckpointManager(os.path.abspath(directory)) as manager:
    manager.save(0, args=ocp.args.Composite(params=ocp.args.StandardSave(trained.params),
                                            meta=ocp.args.JsonSave(meta)), force=True)
    manager.wait_until_finished()


def load(directory: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
  """(params, meta) of a classifier saved by `save`."""
  directory = os.path.abspath(directory)
  if not os.path.isdir(directory):
    raise FileNotFoundError(f'no Fashion-MNIST classifier in {directory}; train one with '
                            f'`jaxgen-eval train_classifier --output={directory}`')
  options = ocp.CheckpointManagerOptions(read_only=True, create=False)
  with ocp.CheckpointManager(directory, options=options) as manager:
    step = manager.latest_step()
    if step is None:
      raise FileNotFoundError(f'{directory} holds no classifier checkpoint; train one with '
                              f'`jaxgen-eval train_classifier --output={directory}`')
    meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta']
    if meta.get('architecture', 1) != ARCHITECTURE:
      raise ValueError(
          f'the classifier in {directory} is version {meta.get("architecture", 1)} of the '
          f'network, this jaxgen uses version {ARCHITECTURE} (its features, and so FD-FMNIST, '
          f'are on another scale); train a new one with `jaxgen-eval train_classifier '
          f'--output=NEW_DIR` and pass --classifier_dir=NEW_DIR, or move {directory} away')
    # Replicated on every device of every process: a restore target with shardings is what
    # lets orbax read it on any topology.
    replicated = extract.batch_shardings()[1]
    abstract = jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated),
        MODEL.abstract_params())
    restored = manager.restore(step, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(abstract)))
  logging.info('classifier %s: %s', directory, json.dumps(meta))
  return restored['params'], meta


TRAIN_STATS = 'train_stats.npz'  # pytorch-fid layout: mu, sigma of train-split features
TEST_FEATURES = 'test_features.npz'  # features and labels of the test split


def write_reference(directory: str | os.PathLike, params: dict[str, Any],
                    cfg: ml_collections.ConfigDict, splits: Splits | None = None) -> None:
  """Feature statistics of the train split and features of the test split, beside the model."""
  from jaxgen.eval import fid

  (train_images, _), (test_images, test_labels) = splits or load_splits(cfg)
  train_features, _ = predict(params, train_images)
  fid.save_stats(os.path.join(directory, TRAIN_STATS), fid.stats_of(train_features))
  test_features, _ = predict(params, test_images)
  np.savez(os.path.join(directory, TEST_FEATURES), features=test_features, labels=test_labels)


def load_reference(directory: str | os.PathLike):
  """(train Stats, test features [N, 128]) written by `write_reference`."""
  from jaxgen.eval import fid

  train = fid.load_reference(os.path.join(directory, TRAIN_STATS)).stats
  with np.load(os.path.join(directory, TEST_FEATURES), allow_pickle=False) as data:
    return train, data['features']
