#include "launch/cluster_launch.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <map>

#include "common/clock.h"
#include "common/config.h"
#include "common/logging.h"
#include "common/transport.h"
#include "common/util.h"
#include "launch/roles.h"
#include "launch/run_dir.h"
#include "worker/collective.h"

namespace m6rec {

namespace {

bool EnvInt(const char* name, int* out) {
  const char* v = std::getenv(name);
  if (!v || !*v) return false;
  char* end = nullptr;
  long x = std::strtol(v, &end, 10);
  if (*end != '\0' || x < 0) return false;
  *out = static_cast<int>(x);
  return true;
}

}  // namespace

LaunchEnv DetectLaunch() {
  LaunchEnv e;
  struct Vars {
    const char *rank, *size, *how;
  };
  for (const Vars& v : {Vars{"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OpenMPI (OMPI_COMM_WORLD_*)"},
                        Vars{"PMI_RANK", "PMI_SIZE", "PMI (MPICH, Intel MPI)"},
                        Vars{"PMIX_RANK", "PMIX_SIZE", "PMIx"}}) {
    if (EnvInt(v.rank, &e.rank) && EnvInt(v.size, &e.size)) {
      e.kind = LaunchEnv::Kind::kMpi;
      e.how = v.how;
      return e;
    }
  }
  e.rank = 0;
  e.size = 1;
  return e;
}

StatusOr<std::vector<RolePlan>> PlanRoles(int world, int servers, const std::string& placement,
                                          const std::vector<int>& node_of_rank) {
  std::vector<RolePlan> plan(world, RolePlan{"worker", 0});
  if (world < 1) return Status::InvalidArgument("no processes");
  plan[0] = {"scheduler", 0};
  int s = 0;
  if (placement == "server_per_node") {
    if (static_cast<int>(node_of_rank.size()) != world) return Status::Internal("node_of_rank has the wrong size");
    std::map<int, bool> node_has_server;
    for (int r = 1; r < world; ++r)
      if (!node_has_server[node_of_rank[r]]) {
        node_has_server[node_of_rank[r]] = true;
        plan[r] = {"server", s++};
      }
  } else {
    for (int r = 1; r <= servers && r < world; ++r) plan[r] = {"server", s++};
    if (s < servers)
      return Status::InvalidArgument(std::to_string(world) + " processes cannot hold a scheduler, " +
                                     std::to_string(servers) + " servers and a worker (start at least " +
                                     std::to_string(servers + 2) + ")");
  }
  int w = 0;
  for (int r = 1; r < world; ++r)
    if (plan[r].role == "worker") plan[r].index = w++;
  if (w == 0)
    return Status::InvalidArgument(std::to_string(world) + " processes leave no worker after the scheduler and " +
                                   std::to_string(s) + " servers (start at least " + std::to_string(s + 2) + ")");
  return plan;
}

StatusOr<std::string> ResolveHost(const std::string& host, const std::string& interface) {
  if (host != "auto") return host;
  struct ifaddrs* ifs = nullptr;
  if (getifaddrs(&ifs) != 0) return Status::IOError("cluster.host: auto: cannot list network interfaces");
  std::string found;
  for (struct ifaddrs* i = ifs; i; i = i->ifa_next) {
    if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET || !(i->ifa_flags & IFF_UP)) continue;
    if (!interface.empty() ? interface != i->ifa_name : (i->ifa_flags & IFF_LOOPBACK) != 0) continue;
    char buf[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &reinterpret_cast<struct sockaddr_in*>(i->ifa_addr)->sin_addr, buf, sizeof(buf));
    found = buf;
    break;
  }
  freeifaddrs(ifs);
  if (found.empty())
    return Status::NotFound(interface.empty() ? std::string("cluster.host: auto: this host has no non-loopback IPv4 address")
                                              : "cluster.interface: no IPv4 address on '" + interface + "'");
  return found;
}

