#include "launch/cluster_launch.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <thread>

#include "common/clock.h"
#include "common/config.h"
#include "common/logging.h"
#include "common/transport.h"
#include "common/util.h"
#include "launch/roles.h"
#include "launch/mpi_launch.h"
#include "launch/run_dir.h"

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
  // srun sets SLURM_STEP_ID in every task of a step; the batch script itself (which also sees
  // SLURM_PROCID=0 and the allocation's SLURM_NTASKS) has none, so it is not a rank.
  int step = 0;
  if (EnvInt("SLURM_STEP_ID", &step) && EnvInt("SLURM_PROCID", &e.rank) &&
      (EnvInt("SLURM_STEP_NUM_TASKS", &e.size) || EnvInt("SLURM_NTASKS", &e.size))) {
    e.kind = LaunchEnv::Kind::kSlurm;
    e.how = "srun (SLURM_PROCID / SLURM_STEP_NUM_TASKS)";
    return e;
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

namespace {

// How a cluster launch's ranks agree: rank 0 publishes a message and every other rank receives
// it (a broadcast). mpirun: MPI_Bcast. srun without MPI: a file in a directory every rank sees.
class Rendezvous {
 public:
  virtual ~Rendezvous() = default;
  virtual Status Share(std::string* msg) = 0;
  // The workers' own communicator, where the launch has one (MPI; else null).
  virtual StatusOr<std::shared_ptr<const MpiCommunicator>> SplitWorkers(bool is_worker,
                                                                         int index) = 0;
  // Once the job is over (or failed), on every rank.
  virtual void Finish() = 0;
};

class MpiRendezvous final : public Rendezvous {
 public:
  Status Share(std::string* msg) override { return MpiBroadcastString(msg, 0); }
  StatusOr<std::shared_ptr<const MpiCommunicator>> SplitWorkers(bool is_worker,
                                                                 int index) override {
    return MpiSplitWorkers(is_worker, index);
  }
  void Finish() override { MpiStop(); }
};

// Rank 0 writes message k to DIR/.rendezvous-<id>-<k> (atomically: write, then rename); the
// others poll for it. <id> names the job step, so a reused directory never serves stale news.
class FileRendezvous final : public Rendezvous {
 public:
  FileRendezvous(std::string dir, std::string id, int rank, int64_t timeout_ms)
      : dir_(std::move(dir)), id_(std::move(id)), rank_(rank), timeout_ms_(timeout_ms) {}
  Status Share(std::string* msg) override {
    const std::string path = dir_ + "/.rendezvous-" + id_ + "-" + std::to_string(seq_++);
    if (rank_ == 0) {
      M6_RETURN_IF_ERROR(MakeDirs(dir_));
      written_.push_back(path);
      return WriteFileAtomic(path, *msg);
    }
    const int64_t deadline = MonotonicMs() + timeout_ms_;
    while (MonotonicMs() < deadline) {
      auto text = ReadFileToString(path);
      if (text.ok()) {
        *msg = *text;
        return Status::OK();
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return Status::DeadlineExceeded("rank " + std::to_string(rank_) + ": nothing from rank 0 at " + path + " after " +
                                    std::to_string(timeout_ms_ / 1000) +
                                    " s (rank 0 failed to start, or the directory is not on storage every node sees)");
  }
  StatusOr<std::shared_ptr<const MpiCommunicator>> SplitWorkers(bool, int) override {
    return std::shared_ptr<const MpiCommunicator>();
  }
  void Finish() override {
    for (const auto& p : written_) std::remove(p.c_str());
  }

 private:
  std::string dir_, id_;
  int rank_;
  int64_t timeout_ms_;
  int seq_ = 0;
  std::vector<std::string> written_;
};

// This process's part of a cluster launch (mpirun or srun): rank 0 prepares the run directory
// and runs the scheduler, whose address and job token reach the others through `rv`.
int RunClusterJob(const LocalClusterOptions& o, Rendezvous& rv, int rank, int world,
                  const std::vector<int>& node_of_rank, int hosts, const std::string& how,
                  const std::string& default_run_dir_suffix) {
  const int64_t t0 = MonotonicMs();
  SetLogPrefix("rank " + std::to_string(rank));
  // Every rank reports the same failure the same way and leaves together (no rank left waiting
  // for a message that will never come).
  auto fail_all = [&](const std::string& what) {
    if (rank == 0) std::fprintf(stderr, "m6rec: %s\n", what.c_str());
    rv.Finish();
    return 2;
  };

  // Rank 0 prepares the run directory (effective config with cluster.servers/workers set from
  // the plan) and shares its path; everyone reads that config.
  std::string header;  // "ok\n<run_dir>" or "error\n<message>"
  if (rank == 0) {
    JobConfig probe;
    auto first = PrepareRunDir(o.config_path, o.overrides, o.run_dir, &probe, default_run_dir_suffix);
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
  Status st = rv.Share(&header);
  if (!st.ok()) {
    std::fprintf(stderr, "m6rec: %s\n", st.message().c_str());
    rv.Finish();
    return 2;
  }
  if (header.rfind("error\n", 0) == 0) return fail_all(header.substr(6));
  const std::string run_dir = header.substr(3);
  auto cfg = LoadConfig(run_dir + "/config.yaml");
  if (!cfg.ok()) return fail_all("rank " + std::to_string(rank) + ": " + cfg.status().message() +
                                 " (the run directory must be on storage every host sees)");
  auto plan = PlanRoles(world, cfg->cluster.servers, cfg->cluster.placement, node_of_rank);
  if (!plan.ok()) return fail_all(plan.status().message());
  const RolePlan me = (*plan)[rank];
  if (hosts > 1 && (cfg->cluster.host == "127.0.0.1" || cfg->cluster.host == "localhost"))
    return fail_all("the job spans " + std::to_string(hosts) + " hosts but cluster.host is " + cfg->cluster.host +
                    ": set cluster.host: auto (or this host's address) so peers can reach it");
  auto host = ResolveHost(cfg->cluster.host, cfg->cluster.interface);
  if (!host.ok()) return fail_all(host.status().message());
  cfg->cluster.host = *host;
  auto mpi_workers = rv.SplitWorkers(me.role == "worker", me.index);
  if (!mpi_workers.ok()) return fail_all(mpi_workers.status().message());
  if (rank == 0)
    LOG_INFO << "cluster job '" << cfg->name << "' over " << world << " processes on " << hosts << " host(s) via "
             << how << ": 1 scheduler, " << cfg->cluster.servers << " servers, " << cfg->cluster.workers
             << " workers; run directory " << run_dir;

  RoleOptions ro;
  ro.cfg = *cfg;
  ro.mpi_workers = std::move(*mpi_workers);
  ro.rank = me.index;
  ro.run_dir = run_dir;
  int rc = 0;
  std::string address;  // "host:port token" from the scheduler, or "error"
  if (me.role == "scheduler") {
    ro.scheduler_host = cfg->cluster.host;  // binds (and announces) this host's address
    ro.token = RandomU64();
    bool announced = false;
    ro.on_scheduler_bound = [&](const std::string& h, int port) {
      address = h + ":" + std::to_string(port) + " " + std::to_string(ro.token);
      announced = rv.Share(&address).ok();
    };
    rc = RunSchedulerRole(ro);
    if (!announced) {
      address = "error";
      (void)rv.Share(&address);
    }
    if (rc == 0) {
      Status w = WriteRunResult(*cfg, run_dir, (MonotonicMs() - t0) / 1000.0);
      if (!w.ok()) {
        LOG_ERROR << w.message();
        rc = 1;
      }
    }
  } else {
    st = rv.Share(&address);
    if (!st.ok() || address == "error") {
      if (!st.ok()) LOG_ERROR << st.message();
      rv.Finish();
      return 1;  // the scheduler reported why
    }
    const size_t sp = address.find(' ');
    st = ParseHostPort(address.substr(0, sp), &ro.scheduler_host, &ro.scheduler_port);
    ro.token = std::strtoull(address.substr(sp + 1).c_str(), nullptr, 10);
    if (!st.ok()) {
      LOG_ERROR << st.message();
      rv.Finish();
      return 1;
    }
    if (me.role == "server") {
      ro.data_dir = run_dir + "/server-" + std::to_string(me.index);
      rc = RunServerRole(ro);
    } else {
      rc = RunWorkerRole(ro);
    }
  }
  ro.mpi_workers.reset();  // freed while MPI is still up (Finish may finalise it)
  rv.Finish();
  return rc;
}

}  // namespace

int RunMpiJob(const LocalClusterOptions& o, int* argc, char*** argv) {
  auto mp = MpiStart(argc, argv);
  if (!mp.ok()) {
    std::fprintf(stderr, "m6rec: %s\n", mp.status().message().c_str());
    return 2;
  }
  const int rank = mp->rank, world = mp->size;
  MpiRendezvous rv;
  char hostname[256] = {0};
  gethostname(hostname, sizeof(hostname) - 1);
  auto hosts = MpiAllGatherString(hostname);
  if (!hosts.ok()) {
    if (rank == 0) std::fprintf(stderr, "m6rec: %s\n", hosts.status().message().c_str());
    rv.Finish();
    return 2;
  }
  std::vector<int> node_of_rank(world);
  std::map<std::string, int> node_index;
  for (int r = 0; r < world; ++r) node_of_rank[r] = node_index.emplace((*hosts)[r], int(node_index.size())).first->second;
  return RunClusterJob(o, rv, rank, world, node_of_rank, int(node_index.size()), DetectLaunch().how, "");
}

int RunSlurmJob(const LocalClusterOptions& o) {
  const LaunchEnv env = DetectLaunch();
  auto fail = [&](const std::string& what) {
    if (env.rank == 0) std::fprintf(stderr, "m6rec: %s\n", what.c_str());
    return 2;
  };
  const char* tpn = std::getenv("SLURM_STEP_TASKS_PER_NODE");
  if (!tpn) tpn = std::getenv("SLURM_TASKS_PER_NODE");
  auto node_of_rank = SlurmNodeOfRank(tpn ? tpn : "", env.size);
  if (!node_of_rank.ok()) return fail(node_of_rank.status().message());
  int my_node = 0;
  const char* dist = std::getenv("SLURM_DISTRIBUTION");
  if (EnvInt("SLURM_NODEID", &my_node) && (*node_of_rank)[env.rank] != my_node)
    return fail("srun placed rank " + std::to_string(env.rank) + " on node " + std::to_string(my_node) +
                ", not where block distribution puts it (SLURM_DISTRIBUTION=" + (dist ? dist : "?") +
                "): launch with srun -m block");
  const int hosts = (*node_of_rank).empty() ? 1 : (*node_of_rank).back() + 1;
  const char* job = std::getenv("SLURM_JOB_ID");
  const char* step = std::getenv("SLURM_STEP_ID");
  const std::string id = std::string(job ? job : "0") + "." + (step ? step : "0");
  // Where the ranks meet: the run directory when it is given, else runs/ (both relative to the
  // working directory srun gives every task: the submit directory, on shared storage).
  FileRendezvous rv(o.run_dir.empty() ? "runs" : o.run_dir, id, env.rank, kSlurmRendezvousTimeoutMs);
  return RunClusterJob(o, rv, env.rank, env.size, *node_of_rank, hosts, env.how, "slurm" + id);
}

StatusOr<std::vector<int>> SlurmNodeOfRank(const std::string& tasks_per_node, int world) {
  // "2(x3),1": three nodes with 2 tasks, then one with 1; block distribution fills node by node.
  std::vector<int> out;
  int node = 0;
  size_t pos = 0;
  const auto bad = [&]() {
    return Status::InvalidArgument("SLURM_STEP_TASKS_PER_NODE '" + tasks_per_node + "': expected e.g. 4 or 2(x3),1");
  };
  while (pos < tasks_per_node.size()) {
    size_t end = tasks_per_node.find(',', pos);
    if (end == std::string::npos) end = tasks_per_node.size();
    const std::string part = tasks_per_node.substr(pos, end - pos);
    int count = 0, repeat = 1;
    char tail = 0;
    if (std::sscanf(part.c_str(), "%d(x%d)%c", &count, &repeat, &tail) == 2 ||
        (std::sscanf(part.c_str(), "%d%c", &count, &tail) == 1 && part.find('(') == std::string::npos)) {
      if (count < 1 || repeat < 1) return bad();
      for (int r = 0; r < repeat; ++r, ++node)
        for (int t = 0; t < count; ++t) out.push_back(node);
    } else {
      return bad();
    }
    pos = end + 1;
  }
  if (tasks_per_node.empty()) out.assign(world, 0);
  if (int(out.size()) != world)
    return Status::InvalidArgument("SLURM_STEP_TASKS_PER_NODE '" + tasks_per_node + "' holds " +
                                   std::to_string(out.size()) + " tasks, the step has " + std::to_string(world));
  return out;
}

}  // namespace m6rec
