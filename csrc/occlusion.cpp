#include "occlusion.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <vector>

namespace healthai {

namespace {

// The first k of NumPy's stable argsort of -|c| (NaN last): a total order (ties by index), so a
// partial sort gives exactly the stable sort's prefix.
void top_k_of(const float* c, int64_t f, int64_t k, std::vector<int64_t>& order, int64_t* index, float* top) {
  order.resize(static_cast<size_t>(f));
  std::iota(order.begin(), order.end(), int64_t{0});
  std::partial_sort(order.begin(), order.begin() + k, order.end(), [c](int64_t a, int64_t b) {
    const float ka = std::fabs(c[a]), kb = std::fabs(c[b]);
    const bool na = std::isnan(ka), nb = std::isnan(kb);
    if (na != nb) return nb;  // the number first, NaN last
    if (!na && ka != kb) return ka > kb;
    return a < b;
  });
  for (int64_t i = 0; i < k; ++i) {
    index[i] = order[i];
    top[i] = c[order[i]];
  }
}

}  // namespace

void occlusion_feed(const float* x, const float* baseline, int64_t f, float* feed) {
  for (int64_t r = 0; r <= f; ++r) std::copy(x, x + f, feed + r * f);
  for (int64_t j = 0; j < f; ++j) feed[(j + 1) * f + j] = baseline[j];
}

void occlusion_top_k(const float* out, const float* x, const float* baseline, int64_t f, int64_t k, int64_t* index,
                     float* top) {
  thread_local std::vector<float> contribution;
  thread_local std::vector<int64_t> order;
  contribution.resize(static_cast<size_t>(f));
  for (int64_t j = 0; j < f; ++j) contribution[j] = x[j] == baseline[j] ? 0.0f : out[0] - out[j + 1];
  top_k_of(contribution.data(), f, k, order, index, top);
}

int64_t occlusion_moved(const float* x, const float* baseline, int64_t n, int64_t f) {
  int64_t m = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float* row = x + i * f;
    for (int64_t j = 0; j < f; ++j) m += row[j] != baseline[j];
  }
  return m;
}

void occlusion_feed_rows(const float* x, const float* baseline, int64_t n, int64_t f, float* feed, int64_t* patient,
                         int64_t* feature) {
  if (n == 0) return;  // nothing to copy (and an empty array's data pointer may be null)
  std::memcpy(feed, x, static_cast<size_t>(n * f) * sizeof(float));
  float* next = feed + n * f;
  for (int64_t i = 0; i < n; ++i) {
    const float* row = x + i * f;
    for (int64_t j = 0; j < f; ++j) {
      if (row[j] == baseline[j]) continue;
      std::memcpy(next, row, static_cast<size_t>(f) * sizeof(float));
      next[j] = baseline[j];
      next += f;
      *patient++ = i;
      *feature++ = j;
    }
  }
}

void top_k_rows(const float* contribution, int64_t n, int64_t f, int64_t k, int64_t* index, float* top) {
  std::vector<int64_t> order;
  for (int64_t i = 0; i < n; ++i) top_k_of(contribution + i * f, f, k, order, index + i * k, top + i * k);
}

}  // namespace healthai
