// Host-side harness for the CUDA ops' index math (compiled with g++ by test_cuda_host_harness.py): the conv
// tiles below, plus the per-element bodies of maxpool2x2 / upsample_concat / head (cuda_elementwise.h).
//
// It runs the kernels' algorithm on the CPU in fp32: the same ConvParams built by the same code as the
// pybind11 module (cuda_conv_params.h), the same grid (conv_grid), and for every block and "thread" the same
// calls the kernels make (cuda_conv_kernel.h): load_a_run / a_chunk_src for the A tile, b_offset for the B
// tile, conv_store and conv_store_pool for the epilogue, with the kernels' thread-to-data decomposition and
// shared-memory tile shapes. Only the multiply itself is a plain loop. A wrong index anywhere in the tile
// math shows up as a mismatch against PyTorch in the Python test.
#include <cstdint>
#include <cstring>
#include <exception>
#include <vector>

#include "unet_fast/cuda_conv_params.h"
#include "unet_fast/cuda_conv_tiles.h"
#include "unet_fast/cuda_elementwise.h"

using namespace unet_fast;

namespace {

// Must match cuda_conv_kernel.h.
constexpr int TH = 8, TW = 8, BM = TH * TW, BN = 64;
constexpr int kSimtBK = 16, kSimtThreads = 256, kMmaBK = 32, kMmaThreads = 128;

enum Variant { kSimt = 0, kMmaGeneric = 1, kMmaAsync = 2 };

template <bool kScatter, int BK>
void run_blocks(ConvParams p, Variant variant) {
  const ConvGrid g = conv_grid(&p, TH, TW, BN);
  const float* w = static_cast<const float*>(p.weight);
  // As[m][k], Bs[n][k] (the MMA kernel's layout; the SIMT kernel's transposed layout holds the same values).
  std::vector<float> as(BM * BK), bs(BN * BK), cs(BM * (BN + 1));
  const int ld = BN + 1;
  for (unsigned bz = 0; bz < g.z; ++bz)
    for (unsigned by = 0; by < g.y; ++by)
      for (unsigned bx = 0; bx < g.x; ++bx) {
        const ConvTile t = conv_tile<TH, TW, BN>(p, static_cast<int>(bx), static_cast<int>(by), static_cast<int>(bz));
        std::fill(cs.begin(), cs.end(), 0.f);
        const int nk = conv_k_tiles<BK>(p);
        for (int kt = 0; kt < nk; ++kt) {
          std::fill(as.begin(), as.end(), -1e30f);  // every element must be written by a "thread"
          std::fill(bs.begin(), bs.end(), -1e30f);
          if (variant == kSimt) {
            for (int tid = 0; tid < kSimtThreads; ++tid) {
              const int row = tid >> 2, k0 = (tid & 3) * 4;
              load_a_run<float, TW, BK>(p, t, row, kt, k0, 4, [&](int i, float v) { as[row * BK + k0 + i] = v; });
              const int col = t.col0 + row;
              for (int i = 0; i < 4; ++i)
                bs[row * BK + k0 + i] = col < p.gemm_n ? w[b_offset<BK>(p, col, kt, k0) + i] : 0.f;
            }
          } else {
            for (int tid = 0; tid < kMmaThreads; ++tid) {
              const int row = tid >> 1, k0 = (tid & 1) * 16;
              if (variant == kMmaAsync) {
                for (int h = 0; h < 2; ++h) {  // cp.async of 8 elements, or zero-fill
                  const float* src = a_chunk_src<float, TW, BK>(p, t, row, kt, k0 + 8 * h);
                  for (int i = 0; i < 8; ++i) as[row * BK + k0 + 8 * h + i] = src != nullptr ? src[i] : 0.f;
                }
              } else {
                load_a_run<float, TW, BK>(p, t, row, kt, k0, 16, [&](int i, float v) { as[row * BK + k0 + i] = v; });
              }
              for (int h = 0; h < 2; ++h) {
                const int chunk = tid + h * kMmaThreads;
                const int col = chunk >> 2, k = (chunk & 3) * 8;
                const bool ok = t.col0 + col < p.gemm_n;
                for (int i = 0; i < 8; ++i) bs[col * BK + k + i] = ok ? w[b_offset<BK>(p, t.col0 + col, kt, k) + i] : 0.f;
              }
            }
          }
          for (int m = 0; m < BM; ++m)
            for (int n = 0; n < BN; ++n) {
              float acc = 0.f;
              for (int k = 0; k < BK; ++k) acc += as[m * BK + k] * bs[n * BK + k];
              cs[m * ld + n] += acc;
            }
        }
        for (int e = 0; e < BM * BN; ++e) {
          const int m = e / BN, c = e % BN;
          cs[m * ld + c] = conv_store<float, TW, kScatter>(p, t, m, t.col0 + c, cs[m * ld + c]);
        }
        if (!kScatter && p.pool != nullptr)
          for (int e = 0; e < (BM / 4) * BN; ++e) conv_store_pool<float, TH, TW>(p, t, e / BN, t.col0 + e % BN, cs.data(), ld);
      }
}

void set_error(char* err, int err_len, const char* msg) {
  std::strncpy(err, msg, static_cast<size_t>(err_len - 1));
  err[err_len - 1] = '\0';
}

std::vector<long long> ints(const long long* p, int n) { return std::vector<long long>(p, p + n); }

}  // namespace

