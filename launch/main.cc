// m6rec: one binary, one role per process. This file only parses the command line and wires the
// component libraries (common, ps, scheduler, worker, launch).
#include <malloc.h>

#include <cstdio>
#include <cstdlib>
#include <algorithm>
#include <cstring>
#include <sstream>
#include <string>

#include "common/config.h"
#include "common/logging.h"
#include "common/transport.h"
#include "common/util.h"
#include "launch/args.h"
#include "launch/bench.h"
#include "launch/cluster_launch.h"
#include "launch/local_cluster.h"
#include "launch/offline.h"
#include "launch/roles.h"
#include "worker/synthetic_data.h"

using namespace m6rec;

namespace {

const char kUsage[] = R"(m6rec - distributed training of M6-Rec style recommenders

usage: m6rec <command> [options]

commands:
  local      run a job on a local simulated cluster (1 scheduler + S servers + W workers as
             real processes on 127.0.0.1); the quick start
  train      train a job: under mpirun or srun each process takes its role from its rank
             (mpirun -np N m6rec train --config X.yaml; srun m6rec train --config X.yaml);
             otherwise, or with --local, on the local simulated cluster
  scheduler  run the scheduler role (control plane, rendezvous, failure detection, HTTP status)
  server     run a parameter server role (sparse tables in RocksDB or memory)
  worker     run a worker role (data, model, PS client)
  eval       evaluate a finished m6 run from its checkpoint: 'm6rec eval --run-dir DIR'
  recommend  top-K items for a user from a run's checkpoint (seen items excluded):
             'm6rec recommend --run-dir DIR --user U [-k 10]'
  data       data tools: 'm6rec data synth --out DIR' writes the synthetic dataset
  bench      benchmarks: 'm6rec bench ps' measures the parameter-server data plane
  help       this text

common options:
  --config FILE      job configuration (YAML); 'local'/'train' default to the built-in one
  --set PATH=VALUE   override a config field, e.g. --set cluster.workers=4 (repeatable)
  --log-level LEVEL  debug | info | warn | error

role options (scheduler/server/worker; the local launcher passes them for you):
  --scheduler HOST:PORT   where the scheduler listens
  --rank N                requested rank within the role
  --data-dir DIR          server: RocksDB directory; worker: dataset directory
  --run-dir DIR           worker: where summaries are written
  --port-file FILE        scheduler / standalone server: write the bound port there
  --standalone            server: no scheduler, serve every slot until SIGTERM
  The job token comes from the environment: M6REC_TOKEN=<16 hex digits>.

examples:
  m6rec local                                    # built-in default job
  m6rec train --local --config configs/default.yaml --set train.epochs=2
  m6rec bench ps --quick
)";

int Usage(int code) {
  std::fputs(kUsage, code == 0 ? stdout : stderr);
  return code;
}

int Die(const Status& s, int code = 2) {
  std::fprintf(stderr, "m6rec: %s\n", s.message().c_str());
  return code;
}

const std::set<std::string> kCommonOptions = {"config", "set", "log-level"};

std::set<std::string> With(std::set<std::string> a, std::initializer_list<const char*> more) {
  for (auto m : more) a.insert(m);
  return a;
}

Status ApplyLogLevel(const Args& a) {
  LogLevel level;
  std::string l = a.Get("log-level", "info");
  if (!ParseLogLevel(l, &level)) return Status::InvalidArgument("--log-level: unknown level '" + l + "'");
  SetLogLevel(level);
  return Status::OK();
}

int RunRole(const std::string& role, int argc, char** argv) {
  auto args = Args::Parse(argc, argv, 2, {"standalone", "help"},
                          With(kCommonOptions, {"scheduler", "rank", "data-dir", "run-dir", "port-file"}));
  if (!args.ok()) return Die(args.status());
  if (args->Has("help")) return Usage(0);
  Status st = ApplyLogLevel(*args);
  if (!st.ok()) return Die(st);
  if (!args->Has("config")) return Die(Status::InvalidArgument(role + ": --config is required"));
  auto cfg = LoadConfig(args->Get("config"), args->GetAll("set"));
  if (!cfg.ok()) return Die(cfg.status());
  RoleOptions o;
  o.cfg = *cfg;
  const char* tok = std::getenv("M6REC_TOKEN");
  if (!tok || !ParseToken(tok, &o.token))
    return Die(Status::InvalidArgument(
        role + ": no job token: set M6REC_TOKEN to the job's 16-hex-digit token (the local launcher does this)"));
  auto rank = args->GetInt("rank", -1);
  if (!rank.ok()) return Die(rank.status());
  o.rank = *rank;
  o.run_dir = args->Get("run-dir", ".");
  o.data_dir = args->Get("data-dir");
  o.port_file = args->Get("port-file");
  o.standalone = args->Has("standalone");
  if (role == "scheduler") {
    o.scheduler_host = o.cfg.cluster.host;
    return RunSchedulerRole(o);
  }
  if (!o.standalone) {
    if (!args->Has("scheduler"))
      return Die(Status::InvalidArgument(role + ": --scheduler HOST:PORT is required"));
    st = ParseHostPort(args->Get("scheduler"), &o.scheduler_host, &o.scheduler_port);
    if (!st.ok()) return Die(st.WithContext("--scheduler"));
  }
  return role == "server" ? RunServerRole(o) : RunWorkerRole(o);
}

