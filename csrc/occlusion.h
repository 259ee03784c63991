// Occlusion explanations for Risk.Score (healthai.serving.risk.task): the lone-patient path and the
// batch path. Plain loops over patients and features: what a dozen NumPy calls (a full argsort among
// them) did, in one call each side of the model run.
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

// Patients x [n, F]: how many (patient, feature) pairs differ from the baseline (the occluded rows).
int64_t occlusion_moved(const float* x, const float* baseline, int64_t n, int64_t f);

// feed [n + m, F] (m = occlusion_moved): the n patients, then for each patient in turn and each of its
// features that differs from the baseline, in feature order, a copy of the patient with that feature
// at its baseline; patient[m] and feature[m] name each occluded row.
void occlusion_feed_rows(const float* x, const float* baseline, int64_t n, int64_t f, float* feed, int64_t* patient,
                         int64_t* feature);

// contribution [n, F] -> per row the k features of largest |contribution| (order as occlusion_top_k):
// index [n, k], top [n, k].
void top_k_rows(const float* contribution, int64_t n, int64_t f, int64_t k, int64_t* index, float* top);

}  // namespace healthai
