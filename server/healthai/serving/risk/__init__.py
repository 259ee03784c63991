"""Risk.Score: model cards with feature domains, feature derivation shared with training, batch
scoring with occlusion-based top features, Charlson indices."""
