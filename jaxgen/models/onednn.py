"""Convolutions and batched matrix products through oneDNN on the CPU backend.

XLA:CPU's convolutions ran well below oneDNN's direct AVX-512 kernels on a 2-core Intel
Xeon, the weight gradient most: on one core, 4x32x32x128 -> 128, 3x3, XLA took 6.8 ms
forward and 17.3 ms for the weight gradient, oneDNN 5.3 and 5.5 ms; 64x28x28x16 -> 16
(the demo's top level): 2.6 and 6.9 ms against 1.2 and 1.1 ms. The DDPM CIFAR-10 training
step went from 2.08 s to 1.5 s with them (README, "CPU convolutions").

`conv2d` is a convolution whose forward pass, input gradient (for stride 1, a forward
convolution with the flipped kernel, which the handler flips) and weight gradient are calls
into `jaxgen/native/onednn_conv.cc`, an XLA FFI handler built by `scripts/build_native.sh`
(which `make` runs). A many-to-few projection (a UNet's output layer) keeps XLA's forward
convolution, where XLA was faster. It is used only on the CPU backend, for float32 NHWC x
HWIO convolutions without dilation or groups, when the library is built and
`JAXGEN_ONEDNN` is not `0`; everywhere else the models use XLA's convolution.

`matmul` is a batched matrix product with either operand transposed, for attention: XLA
took 4.2-4.9 ms for a [32, 256, 256] x [32, 256, 256] product and 8.1 ms when it had to
transpose the left operand (two of the four products of attention's backward pass), oneDNN
3.3-3.8 ms for all of them (both cores of the Xeon above).

Under a mesh (the trainer and the sampler trace under theirs: `build.on_mesh`) each call
runs once per device on that device's examples (`shard_map` over every mesh axis, the batch
layout of `sharding.BATCH_SPEC`); a weight gradient is then summed over the devices, as
the data-parallel gradient is anyway. With no mesh known on several devices, or a batch
that does not split evenly, the computations are XLA's. The derivatives of the convolution
calls themselves (a second derivative of the model, e.g. a gradient penalty) are XLA's;
those of `matmul` are `matmul`s.
"""

from __future__ import annotations

import contextlib
import contextvars
import ctypes
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.sharding import PartitionSpec as P

Padding = tuple[tuple[int, int], tuple[int, int]]

LIBRARY = os.path.join(os.path.dirname(os.path.dirname(__file__)), 'native',
                       'libjaxgen_onednn.so')
_TARGETS = {'conv_forward': 'JaxgenOnednnConvForward',
            'conv_backward_data': 'JaxgenOnednnConvBackwardData',
            'conv_backward_weights': 'JaxgenOnednnConvBackwardWeights',
            'conv_flipped': 'JaxgenOnednnConvFlipped',
            'matmul': 'JaxgenOnednnMatmul'}


@functools.cache
def _load() -> bool:
  if os.environ.get('JAXGEN_ONEDNN', '1') == '0' or not os.path.exists(LIBRARY):
    return False
  try:
    library = ctypes.cdll.LoadLibrary(LIBRARY)
  except OSError as e:  # e.g. libdnnl removed since the build
    logging.warning('%s does not load (%s): XLA\'s convolutions are used; rebuild it with '
                    'scripts/build_native.sh', LIBRARY, e)
    return False
  for name, symbol in _TARGETS.items():
    jax.ffi.register_ffi_target(f'jaxgen_onednn_{name}',
                                jax.ffi.pycapsule(getattr(library, symbol)), platform='cpu')
  return True


