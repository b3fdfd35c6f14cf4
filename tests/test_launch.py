"""Launch scripts: their --dry-run prints the exact commands they would run."""

import shlex
import subprocess

from conftest import REPO


def _dry_run(script, *args):
  proc = subprocess.run([f'{REPO}/launch/{script}', *args], capture_output=True, text=True,
                        timeout=30, cwd=REPO)
  assert proc.returncode == 0, proc.stderr
  return [line for line in proc.stdout.splitlines() if line.strip()]


FLAGS = ('--config=configs/ddpm_fashion_mnist.py:tiny', '--workdir=runs/my run')


def test_local_multiprocess_dry_run():
  lines = _dry_run('local_multiprocess.sh', '--dry-run', '--port', '4321',
                   '--devices-per-process', '4', '3', '--', *FLAGS)
  assert len(lines) == 3
  commands = [shlex.split(line) for line in lines]
  for i, cmd in enumerate(commands):
    assert cmd[0] == 'jaxgen-train' and tuple(cmd[1:3]) == FLAGS  # quoting survives
    assert '--coordinator_address=127.0.0.1:4321' in cmd and '--num_processes=3' in cmd
    assert f'--process_id={i}' in cmd and '--num_cpu_devices=4' in cmd
  # Apart from the process id, every worker runs the same command.
  assert len({tuple(c for c in cmd if not c.startswith('--process_id')) for cmd in commands}) == 1


def test_slurm_dry_run():
  lines = _dry_run('slurm.sbatch', '--dry-run', *FLAGS)
  assert lines[0].startswith('# 16 processes (2 nodes x 8)')
  cmd = shlex.split(lines[1])
  assert cmd[:4] == ['srun', '--nodes=2', '--ntasks-per-node=8', '--kill-on-bad-exit=1']
  assert cmd[4] == 'jaxgen-train' and tuple(cmd[5:]) == FLAGS


def test_tpu_vm_dry_run():
  lines = _dry_run('tpu_vm.sh', '--name', 'tpu1', '--zone', 'us-central2-b', '--create',
                   '--delete', '--accelerator-type', 'v4-16', '--dry-run', '--', *FLAGS)
  assert lines[0].startswith('gcloud compute tpus tpu-vm create tpu1 --zone=us-central2-b')
  assert '--accelerator-type=v4-16' in lines[0]
  assert lines[-1].startswith('gcloud compute tpus tpu-vm delete tpu1')
  ssh = [shlex.split(line) for line in lines if ' ssh ' in line]
  assert all('--worker=all' in cmd for cmd in ssh)
  run = [c for c in ssh[-1] if c.startswith('--command=')][0]
  assert shlex.split(run.split('&&')[-1].strip())[1:] == list(FLAGS)


def test_gke_xpk_dry_run():
  [line] = _dry_run('gke_xpk.sh', '--cluster', 'c1', '--workload', 'w1', '--tpu-type',
                    'v5litepod-16', '--dry-run', '--', *FLAGS)
  cmd = shlex.split(line)
  assert cmd[:3] == ['xpk', 'workload', 'create']
  assert '--cluster=c1' in cmd and '--tpu-type=v5litepod-16' in cmd
  command = [c for c in cmd if c.startswith('--command=')][0]
  assert shlex.split(command.split('&&')[-1])[1:] == list(FLAGS)
