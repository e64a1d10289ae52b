#include "launch/offline.h"

#include <cstdio>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>

#include "common/cluster_view.h"
#include "common/config.h"
#include "common/logging.h"
#include "common/util.h"
#include "launch/roles.h"
#include "ps/server.h"
#include "worker/collective.h"
#include "worker/ps_client.h"
#include "worker/trainer.h"

namespace m6rec {

namespace {

Status Offline(const OfflineOptions& o, std::string* answer) {
  namespace fs = std::filesystem;
  const std::string cfg_path = o.run_dir + "/config.yaml";
  if (!fs::exists(cfg_path)) return Status::NotFound("'" + o.run_dir + "' is not a run directory (no config.yaml)");
  M6_ASSIGN_OR_RETURN(JobConfig cfg, LoadConfig(cfg_path, o.overrides));
  if (cfg.train.job != "m6") return Status::InvalidArgument(cfg_path + ": eval/recommend serve m6 jobs (train.job is " + cfg.train.job + ")");
  if (cfg.ps.store != PsConfig::Store::kRocksDB)
    return Status::InvalidArgument(cfg_path + ": the run used ps.store: memory, so no sparse rows survived it");
  const std::string ckpt = o.run_dir + "/checkpoint/dense.pt";
  if (!fs::exists(ckpt)) return Status::NotFound("no checkpoint at '" + ckpt + "' (did the run finish?)");

  const uint64_t token = RandomU64();
  ClusterView view;
  view.role = "worker";
  view.slot_map = RoundRobinSlotMap(cfg.ps.num_slots, static_cast<uint32_t>(cfg.cluster.servers));
  std::vector<std::unique_ptr<Server>> servers;
  for (int r = 0; r < cfg.cluster.servers; ++r) {
    const std::string dir = o.run_dir + "/server-" + std::to_string(r);
    if (!fs::exists(dir)) return Status::NotFound("server store '" + dir + "' is missing");
    ServerOptions so;
    so.tables = cfg.tables;
    so.ps = cfg.ps;
    so.host = "127.0.0.1";
    so.data_dir = dir;
    so.token = token;
    so.rank = static_cast<uint32_t>(r);
    M6_ASSIGN_OR_RETURN(auto srv, Server::Create(so));
    srv->SetOwnedSlots(view.OwnedSlots(static_cast<uint32_t>(r)));
    srv->Start();
    view.servers.push_back(NodeAddr{static_cast<uint32_t>(r), "127.0.0.1", srv->port(), 0});
    servers.push_back(std::move(srv));
  }
  view.workers.push_back(NodeAddr{0, "127.0.0.1", 0, 0});
  PsClientOptions po;
  po.view = view;
  po.tables = cfg.tables;
  po.token = token;
  po.request_timeout_ms = cfg.cluster.request_timeout_ms;
  M6_ASSIGN_OR_RETURN(auto ps, PsClient::Create(po));
  M6_ASSIGN_OR_RETURN(std::string data_dir, PrepareData(cfg, o.run_dir));
  CollectiveOptions co;
  M6_ASSIGN_OR_RETURN(auto single, CreateCollective(co));

  JobContext ctx;
  ctx.cfg = &cfg;
  ctx.ps = ps.get();
  ctx.rank = 0;
  ctx.num_workers = 1;
  ctx.run_dir = o.run_dir;
  ctx.data_dir = data_dir;
  ctx.barrier = [](const std::string&) { return Status::OK(); };
  ctx.collective = single.get();
  ctx.mode = o.mode;
  ctx.checkpoint = ckpt;
  ctx.recommend_user = o.user;
  ctx.recommend_k = o.k;
  Status s = RunM6Job(ctx, answer);
  ps.reset();
  for (auto& srv : servers) srv->Stop();
  return s;
}

}  // namespace

int RunOffline(const OfflineOptions& o) {
  std::string answer;
  Status s = Offline(o, &answer);
  if (!s.ok()) {
    std::fprintf(stderr, "m6rec %s: %s\n", o.mode.c_str(), s.message().c_str());
    return 1;
  }
  if (o.mode == "eval") {
    Status w = WriteFileAtomic(o.run_dir + "/eval.json", nlohmann::json::parse(answer).dump(2) + "\n");
    if (!w.ok()) LOG_WARN << w.message();
  }
  std::printf("%s\n", answer.c_str());
  return 0;
}

}  // namespace m6rec
