// The id-embedding baseline (train.job: mf) as a plug-in of the training engine: matrix
// factorisation with user and item rows on the sparse tables and no dense part, trained with
// BPR, SimpleX's cosine contrastive loss or sampled softmax against negatives shared by the
// batch (worker/losses.h). With train.history = L a user's vector is g * its own row +
// (1 - g) * the mean of its last L items' rows (behaviour aggregation, the order-free first
// step of a sequence tower).
#pragma once

#include <memory>

#include "worker/model_plugin.h"

namespace m6rec {

StatusOr<std::unique_ptr<ModelPlugin>> MakeMfPlugin(const PluginContext& ctx);

}  // namespace m6rec
