"""Bad input: one clear error each, and the workdir of the run it would resume untouched.

A tiny run trains to step 2; then each fault is tried against that workdir: a corrupt
image record, an image of the wrong shape or channel count, an empty split, a data path
that does not exist, a trainer already in the workdir, an unreadable newest checkpoint, and
a disk that fills up while a checkpoint is saved.
"""

import io
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from conftest import REPO, tiny_config_with, write_fake_fashion_mnist
from jaxgen import checkpoint, inference, train, workdir_lock
from jaxgen.data import pipeline


def _png(array) -> bytes:
  out = io.BytesIO()
  Image.fromarray(array).save(out, format='PNG')
  return out.getvalue()


class BadImages(tfds.core.GeneratorBasedBuilder):
  """16 PNG images of 28x28 in `train`, broken as the builder config says: the 6th one
  truncated or 28x30; or all of them RGB (a dataset of 3 channels for a 1-channel model)."""

  VERSION = tfds.core.Version('1.0.0')
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=name) for name in
                     ('truncated_png', 'wrong_shape', 'wrong_channels')]

  def _info(self):
    channels = 3 if self.builder_config.name == 'wrong_channels' else 1
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        'image': tfds.features.Image(shape=(None, None, channels)),
        'label': tfds.features.ClassLabel(num_classes=10)}), disable_shuffling=True)

  def _split_generators(self, dl_manager):
    return {'train': self._generate_examples()}

  def _generate_examples(self):
    rng = np.random.default_rng(0)
    defect = self.builder_config.name
    for i in range(16):
      image = rng.integers(0, 256, (28, 28, 3 if defect == 'wrong_channels' else 1), np.uint8)
      encoded = _png(image if defect == 'wrong_channels' else image[..., 0])
      if i == 5 and defect == 'truncated_png':
        encoded = encoded[:len(encoded) // 2]
      elif i == 5 and defect == 'wrong_shape':
        encoded = _png(np.zeros((28, 30), np.uint8))
      yield i, {'image': encoded, 'label': i % 10}


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """A workdir with checkpoints 1 and 2 of the tiny model, and the data it trained on."""
  root = tmp_path_factory.mktemp('bad_input')
  data = {'data.manual_dir': str(write_fake_fashion_mnist(root / 'idx')),
          'data.data_dir': str(root / 'tfds'), 'sample_every': 0, 'checkpoint_every': 1,
          'total_steps': 4, 'log_every': 1}
  workdir = root / 'run'
  train.run(tiny_config_with(**data), str(workdir), stop_at_step=2)
  return root, workdir, data


def _snapshot(directory):
  return {str(p.relative_to(directory)): (p.stat().st_size, p.stat().st_mtime_ns)
          for p in directory.rglob('*') if p.is_file()}


def _bad_data(root, name):
  data_dir = root / 'tfds_bad'
  BadImages(config=name, data_dir=str(data_dir), file_format='array_record'
            ).download_and_prepare()
  return {'data.name': f'bad_images/{name}', 'data.data_dir': str(data_dir), 'data.split':
          'train', 'data.random_flip': False, 'data.num_threads': 1}


@pytest.mark.parametrize('fault, message', [
    ('truncated_png', r"bad_images/truncated_png split 'train': example 5 cannot be read or "
                      r'decoded \(.+\). The prepared dataset is corrupt or truncated: delete '),
    ('wrong_shape', r"bad_images/wrong_shape split 'train' example 5: images are 28x30 but "
                    r'data.image_size=28; set data.resize to "pad" or "resize"'),
    ('wrong_channels', r"bad_images/wrong_channels split 'train' example \d+: got an image of "
                       r'shape \(28, 28, 3\) and dtype uint8; data.channels=1 expects'),
    ('empty', r"data.split='train\[64:\]' of 'fashion_mnist' is empty"),
    ('missing', r'Fashion-MNIST file train-images-idx3-ubyte\(.gz\) not found in '
                r"'/nonexistent/idx'.*apt-get install dataset-fashion-mnist"),
])
def test_bad_data_is_one_clear_error_and_the_workdir_is_untouched(trained, fault, message,
                                                                  tmp_path):
  root, workdir, data = trained
  if fault == 'missing':
    bad = {'data.data_dir': '/nonexistent/tfds', 'data.manual_dir': '/nonexistent/idx'}
  elif fault == 'empty':
    bad = {'data.split': 'train[64:]'}  # all 64 fake examples are before it
  else:
    bad = _bad_data(root, fault)
    # A global batch of 16 holds all 16 images, so the first batch has the bad one.
  before = _snapshot(workdir)
  with pytest.raises(pipeline.DataError, match=message):
    train.run(tiny_config_with(**{**data, **bad}), str(workdir))
  assert _snapshot(workdir) == before
  if fault in ('missing', 'empty'):  # found before a new workdir is even created
    with pytest.raises(pipeline.DataError, match=message):
      train.run(tiny_config_with(**{**data, **bad}), str(tmp_path / 'new'))
    assert not (tmp_path / 'new').exists()


def test_a_second_trainer_is_refused_while_the_first_holds_the_workdir(trained, tmp_path):
  root, original, data = trained
  workdir = tmp_path / 'run'
  shutil.copytree(original, workdir)
  holder = subprocess.Popen(
      [sys.executable, '-c', 'import sys, time; from jaxgen import workdir_lock\n'
       f'lock = workdir_lock.WorkdirLock({str(workdir)!r}).__enter__(); lock.record_holder()\n'
       'print("locked", flush=True); time.sleep(600)'],
      stdout=subprocess.PIPE, text=True, cwd=REPO)
  try:
    assert holder.stdout.readline().strip() == 'locked'
    before = _snapshot(workdir)
    with pytest.raises(workdir_lock.WorkdirLocked,
                       match=rf'{workdir} is in use by another jaxgen-train \(pid {holder.pid} '
                             r'on .+, since .+\); wait for it to end or stop it'):
      train.run(tiny_config_with(**data), str(workdir))
    assert _snapshot(workdir) == before
  finally:
    holder.kill()  # kill -9: the kernel drops the lock, nothing stale is left behind
    holder.wait()
  state = train.run(tiny_config_with(**data), str(workdir), stop_at_step=3)
  assert int(state['step']) == 3


# orbax's reads of the other arrays of a truncated checkpoint are abandoned when one fails;
# their coroutines are garbage-collected later with an "Exception ignored" note.
@pytest.mark.filterwarnings('ignore::pytest.PytestUnraisableExceptionWarning')
def test_an_unreadable_newest_checkpoint_falls_back_to_the_one_before(trained, tmp_path):
  root, original, data = trained
  workdir = tmp_path / 'run'
  shutil.copytree(original, workdir)
  config = tiny_config_with(**data)
  newest = max(int(p.name) for p in (workdir / 'checkpoints').iterdir() if p.name.isdigit())
  older = _snapshot(workdir / 'checkpoints' / str(newest - 1))
  biggest = max((workdir / 'checkpoints' / str(newest)).rglob('d/*'),
                key=lambda p: p.stat().st_size)
  biggest.write_bytes(biggest.read_bytes()[:100])  # truncated, as by a dying disk
  # Readers (jaxgen-sample, jaxgen-eval) say which one and what else there is.
  with pytest.raises(ValueError, match=rf'checkpoint {newest} in \S+ cannot be read \(.+\); '
                                       rf'pass --step with one of \[(\d+, )*{newest - 1}\]'):
    inference.restore_for_sampling(str(workdir))
  # Every checkpoint unreadable: stop, and change nothing.
  for step in range(1, newest):
    shutil.move(workdir / 'checkpoints' / str(step), tmp_path / str(step))
  before = _snapshot(workdir)
  with pytest.raises(checkpoint.CheckpointError,
                     match=rf'no checkpoint in \S+ can be read \(step {newest}: .+\). Nothing '
                           'was changed'):
    train.run(config, str(workdir))
  assert _snapshot(workdir) == before
  for step in range(1, newest):
    shutil.move(tmp_path / str(step), workdir / 'checkpoints' / str(step))
  # With an older readable one: warn, keep the bad one aside, resume from the older.
  state = train.run(config, str(workdir), stop_at_step=newest)
  assert int(state['step']) == newest
  aside = list((workdir / checkpoint.UNREADABLE_DIR).iterdir())
  assert [p.name.split('.')[0] for p in aside] == [str(newest)]
  truncated = aside[0] / biggest.relative_to(workdir / 'checkpoints' / str(newest))
  assert truncated.stat().st_size == 100  # kept as it was, for a post-mortem
  assert _snapshot(workdir / 'checkpoints' / str(newest - 1)) == older


def _mount_namespace() -> list[str]:
  """`unshare` arguments for a private mount namespace (root, or an unprivileged user one)."""
  command = ['unshare', '-m'] if os.geteuid() == 0 else ['unshare', '-Urm']
  if not shutil.which('unshare') or subprocess.run(command + ['true']).returncode:
    pytest.skip('needs a private mount namespace (unshare -m) to fill a small tmpfs')
  return command


def test_a_full_disk_keeps_the_previous_checkpoint_and_the_rerun_resumes(trained, tmp_path,
                                                                        capsys):
  """The workdir on a 16 MiB tmpfs, filled but for half the size of checkpoint 2: the save
  of step 3 is refused. (A fixed 300 KiB was flaky: the size of a tiny model's checkpoint
  varies with how its OCDBT files are written, 343 to 831 KB in one run, and in CI a small
  one let the save start and fail inside orbax.)"""
  root, original, data = trained
  out = tmp_path / 'out'
  out.mkdir()
  disk = tmp_path / 'disk'
  disk.mkdir()
  cmd = ' '.join([sys.executable, '-m', 'jaxgen.main',
                  f'--config={REPO}/configs/ddpm_fashion_mnist.py:tiny',
                  f'--workdir={disk}/run', '--num_cpu_devices=8',
                  *[f'--config.{k}={v}' for k, v in {**data, 'log_every': 100}.items()]])
  fill = ('import os, pathlib; s = os.statvfs("DISK"); size = sum(p.stat().st_size for p in '
          'pathlib.Path("DISK/run/checkpoints/2").rglob("*") if p.is_file()); '
          'open("DISK/filler", "wb").write(bytes(s.f_bavail * s.f_frsize - size // 2))'
          ).replace('DISK', str(disk))
  script = f'''
    set -u
    mount -t tmpfs -o size=16M tmpfs {disk} || exit 99
    cp -a {original} {disk}/run && cp -a {original} {out}/before
    {sys.executable} -c '{fill}'
    {cmd} > {out}/full.out 2> {out}/full.err; echo $? > {out}/full.rc
    cp -a {disk}/run {out}/after_full
  '''
  proc = subprocess.run(_mount_namespace() + ['bash', '-c', script], cwd=REPO, timeout=400,
                        capture_output=True, text=True)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
  err = (out / 'full.err').read_text()
  assert (out / 'full.rc').read_text().strip() == '2', err[-3000:]
  # Caught before orbax writes a byte: one line, no library tracebacks.
  assert 'Traceback' not in err, err[-3000:]
  last = err.strip().splitlines()[-1]
  assert re.fullmatch(r'jaxgen: error: no space to save the checkpoint of step 3 in \S+: it '
                      r'needs about \d+\.\d MiB \(the size of checkpoint 2\) and 0\.\d MiB are '
                      r'free. The newest complete checkpoint is step 2 \(intact\). Free space, '
                      r'then rerun the same command to resume', last), last
  checkpoints = out / 'after_full' / 'checkpoints'
  assert sorted(p.name for p in checkpoints.iterdir()) == ['1', '2']  # nothing half-written
  assert _snapshot(checkpoints) == _snapshot(out / 'before' / 'checkpoints')
  # With space again (here: on another disk), the same command resumes from step 2.
  capsys.readouterr()
  state = train.run(tiny_config_with(**data), str(out / 'after_full'))
  assert int(state['step']) == 4
  assert 'resumed from checkpoint at step 2' in capsys.readouterr().out


def test_a_save_that_fails_midway_is_removed_and_the_previous_one_named(tmp_path, monkeypatch):
  """What orbax reports when a write fails after the space check (another writer filled the
  disk, a quota, lost storage): the next save or wait raises it."""
  ckpt = checkpoint.Checkpointer(str(tmp_path), use_async=False)
  config = tiny_config_with()
  ckpt.save(1, {'w': np.ones(3, np.float32)}, None, config)
  half_written = ckpt.directory / '2.orbax-checkpoint-tmp'
  (half_written / 'state').mkdir(parents=True)

  def save(*args, **kwargs):
    raise ValueError('RESOURCE_EXHAUSTED: Error writing "params.w/0" in OCDBT database at local '
                     f'file "{half_written}/": Failed to write 30825 bytes to file 15: No space '
                     "left on device [os_error_code='28']")
  monkeypatch.setattr(ckpt.manager, 'save', save)
  with pytest.raises(checkpoint.CheckpointError,
                     match=r'saving the checkpoint of step 2 in \S+ failed: No space left on '
                           r'device. The newest complete checkpoint is step 1 \(intact; the '
                           r'half-written one was removed\)'):
    ckpt.save(2, {'w': np.zeros(3, np.float32)}, None, config)
  assert not half_written.exists()
  reader = checkpoint.Checkpointer(str(tmp_path), read_only=True, use_async=False)
  assert reader.all_steps() == [1]
  reader.close()
