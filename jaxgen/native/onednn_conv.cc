// 2-D convolutions (NHWC x HWIO, float32) and batched matrix products through oneDNN, as
// XLA FFI handlers for the CPU.
//
// XLA:CPU's weight-gradient convolutions ran at 57 GFLOP/s on one core of a 2-core Intel
// Xeon (AVX-512) for 4x32x32x128 -> 128, 3x3, where oneDNN's direct AVX-512 kernel ran at
// 204 (jaxgen/models/onednn.py says where this is used and what it bought). Each call runs
// on `threads` OpenMP threads from the calling one: the cores per XLA:CPU device (one with
// jaxgen's default of one device per core).
//
// Four convolution handlers: forward, flipped (an input gradient at stride 1), backward-data
// and backward-weights. Activations stay in XLA's NHWC layout (oneDNN's AVX-512 kernels read
// and write it directly, as fast as their own blocked layout); kernels are reordered between
// HWIO (OHWI for the flipped one) and the blocked layout the primitive chooses (format
// `any`). Primitives and their blocked buffers are cached per thread, keyed
// by the call's shapes, strides and padding.

#include <omp.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using dnnl::memory;
using tag = memory::format_tag;

namespace {

// kFlipped: an input gradient at stride 1 as a forward convolution of the output gradient
// with the spatially flipped kernel, its input and output channels swapped. The handler
// writes that kernel from the convolution's own.
enum Kind { kForward = 0, kBackwardData = 1, kBackwardWeights = 2, kFlipped = 3 };

struct Geometry {
  int64_t n, h, w, c, o, kh, kw, oh, ow, stride, pt, pb, pl, pr;
  memory::desc src(tag t) const { return {{n, c, h, w}, memory::data_type::f32, t}; }
  memory::desc wei(tag t) const { return {{o, c, kh, kw}, memory::data_type::f32, t}; }
  memory::desc dst(tag t) const { return {{n, o, oh, ow}, memory::data_type::f32, t}; }
  std::string key(int kind) const {
    std::string k = std::to_string(kind);
    for (int64_t v : {n, h, w, c, o, kh, kw, oh, ow, stride, pt, pb, pl, pr})
      k += "," + std::to_string(v);
    return k;
  }
};

dnnl::engine& cpu_engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

// One operand: the caller's plain buffer and, when the kernel wants another layout, a
// cached buffer in that layout with the reorders between them.
struct Operand {
  memory::desc plain, blocked;
  std::unique_ptr<memory> inner;  // null when `blocked` is `plain`
  std::unique_ptr<dnnl::reorder> in, out;
  void init(const memory::desc& p, const memory::desc& b, bool is_input) {
    plain = p;
    blocked = b;
    if (p == b) return;
    inner = std::make_unique<memory>(b, cpu_engine());
    if (is_input)
      in = std::make_unique<dnnl::reorder>(memory(p, cpu_engine(), DNNL_MEMORY_NONE), *inner);
    else
      out = std::make_unique<dnnl::reorder>(*inner, memory(p, cpu_engine(), DNNL_MEMORY_NONE));
  }
  // The memory the kernel reads (after reordering `data` in) or writes.
  memory bind(dnnl::stream& s, void* data, bool is_input) {
    memory user(plain, cpu_engine(), data);
    if (!inner) return user;
    if (is_input) in->execute(s, user, *inner);
    return *inner;
  }
  void finish(dnnl::stream& s, void* data) {
    if (!inner) return;
    memory user(plain, cpu_engine(), data);
    out->execute(s, *inner, user);
  }
};

struct Entry {
  dnnl::primitive primitive;
  Operand a, b, result;  // forward: src, wei -> dst; data: dst, wei -> src; weights: src, dst -> wei
  int arg_a, arg_b, arg_result;
};

Entry make_entry(int kind, const Geometry& g) {
  auto& eng = cpu_engine();
  memory::dims strides = {g.stride, g.stride}, pad_l = {g.pt, g.pl}, pad_r = {g.pb, g.pr};
  auto algo = dnnl::algorithm::convolution_direct;
  dnnl::convolution_forward::primitive_desc fwd(
      dnnl::convolution_forward::desc(dnnl::prop_kind::forward_training, algo, g.src(tag::nhwc),
                                      g.wei(tag::any), g.dst(tag::nhwc), strides, pad_l, pad_r),
      eng);
  Entry e;
  if (kind == kForward || kind == kFlipped) {
    e.primitive = dnnl::convolution_forward(fwd);
    e.a.init(g.src(tag::nhwc), fwd.src_desc(), true);
    e.b.init(g.wei(kind == kFlipped ? tag::ohwi : tag::hwio), fwd.weights_desc(), true);
    e.result.init(g.dst(tag::nhwc), fwd.dst_desc(), false);
    e.arg_a = DNNL_ARG_SRC, e.arg_b = DNNL_ARG_WEIGHTS, e.arg_result = DNNL_ARG_DST;
  } else if (kind == kBackwardData) {
    dnnl::convolution_backward_data::primitive_desc pd(
        dnnl::convolution_backward_data::desc(algo, g.src(tag::nhwc), g.wei(tag::any),
                                              g.dst(tag::nhwc), strides, pad_l, pad_r),
        eng, fwd);
    e.primitive = dnnl::convolution_backward_data(pd);
    e.a.init(g.dst(tag::nhwc), pd.diff_dst_desc(), true);
    e.b.init(g.wei(tag::hwio), pd.weights_desc(), true);
    e.result.init(g.src(tag::nhwc), pd.diff_src_desc(), false);
    e.arg_a = DNNL_ARG_DIFF_DST, e.arg_b = DNNL_ARG_WEIGHTS, e.arg_result = DNNL_ARG_DIFF_SRC;
  } else {
    dnnl::convolution_backward_weights::primitive_desc pd(
        dnnl::convolution_backward_weights::desc(algo, g.src(tag::nhwc), g.wei(tag::any),
                                                 g.dst(tag::nhwc), strides, pad_l, pad_r),
        eng, fwd);
    e.primitive = dnnl::convolution_backward_weights(pd);
    e.a.init(g.src(tag::nhwc), pd.src_desc(), true);
    e.b.init(g.dst(tag::nhwc), pd.diff_dst_desc(), true);
    e.result.init(g.wei(tag::hwio), pd.diff_weights_desc(), false);
    e.arg_a = DNNL_ARG_SRC, e.arg_b = DNNL_ARG_DIFF_DST, e.arg_result = DNNL_ARG_DIFF_WEIGHTS;
  }
  return e;
}

// flipped[p][a][b][q] = w[kh-1-a][kw-1-b][p][q] for a kernel w of kh x kw taps, each an
// [in][out] matrix: the flipped kernel in OHWI, each row a contiguous copy. Against a tiled
// transpose into HWIO, one input gradient ran 2-7% faster with it (the reorder from OHWI
// into the primitive's layout is the faster one; 2-core Intel Xeon, alternating processes).
void flip_kernel(const float* w, float* flipped, int64_t kh, int64_t kw, int64_t in,
                 int64_t out, int64_t threads) {
  int64_t taps = kh * kw;
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t p = 0; p < in; ++p)
    for (int64_t t = 0; t < taps; ++t)
      std::memcpy(flipped + (p * taps + t) * out, w + ((taps - 1 - t) * in + p) * out,
                  out * sizeof(float));
}