extern "C" {

// variant: 0 = SIMT fp32 kernel, 1 = MMA kernel with the generic A loader, 2 = MMA kernel with async A chunks.
// views: 13 integers per view; residual/out/pool: (ptr, sn, sh, sw); geom: 17 integers (see the module).
// Returns 0, or 1 with a message in err.
int uf_conv_host(int variant, int num_views, const long long* views, unsigned long long weight,
                 unsigned long long bias, const long long* residual, const long long* out, const long long* pool,
                 const int* geom, int act, float slope, char* err, int err_len) {
  try {
    std::vector<ViewInts> vs;
    for (int i = 0; i < num_views; ++i) vs.push_back(ints(views + 13 * i, 13));
    const int dtype = variant == kSimt ? 0 : 1;  // only selects the k-tile the packed weight was padded for
    const ConvParams p = make_conv_params(dtype, vs, weight, bias, ints(residual, 4), ints(out, 4), ints(pool, 4),
                                          std::vector<int>(geom, geom + 17), act, slope);
    if (variant == kMmaAsync && !conv_async_a_ok(p, 2)) throw std::invalid_argument("views not eligible for async A");
    if (variant == kSimt)
      run_blocks<false, kSimtBK>(p, kSimt);
    else
      run_blocks<false, kMmaBK>(p, static_cast<Variant>(variant));
    return 0;
  } catch (const std::exception& e) {
    set_error(err, err_len, e.what());
    return 1;
  }
}

int uf_conv_transpose_host(int variant, const long long* x, unsigned long long weight, unsigned long long bias,
                           const long long* out, const int* geom, int act, float slope, char* err, int err_len) {
  try {
    const int dtype = variant == kSimt ? 0 : 1;
    const ConvParams p = make_conv_transpose_params(dtype, ints(x, 13), weight, bias, ints(out, 4),
                                                    std::vector<int>(geom, geom + 6), act, slope);
    if (variant == kMmaAsync && !conv_async_a_ok(p, 2)) throw std::invalid_argument("views not eligible for async A");
    if (variant == kSimt)
      run_blocks<true, kSimtBK>(p, kSimt);
    else
      run_blocks<true, kMmaBK>(p, static_cast<Variant>(variant));
    return 0;
  } catch (const std::exception& e) {
    set_error(err, err_len, e.what());
    return 1;
  }
}

// Whether the CUDA launcher would take the async-A fast path for these views (fp16/bf16 element size).
int uf_async_a_ok(int num_views, const long long* views) {
  ConvParams p{};
  p.num_views = num_views;
  for (int i = 0; i < num_views; ++i) p.views[i] = view_from_ints(ints(views + 13 * i, 13));
  return conv_async_a_ok(p, 2) ? 1 : 0;
}

// upsample_concat's per-view copy: csrc/cuda/upsample_concat.cu's loop body for every element.
int uf_view_copy_host(const long long* view, const long long* out, int n, int h, int w, char* err, int err_len) {
  try {
    const ViewDesc v = view_from_ints(ints(view, 13));
    float* o = reinterpret_cast<float*>(static_cast<std::uintptr_t>(out[0]));
    const long long total = static_cast<long long>(n) * h * w * v.c;
    for (long long i = 0; i < total; ++i) view_copy_element(v, o, out[1], out[2], out[3], h, w, i);
    return 0;
  } catch (const std::exception& e) {
    set_error(err, err_len, e.what());
    return 1;
  }
}

// maxpool2x2.cu's loop body for every element; x and out are (ptr, sn, sh, sw), fp32.
void uf_maxpool_host(const long long* x, const long long* out, int n, int ho, int wo, int c) {
  const float* xp = reinterpret_cast<const float*>(static_cast<std::uintptr_t>(x[0]));
  float* o = reinterpret_cast<float*>(static_cast<std::uintptr_t>(out[0]));
  const long long total = static_cast<long long>(n) * ho * wo * c;
  for (long long i = 0; i < total; ++i) maxpool2x2_element(xp, x[1], x[2], x[3], o, out[1], out[2], out[3], ho, wo, c, i);
}

// head.cu's loop body for every pixel; argmax (op 3) writes int64, the other ops fp32.
int uf_head_host(const long long* view, unsigned long long weight, unsigned long long bias, int k, int op,
                 const long long* out, int n, int h, int w, char* err, int err_len) {
  try {
    const ViewDesc v = view_from_ints(ints(view, 13));
    const float* wp = reinterpret_cast<const float*>(static_cast<std::uintptr_t>(weight));
    const float* bp = reinterpret_cast<const float*>(static_cast<std::uintptr_t>(bias));
    std::vector<float> scores(static_cast<size_t>(k));
    const long long total = static_cast<long long>(n) * h * w;
    for (long long i = 0; i < total; ++i) {
      if (op == 3)
        head_pixel<float>(v, wp, bp, k, HeadOp::kArgmax, reinterpret_cast<long long*>(static_cast<std::uintptr_t>(out[0])),
                          out[1], out[2], out[3], h, w, i, scores.data());
      else
        head_pixel<float>(v, wp, bp, k, static_cast<HeadOp>(op), reinterpret_cast<float*>(static_cast<std::uintptr_t>(out[0])),
                          out[1], out[2], out[3], h, w, i, scores.data());
    }
    return 0;
  } catch (const std::exception& e) {
    set_error(err, err_len, e.what());
    return 1;
  }
}

}  // extern "C"
