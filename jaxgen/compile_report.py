"""Ahead-of-time compile of a config's train step: FLOPs and per-device memory, so a user
checks that a config fits before paying for a pod slice (`jaxgen-train --compile_only`)."""

from __future__ import annotations

import time
from typing import Any

import jax

from jaxgen import build
from jaxgen.models import onednn


def compile_report(s: build.Setup, device_memory_bytes: int | None = None) -> dict[str, Any]:
  """Lower and compile the train step for the config's mesh without running it.

  FLOPs per step come from XLA's cost analysis (per device for a partitioned program),
  memory from its memory analysis; with `device_memory_bytes`, whether arguments + outputs
  + temporaries fit.
  """
  batch_shapes = s.objective.batch_shapes(s.config.global_batch_size)
  abstract_batch = {k: jax.ShapeDtypeStruct(shape, dtype, sharding=s.batch_sharding)
                    for k, (shape, dtype) in batch_shapes.items()}
  abstract_rng = jax.ShapeDtypeStruct((), jax.random.key(0).dtype, sharding=s.replicated)
  start = time.perf_counter()
  # XLA's own convolutions: the report is of the program an accelerator would run, and
  # XLA's cost analysis does not count FLOPs inside the CPU's oneDNN calls.
  with jax.set_mesh(s.mesh), onednn.off():
    compiled = build.jit_train_step(s).lower(s.restore_target, abstract_batch,
                                             abstract_rng).compile()
  report: dict[str, Any] = {'compile_seconds': time.perf_counter() - start}
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  report['flops_per_device'] = float(cost.get('flops', 0.0)) if cost else 0.0
  memory = compiled.memory_analysis()
  for field in ('argument_size_in_bytes', 'output_size_in_bytes', 'alias_size_in_bytes',
                'temp_size_in_bytes', 'generated_code_size_in_bytes'):
    report[field] = int(getattr(memory, field, 0) or 0)
  # Donated state aliases its outputs: count those bytes once.
  report['peak_bytes_per_device'] = (report['argument_size_in_bytes'] +
                                     report['output_size_in_bytes'] -
                                     report['alias_size_in_bytes'] +
                                     report['temp_size_in_bytes'])
  if device_memory_bytes:
    report['device_memory_bytes'] = device_memory_bytes
    report['fits'] = report['peak_bytes_per_device'] <= device_memory_bytes
  return report


def format_report(report: dict[str, Any]) -> str:
  gib = 2**30
  lines = [f'compiled in {report["compile_seconds"]:.1f} s',
           f'FLOPs per step per device: {report["flops_per_device"] / 1e9:.2f} GFLOP']
  for field in ('argument', 'output', 'alias', 'temp'):
    lines.append(f'{field} bytes per device: {report[field + "_size_in_bytes"] / gib:.3f} GiB')
  lines.append(f'peak per device (arguments + outputs - aliased + temporaries): '
               f'{report["peak_bytes_per_device"] / gib:.3f} GiB')
  if 'fits' in report:
    verdict = 'fits' if report['fits'] else 'DOES NOT FIT'
    lines.append(f'{verdict} in {report["device_memory_bytes"] / gib:.1f} GiB per device')
  return '\n'.join(lines)
