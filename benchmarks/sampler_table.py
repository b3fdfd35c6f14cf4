r"""Speed against quality of the samplers on one trained diffusion run: FD-FMNIST (and FID
with Inception weights) per sampler and number of network evaluations (NFE).

  python benchmarks/sampler_table.py --workdir=runs/demo \
      --classifier_dir=runs/fmnist_classifier --num_samples=10000

Every cell samples `num_samples` images from the run's latest checkpoint with the same seed
and measures them against the train split; the reference row is the 1000-step sampler (DDPM
ancestral for a DDPM-trained model, the Euler ODE step otherwise). Cells are appended to
--results (JSON lines) as they finish and skipped when the script is run again, so a long
table can be built over several sittings. Heun takes 2N - 1 evaluations for N levels: its
cells use the largest N within the NFE. Not a test: it takes hours on a CPU.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from jaxgen import runtime  # noqa: E402  (its flags: --num_cpu_devices, the cache)

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'A trained diffusion run.')
flags.DEFINE_string('classifier_dir', 'runs/fmnist_classifier', 'jaxgen-eval train_classifier.')
flags.DEFINE_integer('num_samples', 10_000, 'Images per cell.')
flags.DEFINE_integer('batch_size', 500, 'Images per sampling call.')
flags.DEFINE_integer('seed', 0, 'The same noise for every cell.')
flags.DEFINE_list('samplers', ['euler', 'heun', 'dpmpp_2m', 'dpmpp_3m'], 'Rows.')
flags.DEFINE_list('nfe', ['10', '20', '35', '50'], 'Columns: network evaluations per image.')
flags.DEFINE_string('spacing', None, "Noise levels (default: the run's diffusion.spacing).")
flags.DEFINE_float('guidance_scale', None, "Classifier-free guidance (default: the run's "
                   'diffusion.guidance_scale); 1: the conditional model, half the evaluations.')
flags.DEFINE_integer('reference_steps', 1000, 'Steps of the reference row; 0: none.')
flags.DEFINE_string('inception_weights', None, 'pt_inception weights: adds FID.')
flags.DEFINE_string('reference', None, 'Inception statistics of the real images (for FID).')
flags.DEFINE_string('results', None, 'JSON lines of the cells (default: '
                    '<workdir>/eval/sampler_table.jsonl).')
flags.mark_flags_as_required(['workdir'])


def steps_for(sampler: str, nfe: int) -> int:
  """Levels to visit for at most `nfe` evaluations (Heun: 2N - 1)."""
  return (nfe + 1) // 2 if sampler == 'heun' else nfe


def nfe_of(sampler: str, steps: int) -> int:
  return 2 * steps - 1 if sampler == 'heun' else steps


def cells(samplers, nfes, reference_sampler: str, reference_steps: int):
  """(sampler, steps) to measure: the grid, then the reference."""
  out = [(sampler, steps_for(sampler, nfe)) for sampler in samplers for nfe in nfes]
  if reference_steps:
    out.append((reference_sampler, reference_steps))
  return out


def table(rows: list[dict], nfes: list[int], reference: dict | None, metric: str) -> str:
  """A markdown table: one row per sampler, one column per NFE budget, the metric and its
  ratio to the reference in each cell. Heun's cells sit under the budget they were drawn
  for (2N - 1 evaluations: 9 under 10) and say their own count."""
  samplers = list(dict.fromkeys(r['sampler'] for r in rows))
  lines = ['| sampler | ' + ' | '.join(f'NFE {n}' for n in nfes) + ' |',
           '|---' * (len(nfes) + 1) + '|']
  for sampler in samplers:
    values = []
    for n in nfes:
      cell = next((r for r in rows if r['sampler'] == sampler
                   and r['steps'] == steps_for(sampler, n)), None)
      if cell is None:
        values.append('')
        continue
      value = f'{cell[metric]:.2f}'
      if reference:
        value += f' ({cell[metric] / reference[metric]:.2f}x)'
      if cell['nfe'] != n:
        value += f" [{cell['nfe']}]"
      values.append(value)
    lines.append(f'| {sampler} | ' + ' | '.join(values) + ' |')
  if reference:
    lines.append(f"\nreference: {reference['sampler']} at {reference['nfe']} NFE: "
                 f"{metric} {reference[metric]:.2f}")
  return '\n'.join(lines)


def main(argv):
  del argv
  runtime.configure_jax()
  from jaxgen import inference
  from jaxgen.eval import evaluate

  s, state, step, config = inference.restore_for_sampling(FLAGS.workdir)
  inference.check_generates(s)
  dcfg = config.diffusion
  spacing = FLAGS.spacing or dcfg.spacing
  reference_sampler = 'ddpm' if dcfg.formulation == 'ddpm' else 'euler'
  results = FLAGS.results or os.path.join(FLAGS.workdir, 'eval', 'sampler_table.jsonl')
  os.makedirs(os.path.dirname(results), exist_ok=True)
  done = []
  if os.path.exists(results):
    with open(results) as f:
      done = [json.loads(line) for line in f if line.strip()]
  guidance = (FLAGS.guidance_scale if FLAGS.guidance_scale is not None
              else dcfg.get('guidance_scale', 1.0))
  key = lambda r: (r['sampler'], r['steps'], r['spacing'], r['num_samples'], r['step'],
                   r['seed'], r.get('guidance_scale', 1.0))
  have = {key(r): r for r in done}
  nfes = [int(n) for n in FLAGS.nfe]
  todo = cells(FLAGS.samplers, nfes, reference_sampler,
               FLAGS.reference_steps)
  print(f'{FLAGS.workdir} step {step}: {dcfg.formulation} model, {len(todo)} cells of '
        f'{FLAGS.num_samples} samples at {spacing} levels, guidance {guidance}', flush=True)
  rows = []
  for sampler, steps in todo:
    # The reference is sampled at the trained levels where the model has them.
    cell_spacing = 'trained' if (sampler, steps) == (reference_sampler, FLAGS.reference_steps) \
        and dcfg.formulation == 'ddpm' else spacing
    row = dict(sampler=sampler, steps=steps, nfe=nfe_of(sampler, steps), spacing=cell_spacing,
               num_samples=FLAGS.num_samples, step=step, seed=FLAGS.seed,
               guidance_scale=guidance)
    if key(row) in have:
      rows.append(have[key(row)])
      continue
    # The cell's batches are kept until its row is written: a stopped table resumes mid-cell
    # (the 1000-step reference takes hours on a CPU).
    batches = f"{results}.batches/{'_'.join(str(v) for v in key(row))}_{FLAGS.batch_size}"
    start = time.perf_counter()
    images = inference.generate(s, state, FLAGS.num_samples, FLAGS.batch_size, FLAGS.seed,
                                cache_dir=batches, sampler=sampler, steps=steps,
                                spacing=cell_spacing, guidance_scale=guidance)
    row['seconds'] = time.perf_counter() - start  # of this sitting only, when resumed
    row.update({k: v for k, v in evaluate.fmnist_metrics(images, FLAGS.classifier_dir).items()
                if not k.startswith('class_fraction')})
    if FLAGS.inception_weights:
      row.update(evaluate.inception_metrics(images, FLAGS.inception_weights, FLAGS.reference))
    print(f"{sampler} {steps} steps ({row['nfe']} NFE): FD-FMNIST {row['fd_fmnist']:.2f} "
          f"in {row['seconds']:.0f}s", flush=True)
    with open(results, 'a') as f:
      f.write(json.dumps(row) + '\n')
    shutil.rmtree(batches)
    rows.append(row)
  reference = rows[-1] if FLAGS.reference_steps else None
  grid = rows[:-1] if reference else rows
  print(f"\nFD-FMNIST, {FLAGS.num_samples} samples (real-data floor "
        f"{rows[0]['fd_fmnist_floor']:.2f}); in brackets: over the reference\n")
  print(table(grid, nfes, reference, 'fd_fmnist'))
  if FLAGS.inception_weights:
    print('\nFID\n')
    print(table(grid, nfes, reference, 'fid'))


if __name__ == '__main__':
  app.run(main, flags_parser=runtime.parse_flags)