ffi::Error run(int kind, const Geometry& g, void* a, void* b, void* result, int64_t threads) {
  thread_local std::unordered_map<std::string, Entry> cache;
  thread_local dnnl::stream stream(cpu_engine());
  omp_set_num_threads(static_cast<int>(threads));
  try {
    std::string key = g.key(kind);
    auto it = cache.find(key);
    if (it == cache.end()) it = cache.emplace(key, make_entry(kind, g)).first;
    Entry& e = it->second;
    if (kind == kFlipped) {  // the flipped kernel, into a buffer kept per thread
      thread_local std::vector<float> flipped;
      flipped.resize(g.kh * g.kw * g.c * g.o);
      flip_kernel(static_cast<const float*>(b), flipped.data(), g.kh, g.kw, g.o, g.c, threads);
      b = flipped.data();
    }
    memory ma = e.a.bind(stream, a, true), mb = e.b.bind(stream, b, true);
    memory mr = e.result.bind(stream, result, false);
    e.primitive.execute(stream, {{e.arg_a, ma}, {e.arg_b, mb}, {e.arg_result, mr}});
    e.result.finish(stream, result);
    stream.wait();
  } catch (const dnnl::error& err) {
    return ffi::Error::Internal(std::string("oneDNN convolution: ") + err.what());
  }
  return ffi::Error::Success();
}

// x: NHWC input, w: HWIO kernel, y: NHWC output; the three handlers take two of them and
// write the third.
Geometry geometry(ffi::Span<const int64_t> x, ffi::Span<const int64_t> w,
                  ffi::Span<const int64_t> y, int64_t stride, int64_t pt, int64_t pb,
                  int64_t pl, int64_t pr) {
  return {x[0], x[1], x[2], x[3], w[3], w[0], w[1], y[1], y[2], stride, pt, pb, pl, pr};
}

ffi::Error Forward(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> w,
                   ffi::ResultBuffer<ffi::F32> y, int64_t stride, int64_t pt, int64_t pb,
                   int64_t pl, int64_t pr, int64_t threads) {
  return run(kForward,
             geometry(x.dimensions(), w.dimensions(), y->dimensions(), stride, pt, pb, pl, pr),
             x.untyped_data(), w.untyped_data(), y->untyped_data(), threads);
}