def _threads() -> int:
  """oneDNN threads per call: this process's cores per CPU device."""
  cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
  return max(1, (cores or 1) // jax.local_device_count())


_OFF = contextvars.ContextVar('jaxgen_onednn_off', default=False)


@contextlib.contextmanager
def off():
  """While tracing under this, convolutions are XLA's (e.g. to count a step's FLOPs with
  XLA's cost analysis, which does not see into the calls). A trace-time switch: a function
  jitted and traced before keeps the trace it has."""
  token = _OFF.set(True)
  try:
    yield
  finally:
    _OFF.reset(token)


def available() -> bool:
  """Whether convolutions traced now go to oneDNN: the library is built, not turned off
  (JAXGEN_ONEDNN=0, `off()`), and JAX computes on the CPU."""
  return not _OFF.get() and jax.default_backend() == 'cpu' and _load()


def applies(x: jax.Array, w: jax.Array) -> bool:
  """Whether `conv2d` would call oneDNN for this convolution (else it is left to XLA)."""
  return (available() and x.ndim == 4 and w.ndim == 4 and x.dtype == jnp.float32
          and w.dtype == jnp.float32 and _splits(x.shape[0]))


def _forward(x: jax.Array, w: jax.Array, stride: int, padding: Padding) -> jax.Array:
  return jax.lax.conv_general_dilated(x, w, (stride, stride), padding,
                                      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


def _xla_weight_gradient(x, dy, w_shape, stride, padding):
  w0 = jnp.zeros(w_shape, x.dtype)
  return jax.vjp(lambda w: _forward(x, w, stride, padding), w0)[1](dy)[0]


def _xla_input_gradient(dy, w, x_shape, stride, padding):
  x0 = jnp.zeros(x_shape, dy.dtype)
  return jax.vjp(lambda x: _forward(x, w, stride, padding), x0)[1](dy)[0]


def _differentiated_as(xla_fn):
  """`fn(a, b, shape, stride, padding)` (a gradient convolution on oneDNN) as a custom_vjp
  whose own derivative is that of `xla_fn`, the same function in XLA's convolutions: its
  forward rule calls the function itself, so a derivative of a derivative (a gradient
  penalty) never differentiates an FFI call."""

  def wrap(fn):
    wrapped = jax.custom_vjp(fn, nondiff_argnums=(2, 3, 4))

    def fwd(a, b, shape, stride, padding):
      return wrapped(a, b, shape, stride, padding), (a, b)

    def bwd(shape, stride, padding, residuals, ct):
      return jax.vjp(lambda a, b: xla_fn(a, b, shape, stride, padding), *residuals)[1](ct)
    wrapped.defvjp(fwd, bwd)
    return wrapped
  return wrap


def _call(name: str, a: jax.Array, b: jax.Array, shape, **attrs) -> jax.Array:
  return jax.ffi.ffi_call(f'jaxgen_onednn_{name}', jax.ShapeDtypeStruct(tuple(shape), jnp.float32),
                          vmap_method='sequential')(a, b, threads=np.int64(_threads()), **attrs)


def _conv_attrs(stride: int, padding: Padding) -> dict:
  (top, bottom), (left, right) = padding
  return dict(stride=np.int64(stride), pad_top=np.int64(top), pad_bottom=np.int64(bottom),
              pad_left=np.int64(left), pad_right=np.int64(right))


def _per_device(name: str, a, b, shape, *, b_batched: bool, summed: bool = False, **attrs):
  """The call on each device's examples under a mesh: `a` is split over the devices along
  its batch, `b` too (`b_batched`) or replicated (a kernel). The result (`shape` is the
  global one) stays split, or is `summed` over the devices (a kernel's gradient)."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or mesh.size == 1:
    return _call(name, a, b, shape, **attrs)
  axes, n = mesh.axis_names, mesh.size
  in_specs = (P(axes), P(axes) if b_batched else P())
  if summed:
    fn = lambda a, b: jax.lax.psum(_call(name, a, b, shape, **attrs), axes)
    return jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=P(),
                         check_vma=False)(a, b)
  local = (shape[0] // n, *shape[1:])
  fn = lambda a, b: _call(name, a, b, local, **attrs)
  return jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=P(axes),
                       check_vma=False)(a, b)


def _splits(batch: int) -> bool:
  """Whether the calls can run per device: a mesh is known and splits the batch evenly, or
  there is one device. (With no mesh known, XLA would gather sharded operands onto every
  device for the call.)"""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return jax.device_count() == 1
  return batch % mesh.size == 0


def _onednn_forward(cin: int, cout: int) -> bool:
  """Whether a forward convolution from `cin` to `cout` channels goes to oneDNN: all but
  many-to-few projections such as a UNet's output layer, where XLA was faster (on one core
  of the Xeon above: 128 -> 3 channels at 4x32x32, 3x3: 0.44 ms against 0.73; 16 -> 16 at
  64x28x28: 2.62 ms against 1.24; 1 -> 16: 1.68 against 0.26)."""
  return not (cout <= 4 and cin >= 32)


@_differentiated_as(_xla_weight_gradient)
def weight_gradient(x: jax.Array, dy: jax.Array, w_shape: tuple[int, ...], stride: int,
                    padding: Padding) -> jax.Array:
  """d(conv(x, w))/dw applied to dy, on oneDNN: per device under a mesh, then summed."""
  if not _splits(x.shape[0]):
    return _xla_weight_gradient(x, dy, w_shape, stride, padding)
  return _per_device('conv_backward_weights', x, dy, w_shape, b_batched=True, summed=True,
                     **_conv_attrs(stride, padding))


def _conv(x: jax.Array, w: jax.Array, stride: int, padding: Padding) -> jax.Array:
  if _onednn_forward(*w.shape[2:]) and _splits(x.shape[0]):
    shape = jax.eval_shape(lambda x, w: _forward(x, w, stride, padding), x, w).shape
    return _per_device('conv_forward', x, w, shape, b_batched=False,
                       **_conv_attrs(stride, padding))
  return _forward(x, w, stride, padding)


@_differentiated_as(_xla_input_gradient)
def input_gradient(dy: jax.Array, w: jax.Array, x_shape: tuple[int, ...], stride: int,
                   padding: Padding) -> jax.Array:
  """d(conv(x, w))/dx applied to dy: a convolution from w's outputs to its inputs, on
  oneDNN where `_onednn_forward` says so for that direction."""
  if _onednn_forward(w.shape[3], w.shape[2]) and _splits(dy.shape[0]):
    (top, bottom), (left, right) = padding
    kh, kw = w.shape[:2]
    if stride == 1 and max(top, bottom) < kh and max(left, right) < kw:
      # A forward convolution of dy with the flipped kernel: oneDNN's backward-data kernel
      # needs a transposing reorder of the kernel that took ~2x its forward's. The handler
      # flips the kernel itself: XLA's flips ran before the step's first convolution, ~45 ms
      # of thread time at batch 8 of DDPM CIFAR-10 (the step 1,247 -> 1,238 ms, one device).
      pad = ((kh - 1 - top, kh - 1 - bottom), (kw - 1 - left, kw - 1 - right))
      return _per_device('conv_flipped', dy, w, x_shape, b_batched=False, **_conv_attrs(1, pad))
    return _per_device('conv_backward_data', dy, w, x_shape, b_batched=False,
                       **_conv_attrs(stride, padding))
  return _xla_input_gradient(dy, w, x_shape, stride, padding)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv2d(x: jax.Array, w: jax.Array, stride: int, padding: Padding) -> jax.Array:
  """NHWC x HWIO convolution (explicit padding) on oneDNN: the weight gradient always, the
  forward and input-gradient convolutions where `_onednn_forward` says so."""
  return _conv(x, w, stride, padding)


# As in `_differentiated_as`: the forward rule calls the function itself and the backward
# one is made of the two gradients, so second-order terms never differentiate an FFI call.
def _conv2d_fwd(x, w, stride, padding):
  return conv2d(x, w, stride, padding), (x, w)


def _conv2d_bwd(stride, padding, residuals, dy):
  x, w = residuals
  return (input_gradient(dy, w, x.shape, stride, padding),
          weight_gradient(x, dy, w.shape, stride, padding))


conv2d.defvjp(_conv2d_fwd, _conv2d_bwd)


def _xla_matmul(a: jax.Array, b: jax.Array, transpose_a: bool, transpose_b: bool) -> jax.Array:
  return jnp.einsum(f"n{'ki' if transpose_a else 'ik'},n{'jk' if transpose_b else 'kj'}->nij",
                    a, b)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def matmul(a: jax.Array, b: jax.Array, transpose_a: bool = False, transpose_b: bool = False
           ) -> jax.Array:
  """op(a[i]) @ op(b[i]) for each i along the first axis, op a transpose where asked: on
  oneDNN for float32 operands (per device under a mesh), else XLA's; differentiable to any
  order (its gradients are `matmul`s)."""
  if not (available() and a.ndim == b.ndim == 3 and a.dtype == b.dtype == jnp.float32
          and _splits(a.shape[0])):
    return _xla_matmul(a, b, transpose_a, transpose_b)
  shape = (a.shape[0], a.shape[2] if transpose_a else a.shape[1],
           b.shape[1] if transpose_b else b.shape[2])
  return _per_device('matmul', a, b, shape, b_batched=True, transpose_a=transpose_a,
                     transpose_b=transpose_b)


def _matmul_fwd(a, b, transpose_a, transpose_b):
  return matmul(a, b, transpose_a, transpose_b), (a, b)


def _matmul_bwd(transpose_a, transpose_b, residuals, dc):
  """For c = op(a) op(b): d op(a) = dc op(b)^T and d op(b) = op(a)^T dc, each written as one
  product of the stored operands (a transposed result is the product in the other order)."""
  a, b = residuals
  da = matmul(b, dc, transpose_b, True) if transpose_a else matmul(dc, b, False, not transpose_b)
  db = matmul(dc, a, True, transpose_a) if transpose_b else matmul(a, dc, not transpose_a, False)
  return da.astype(a.dtype), db.astype(b.dtype)


matmul.defvjp(_matmul_fwd, _matmul_bwd)
