"""PatchGAN discriminator (pix2pix's NLayerDiscriminator, as the LDM autoencoder uses it).

4x4 convolutions: one stride-2 conv with LeakyReLU(0.2), `num_layers - 1` more stride-2
convs with normalisation, one stride-1 conv, and a stride-1 conv to one logit per patch.
A batch-free norm stands in for BatchNorm so the module holds no running statistics:
`norm` 'group' (the LDM autoencoder's), 'instance' (pix2pix/CycleGAN's), 'layer' or 'none'.
With 3 layers and 4x4 kernels each logit sees a 70x70 patch of the input (pix2pix's 70x70
PatchGAN); a conditional D is given the source and target images concatenated (2C channels).
"""

from __future__ import annotations

import jax
from flax import nnx

from jaxgen.models import layers

_INIT = nnx.initializers.normal(0.02)  # the pix2pix / taming initialisation


class PatchDiscriminator(nnx.Module):
  def __init__(self, *, in_channels: int, ch: int, num_layers: int, rngs: nnx.Rngs,
               norm: str = 'group', dtype=None):
    def conv(cin, cout, stride, bias=True):
      return nnx.Conv(cin, cout, kernel_size=(4, 4), strides=(stride, stride),
                      padding=((1, 1), (1, 1)), use_bias=bias, kernel_init=_INIT, dtype=dtype,
                      rngs=rngs)

    widths = [ch * min(2**i, 8) for i in range(num_layers + 1)]
    self.conv_in = conv(in_channels, widths[0], 2)
    convs, norms = [], []
    for i in range(1, num_layers + 1):
      convs.append(conv(widths[i - 1], widths[i], 2 if i < num_layers else 1, bias=False))
      norms.append(layers.norm_layer(norm, widths[i], rngs))
    self.convs = nnx.List(convs)
    self.norms = nnx.List(norms)
    self.conv_out = conv(widths[-1], 1, 1)

  def __call__(self, x: jax.Array) -> jax.Array:
    h = nnx.leaky_relu(self.conv_in(x), 0.2)
    for conv, norm in zip(self.convs, self.norms):
      h = nnx.leaky_relu(norm(conv(h)), 0.2)
    return self.conv_out(h).astype('float32')  # [B, h, w, 1] patch logits
