#include "launch/bench_prequential.h"

#include <cstdio>
#include <nlohmann/json.hpp>

#include "common/clock.h"
#include "common/config.h"
#include "common/logging.h"
#include "common/util.h"
#include "worker/collective.h"
#include "worker/local_tables.h"
#include "worker/training_engine.h"

namespace m6rec {

using nlohmann::json;

namespace {

// Every row of every table removed (a retrain starts from freshly initialised rows).
Status ClearStores(LocalStores& stores) {
  for (size_t s = 0; s < stores.num_shards(); ++s)
    for (const TableSpec& t : stores.tables()) {
      std::vector<Key> keys;
      M6_RETURN_IF_ERROR(stores.shard(s).ForEachKey(t.id, [&](Key k) { keys.push_back(k); }));
      if (!keys.empty()) M6_RETURN_IF_ERROR(stores.shard(s).Erase(t.id, keys.data(), keys.size()));
    }
  return Status::OK();
}

StatusOr<json> RunMode(JobConfig cfg, const std::string& mode, double retrain_every_s) {
  cfg.stream.update = mode == "stream";
  cfg.stream.retrain_every_s = mode == "retrain" ? retrain_every_s : 0;
  cfg.stream.snapshot_every = 0;
  cfg.checkpoint.every_epochs = 0;
  cfg.checkpoint.every_steps = 0;
  cfg.checkpoint.best = false;
  M6_ASSIGN_OR_RETURN(auto data, LoadJobData(cfg, ""));
  LocalStoresOptions lo;
  lo.tables = cfg.tables;
  lo.ps = cfg.ps;
  lo.ps.store = PsConfig::Store::kMemory;
  M6_ASSIGN_OR_RETURN(auto stores, LocalStores::Open(lo));
  auto tables = MakeLocalTables(stores);
  CollectiveOptions co;
  co.backend = "single";
  M6_ASSIGN_OR_RETURN(auto coll, CreateCollective(co));
  EngineContext ctx;
  ctx.cfg = &cfg;
  ctx.tables = tables.get();
  ctx.collective = coll.get();
  ctx.data = data;
  ctx.reset_tables = [&stores] { return ClearStores(*stores); };
  const int64_t t0 = MonotonicMs();
  M6_ASSIGN_OR_RETURN(WorkerSummary w, RunTraining(ctx));
  json r = w.stream;
  r["mode"] = mode;
  r["wall_s"] = double(MonotonicMs() - t0) / 1000.0;
  if (mode == "retrain") r["retrain_every_s"] = retrain_every_s;
  return r;
}

}  // namespace

int RunPrequentialBench(const PrequentialBenchOptions& o) {
  auto cfg = LoadConfig(o.config_path, o.overrides);
  if (!cfg.ok()) {
    std::fprintf(stderr, "bench prequential: %s\n", cfg.status().message().c_str());
    return 2;
  }
  if (cfg->stream.source != StreamKind::kReplay) {
    std::fprintf(stderr,
                 "bench prequential: %s: the job must replay a held-back stream "
                 "(data.stream_split and stream.source: replay)\n",
                 o.config_path.c_str());
    return 2;
  }
  json all = json::array();
  for (const std::string& mode : o.modes) {
    if (mode != "stream" && mode != "frozen" && mode != "retrain") {
      std::fprintf(stderr, "bench prequential: mode '%s' (stream, frozen, retrain)\n",
                   mode.c_str());
      return 2;
    }
    LOG_INFO << "prequential: " << mode;
    auto r = RunMode(*cfg, mode, o.retrain_every_s);
    if (!r.ok()) {
      std::fprintf(stderr, "bench prequential: %s: %s\n", mode.c_str(),
                   r.status().message().c_str());
      return 1;
    }
    all.push_back(*r);
  }
  if (!o.out.empty()) {
    Status s = WriteFileAtomic(o.out, all.dump(1) + "\n");
    if (!s.ok()) {
      std::fprintf(stderr, "bench prequential: %s\n", s.message().c_str());
      return 1;
    }
  }
  if (o.json) {
    json brief = json::array();
    for (json r : all) {
      r.erase("chunks");
      brief.push_back(r);
    }
    std::printf("%s\n", brief.dump(1).c_str());
    return 0;
  }
  std::printf("%-16s %8s %8s | %-17s | %-17s | %-17s | %8s\n", "mode", "events", "scored",
              "all HR@10/NDCG@10", "1st half", "2nd half", "wall s");
  for (const json& r : all) {
    const json& h = r["halves"];
    auto row = [&](const std::string& name, const char* hr, const char* ndcg) {
      std::printf("%-16s %8llu %8.0f | %.4f / %.4f   | %.4f / %.4f   | %.4f / %.4f   | %8.1f\n",
                  name.c_str(), static_cast<unsigned long long>(r.value("events", uint64_t{0})),
                  r.value("scored", 0.0), r.value(hr, 0.0), r.value(ndcg, 0.0), h[0].value(hr, 0.0),
                  h[0].value(ndcg, 0.0), h[1].value(hr, 0.0), h[1].value(ndcg, 0.0),
                  r.value("wall_s", 0.0));
    };
    row(r["mode"].get<std::string>(), "HR@10", "NDCG@10");
    if (r.contains("HR@10_online"))
      row(r["mode"].get<std::string>() + "+online", "HR@10_online", "NDCG@10_online");
  }
  return 0;
}

}  // namespace m6rec