int RunLocal(int first, int argc, char** argv, bool from_train) {
  auto args = Args::Parse(argc, argv, first, {"local", "help"}, With(kCommonOptions, {"run-dir"}));
  if (!args.ok()) return Die(args.status());
  if (args->Has("help")) return Usage(0);
  Status st = ApplyLogLevel(*args);
  if (!st.ok()) return Die(st);
  LocalClusterOptions o;
  o.config_path = args->Get("config");
  o.overrides = args->GetAll("set");
  o.run_dir = args->Get("run-dir");
  o.log_level = args->Get("log-level", "info");
  // train under mpirun or srun: this process is one rank of the job; otherwise (and with
  // --local) the local simulated cluster.
  const LaunchEnv env = DetectLaunch();
  if (from_train && !args->Has("local") && env.kind == LaunchEnv::Kind::kMpi && env.size > 1)
    return RunMpiJob(o, &argc, &argv);
  if (from_train && !args->Has("local") && env.kind == LaunchEnv::Kind::kSlurm && env.size > 1)
    return RunSlurmJob(o);
  return RunLocalCluster(o);
}

int RunServe(const std::string& mode, int argc, char** argv) {
  auto args = Args::Parse(argc, argv, 2, {"help"}, {"run-dir", "user", "k", "set", "log-level"});
  if (!args.ok()) return Die(args.status());
  if (args->Has("help")) return Usage(0);
  Status st = ApplyLogLevel(*args);
  if (!st.ok()) return Die(st);
  OfflineOptions o;
  o.mode = mode;
  o.run_dir = args->Get("run-dir");
  o.overrides = args->GetAll("set");
  if (o.run_dir.empty()) return Die(Status::InvalidArgument(mode + ": --run-dir DIR (a finished run) is required"));
  auto user = args->GetInt("user", -1);
  auto k = args->GetInt("k", 10);
  if (!user.ok()) return Die(user.status());
  if (!k.ok()) return Die(k.status());
  if (mode == "recommend" && *user < 0) return Die(Status::InvalidArgument("recommend: --user U is required"));
  if (*k < 1) return Die(Status::InvalidArgument("-k must be at least 1"));
  o.user = *user;
  o.k = *k;
  return RunOffline(o);
}

int RunData(int argc, char** argv) {
  if (argc < 3 || std::strcmp(argv[2], "synth") != 0) {
    std::fprintf(stderr, "usage: m6rec data synth --out DIR [--config FILE] [--set data.synth.users=N]\n");
    return 2;
  }
  auto args = Args::Parse(argc, argv, 3, {}, With(kCommonOptions, {"out", "seed"}));
  if (!args.ok()) return Die(args.status());
  if (!args->Has("out")) return Die(Status::InvalidArgument("data synth: --out DIR is required"));
  auto cfg = args->Has("config") ? LoadConfig(args->Get("config"), args->GetAll("set"))
                                 : ParseConfig(DefaultConfigYaml(), "<built-in default>", args->GetAll("set"));
  if (!cfg.ok()) return Die(cfg.status());
  uint64_t seed = cfg->seed;
  if (args->Has("seed")) seed = std::strtoull(args->Get("seed").c_str(), nullptr, 10);
  Status s = WriteSynthetic(cfg->data.synth, seed, args->Get("out"));
  if (!s.ok()) return Die(s, 1);
  std::printf("wrote synthetic data (%d users, %d items, %d domains) to %s\n", cfg->data.synth.users,
              cfg->data.synth.items, cfg->data.synth.domains, args->Get("out").c_str());
  return 0;
}

