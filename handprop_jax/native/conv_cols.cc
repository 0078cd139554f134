// Column builders for the "bf16_cols" CPU convolution (handprop_jax/model/conv_cols.py).
//
// XLA:CPU contracts bfloat16 matrices with float32 accumulation on AMX/AVX512-BF16 at 3-4x its
// float32 matmul rate, but it has no fast bfloat16 pads, slices, concatenations or transposes, so
// building im2col columns in XLA costs more than the matmul saves. These XLA FFI handlers build the
// columns in one pass each, converting float32 to bfloat16 (round to nearest even; float32
// subnormals may become zero, as AVX512-BF16's conversion treats them) as they copy:
//
//   handprop_im2col_bf16    x f32 (B, H, W, C)        -> cols bf16 (B*Ho*Wo, K >= kh*kw*C)
//                           (or its transpose; columns past kh*kw*C are zero)
//   handprop_kernel_bf16    w f32 (kh, kw, Cin, Cout) -> bf16 matrix (two layouts, see KernelImpl)
//   handprop_transpose_bf16 x f32 (M, N)              -> bf16 (N, M)
//   handprop_col2im_f32     cols f32 (B*Ho*Wo, K >= kh*kw*C) -> x f32 (B, H, W, C)  (sum of the taps)
//
// Column order is (tap row i, tap column j, channel c), c fastest: the layout of an HWIO kernel
// reshaped to (kh*kw*Cin, Cout). Output pixel (oy, ox) reads input pixel
// (oy*sh - pt + i, ox*sw - pl + j); outside the input it reads zero.
// Work is split over XLA's intra-op thread pool.

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <utility>

#if defined(__AVX512F__) && defined(__AVX512BF16__)
#include <immintrin.h>
#define HANDPROP_AVX512BF16 1
#endif

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

inline uint16_t to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

// Converts n floats to bfloat16.
inline void convert_row(const float* src, uint16_t* dst, int64_t n) {
  int64_t k = 0;
#ifdef HANDPROP_AVX512BF16
  for (; k + 32 <= n; k += 32) {
    __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(src + k + 16), _mm512_loadu_ps(src + k));
    _mm512_storeu_si512(reinterpret_cast<void*>(dst + k), reinterpret_cast<__m512i>(v));
  }
  for (; k < n; k += 16) {  // the tail (and short runs such as 3-channel taps) with masks
    const __mmask16 mask = n - k >= 16 ? __mmask16(0xffff) : __mmask16((1u << (n - k)) - 1u);
    __m256bh v = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(mask, src + k));
    _mm256_mask_storeu_epi16(reinterpret_cast<void*>(dst + k), mask, reinterpret_cast<__m256i>(v));
  }
#endif
  for (; k < n; ++k) dst[k] = to_bf16(src[k]);
}

// dst[c * dst_stride + r] = bf16(src[r * src_stride + c]) for r < rows, c < cols, in L1-sized tiles.
inline void transpose_convert(const float* src, int64_t src_stride, uint16_t* dst, int64_t dst_stride,
                              int64_t rows, int64_t cols) {
  constexpr int64_t T = 32;
  for (int64_t r0 = 0; r0 < rows; r0 += T) {
    const int64_t r1 = std::min(rows, r0 + T);
    for (int64_t c0 = 0; c0 < cols; c0 += T) {
      const int64_t c1 = std::min(cols, c0 + T);
      for (int64_t c = c0; c < c1; ++c)
        for (int64_t r = r0; r < r1; ++r) dst[c * dst_stride + r] = to_bf16(src[r * src_stride + c]);
    }
  }
}

