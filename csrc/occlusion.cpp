#include "occlusion.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

namespace healthai {

void occlusion_feed(const float* x, const float* baseline, int64_t f, float* feed) {
  for (int64_t r = 0; r <= f; ++r) std::copy(x, x + f, feed + r * f);
  for (int64_t j = 0; j < f; ++j) feed[(j + 1) * f + j] = baseline[j];
}

void occlusion_top_k(const float* out, const float* x, const float* baseline, int64_t f, int64_t k, int64_t* index,
                     float* top) {
  thread_local std::vector<float> contribution;
  thread_local std::vector<int64_t> order;
  contribution.resize(static_cast<size_t>(f));
  order.resize(static_cast<size_t>(f));
  for (int64_t j = 0; j < f; ++j) contribution[j] = x[j] == baseline[j] ? 0.0f : out[0] - out[j + 1];
  std::iota(order.begin(), order.end(), int64_t{0});
  // a strict weak order on |c| descending with NaN last; stable_sort keeps index order among equals
  std::stable_sort(order.begin(), order.end(), [](int64_t a, int64_t b) {
    const float ka = std::fabs(contribution[a]), kb = std::fabs(contribution[b]);
    const bool na = std::isnan(ka), nb = std::isnan(kb);
    if (na || nb) return !na && nb;
    return ka > kb;
  });
  for (int64_t i = 0; i < k; ++i) {
    index[i] = order[i];
    top[i] = contribution[order[i]];
  }
}

}  // namespace healthai
