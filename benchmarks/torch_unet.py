r"""The PyTorch side of benchmarks/vs_pytorch.py: jaxgen's UNet as diffusers' UNet2DModel,
trained or sampled the way jaxgen does it, timed on request.

Runs in the benchmark's own venv (torch CPU with oneDNN, diffusers; `make bench-torch`
builds it), never in jaxgen's: it imports neither jax nor jaxgen. The spec (argv[1], JSON)
comes from vs_pytorch.py, which reads it off the jaxgen config. Protocol on stdin/stdout,
one line each: after the warm-up it prints `ready {json}`; `run N` runs N steps (or N
sampling batches) and answers `time SECONDS`; `quit` ends it.
"""

from __future__ import annotations

import json
import math
import sys

import torch
import worker_protocol
from diffusers import UNet2DModel
from torch.utils.flop_counter import FlopCounterMode


def unet(spec: dict) -> UNet2DModel:
  """DDPM's UNet (jaxgen.models.unet.UNet's layout) in diffusers' terms: a level with
  attention is an Attn block, one head over the full width (attention_head_dim=None),
  positional time embedding without the sin/cos flip, shift 1, as diffusers' port of
  google/ddpm-cifar10-32. GroupNorm uses the largest group count (<= 32) that divides
  every width; jaxgen picks it per layer, which is the same for the CIFAR-10 UNet."""
  m = spec['model']
  widths = [m['ch'] * k for k in m['ch_mult']]
  attn = [spec['image_size'] // 2**level in m['attn_resolutions']
          for level in range(len(widths))]
  return UNet2DModel(
      sample_size=spec['image_size'], in_channels=spec['channels'],
      out_channels=spec['channels'], block_out_channels=widths,
      layers_per_block=m['num_res_blocks'],
      down_block_types=['AttnDownBlock2D' if a else 'DownBlock2D' for a in attn],
      up_block_types=['AttnUpBlock2D' if a else 'UpBlock2D' for a in reversed(attn)],
      attention_head_dim=None, norm_num_groups=math.gcd(32, *widths), norm_eps=1e-6,
      flip_sin_to_cos=False, freq_shift=1, dropout=m['dropout'],
      num_class_embeds=m['num_classes'] + 1 if m['num_classes'] else None)


class Trainer:
  """jaxgen's diffusion train step: noise level, noise and label drop per example, the
  formulation's MSE, backward, global-norm clip, AdamW, then the EMA (and EDM2 power EMAs)."""

  def __init__(self, spec: dict, model: UNet2DModel, memory_format):
    self.spec, self.model, self.fmt = spec, model, memory_format
    o = spec['optimizer']
    # fused: PyTorch's fastest CPU AdamW (one kernel over all tensors).
    self.opt = torch.optim.AdamW(model.parameters(), lr=o['learning_rate'],
                                 betas=(o['b1'], o['b2']), eps=o['eps'],
                                 weight_decay=o['weight_decay'], fused=True)
    self.params = [p for p in model.parameters()]
    self.emas = [[p.detach().clone() for p in self.params] for _ in range(spec['num_emas'])]
    g = torch.Generator().manual_seed(0)
    b, c, s = spec['batch_size'], spec['channels'], spec['image_size']
    self.x0 = (torch.rand(b, c, s, s, generator=g) * 2 - 1).contiguous(memory_format=self.fmt)
    self.labels = torch.randint(0, 10, (b,), generator=g)
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    self.alpha_bar = torch.cumprod(1 - betas, 0).float()
    self.step = 0

  def example(self):
    b = self.x0.shape[0]
    noise = torch.randn_like(self.x0)
    if self.spec['formulation'] == 'edm':
      sd = 0.5
      sigma = torch.exp(-1.2 + 1.2 * torch.randn(b)).view(b, 1, 1, 1)
      total = sigma**2 + sd**2
      c_skip, c_out, c_in = sd**2 / total, sigma * sd / total.sqrt(), 1 / total.sqrt()
      y = self.x0 + sigma * noise
      return c_in * y, (sigma.log() / 4).view(b), (self.x0 - c_skip * y) / c_out
    t = torch.randint(0, 1000, (b,))
    a = self.alpha_bar[t].view(b, 1, 1, 1)
    return a.sqrt() * self.x0 + (1 - a).sqrt() * noise, t, noise

  def __call__(self):
    net_input, noise_label, target = self.example()
    labels = None
    if self.spec['model']['num_classes']:
      drop = torch.rand(self.labels.shape) < 0.1
      labels = torch.where(drop, self.spec['model']['num_classes'], self.labels)
    out = self.model(net_input, noise_label, class_labels=labels).sample
    loss = torch.mean((out - target) ** 2)
    self.opt.zero_grad(set_to_none=True)
    loss.backward()
    if self.spec['optimizer']['grad_clip']:
      torch.nn.utils.clip_grad_norm_(self.params, self.spec['optimizer']['grad_clip'],
                                     foreach=True)
    self.opt.step()
    with torch.no_grad():
      self.step += 1
      for ema in self.emas:  # jaxgen's decay schedules differ per EMA; the cost does not
        torch._foreach_lerp_(ema, self.params, 1 - min(0.999, (1 + self.step) / (10 + self.step)))