// Runs fn(begin, end) over [0, n) in chunks, on the calling thread and the pool's threads. Chunks
// are claimed from a shared counter, so the caller never waits for a task that has not started
// (no deadlock when every pool thread is busy); late helpers find no chunk and return.
template <typename F>
void parallel_for(ffi::ThreadPool& pool, int64_t n, int64_t grain, F fn) {
  int64_t threads = std::max<int64_t>(1, pool.num_threads());
  int64_t chunks = std::min<int64_t>(std::max<int64_t>(1, n / std::max<int64_t>(1, grain)), 4 * threads);
  if (threads == 1 || chunks <= 1) {
    fn(0, n);
    return;
  }
  struct State {
    std::atomic<int64_t> next{0};
    std::atomic<int64_t> done{0};
  };
  auto state = std::make_shared<State>();
  auto work = [state, n, chunks, fn]() {
    for (;;) {
      int64_t c = state->next.fetch_add(1);
      if (c >= chunks) return;
      fn(c * n / chunks, (c + 1) * n / chunks);
      state->done.fetch_add(1, std::memory_order_release);
    }
  };
  for (int64_t t = 1; t < std::min(threads, chunks); ++t) {
    auto task = work;
    pool.Schedule(std::move(task));
  }
  work();
  while (state->done.load(std::memory_order_acquire) < chunks) {
#if defined(__x86_64__)
    __builtin_ia32_pause();
#endif
  }
}

struct Geometry {
  int64_t b, h, w, c, ho, wo, kh, kw, sh, sw, pt, pl;
};

// The geometry of an (B, H, W, C) image batch x whose columns have `rows` = B*Ho*Wo rows, and the
// error to return when the column matrix (rows x cols) cannot belong to it.
ffi::Error make_geometry(ffi::Span<const int64_t> xd, int64_t rows, int64_t cols, int64_t kh, int64_t kw,
                         int64_t sh, int64_t sw, int64_t pt, int64_t pl, int64_t wo, Geometry& g) {
  if (xd.size() != 4 || wo <= 0 || xd[0] <= 0)
    return ffi::Error::InvalidArgument(
        "handprop conv columns: expected images (B,H,W,C) with B > 0 and wo > 0");
  g = Geometry{xd[0], xd[1], xd[2], xd[3], rows / (xd[0] * wo), wo, kh, kw, sh, sw, pt, pl};
  if (g.ho <= 0 || g.wo <= 0 || g.kh <= 0 || g.kw <= 0 || g.sh <= 0 || g.sw <= 0)
    return ffi::Error::InvalidArgument("handprop conv columns: non-positive window or output size");
  if (rows != g.b * g.ho * g.wo || cols < g.kh * g.kw * g.c)
    return ffi::Error::InvalidArgument("handprop conv columns: column matrix shape does not match "
                                       "the input shape, window and output size");
  return ffi::Error::Success();
}

// Copies the kw*C run of input row iy that output pixel ox's taps (i, 0..kw-1) read, converted
// to bfloat16, into out (kw*C values); taps outside the input are zero.
inline void copy_tap_row(const Geometry& g, const float* xrow, int64_t ox, uint16_t* out) {
  const int64_t ix0 = ox * g.sw - g.pl;
  const int64_t j0 = std::max<int64_t>(0, -ix0), j1 = std::min<int64_t>(g.kw, g.w - ix0);
  if (j1 <= j0) {
    std::memset(out, 0, sizeof(uint16_t) * g.kw * g.c);
    return;
  }
  if (j0 > 0) std::memset(out, 0, sizeof(uint16_t) * j0 * g.c);
  convert_row(xrow + (ix0 + j0) * g.c, out + j0 * g.c, (j1 - j0) * g.c);
  if (j1 < g.kw) std::memset(out + j1 * g.c, 0, sizeof(uint16_t) * (g.kw - j1) * g.c);
}

// Writes the k columns of output pixel m (row-major over (b, oy, ox)): kh runs of kw*C taps, then
// zeros up to k.
inline void build_row(const Geometry& g, const float* src, int64_t m, int64_t k, uint16_t* row) {
  const int64_t run = g.kw * g.c;
  const int64_t ox = m % g.wo, oy = (m / g.wo) % g.ho, b = m / (g.wo * g.ho);
  for (int64_t i = 0; i < g.kh; ++i) {
    const int64_t iy = oy * g.sh - g.pt + i;
    uint16_t* out = row + i * run;
    if (iy < 0 || iy >= g.h) std::memset(out, 0, sizeof(uint16_t) * run);
    else copy_tap_row(g, src + (b * g.h + iy) * g.w * g.c, ox, out);
  }
  if (k > g.kh * run) std::memset(row + g.kh * run, 0, sizeof(uint16_t) * (k - g.kh * run));
}

