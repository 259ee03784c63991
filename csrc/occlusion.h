// Occlusion explanation of one patient: Risk.Score's lone-patient path (healthai.serving.risk.task).
// Plain loops over F features: what a dozen NumPy calls did, in one call each side of the model run.
#pragma once

#include <cstdint>

namespace healthai {

// feed [F + 1, F]: row 0 is x; row 1 + j is x with feature j set to baseline[j].
void occlusion_feed(const float* x, const float* baseline, int64_t f, float* feed);

// From the model's outputs on that feed (out[0] the patient, out[1 + j] feature j occluded): the
// contribution of feature j is out[0] - out[1 + j] in float32, exactly 0 where x[j] == baseline[j].
// Writes the k features of largest |contribution| and their contributions in the order of NumPy's
// stable argsort of -|contribution|: ties keep the lower index first, NaN comes last.
void occlusion_top_k(const float* out, const float* x, const float* baseline, int64_t f, int64_t k, int64_t* index,
                     float* top);

}  // namespace healthai
