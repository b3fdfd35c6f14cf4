"""Metric accumulation (per-metric validity) and the JSONL/TensorBoard writer's bookkeeping."""

import json

import jax.numpy as jnp
import pytest
from tensorboard.backend.event_processing import event_accumulator

from jaxgen import metrics
from jaxgen.objectives import only_when


def test_a_partial_metric_is_averaged_over_the_steps_that_compute_it():
  acc = metrics.Accumulator()
  # r1 is computed on steps 0 and 2 only (as a lazy regulariser would be); step 3 is a
  # skipped non-finite step whose values count nowhere.
  steps = [(1.0, 10.0, 1, 0), (3.0, 99.0, 0, 0), (5.0, 20.0, 1, 0), (7.0, 30.0, 1, 1)]
  for loss, r1, present, nonfinite in steps:
    acc.add({'loss': jnp.float32(loss), 'r1': only_when(present, r1),
             'nonfinite': jnp.float32(nonfinite)})
  out = acc.flush()
  assert out == {'loss': pytest.approx(3.0), 'r1': pytest.approx(15.0), 'nonfinite_steps': 1}
  # Absent on every step of an interval: left out, not reported as 0 or NaN.
  acc.add({'loss': jnp.float32(2.0), 'r1': only_when(0, 5.0)})
  assert acc.flush() == {'loss': pytest.approx(2.0)}
  assert acc.flush() == {}


def _tb_steps(directory, tag='loss'):
  acc = event_accumulator.EventAccumulator(str(directory / 'tensorboard'))
  acc.Reload()
  return [e.step for e in acc.Scalars(tag)]


def test_fresh_start_and_resume_leave_each_step_once(tmp_path):
  def log(writer, steps):
    for step in steps:
      writer.write_scalars(step, {'loss': float(step)})
    writer.close()

  log(metrics.MetricWriter(str(tmp_path), resume_step=0), [2, 4, 6])  # crashed before a save
  log(metrics.MetricWriter(str(tmp_path), resume_step=0), [2, 4])  # a fresh start again
  log(metrics.MetricWriter(str(tmp_path), resume_step=2), [4, 6, 8])  # resumed from step 2
  records = [json.loads(line) for line in (tmp_path / 'metrics.jsonl').read_text().splitlines()]
  assert [r['step'] for r in records] == [2, 4, 6, 8]
  assert _tb_steps(tmp_path) == [2, 4, 6, 8]
  # The eval program's writer (no resume_step) appends.
  log(metrics.MetricWriter(str(tmp_path)), [10])
  assert len((tmp_path / 'metrics.jsonl').read_text().splitlines()) == 5