ffi::Error Im2colImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x,
                      ffi::ResultBuffer<ffi::BF16> cols, int64_t kh, int64_t kw, int64_t sh,
                      int64_t sw, int64_t pt, int64_t pl, int64_t wo, bool transposed) {
  auto cd = cols->dimensions();
  if (cd.size() != 2) return ffi::Error::InvalidArgument("handprop_im2col_bf16: expected 2-D columns");
  const int64_t rows = transposed ? cd[1] : cd[0], k = transposed ? cd[0] : cd[1];
  Geometry g;
  if (auto err = make_geometry(x.dimensions(), rows, k, kh, kw, sh, sw, pt, pl, wo, g); err.failure())
    return err;
  const float* src = x.typed_data();
  uint16_t* dst = reinterpret_cast<uint16_t*>(cols->typed_data());
  if (!transposed) {
    parallel_for(pool, rows, 64, [&g, src, dst, k](int64_t begin, int64_t end) {
      for (int64_t m = begin; m < end; ++m) build_row(g, src, m, k, dst + m * k);
    });
    return ffi::Error::Success();
  }
  // Transposed (K, M): build blocks of R rows in a small buffer, then scatter them column-wise.
  constexpr int64_t R = 64;
  parallel_for(pool, (rows + R - 1) / R, 1, [&g, src, dst, k, rows](int64_t begin, int64_t end) {
    std::unique_ptr<uint16_t[]> buf(new uint16_t[R * k]);
    for (int64_t blk = begin; blk < end; ++blk) {
      const int64_t m0 = blk * R, m1 = std::min(rows, m0 + R);
      for (int64_t m = m0; m < m1; ++m) build_row(g, src, m, k, buf.get() + (m - m0) * k);
      for (int64_t q = 0; q < k; ++q)
        for (int64_t m = m0; m < m1; ++m) dst[q * rows + m] = buf[(m - m0) * k + q];
    }
  });
  return ffi::Error::Success();
}

// HWIO float32 kernel -> bfloat16 matrix. mode 0: (kh*kw*Cin, Cout), the forward's matrix
// (more rows than kh*kw*Cin: the extra rows are zero, matching zero-padded columns).
// mode 1: (kh*kw*Cout, Cin) of the spatially flipped kernel, the matrix of the input gradient of
// a stride-1 convolution as a convolution of the output gradient.
ffi::Error KernelImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> w, ffi::ResultBuffer<ffi::BF16> out,
                      int64_t mode) {
  auto wd = w.dimensions();
  auto od = out->dimensions();
  if (wd.size() != 4 || od.size() != 2 || mode < 0 || mode > 1)
    return ffi::Error::InvalidArgument(
        "handprop_kernel_bf16: expected an HWIO kernel, a 2-D result, mode 0 or 1");
  const int64_t kh = wd[0], kw = wd[1], ci = wd[2], co = wd[3];
  const int64_t want0 = mode == 0 ? kh * kw * ci : kh * kw * co;
  const int64_t want1 = mode == 0 ? co : ci;
  if ((mode == 0 ? od[0] < want0 : od[0] != want0) || od[1] != want1)
    return ffi::Error::InvalidArgument(
        "handprop_kernel_bf16: result shape does not match the kernel and mode");
  const float* src = w.typed_data();
  uint16_t* dst = reinterpret_cast<uint16_t*>(out->typed_data());
  if (mode == 0) {
    const int64_t n = kh * kw * ci * co;
    parallel_for(pool, n, 1 << 16, [=](int64_t begin, int64_t end) {
      convert_row(src + begin, dst + begin, end - begin);
    });
    std::memset(dst + n, 0, sizeof(uint16_t) * (od[0] - want0) * co);
  } else {
    // Tap (i, j)'s (Cin, Cout) block, transposed, at tap (kh-1-i, kw-1-j).
    parallel_for(pool, kh * kw, 1, [=](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        const int64_t i = t / kw, j = t % kw;
        uint16_t* flipped = dst + ((kh - 1 - i) * kw + (kw - 1 - j)) * co * ci;
        transpose_convert(src + t * ci * co, co, flipped, ci, ci, co);
      }
    });
  }
  return ffi::Error::Success();
}

