#include "worker/model_plugin.h"

#include "worker/m6_model.h"
#include "worker/mf_model.h"

namespace m6rec {

StatusOr<std::unique_ptr<ModelPlugin>> MakeModelPlugin(const PluginContext& ctx) {
  if (!ctx.cfg || !ctx.data || !ctx.tables)
    return Status::InvalidArgument("a model plug-in needs a config, data and tables");
  switch (ctx.cfg->train.job) {
    case JobKind::kMf:
      return MakeMfPlugin(ctx);
    case JobKind::kM6:
      return MakeM6Plugin(ctx);
  }
  return Status::InvalidArgument(std::string("train.job: no model '") +
                                 EnumName(ctx.cfg->train.job) + "'");
}

}  // namespace m6rec
