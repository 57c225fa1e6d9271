// The segmentation head's per-row body (csrc/cpu/head.cpp), written once over `Vec` and compiled once per
// variant: per pixel, K dot products of the C input channels with the [K, C] weight, + bias, then the head
// op (softmax / sigmoid in place; argmax and logits need nothing here).
//
// No include guard on purpose: cpu_kernel_body.h includes this file inside each variant's namespace after
// the variant's `Vec` and `kL`. Everything on the way is UF_NO_TRAP: GCC inlines only between functions
// with the same optimize options, and the vectorised exp (pixel_ops.h) needs it.
#define UF_ROW_INLINE __attribute__((always_inline)) UF_NO_TRAP inline

// The eight lane sums of eight 8-lane vectors, r[q] = sum(a[q]), as a transpose-and-add tree: 7 vector
// adds instead of eight scalar reductions (which also stall on store forwarding of the spilled vectors).
UF_ROW_INLINE void sum8(const F8* a, float* r) {
  typedef int I8 __attribute__((vector_size(32)));
  constexpr I8 even{0, 8, 2, 10, 4, 12, 6, 14}, odd{1, 9, 3, 11, 5, 13, 7, 15};
  constexpr I8 lo2{0, 1, 8, 9, 4, 5, 12, 13}, hi2{2, 3, 10, 11, 6, 7, 14, 15};
  constexpr I8 lo4{0, 1, 2, 3, 8, 9, 10, 11}, hi4{4, 5, 6, 7, 12, 13, 14, 15};
  F8 x[4], y[2];
  for (int q = 0; q < 4; ++q)
    x[q] = __builtin_shuffle(a[2 * q], a[2 * q + 1], even) + __builtin_shuffle(a[2 * q], a[2 * q + 1], odd);
  for (int q = 0; q < 2; ++q)
    y[q] = __builtin_shuffle(x[2 * q], x[2 * q + 1], lo2) + __builtin_shuffle(x[2 * q], x[2 * q + 1], hi2);
  const F8 z = __builtin_shuffle(y[0], y[1], lo4) + __builtin_shuffle(y[0], y[1], hi4);
  std::memcpy(r, &z, sizeof(F8));
}

// s[p * K + j] = bias[j] + <px[p], w[j]> for P pixels and KB classes, P * KB = 8 independent
// accumulators, so the FMAs pipeline instead of waiting on one reduction chain and each weight vector
// is loaded once per P pixels. The accumulators are folded to 8 lanes (fold8) and reduced by one tree.
template <int P, int KB>
UF_ROW_INLINE void dot_block(const float* const* px, const float* w, std::int64_t c, const float* bias,
                             float* s, std::int64_t k) {
  static_assert(P * KB == 8, "one accumulator per lane of the reduction tree");
  Vec acc[8];
  for (int q = 0; q < 8; ++q) acc[q] = Vec::zero();
  std::int64_t i = 0;
  for (; i + kL <= c; i += kL) {
    Vec wv[KB];
    for (int j = 0; j < KB; ++j) wv[j] = Vec::load(w + j * c + i);
    for (int p = 0; p < P; ++p) {
      const Vec xv = Vec::load(px[p] + i);
      for (int j = 0; j < KB; ++j) acc[p * KB + j] = fmadd(xv, wv[j], acc[p * KB + j]);
    }
  }
  F8 f[8];
  for (int q = 0; q < 8; ++q) fold8(acc[q], &f[q]);
  float r[8];
  sum8(f, r);
  for (int p = 0; p < P; ++p) {
    for (int j = 0; j < KB; ++j) {
      float t = r[p * KB + j];
      for (std::int64_t ii = i; ii < c; ++ii) t += px[p][ii] * w[j * c + ii];  // the C % kL tail
      s[p * k + j] = t + bias[j];
    }
  }
}

// One score the plain way: the few pixels left over by the 8-pixel blocks.
UF_ROW_INLINE float dot_one(const float* px, const float* w, std::int64_t c, float bias) {
  float acc = 0.f;
#pragma omp simd reduction(+ : acc)
  for (std::int64_t i = 0; i < c; ++i) acc += px[i] * w[i];
  return acc + bias;
}

// Scores of one row of pixels: s[x * K + j] = bias[j] + <x_pixel, w[j]>, in blocks of 4 pixels x 2
// classes (8 pixels x 1 class for an odd class count's last class), the pixels past the last block
// one at a time. The dot products are the head's whole cost (the input is read once).
UF_ROW_INLINE void row_scores(const HeadArgs& h, std::int64_t n, std::int64_t y, float* s) {
  const std::int64_t c = h.x.c, k = h.k, width = h.x.w;
  const std::int64_t kpairs = k / 2 * 2;
  std::int64_t x = 0;
  for (; x + 8 <= width; x += 8) {
    const float* px[8];
    for (int p = 0; p < 8; ++p) px[p] = h.x.pixel(n, y, x + p);
    if (x + 16 <= width)  // the next block's pixels, a block ahead
      for (int p = 0; p < 8; ++p)
        for (std::int64_t q = 0; q < c; q += 16) __builtin_prefetch(h.x.pixel(n, y, x + 8 + p) + q);
    for (std::int64_t j = 0; j < kpairs; j += 2) {
      dot_block<4, 2>(px, h.w + j * c, c, h.bias + j, s + x * k + j, k);
      dot_block<4, 2>(px + 4, h.w + j * c, c, h.bias + j, s + (x + 4) * k + j, k);
    }
    if (kpairs < k) dot_block<8, 1>(px, h.w + kpairs * c, c, h.bias + kpairs, s + x * k + kpairs, k);
  }
  for (; x < width; ++x)
    for (std::int64_t j = 0; j < k; ++j) s[x * k + j] = dot_one(h.x.pixel(n, y, x), h.w + j * c, c, h.bias[j]);
}

// Row (n, y): its [W, K] scores into s, then the head op in place (argmax and logits: none here).
UF_NO_TRAP void head_row(const HeadArgs& h, std::int64_t n, std::int64_t y, float* s, HeadOp op) {
  row_scores(h, n, y, s);
  if (op == HeadOp::kSoftmax) {
    softmax_rows(s, h.x.w, static_cast<int>(h.k));
  } else if (op == HeadOp::kSigmoid) {
    sigmoid_n(s, h.x.w * h.k);
  }
}

#undef UF_ROW_INLINE
