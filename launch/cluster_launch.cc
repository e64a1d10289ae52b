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
#include "common/protocol.h"
#include "common/transport.h"
#include "common/util.h"
#include "launch/mpi_launch.h"
#include "launch/roles.h"
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
  for (const Vars& v :
       {Vars{"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OpenMPI (OMPI_COMM_WORLD_*)"},
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

StatusOr<std::vector<RolePlan>> PlanRoles(int world, int servers, Placement placement,
                                          const std::vector<int>& node_of_rank) {
  std::vector<RolePlan> plan(world, RolePlan{Role::kWorker, 0});
  if (world < 1) return Status::InvalidArgument("no processes");
  plan[0] = {Role::kScheduler, 0};
  int s = 0;
  if (placement == Placement::kServerPerNode) {
    if (static_cast<int>(node_of_rank.size()) != world)
      return Status::Internal("node_of_rank has the wrong size");
    std::map<int, bool> node_has_server;
    for (int r = 1; r < world; ++r)
      if (!node_has_server[node_of_rank[r]]) {
        node_has_server[node_of_rank[r]] = true;
        plan[r] = {Role::kServer, s++};
      }
  } else {
    for (int r = 1; r <= servers && r < world; ++r) plan[r] = {Role::kServer, s++};
    if (s < servers)
      return Status::InvalidArgument(
          std::to_string(world) + " processes cannot hold a scheduler, " + std::to_string(servers) +
          " servers and a worker (start at least " + std::to_string(servers + 2) + ")");
  }
  int w = 0;
  for (int r = 1; r < world; ++r)
    if (plan[r].role == Role::kWorker) plan[r].index = w++;
  if (w == 0)
    return Status::InvalidArgument(
        std::to_string(world) + " processes leave no worker after the scheduler and " +
        std::to_string(s) + " servers (start at least " + std::to_string(s + 2) + ")");
  return plan;
}

StatusOr<std::string> ResolveHost(const std::string& host, const std::string& interface) {
  if (host != "auto") return host;
  struct ifaddrs* ifs = nullptr;
  if (getifaddrs(&ifs) != 0)
    return Status::IOError("cluster.host: auto: cannot list network interfaces");
  std::string found;
  for (struct ifaddrs* i = ifs; i; i = i->ifa_next) {
    if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET || !(i->ifa_flags & IFF_UP)) continue;
    if (!interface.empty() ? interface != i->ifa_name : (i->ifa_flags & IFF_LOOPBACK) != 0)
      continue;
    char buf[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &reinterpret_cast<struct sockaddr_in*>(i->ifa_addr)->sin_addr, buf,
              sizeof(buf));
    found = buf;
    break;
  }
  freeifaddrs(ifs);
  if (found.empty())
    return Status::NotFound(
        interface.empty()
            ? std::string("cluster.host: auto: this host has no non-loopback IPv4 address")
            : "cluster.interface: no IPv4 address on '" + interface + "'");
  return found;
}

std::string EncodeRendezvousMessage(uint64_t token, uint64_t index, const nlohmann::json& body) {
  MsgHeader h;
  h.type = static_cast<uint16_t>(MsgType::kRendezvous);
  h.token = token;
  h.request_id = index;
  h.sender = 0;
  return EncodeControlFrame(h, body.dump());
}

Status DecodeRendezvousMessage(const std::string& bytes, uint64_t index, const std::string& where,
                               uint64_t* token, nlohmann::json* body) {
  const std::string what = "rendezvous message " + std::to_string(index) + " in " + where;
  MsgHeader h;
  std::string payload;
  Status s = DecodeWholeControlFrame(bytes, &h, &payload);
  if (!s.ok())
    return Status::Corruption(what + " is not one from an m6rec rank 0 (" + s.message() +
                              "): a foreign or damaged file?");
  if (h.type != uint16_t(MsgType::kRendezvous) || h.request_id != index || h.sender != 0)
    return Status::Corruption(what + " is a " + MsgTypeName(MsgType(h.type)) + " (index " +
                              std::to_string(h.request_id) + ", sender " +
                              std::to_string(h.sender) + "), not rank 0's message " +
                              std::to_string(index));
  nlohmann::json j = nlohmann::json::parse(payload, nullptr, false);
  if (j.is_discarded() || !j.is_object())
    return Status::Corruption(what + ": the payload is not a JSON object");
  *token = h.token;
  *body = std::move(j);
  return Status::OK();
}

Status Rendezvous::Share(uint64_t* token, nlohmann::json* body, std::string* where) {
  const int k = next_++;
  std::string bytes, carrier;
  if (rank_ == 0) bytes = EncodeRendezvousMessage(*token, k, *body);
  M6_RETURN_IF_ERROR(Transfer(k, &bytes, &carrier));
  if (where) *where = carrier;
  uint64_t got = 0;
  nlohmann::json j;
  M6_RETURN_IF_ERROR(DecodeRendezvousMessage(bytes, k, carrier, &got, &j));
  if (k == 0) {
    token_ = got;
  } else if (got != token_) {
    return Status::Corruption("rendezvous message " + std::to_string(k) + " in " + carrier +
                              " carries another job's token than message 0 (a stale file?)");
  }
  *token = got;
  *body = std::move(j);
  return Status::OK();
}

namespace {

class MpiRendezvous final : public Rendezvous {
 public:
  explicit MpiRendezvous(int rank) : Rendezvous(rank) {}
  StatusOr<std::shared_ptr<const MpiCommunicator>> SplitWorkers(bool is_worker,
                                                                int index) override {
    return MpiSplitWorkers(is_worker, index);
  }
  void Finish() override { MpiStop(); }

 protected:
  Status Transfer(int, std::string* bytes, std::string* where) override {
    *where = "the MPI broadcast from rank 0";
    return MpiBroadcastString(bytes, 0);
  }
};

class FileRendezvous final : public Rendezvous {
 public:
  FileRendezvous(std::string dir, std::string id, int rank, int64_t timeout_ms)
      : Rendezvous(rank),
        dir_(std::move(dir)),
        id_(std::move(id)),
        rank_(rank),
        timeout_ms_(timeout_ms) {}
  StatusOr<std::shared_ptr<const MpiCommunicator>> SplitWorkers(bool, int) override {
    return std::shared_ptr<const MpiCommunicator>();
  }
  void Finish() override {
    for (const auto& p : written_) std::remove(p.c_str());
  }

 protected:
  Status Transfer(int k, std::string* bytes, std::string* where) override {
    const std::string path = dir_ + "/.rendezvous-" + id_ + "-" + std::to_string(k);
    *where = path;
    if (rank_ == 0) {
      M6_RETURN_IF_ERROR(MakeDirs(dir_));
      written_.push_back(path);
      return WriteFileAtomic(path, *bytes);
    }
    const int64_t deadline = MonotonicMs() + timeout_ms_;
    while (MonotonicMs() < deadline) {
      auto text = ReadFileToString(path);
      if (text.ok()) {
        *bytes = *text;
        return Status::OK();
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return Status::DeadlineExceeded(
        "rank " + std::to_string(rank_) + ": nothing from rank 0 at " + path + " after " +
        std::to_string(timeout_ms_ / 1000) +
        " s (rank 0 failed to start, or the directory is not on storage every node sees)");
  }

 private:
  std::string dir_, id_;
  int rank_;
  int64_t timeout_ms_;
  std::vector<std::string> written_;
};

// A string field of a rendezvous message, or an error naming the message's carrier.
StatusOr<std::string> StringField(const nlohmann::json& body, const char* key,
                                  const std::string& where) {
  auto it = body.find(key);
  if (it == body.end() || !it->is_string())
    return Status::Corruption("rendezvous message in " + where + " has no string '" + key + "'");
  return it->get<std::string>();
}

// Rank 0's first rendezvous message for a resumed run: {"run_dir", "resume_from"} or {"error"}.
// The launch must give the run its own number of servers and workers.
nlohmann::json ResumeMessage(const LocalClusterOptions& o, int world,
                             const std::vector<int>& node_of_rank) {
  JobConfig cfg;
  auto ckpt = PrepareResume(o, &cfg);
  if (!ckpt.ok()) return {{"error", ckpt.status().message()}};
  auto plan = PlanRoles(world, cfg.cluster.servers, cfg.cluster.placement, node_of_rank);
  if (!plan.ok()) return {{"error", plan.status().message()}};
  int servers = 0, workers = 0;
  for (const auto& r : *plan)
    (r.role == Role::kServer ? servers : workers) += r.role != Role::kScheduler;
  if (servers != cfg.cluster.servers || workers != cfg.cluster.workers)
    return {{"error", "the run had " + std::to_string(cfg.cluster.servers) + " servers and " +
                          std::to_string(cfg.cluster.workers) + " workers; this launch makes " +
                          std::to_string(servers) + " and " + std::to_string(workers)}};
  return {{"run_dir", o.resume_dir}, {"resume_from", *ckpt}};
}

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

  // Rank 0 makes the job token, prepares the run directory (effective config with
  // cluster.servers/workers set from the plan) and shares both; everyone reads that config.
  uint64_t token = 0;
  nlohmann::json first_msg;  // {"run_dir": ...} or {"error": ...}
  if (rank == 0 && !o.resume_dir.empty()) {
    token = RandomU64();
    first_msg = ResumeMessage(o, world, node_of_rank);
  } else if (rank == 0) {
    token = RandomU64();
    JobConfig probe;
    auto first =
        PrepareRunDir(o.config_path, o.overrides, o.run_dir, &probe, default_run_dir_suffix);
    std::vector<RolePlan> plan;
    if (first.ok()) {
      auto p = PlanRoles(world, probe.cluster.servers, probe.cluster.placement, node_of_rank);
      if (!p.ok())
        first = p.status();
      else
        plan = *p;
    }
    if (first.ok()) {
      int servers = 0, workers = 0;
      for (const auto& r : plan)
        (r.role == Role::kServer ? servers : workers) += r.role != Role::kScheduler;
      std::vector<std::string> ov = o.overrides;
      ov.push_back("cluster.servers=" + std::to_string(servers));
      ov.push_back("cluster.workers=" + std::to_string(workers));
      first = PrepareRunDir(o.config_path, ov, *first, &probe);
    }
    first_msg = first.ok() ? nlohmann::json{{"run_dir", *first}}
                           : nlohmann::json{{"error", first.status().message()}};
  }
  std::string where;
  Status st = rv.Share(&token, &first_msg, &where);
  if (!st.ok()) {
    std::fprintf(stderr, "m6rec: rank %d: %s\n", rank, st.message().c_str());
    rv.Finish();
    return 2;
  }
  if (first_msg.contains("error")) {
    auto e = StringField(first_msg, "error", where);
    return fail_all(e.ok() ? *e : e.status().message());
  }
  auto run_dir_field = StringField(first_msg, "run_dir", where);
  if (!run_dir_field.ok()) {
    std::fprintf(stderr, "m6rec: rank %d: %s\n", rank, run_dir_field.status().message().c_str());
    rv.Finish();
    return 2;
  }
  const std::string run_dir = *run_dir_field;
  auto cfg = LoadConfig(run_dir + "/config.yaml");
  if (!cfg.ok())
    return fail_all("rank " + std::to_string(rank) + ": " + cfg.status().message() +
                    " (the run directory must be on storage every host sees)");
  auto plan = PlanRoles(world, cfg->cluster.servers, cfg->cluster.placement, node_of_rank);
  if (!plan.ok()) return fail_all(plan.status().message());
  const RolePlan me = (*plan)[rank];
  if (hosts > 1 && (cfg->cluster.host == "127.0.0.1" || cfg->cluster.host == "localhost"))
    return fail_all("the job spans " + std::to_string(hosts) + " hosts but cluster.host is " +
                    cfg->cluster.host +
                    ": set cluster.host: auto (or this host's address) so peers can reach it");
  auto host = ResolveHost(cfg->cluster.host, cfg->cluster.interface);
  if (!host.ok()) return fail_all(host.status().message());
  cfg->cluster.host = *host;
  auto mpi_workers = rv.SplitWorkers(me.role == Role::kWorker, me.index);
  if (!mpi_workers.ok()) return fail_all(mpi_workers.status().message());
  if (rank == 0)
    LOG_INFO << "cluster job '" << cfg->name << "' over " << world << " processes on " << hosts
             << " host(s) via " << how << ": 1 scheduler, " << cfg->cluster.servers << " servers, "
             << cfg->cluster.workers << " workers; run directory " << run_dir;

  RoleOptions ro;
  ro.cfg = *cfg;
  if (first_msg.contains("resume_from")) {
    auto from = StringField(first_msg, "resume_from", where);
    if (!from.ok()) return fail_all(from.status().message());
    ro.resume_from = *from;
  }
  ro.mpi_workers = std::move(*mpi_workers);
  ro.rank = me.index;
  ro.run_dir = run_dir;
  ro.token = token;
  int rc = 0;
  nlohmann::json address;  // {"host", "port"} of the scheduler, or {"error"}
  if (me.role == Role::kScheduler) {
    ro.scheduler_host = cfg->cluster.host;  // binds (and announces) this host's address
    bool announced = false;  // message 1 went out (once: the others wait for exactly one)
    ro.on_scheduler_bound = [&](const std::string& h, int port) {
      address = {{"host", h}, {"port", port}};
      announced = true;
      Status s = rv.Share(&token, &address);
      if (!s.ok()) LOG_ERROR << "announcing the scheduler: " << s.message();
    };
    rc = RunSchedulerRole(ro);
    if (!announced) {
      address = {{"error", "the scheduler did not start"}};
      (void)rv.Share(&token, &address);
    }
    if (rc == 0) {
      Status w = WriteRunResult(*cfg, run_dir, (MonotonicMs() - t0) / 1000.0);
      if (!w.ok()) {
        LOG_ERROR << w.message();
        rc = 1;
      }
    }
  } else {
    uint64_t address_token = 0;
    st = rv.Share(&address_token, &address, &where);
    if (!st.ok() || address.contains("error")) {
      if (!st.ok()) LOG_ERROR << st.message();
      ro.mpi_workers.reset();
      rv.Finish();
      return 1;  // the scheduler reported why
    }
    auto host_field = StringField(address, "host", where);
    auto port = address.find("port");
    if (host_field.ok() && (port == address.end() || !port->is_number_integer()))
      st = Status::Corruption("rendezvous message in " + where + " has no integer 'port'");
    else if (!host_field.ok())
      st = host_field.status();
    else
      st = ParseHostPort(*host_field + ":" + std::to_string(port->get<int64_t>()),
                         &ro.scheduler_host, &ro.scheduler_port);
    if (!st.ok()) {
      LOG_ERROR << st.message();
      ro.mpi_workers.reset();
      rv.Finish();
      return 1;
    }
    if (me.role == Role::kServer) {
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
  MpiRendezvous rv(rank);
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
  for (int r = 0; r < world; ++r)
    node_of_rank[r] = node_index.emplace((*hosts)[r], int(node_index.size())).first->second;
  return RunClusterJob(o, rv, rank, world, node_of_rank, int(node_index.size()), DetectLaunch().how,
                       "");
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
    return fail(
        "srun placed rank " + std::to_string(env.rank) + " on node " + std::to_string(my_node) +
        ", not where block distribution puts it (SLURM_DISTRIBUTION=" + (dist ? dist : "?") +
        "): launch with srun -m block");
  const int hosts = (*node_of_rank).empty() ? 1 : (*node_of_rank).back() + 1;
  const char* job = std::getenv("SLURM_JOB_ID");
  const char* step = std::getenv("SLURM_STEP_ID");
  const std::string id = std::string(job ? job : "0") + "." + (step ? step : "0");
  // Where the ranks meet: the run directory when it is given, else runs/ (both relative to the
  // working directory srun gives every task: the submit directory, on shared storage).
  FileRendezvous rv(o.run_dir.empty() ? "runs" : o.run_dir, id, env.rank,
                    kSlurmRendezvousTimeoutMs);
  return RunClusterJob(o, rv, env.rank, env.size, *node_of_rank, hosts, env.how, "slurm" + id);
}

std::unique_ptr<Rendezvous> MakeFileRendezvous(const std::string& dir, const std::string& id,
                                               int rank, int64_t timeout_ms) {
  return std::make_unique<FileRendezvous>(dir, id, rank, timeout_ms);
}

StatusOr<std::vector<int>> SlurmNodeOfRank(const std::string& tasks_per_node, int world) {
  // "2(x3),1": three nodes with 2 tasks, then one with 1; block distribution fills node by node.
  std::vector<int> out;
  int node = 0;
  size_t pos = 0;
  const auto bad = [&]() {
    return Status::InvalidArgument("SLURM_STEP_TASKS_PER_NODE '" + tasks_per_node +
                                   "': expected e.g. 4 or 2(x3),1");
  };
  while (pos < tasks_per_node.size()) {
    size_t end = tasks_per_node.find(',', pos);
    if (end == std::string::npos) end = tasks_per_node.size();
    const std::string part = tasks_per_node.substr(pos, end - pos);
    int count = 0, repeat = 1;
    char tail = 0;
    if (std::sscanf(part.c_str(), "%d(x%d)%c", &count, &repeat, &tail) == 2 ||
        (std::sscanf(part.c_str(), "%d%c", &count, &tail) == 1 &&
         part.find('(') == std::string::npos)) {
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
                                   std::to_string(out.size()) + " tasks, the step has " +
                                   std::to_string(world));
  return out;
}

}  // namespace m6rec