ffi::Error TransposeImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::ResultBuffer<ffi::BF16> y) {
  auto xd = x.dimensions();
  auto yd = y->dimensions();
  if (xd.size() != 2 || yd.size() != 2 || xd[0] != yd[1] || xd[1] != yd[0])
    return ffi::Error::InvalidArgument("handprop_transpose_bf16: expected x (M,N) and result (N,M)");
  const int64_t m = xd[0], n = xd[1];
  const float* src = x.typed_data();
  uint16_t* dst = reinterpret_cast<uint16_t*>(y->typed_data());
  constexpr int64_t R = 64;  // blocks of R source rows per task
  parallel_for(pool, (m + R - 1) / R, 1, [=](int64_t begin, int64_t end) {
    const int64_t r0 = begin * R, r1 = std::min(m, end * R);
    transpose_convert(src + r0 * n, n, dst + r0, m, r1 - r0, n);
  });
  return ffi::Error::Success();
}

ffi::Error Col2imImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> cols, ffi::ResultBuffer<ffi::F32> x,
                      int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t pt, int64_t pl,
                      int64_t wo) {
  auto cd = cols.dimensions();
  if (cd.size() != 2) return ffi::Error::InvalidArgument("handprop_col2im_f32: expected 2-D columns");
  Geometry g;
  if (auto err = make_geometry(x->dimensions(), cd[0], cd[1], kh, kw, sh, sw, pt, pl, wo, g); err.failure())
    return err;
  const float* src = cols.typed_data();
  float* dst = x->typed_data();
  const int64_t k = cd[1];  // row stride; columns past kh*kw*C are ignored
  // One image per task: taps of one image only write that image, so no two threads collide.
  parallel_for(pool, g.b, 1, [&g, src, dst, k](int64_t begin, int64_t end) {
    std::memset(dst + begin * g.h * g.w * g.c, 0, sizeof(float) * (end - begin) * g.h * g.w * g.c);
    for (int64_t b = begin; b < end; ++b) {
      for (int64_t oy = 0; oy < g.ho; ++oy) {
        for (int64_t ox = 0; ox < g.wo; ++ox) {
          const float* row = src + ((b * g.ho + oy) * g.wo + ox) * k;
          for (int64_t i = 0; i < g.kh; ++i) {
            const int64_t iy = oy * g.sh - g.pt + i;
            if (iy < 0 || iy >= g.h) continue;
            for (int64_t j = 0; j < g.kw; ++j) {
              const int64_t ix = ox * g.sw - g.pl + j;
              if (ix < 0 || ix >= g.w) continue;
              const float* in = row + (i * g.kw + j) * g.c;
              float* out = dst + ((b * g.h + iy) * g.w + ix) * g.c;
              for (int64_t c = 0; c < g.c; ++c) out[c] += in[c];
            }
          }
        }
      }
    }
  });
  return ffi::Error::Success();
}

// The window attributes shared by im2col and col2im, appended to a binding.
template <typename Binding>
auto with_window_attrs(Binding binding) {
  return std::move(binding).template Attr<int64_t>("kh")
      .template Attr<int64_t>("kw")
      .template Attr<int64_t>("sh")
      .template Attr<int64_t>("sw")
      .template Attr<int64_t>("pt")
      .template Attr<int64_t>("pl")
      .template Attr<int64_t>("wo");
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(HandpropIm2colBf16, Im2colImpl,
                              with_window_attrs(ffi::Ffi::Bind()
                                                    .Ctx<ffi::ThreadPool>()
                                                    .Arg<ffi::Buffer<ffi::F32>>()
                                                    .Ret<ffi::Buffer<ffi::BF16>>())
                                  .Attr<bool>("transposed"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(HandpropKernelBf16, KernelImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::BF16>>()
                                  .Attr<int64_t>("mode"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(HandpropTransposeBf16, TransposeImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::BF16>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(HandpropCol2imF32, Col2imImpl,
                              with_window_attrs(ffi::Ffi::Bind()
                                                    .Ctx<ffi::ThreadPool>()
                                                    .Arg<ffi::Buffer<ffi::F32>>()
                                                    .Ret<ffi::Buffer<ffi::F32>>()));