int RunBench(int argc, char** argv) {
  if (argc < 3 || std::strcmp(argv[2], "ps") != 0) {
    std::fprintf(stderr,
                 "usage: m6rec bench ps [--json] [--quick] [--seconds S] [--depth N] [--threads N] [--message-bytes B]\n"
                 "                      [--stores memory,rocksdb-hot,rocksdb-cold] [--dims 16,64,256]\n"
                 "                      [--batches 1000,10000,100000] [--servers 1,2]\n");
    return 2;
  }
  auto args = Args::Parse(argc, argv, 3, {"json", "quick"},
                          {"seconds", "depth", "threads", "tmp-dir", "log-level", "stores", "dims",
                           "batches", "servers", "message-bytes"});
  if (!args.ok()) return Die(args.status());
  PsBenchOptions o;
  o.json = args->Has("json");
  o.quick = args->Has("quick");
  if (o.quick) {  // the aim case; explicit --dims/--batches/--servers still override
    o.dims = {64};
    o.batches = {10000};
    o.servers = {1};
  }
  if (args->Has("seconds")) o.seconds = std::atof(args->Get("seconds").c_str());
  auto depth = args->GetInt("depth", 1);
  auto threads = args->GetInt("threads", 1);
  if (!depth.ok()) return Die(depth.status());
  if (!threads.ok()) return Die(threads.status());
  o.depth = std::max(1, *depth);
  o.threads = std::max(1, *threads);
  o.tmp_dir = args->Get("tmp-dir", "/tmp");
  if (args->Has("message-bytes")) o.message_bytes = std::strtoull(args->Get("message-bytes").c_str(), nullptr, 10);
  auto list = [&](const std::string& name, std::vector<int>* out) -> Status {
    if (!args->Has(name)) return Status::OK();
    out->clear();
    std::stringstream ss(args->Get(name));
    for (std::string x; std::getline(ss, x, ',');) {
      char* end = nullptr;
      long v = std::strtol(x.c_str(), &end, 10);
      if (x.empty() || *end != '\0' || v <= 0)
        return Status::InvalidArgument("--" + name + ": '" + x + "' is not a positive integer");
      out->push_back(static_cast<int>(v));
    }
    return Status::OK();
  };
  for (auto [name, out] : {std::make_pair("dims", &o.dims), std::make_pair("batches", &o.batches),
                           std::make_pair("servers", &o.servers)}) {
    Status st = list(name, out);
    if (!st.ok()) return Die(st);
  }
  if (args->Has("stores")) {
    o.stores.clear();
    std::stringstream ss(args->Get("stores"));
    for (std::string x; std::getline(ss, x, ',');) {
      if (x != "memory" && x != "rocksdb-hot" && x != "rocksdb-cold")
        return Die(Status::InvalidArgument("--stores: '" + x + "' (memory, rocksdb-hot, rocksdb-cold)"));
      o.stores.push_back(x);
    }
  }
  SetLogLevel(LogLevel::kWarn);
  return RunPsBench(o);
}

}  // namespace

int main(int argc, char** argv) {
  // Message buffers of a few MB are allocated and freed on different threads every request.
  // Left to glibc's defaults they are mmap'ed and munmap'ed each time (page faults, TLB
  // shootdowns): 10x slower data plane on the benchmark. Keep buffers up to 256 MiB in the heap.
  // M6REC_MMAP_THRESHOLD (bytes) overrides; 0 restores glibc's behaviour.
  long mmap_threshold = 256L << 20;
  if (const char* t = std::getenv("M6REC_MMAP_THRESHOLD")) mmap_threshold = std::atol(t);
  if (mmap_threshold > 0) {
    mallopt(M_MMAP_THRESHOLD, static_cast<int>(mmap_threshold));
    mallopt(M_TRIM_THRESHOLD, static_cast<int>(std::min(2 * mmap_threshold, 1L << 30)));
  }
  if (argc < 2) return Usage(2);
  std::string cmd = argv[1];
  if (cmd == "help" || cmd == "--help" || cmd == "-h") return Usage(0);
  if (cmd == "scheduler" || cmd == "server" || cmd == "worker") return RunRole(cmd, argc, argv);
  if (cmd == "local") return RunLocal(2, argc, argv, false);
  if (cmd == "train") return RunLocal(2, argc, argv, true);
  if (cmd == "data") return RunData(argc, argv);
  if (cmd == "eval" || cmd == "recommend") {
    // "-k 10" is accepted as well as "--k 10".
    for (int i = 2; i < argc; ++i)
      if (std::strcmp(argv[i], "-k") == 0) argv[i] = const_cast<char*>("--k");
    return RunServe(cmd, argc, argv);
  }
  if (cmd == "bench") return RunBench(argc, argv);
  std::fprintf(stderr, "m6rec: unknown command '%s'\n\n", cmd.c_str());
  return Usage(2);
}
