// The M6-Rec style model (train.job: m6) as a plug-in of the training engine: the dense towers
// of worker/model.h on LibTorch, fed by the batches of worker/m6_batch.h, with the sparse user,
// item and token rows on the tables. One step: the item tower over every unique item of the
// batch, the user tower, scores against the positives and the shared (and in-batch) negatives,
// the configured ranking loss, backward; the rows' gradients go to the tables, the dense ones to
// the engine's allreduce and Adam step (TorchDense), identical on every worker.
#pragma once

#include <memory>

#include "worker/model_plugin.h"

namespace m6rec {

StatusOr<std::unique_ptr<ModelPlugin>> MakeM6Plugin(const PluginContext& ctx);

}  // namespace m6rec
