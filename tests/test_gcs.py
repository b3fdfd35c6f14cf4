"""gs:// workdirs: train, checkpoint, resume and log into Cloud Storage (a local emulator).

orbax (tensorstore), epath (gcsfs) and tensorboardX (google-cloud-storage) each talk to
Cloud Storage on their own; all three are pointed at gcp-storage-emulator, in-process.
"""

import gc
import json
import time

import numpy as np
import pytest
import tensorflow_datasets as tfds
from etils import epath

from conftest import assert_trees_equal, free_port, tiny_config_with
from jaxgen import api, train, workdir_lock


def _faithful_downloads(monkeypatch):
  """Make the emulator's object download answer as real GCS does for tensorstore.

  tensorstore reads an object's generation from the x-goog-generation header and re-reads
  with ifGenerationNotMatch (GCS answers 304 Not Modified); the stub emulator does neither,
  which makes orbax's OCDBT manifest reads fail now and then ("Malformed StorageGeneration").
  """
  from http import HTTPStatus

  from gcp_storage_emulator import server
  from gcp_storage_emulator.handlers import objects

  original = objects.download

  def download(request, response, storage, *args, **kwargs):
    try:
      obj = storage.get_file_obj(request.params['bucket_name'], request.params['object_id'])
    except Exception:  # noqa: BLE001  (not found: the original handler answers 404)
      return original(request, response, storage, *args, **kwargs)
    response['x-goog-generation'] = obj['generation']
    response['x-goog-metageneration'] = obj['metageneration']
    if request.query.get('ifGenerationNotMatch', [None])[0] == obj['generation']:
      response.status = HTTPStatus.NOT_MODIFIED
      return None
    return original(request, response, storage, *args, **kwargs)

  monkeypatch.setattr(objects, 'download', download)  # objects.get calls it for alt=media
  for _, handlers in server.HANDLERS:
    for method, handler in handlers.items():
      if handler is original:
        monkeypatch.setitem(handlers, method, download)


@pytest.fixture
def bucket(monkeypatch):
  from gcp_storage_emulator.server import create_server

  _faithful_downloads(monkeypatch)
  monkeypatch.setattr(workdir_lock, 'SETTLE_SECONDS', 0.1)  # the lease's write-read wait

  port = free_port()
  server = create_server('localhost', port, in_memory=True, default_bucket='jaxgen-test')
  server.start()
  url = f'http://localhost:{port}'
  monkeypatch.setenv('STORAGE_EMULATOR_HOST', url)  # gcsfs, google-cloud-storage
  monkeypatch.setenv('TENSORSTORE_GCS_HTTP_URL', url)  # orbax's tensorstore
  monkeypatch.setenv('GOOGLE_AUTH_TOKEN_FOR_TESTING', 'emulator')
  yield 'gs://jaxgen-test'
  gc.collect()  # tensorboardX's GCS writer uploads once more when collected
  server.stop()


def test_gs_workdir_trains_resumes_and_logs(bucket, tmp_path):
  config = tiny_config_with(sample_every=6)
  workdir = f'{bucket}/runs/tiny'
  with tfds.testing.mock_data(num_examples=64):
    straight = train.run(config, str(tmp_path / 'local'))
    half = train.run(config, workdir, stop_at_step=3)
    assert int(half['step']) == 3
    resumed = train.run(config, workdir)
  # The run that went through Cloud Storage (checkpoint, iterator state, restore) ends
  # exactly where the local uninterrupted run does.
  assert_trees_equal(straight, resumed)

  root = epath.Path(workdir)
  steps = [json.loads(line)['step'] for line in (root / 'metrics.jsonl').read_text().splitlines()]
  assert steps == [2, 4, 6]
  assert {p.name for p in (root / 'checkpoints').iterdir()} >= {'3', '6'}
  assert list((root / 'tensorboard').glob('events.out.tfevents.*'))
  assert (root / 'samples' / 'step_0000006.png').read_bytes()[:4] == b'\x89PNG'

  result = api.sample(workdir, step=None, num_images=4, seed=0)
  images, step = result.images, result.step
  assert step == 6 and images.shape == (4, 28, 28, 1) and images.dtype == np.uint8


def test_gs_workdir_lease_refuses_a_second_trainer_and_expires(bucket, monkeypatch):
  monkeypatch.setattr(workdir_lock, 'HEARTBEAT_SECONDS', 0.5)
  workdir = f'{bucket}/runs/leased'
  lease = epath.Path(workdir) / workdir_lock.LEASE_FILE
  with workdir_lock.WorkdirLock(workdir):
    holder = workdir_lock._read_lease(lease)
    with pytest.raises(workdir_lock.WorkdirLocked,
                       match=rf'{workdir} is in use by another jaxgen-train \(pid {holder["pid"]} '
                             r'on .+, last heartbeat \d+ s ago\).*expires 120 s after'):
      with workdir_lock.WorkdirLock(workdir):
        pass
    assert workdir_lock._read_lease(lease)['token'] == holder['token']  # the refused one left it
    time.sleep(1.2)
    assert workdir_lock._read_lease(lease)['heartbeat'] > holder['heartbeat']  # renewed
  assert not lease.exists()  # released on exit
  # A lease whose heartbeat stopped long ago (a killed trainer) is taken over.
  lease.write_text(json.dumps({**holder, 'heartbeat': holder['heartbeat'] - 1000}))
  with workdir_lock.WorkdirLock(workdir):
    assert workdir_lock._read_lease(lease)['token'] != holder['token']