// dy: the output gradient, w: the convolution's own HWIO kernel, dx: the input gradient;
// the padding is the flipped convolution's.
ffi::Error Flipped(ffi::Buffer<ffi::F32> dy, ffi::Buffer<ffi::F32> w,
                   ffi::ResultBuffer<ffi::F32> dx, int64_t stride, int64_t pt, int64_t pb,
                   int64_t pl, int64_t pr, int64_t threads) {
  auto k = w.dimensions();
  int64_t swapped[4] = {k[0], k[1], k[3], k[2]};
  return run(kFlipped,
             geometry(dy.dimensions(), ffi::Span<const int64_t>(swapped, 4), dx->dimensions(),
                      stride, pt, pb, pl, pr),
             dy.untyped_data(), w.untyped_data(), dx->untyped_data(), threads);
}

ffi::Error BackwardData(ffi::Buffer<ffi::F32> dy, ffi::Buffer<ffi::F32> w,
                        ffi::ResultBuffer<ffi::F32> dx, int64_t stride, int64_t pt,
                        int64_t pb, int64_t pl, int64_t pr, int64_t threads) {
  return run(kBackwardData,
             geometry(dx->dimensions(), w.dimensions(), dy.dimensions(), stride, pt, pb, pl, pr),
             dy.untyped_data(), w.untyped_data(), dx->untyped_data(), threads);
}

ffi::Error BackwardWeights(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> dy,
                           ffi::ResultBuffer<ffi::F32> dw, int64_t stride, int64_t pt,
                           int64_t pb, int64_t pl, int64_t pr, int64_t threads) {
  return run(kBackwardWeights,
             geometry(x.dimensions(), dw->dimensions(), dy.dimensions(), stride, pt, pb, pl, pr),
             x.untyped_data(), dy.untyped_data(), dw->untyped_data(), threads);
}

// Batched matrix products c[i] = op(a[i]) op(b[i]), op a transpose where asked: the dot
// products of attention and their gradients (jaxgen/models/onednn.py, `matmul`). A
// transposed operand is read through its strides, never copied.
ffi::Error Matmul(ffi::Buffer<ffi::F32> a, ffi::Buffer<ffi::F32> b,
                  ffi::ResultBuffer<ffi::F32> c, bool transpose_a, bool transpose_b,
                  int64_t threads) {
  auto dc = c->dimensions();
  int64_t n = dc[0], rows = dc[1], cols = dc[2];
  int64_t inner = transpose_a ? a.dimensions()[1] : a.dimensions()[2];
  thread_local std::unordered_map<std::string, dnnl::matmul> cache;
  thread_local dnnl::stream stream(cpu_engine());
  omp_set_num_threads(static_cast<int>(threads));
  auto f32 = memory::data_type::f32;
  memory::desc ad({n, rows, inner}, f32,
                  transpose_a ? memory::dims{rows * inner, 1, rows}
                              : memory::dims{rows * inner, inner, 1});
  memory::desc bd({n, inner, cols}, f32,
                  transpose_b ? memory::dims{inner * cols, 1, inner}
                              : memory::dims{inner * cols, cols, 1});
  memory::desc cd({n, rows, cols}, f32, tag::abc);
  try {
    std::string key = std::to_string(n) + "," + std::to_string(rows) + "," +
                      std::to_string(inner) + "," + std::to_string(cols) + "," +
                      std::to_string(transpose_a) + std::to_string(transpose_b);
    auto it = cache.find(key);
    if (it == cache.end()) {
      dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(ad, bd, cd), cpu_engine());
      it = cache.emplace(key, dnnl::matmul(pd)).first;
    }
    it->second.execute(stream, {{DNNL_ARG_SRC, memory(ad, cpu_engine(), a.untyped_data())},
                                {DNNL_ARG_WEIGHTS, memory(bd, cpu_engine(), b.untyped_data())},
                                {DNNL_ARG_DST, memory(cd, cpu_engine(), c->untyped_data())}});
    stream.wait();
  } catch (const dnnl::error& err) {
    return ffi::Error::Internal(std::string("oneDNN matmul: ") + err.what());
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxgenOnednnMatmul, Matmul,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<bool>("transpose_a")
                                  .Attr<bool>("transpose_b")
                                  .Attr<int64_t>("threads"));

#define JAXGEN_CONV_HANDLER(name, fn)                                                     \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(name, fn,                                                 \
                                ffi::Ffi::Bind()                                          \
                                    .Arg<ffi::Buffer<ffi::F32>>()                         \
                                    .Arg<ffi::Buffer<ffi::F32>>()                         \
                                    .Ret<ffi::Buffer<ffi::F32>>()                         \
                                    .Attr<int64_t>("stride")                              \
                                    .Attr<int64_t>("pad_top")                             \
                                    .Attr<int64_t>("pad_bottom")                          \
                                    .Attr<int64_t>("pad_left")                            \
                                    .Attr<int64_t>("pad_right")                           \
                                    .Attr<int64_t>("threads"));

JAXGEN_CONV_HANDLER(JaxgenOnednnConvForward, Forward)
JAXGEN_CONV_HANDLER(JaxgenOnednnConvFlipped, Flipped)
JAXGEN_CONV_HANDLER(JaxgenOnednnConvBackwardData, BackwardData)
JAXGEN_CONV_HANDLER(JaxgenOnednnConvBackwardWeights, BackwardWeights)
