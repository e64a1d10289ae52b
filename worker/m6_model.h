// The M6-Rec style model (train.job: m6) as a plug-in of the training engine: the dense towers
// of worker/model.h on LibTorch, fed by the batches of worker/m6_batch.h, with the sparse user,
// item and token rows on the tables. One step: the item tower over every unique item of the
// batch, the user tower, scores against the positives and the shared (and in-batch) negatives,
// the configured ranking loss, backward; the rows' gradients go to the tables, the dense ones to
// the engine's allreduce and Adam step (TorchDense), identical on every worker.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "worker/model_plugin.h"

namespace m6rec {

StatusOr<std::unique_ptr<ModelPlugin>> MakeM6Plugin(const PluginContext& ctx);

// A checkpoint's dense parameters (its dense/dense.pt), by name ("user_fusion.gate.weight"):
// shape and values in row-major order, for inspecting and comparing models without LibTorch.
struct DenseTensor {
  std::vector<int64_t> shape;
  std::vector<float> values;
};
StatusOr<std::map<std::string, DenseTensor>> ReadDenseParameters(const std::string& dense_dir);
// Whether a dense parameter (by that name) is one domain's or task's own — a row per condition
// (condition embeddings, FiLM heads, adapters) or a task's head — rather than the shared
// backbone's: what trains once the backbone freezes (train.backbone_epochs).
bool OwnParameter(const std::string& name);

}  // namespace m6rec