class Sampler:
  """EDM's deterministic Heun (Karras et al. 2022, Algorithm 1) at Karras levels, with the
  EDM preconditioning and classifier-free guidance in one doubled batch, as jaxgen samples
  an edm model; x0 is clipped to [-1, 1] as jaxgen does."""

  def __init__(self, spec: dict, model: UNet2DModel, memory_format):
    self.spec, self.model, self.fmt = spec, model, memory_format
    n, rho = spec['sample_steps'], 7.0
    lo, hi = 0.002 ** (1 / rho), 80.0 ** (1 / rho)
    sigmas = [(hi + i / (n - 1) * (lo - hi)) ** rho for i in range(n)]
    self.sigmas = sigmas + [0.0]
    b = spec['batch_size']
    self.labels = torch.arange(b) % 10
    self.scale = spec['guidance_scale']

  def denoise(self, x, sigma):
    sd, b = 0.5, x.shape[0]
    total = sigma**2 + sd**2
    c_skip, c_out, c_in = sd**2 / total, sigma * sd / math.sqrt(total), 1 / math.sqrt(total)
    noise_label = torch.full((b,), math.log(sigma) / 4)
    labels = self.labels if self.spec['model']['num_classes'] else None
    if labels is not None and self.scale != 1.0:
      null = torch.full_like(labels, self.spec['model']['num_classes'])
      both = self.model(torch.cat([c_in * x, c_in * x]), torch.cat([noise_label, noise_label]),
                        class_labels=torch.cat([labels, null])).sample
      cond, uncond = both.chunk(2)
      out = uncond + self.scale * (cond - uncond)
    else:
      out = self.model(c_in * x, noise_label, class_labels=labels).sample
    return (c_skip * x + c_out * out).clamp(-1, 1)

  @torch.inference_mode()
  def __call__(self):
    s, c, b = self.spec['image_size'], self.spec['channels'], self.spec['batch_size']
    x = (torch.randn(b, c, s, s) * self.sigmas[0]).contiguous(memory_format=self.fmt)
    for cur, nxt in zip(self.sigmas[:-1], self.sigmas[1:]):
      d = (x - self.denoise(x, cur)) / cur
      x_next = x + (nxt - cur) * d
      if nxt > 0:
        x_next = x + (nxt - cur) * 0.5 * (d + (x_next - self.denoise(x_next, nxt)) / nxt)
      x = x_next
    return ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)


def main() -> None:
  spec = json.loads(sys.argv[1])
  torch.manual_seed(0)
  fmt = torch.channels_last if spec['channels_last'] else torch.contiguous_format
  model = unet(spec).to(memory_format=fmt)
  if spec['mode'] == 'train':
    model.train()
    run = Trainer(spec, model, fmt)
  else:
    model.eval()
    run = Sampler(spec, model, fmt)
  with FlopCounterMode(display=False) as count:  # also the warm-up: oneDNN picks its kernels
    run()
  run()
  worker_protocol.serve({
      'flops': count.get_total_flops(),
      'params': sum(p.numel() for p in model.parameters()), 'threads': torch.get_num_threads(),
      'torch': torch.__version__, 'onednn': torch.backends.mkldnn.is_available()},
      lambda i: run())

if __name__ == '__main__':
  main()