int RunMpiJob(const LocalClusterOptions& o, int* argc, char*** argv) {
  const int64_t t0 = MonotonicMs();
  auto mp = MpiStart(argc, argv);
  if (!mp.ok()) {
    std::fprintf(stderr, "m6rec: %s\n", mp.status().message().c_str());
    return 2;
  }
  const int rank = mp->rank, world = mp->size;
  SetLogPrefix("rank " + std::to_string(rank));
  // Every rank reports the same failure the same way and leaves together (no rank left waiting
  // in a collective that will never come).
  auto fail_all = [&](const std::string& what) {
    if (rank == 0) std::fprintf(stderr, "m6rec: %s\n", what.c_str());
    MpiStop();
    return 2;
  };

  // Rank 0 prepares the run directory (effective config with cluster.workers set from the
  // world size) and shares its path; everyone reads that config.
  char hostname[256] = {0};
  gethostname(hostname, sizeof(hostname) - 1);
  auto hosts = MpiAllGatherString(hostname);
  if (!hosts.ok()) return fail_all(hosts.status().message());
  std::vector<int> node_of_rank(world);
  std::map<std::string, int> node_index;
  for (int r = 0; r < world; ++r) node_of_rank[r] = node_index.emplace((*hosts)[r], int(node_index.size())).first->second;
  std::string header;  // "ok\n<run_dir>" or "error\n<message>"
  if (rank == 0) {
    JobConfig probe;
    auto first = PrepareRunDir(o.config_path, o.overrides, o.run_dir, &probe);
    std::vector<RolePlan> plan;
    if (first.ok()) {
      auto p = PlanRoles(world, probe.cluster.servers, probe.cluster.placement, node_of_rank);
      if (!p.ok()) first = p.status();
      else plan = *p;
    }
    if (first.ok()) {
      int servers = 0, workers = 0;
      for (const auto& r : plan) (r.role == "server" ? servers : workers) += r.role != "scheduler";
      std::vector<std::string> ov = o.overrides;
      ov.push_back("cluster.servers=" + std::to_string(servers));
      ov.push_back("cluster.workers=" + std::to_string(workers));
      first = PrepareRunDir(o.config_path, ov, *first, &probe);
    }
    header = first.ok() ? "ok\n" + *first : "error\n" + first.status().message();
  }
  Status st = MpiBroadcastString(&header, 0);
  if (!st.ok()) return fail_all(st.message());
  if (header.rfind("error\n", 0) == 0) return fail_all(header.substr(6));
  const std::string run_dir = header.substr(3);
  auto cfg = LoadConfig(run_dir + "/config.yaml");
  if (!cfg.ok()) return fail_all("rank " + std::to_string(rank) + ": " + cfg.status().message() +
                                 " (the run directory must be on storage every host sees)");
  auto plan = PlanRoles(world, cfg->cluster.servers, cfg->cluster.placement, node_of_rank);
  if (!plan.ok()) return fail_all(plan.status().message());
  const RolePlan me = (*plan)[rank];
  if (node_index.size() > 1 && (cfg->cluster.host == "127.0.0.1" || cfg->cluster.host == "localhost"))
    return fail_all("the job spans " + std::to_string(node_index.size()) + " hosts but cluster.host is " +
                    cfg->cluster.host + ": set cluster.host: auto (or this host's address) so peers can reach it");
  auto host = ResolveHost(cfg->cluster.host, cfg->cluster.interface);
  if (!host.ok()) return fail_all(host.status().message());
  cfg->cluster.host = *host;
  st = MpiSplitWorkers(me.role == "worker", me.index);
  if (!st.ok()) return fail_all(st.message());
  if (rank == 0)
    LOG_INFO << "mpirun job '" << cfg->name << "' over " << world << " processes on " << node_index.size()
             << " host(s) via " << DetectLaunch().how << ": 1 scheduler, " << cfg->cluster.servers << " servers, "
             << cfg->cluster.workers << " workers; run directory " << run_dir;

  RoleOptions ro;
  ro.cfg = *cfg;
  ro.rank = me.index;
  ro.run_dir = run_dir;
  int rc = 0;
  std::string address;  // "host:port token" from the scheduler, or "error"
  if (me.role == "scheduler") {
    ro.token = RandomU64();
    bool announced = false;
    ro.on_scheduler_bound = [&](const std::string& h, int port) {
      address = h + ":" + std::to_string(port) + " " + std::to_string(ro.token);
      announced = MpiBroadcastString(&address, 0).ok();
    };
    rc = RunSchedulerRole(ro);
    if (!announced) {
      address = "error";
      (void)MpiBroadcastString(&address, 0);
    }
    if (rc == 0) {
      Status w = WriteRunResult(*cfg, run_dir, (MonotonicMs() - t0) / 1000.0);
      if (!w.ok()) {
        LOG_ERROR << w.message();
        rc = 1;
      }
    }
  } else {
    st = MpiBroadcastString(&address, 0);
    if (!st.ok() || address == "error") {
      MpiStop();
      return 1;  // the scheduler reported why
    }
    const size_t sp = address.find(' ');
    st = ParseHostPort(address.substr(0, sp), &ro.scheduler_host, &ro.scheduler_port);
    ro.token = std::strtoull(address.substr(sp + 1).c_str(), nullptr, 10);
    if (!st.ok()) {
      LOG_ERROR << st.message();
      MpiStop();
      return 1;
    }
    if (me.role == "server") {
      ro.data_dir = run_dir + "/server-" + std::to_string(me.index);
      rc = RunServerRole(ro);
    } else {
      rc = RunWorkerRole(ro);
    }
  }
  MpiStop();
  return rc;
}

}  // namespace m6rec
