r"""jaxgen against PyTorch on this CPU: the same UNet, trained and sampled the same way, timed
alternately in one run so that load drift hits both sides.

  make bench-torch          # builds the benchmark's venv (torch CPU + diffusers), then runs:
  python benchmarks/vs_pytorch.py --torch_python=.venv-bench/bin/python [--cases=...]

Cases (--cases, comma-separated):
  demo_b64      the training step of `make demo`'s UNet (configs/edm_fashion_mnist.py:demo,
                0.7M parameters, class-conditional EDM, three EMAs) at batch 64;
  cifar10_b8    the DDPM CIFAR-10 UNet (configs/ddpm_cifar10.py, 35.7M) at batch 8;
  cifar10_b32   the same at batch 32;
  demo_sample   sampling the demo model as `make demo` does (EDM Heun, 18 levels: 35
                network evaluations, classifier-free guidance 2.0), images/s.

Each side runs in its own process: jaxgen with one simulated device per core (its default;
--num_cpu_devices changes it), PyTorch (benchmarks/torch_unet.py, diffusers' UNet2DModel in
the same configuration, channels-last, fused AdamW) with its default threads. After a
warm-up each side is asked for a round of steps in turn, --rounds times; the table gives
both medians, the ratio jaxgen/PyTorch of each round's pair (min/median/max: under 1 means
jaxgen is faster) and the FLOP/s of each side (XLA's count of the jaxgen step) over this
machine's float32 matmul peak (the better of a 4096^2 jnp.dot and torch.mm). Not a test:
the numbers hold for this machine only.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from jaxgen import runtime  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
# name: (config, train | sample, batch size, steps or batches per round)
CASES = {
    'demo_b64': ('configs/edm_fashion_mnist.py:demo', 'train', 64, 5),
    'cifar10_b8': ('configs/ddpm_cifar10.py', 'train', 8, 2),
    'cifar10_b32': ('configs/ddpm_cifar10.py', 'train', 32, 1),
    'demo_sample': ('configs/edm_fashion_mnist.py:demo', 'sample', 250, 1),
}

FLAGS = flags.FLAGS
flags.DEFINE_list('cases', list(CASES), f'Which of {list(CASES)}.')
flags.DEFINE_integer('rounds', 7, 'Timed rounds per side, alternating.')
flags.DEFINE_string('torch_python', '.venv-bench/bin/python',
                    'The python of the venv with torch and diffusers.')
flags.DEFINE_bool('channels_last', True, "PyTorch's memory format (its faster one on CPU).")
flags.DEFINE_string('worker', None, 'Internal: run as the jaxgen side of this case.')
flags.DEFINE_integer('matmul_size', 4096, 'Side of the square matrices for the peak.')


def load(config_ref: str):
  from jaxgen import config_files

  path, _, variant = config_ref.partition(':')
  return config_files.load(os.path.join(REPO, path), variant or None)


def torch_spec(config, mode: str, batch_size: int) -> dict:
  """What benchmarks/torch_unet.py needs to build and drive the same network."""
  m, d, o = config.model, config.diffusion, config.optimizer
  return dict(
      mode=mode, batch_size=batch_size, channels_last=FLAGS.channels_last,
      image_size=config.data.image_size, channels=config.data.channels,
      model=dict(ch=m.ch, ch_mult=list(m.ch_mult), num_res_blocks=m.num_res_blocks,
                 attn_resolutions=list(m.attn_resolutions), dropout=m.dropout,
                 num_classes=m.num_classes),
      formulation=d.formulation, sample_steps=d.sample_steps,
      guidance_scale=d.get('guidance_scale', 1.0),
      optimizer=dict(learning_rate=o.learning_rate, b1=o.b1, b2=o.b2, eps=o.eps,
                     weight_decay=o.weight_decay, grad_clip=o.grad_clip),
      num_emas=1 + len(config.ema.get('power_sigma_rels', ())))


def jax_worker(case: str) -> None:
  """The jaxgen side: compile, warm up, then answer `run N` lines with their seconds."""
  import jax
  import train_step
  import worker_protocol

  from jaxgen import build
  from jaxgen import state as state_lib

  config_ref, mode, batch_size, _ = CASES[case]
  config = load(config_ref)
  if mode == 'train':
    s, state, batch, key, compiled, flops, compile_s = train_step.compiled_step(
        config, batch_size)

    def run(i):
      nonlocal state
      state, _ = compiled(state, batch, jax.random.fold_in(key, i))
      jax.block_until_ready(state)
  else:
    with config.unlocked():
      config.mesh.data, config.mesh.fsdp = -1, 1
    s = build.setup(config)
    state = build.init_state(s, jax.random.key(0))
    start = time.perf_counter()
    sample = build.jit_sample(s, batch_size)  # the config's sampler, steps and guidance
    sample(state, jax.random.key(0))
    compile_s, flops = time.perf_counter() - start, 0.0

    def run(i):
      sample(state, jax.random.key(i))
  peak = train_step.matmul_peak(FLAGS.matmul_size)
  worker_protocol.serve({
      'params': state_lib.count_params(state['params']), 'flops': flops, 'peak': peak,
      'compile_s': compile_s, 'devices': jax.device_count(), 'jax': jax.__version__}, run)

TORCH_PEAK = r"""
import sys, time, torch
n = int(sys.argv[1]); a, b = torch.randn(n, n), torch.randn(n, n); a @ b
best = min((lambda t: (a @ b, time.perf_counter() - t)[1])(time.perf_counter()) for _ in range(5))
print(2 * n**3 / best)
"""


class Worker:
  """One side of a case, in its own process, driven over stdin/stdout."""

  def __init__(self, name: str, argv: list[str]):
    self.name = name
    self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 text=True, cwd=REPO)
    self.info = json.loads(self._expect('ready'))

  def _expect(self, word: str) -> str:
    for line in self.proc.stdout:
      if line.startswith(word + ' '):
        return line[len(word) + 1:]
    raise RuntimeError(f'the {self.name} worker ended before `{word}` (its errors are above)')

  def run(self, steps: int) -> float:
    self.proc.stdin.write(f'run {steps}\n')
    self.proc.stdin.flush()
    return float(self._expect('time'))

  def close(self) -> None:
    self.proc.stdin.write('quit\n')
    self.proc.stdin.close()
    self.proc.wait()


def measure(case: str) -> dict:
  config_ref, mode, batch_size, steps = CASES[case]
  spec = torch_spec(load(config_ref), mode, batch_size)
  jax_side = Worker('jaxgen', [sys.executable, os.path.abspath(__file__), f'--worker={case}',
                               f'--matmul_size={FLAGS.matmul_size}',
                               *[a for a in sys.argv[1:] if a.startswith('--num_cpu_devices')]])
  torch_side = Worker('pytorch', [FLAGS.torch_python, os.path.join(HERE, 'torch_unet.py'),
                                  json.dumps(spec)])
  pairs = []
  for _ in range(FLAGS.rounds):
    pairs.append((jax_side.run(steps) / steps, torch_side.run(steps) / steps))
  jax_side.close()
  torch_side.close()
  torch_peak = float(subprocess.run([FLAGS.torch_python, '-c', TORCH_PEAK,
                                     str(FLAGS.matmul_size)], capture_output=True, text=True,
                                    check=True).stdout)
  return dict(case=case, config=config_ref, mode=mode, batch_size=batch_size, pairs=pairs,
              jax=jax_side.info, torch=torch_side.info, torch_peak=torch_peak)


def report(r: dict) -> str:
  jax_times, torch_times = zip(*r['pairs'])
  ratios = [j / t for j, t in r['pairs']]
  unit = 'step' if r['mode'] == 'train' else f"batch of {r['batch_size']}"
  lines = [f"{r['case']}: {r['config']} {r['mode']} at batch {r['batch_size']}; params "
           f"jaxgen {r['jax']['params'] / 1e6:.3f}M, PyTorch {r['torch']['params'] / 1e6:.3f}M",
           f"  per {unit}: jaxgen median {statistics.median(jax_times):.3f} s, PyTorch median "
           f"{statistics.median(torch_times):.3f} s",
           f'  jaxgen / PyTorch over {len(ratios)} pairs: min {min(ratios):.2f}, median '
           f'{statistics.median(ratios):.2f}, max {max(ratios):.2f}']
  if r['mode'] == 'sample':
    lines.append(f"  images/s: jaxgen {r['batch_size'] / statistics.median(jax_times):.1f}, "
                 f"PyTorch {r['batch_size'] / statistics.median(torch_times):.1f}")
  peak, flops = max(r['jax']['peak'], r['torch_peak']), r['torch']['flops']
  counted = (f", XLA's {r['jax']['flops'] / 1e9:.1f}" if r['jax']['flops'] else '')
  lines.append(
      f"  fraction of the float32 matmul peak ({peak / 1e9:.0f} GFLOP/s): jaxgen "
      f"{flops / statistics.median(jax_times) / peak:.2f}, PyTorch "
      f"{flops / statistics.median(torch_times) / peak:.2f} (GFLOP per {unit}: PyTorch's "
      f"FlopCounterMode {flops / 1e9:.1f}{counted})")
  lines.append(f"  jaxgen: {r['jax']['devices']} devices, compile {r['jax']['compile_s']:.1f} "
               f"s; PyTorch {r['torch']['torch']}: {r['torch']['threads']} threads, "
               f"oneDNN {r['torch']['onednn']}")
  return '\n'.join(lines)


def main(argv):
  del argv
  if FLAGS.worker:
    runtime.configure_jax()
    return jax_worker(FLAGS.worker)
  unknown = set(FLAGS.cases) - set(CASES)
  if unknown:
    raise app.UsageError(f'--cases: no case {sorted(unknown)}; the cases are {list(CASES)}')
  if not os.path.exists(FLAGS.torch_python):
    raise app.UsageError(f'--torch_python={FLAGS.torch_python} does not exist: run '
                         '`make bench-torch` (it builds .venv-bench) or point it at a python '
                         'with torch and diffusers')
  for case in FLAGS.cases:
    print(report(measure(case)), flush=True)


if __name__ == '__main__':
  app.run(main, flags_parser=runtime.parse_flags)
