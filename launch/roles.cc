#include "launch/roles.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "common/clock.h"
#include "common/logging.h"
#include "common/util.h"
#include "ps/server.h"
#include "scheduler/client.h"
#include "scheduler/scheduler.h"
#include "worker/collective_setup.h"
#include "worker/ps_client.h"
#include "worker/synthetic_data.h"
#include "worker/training_engine.h"
#include "worker/zmq_collective.h"

namespace m6rec {

namespace {

SchedulerClientOptions ClientOptions(const RoleOptions& o) {
  SchedulerClientOptions c;
  c.host = o.scheduler_host;
  c.port = o.scheduler_port;
  c.token = o.token;
  c.connect_timeout_ms = o.cfg.cluster.connect_timeout_ms;
  c.heartbeat_interval_ms = o.cfg.cluster.heartbeat_interval_ms;
  return c;
}

int Fail(const std::string& what, const Status& s) {
  LOG_ERROR << what << ": " << s.message();
  return 1;
}

}  // namespace

StatusOr<std::string> PrepareData(const JobConfig& cfg, const std::string& run_dir) {
  for (const DomainSpec& d : cfg.data.domains)
    if (!std::filesystem::is_directory(d.path))
      return Status::NotFound("data.domains '" + d.label + "': path '" + d.path +
                              "' is not a directory");
  if (!cfg.data.domains.empty()) return std::string();
  if (cfg.data.source == DataSource::kDir) {
    if (!std::filesystem::is_directory(cfg.data.path))
      return Status::NotFound("data.path '" + cfg.data.path + "' is not a directory");
    return cfg.data.path;
  }
  const std::string dir = run_dir + "/data";
  if (std::filesystem::exists(dir + "/meta.json")) return dir;
  // Generate into a private directory, then rename: concurrent workers never see half a dataset.
  const std::string tmp = dir + ".tmp." + std::to_string(::getpid());
  M6_RETURN_IF_ERROR(WriteSynthetic(cfg.data.synth, cfg.seed, tmp));
  std::error_code ec;
  std::filesystem::rename(tmp, dir, ec);
  if (ec) {
    (void)RemoveTree(tmp);
    if (!std::filesystem::exists(dir + "/meta.json"))
      return Status::IOError("cannot create synthetic data in '" + dir + "'");
  }
  return dir;
}

int RunSchedulerRole(const RoleOptions& o) {
  SetLogPrefix("scheduler");
  SchedulerOptions so;
  so.cluster = o.cfg.cluster;
  so.cluster.host = o.scheduler_host.empty() ? o.cfg.cluster.host : o.scheduler_host;
  if (o.scheduler_port > 0) so.cluster.scheduler_port = o.scheduler_port;
  so.num_slots = o.cfg.ps.num_slots;
  so.token = o.token;
  so.job_name = o.cfg.name;
  so.port_file = o.port_file;
  if (!o.run_dir.empty()) so.timeline_path = o.run_dir + "/timeline.json";
  auto sched = Scheduler::Create(so);
  if (!sched.ok()) return Fail("scheduler", sched.status());
  if (o.on_scheduler_bound) o.on_scheduler_bound(so.cluster.host, (*sched)->port());
  Status s = (*sched)->Run();
  if (!s.ok()) return Fail("scheduler", s);
  LOG_INFO << "job complete";
  return 0;
}

int RunServerRole(const RoleOptions& o) {
  SetLogPrefix(o.rank >= 0 ? "server " + std::to_string(o.rank) : "server");
  if (o.data_dir.empty() && o.cfg.ps.store == PsConfig::Store::kRocksDB) {
    LOG_ERROR << "server: --data-dir is required with the rocksdb store";
    return 2;
  }
  // Block the stop signals before any thread starts, so only sigwait sees them (standalone).
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  if (o.standalone) pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  ServerOptions so;
  so.tables = o.cfg.tables;
  so.ps = o.cfg.ps;
  so.host = o.cfg.cluster.host;
  so.data_dir = o.data_dir;
  so.token = o.token;
  so.rank = o.rank >= 0 ? o.rank : 0;
  so.servers = uint32_t(std::max(1, o.cfg.cluster.servers));
  // A resumed job's rows come from its checkpoint; a fresh adapted job's from the backbone's.
  const std::string restore = !o.resume_from.empty() ? o.resume_from : o.cfg.adapt.from;
  if (!restore.empty()) {
    if (o.rank < 0) {
      LOG_ERROR << "server: starting from a checkpoint needs the server's --rank (its rows come "
                   "from <checkpoint>/server-<rank>)";
      return 2;
    }
    so.restore_from = restore + "/server-" + std::to_string(o.rank);
  }
  auto server = Server::Create(so);
  if (!server.ok()) return Fail("server", server.status());
  Server& srv = **server;

  if (o.standalone) {
    srv.Start();
    if (!o.port_file.empty()) {
      Status s = WriteFileAtomic(o.port_file, std::to_string(srv.port()) + "\n");
      if (!s.ok()) return Fail("server", s);
    }
    LOG_INFO << "standalone server on " << so.host << ":" << srv.port() << " ("
             << srv.store().name() << " store" << (o.data_dir.empty() ? "" : " at " + o.data_dir)
             << ")";
    int sig = 0;
    sigwait(&stop_signals, &sig);
    LOG_INFO << "signal " << sig << ": stopping";
    srv.Stop();
    return 0;
  }

  auto client = SchedulerClient::Connect(ClientOptions(o));
  if (!client.ok()) return Fail("server", client.status());
  auto view =
      (*client)->Register("server", so.host, srv.port(), o.rank, o.cfg.cluster.connect_timeout_ms);
  if (!view.ok()) return Fail("server: registration", view.status());
  SetLogPrefix("server " + std::to_string(view->rank));
  srv.SetOwnedSlots(view->OwnedSlots(view->rank));
  if (so.restore_from.empty()) {
    auto imported = srv.ImportRows();
    if (!imported.ok()) {
      (void)(*client)->Finished(false, imported.status().message(), "{}");
      (*client)->WaitShutdown(5000);
      return Fail("server", imported.status());
    }
    if (*imported) LOG_INFO << "imported " << *imported << " rows (tables' init.from)";
  }
  srv.Start();
  LOG_INFO << "serving on " << so.host << ":" << srv.port() << " (" << srv.store().name()
           << " store, " << o.cfg.tables.size() << " tables)";
  ShutdownNotice notice;
  while (true) {
    notice = (*client)->WaitShutdown(1000);
    if (notice.cause != ShutdownCause::kTimeout) break;  // a SHUTDOWN, or the scheduler is gone
    // Rows idle past their table's TTL go even when the table gets no pushes.
    Status expired = srv.lifecycle().Expire(srv.store());
    if (!expired.ok()) LOG_WARN << "row expiry: " << expired.message();
    // The server's counters ride on its heartbeats (the dashboard's PS panels, /metrics).
    nlohmann::json stats = nlohmann::json::parse(srv.StatsJson(), nullptr, false);
    stats["at_ms"] = MonotonicMs();  // when measured: heartbeats may repeat a measurement
    (*client)->SetStats(stats);
  }
  srv.Stop();
  LOG_INFO << "stopped: " << notice.reason << "; stats " << srv.StatsJson();
  return notice.cause == ShutdownCause::kConnectionLost ? 1 : 0;
}

int RunWorkerRole(const RoleOptions& o) {
  SetLogPrefix(o.rank >= 0 ? "worker " + std::to_string(o.rank) : "worker");
  auto client = SchedulerClient::Connect(ClientOptions(o));
  if (!client.ok()) return Fail("worker", client.status());
  SchedulerClient& sched = **client;
  // The collective's endpoint is bound before registering: its port travels in the view.
  auto endpoint = ZmqCollectiveEndpoint::Bind(o.cfg.cluster.host);
  if (!endpoint.ok()) return Fail("worker", endpoint.status());
  auto view = sched.Register("worker", o.cfg.cluster.host, (*endpoint)->port(), o.rank,
                             o.cfg.cluster.connect_timeout_ms);
  if (!view.ok()) return Fail("worker: registration", view.status());
  SetLogPrefix("worker " + std::to_string(view->rank));

  auto report_failure = [&](const std::string& what, const Status& s) {
    LOG_ERROR << what << ": " << s.message();
    (void)sched.Finished(false, what + ": " + s.message(), "{}");
    sched.WaitShutdown(5000);
    return 1;
  };
  auto should_abort = [&sched](std::string* why) { return sched.failed(why); };

  PsClientOptions po;
  po.view = *view;
  po.tables = o.cfg.tables;
  po.token = o.token;
  po.sender_rank = view->rank;
  po.request_timeout_ms = o.cfg.cluster.request_timeout_ms;
  po.should_abort = should_abort;
  auto ps = PsClient::Create(po);
  if (!ps.ok()) return report_failure("PS client", ps.status());

  auto data_dir =
      o.data_dir.empty() ? PrepareData(o.cfg, o.run_dir) : StatusOr<std::string>(o.data_dir);
  if (!data_dir.ok()) return report_failure("data", data_dir.status());
  auto data = LoadJobData(o.cfg, *data_dir);
  if (!data.ok()) return report_failure("data", data.status());

  const int barrier_timeout =
      std::max(o.cfg.cluster.request_timeout_ms, o.cfg.cluster.connect_timeout_ms) * 10;
  auto barrier = [&](const std::string& name) {
    return sched.Barrier(name, "workers", barrier_timeout);
  };
  Status s = barrier("start");
  if (!s.ok()) return report_failure("start barrier", s);
  WorkerCollectiveOptions wo;
  wo.backend = o.cfg.train.collective;
  wo.workers = view->workers;
  wo.rank = static_cast<int>(view->rank);
  wo.token = o.token;
  wo.device = o.cfg.model.device;
  wo.timeout_ms = barrier_timeout;
  wo.should_abort = should_abort;
  wo.endpoint = *endpoint;
  wo.mpi_workers = o.mpi_workers;
  auto collective = SetUpWorkerCollective(wo);
  if (!collective.ok()) return report_failure("collective", collective.status());

  EngineContext ctx;
  ctx.cfg = &o.cfg;
  ctx.rank = view->rank;
  ctx.num_workers = static_cast<uint32_t>(view->workers.size());
  ctx.tables = ps->get();
  ctx.collective = collective->get();
  ctx.data = *data;
  ctx.run_dir = o.run_dir;
  ctx.barrier = barrier;
  ctx.should_abort = should_abort;
  ctx.resume_from = o.resume_from;
  ctx.job_token = o.token;
  ctx.progress = [&sched](const nlohmann::json& p) { sched.SetStats(p); };
  auto summary = RunTraining(ctx);
  if (!summary.ok())
    return report_failure(std::string("job ") + EnumName(o.cfg.train.job), summary.status());
  const std::string text = summary->ToJson().dump();
  s = WriteFileAtomic(o.run_dir + "/worker-" + std::to_string(view->rank) + ".json", text + "\n");
  if (!s.ok()) return report_failure("writing the summary", s);
  s = sched.Finished(true, "", text);
  if (!s.ok()) return Fail("worker", s);
  ShutdownNotice n = sched.WaitShutdown(60000);
  if (!n.ok) LOG_WARN << "after finishing: " << n.reason;
  return 0;
}

}  // namespace m6rec
