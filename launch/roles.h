// The three process roles, each wired from the component libraries. Every function returns the
// process exit code and reports its errors on the log (what failed and where).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "common/cluster_view.h"
#include "common/config.h"
#include "worker/mpi_communicator.h"

namespace m6rec {

struct RoleOptions {
  JobConfig cfg;
  uint64_t token = 0;
  std::string scheduler_host = "127.0.0.1";
  int scheduler_port = 0;
  int rank = -1;  // requested rank within the role; -1 = any
  std::string run_dir = ".";
  std::string data_dir;     // server: RocksDB directory; worker: dataset directory override
  std::string port_file;    // scheduler / standalone server: where to write the bound port
  bool standalone = false;  // server: no scheduler, owns every slot, runs until SIGTERM
  // A checkpoint to continue from: a server restores its rows from <it>/server-<rank>, a
  // worker its model, cursor and RNG (empty = a fresh job).
  std::string resume_from;
  // scheduler: called once it is bound, before it serves (cluster launches announce it).
  std::function<void(const std::string& host, int port)> on_scheduler_bound;
  // worker: the workers' own MPI communicator, where the launch split one (mpirun).
  std::shared_ptr<const MpiCommunicator> mpi_workers;
};

int RunSchedulerRole(const RoleOptions& o);
int RunServerRole(const RoleOptions& o);
int RunWorkerRole(const RoleOptions& o);

// The dataset directory a job reads: data.path, or run_dir/data for synthetic data (generated
// there on first use; concurrent callers are safe).
StatusOr<std::string> PrepareData(const JobConfig& cfg, const std::string& run_dir);

}  // namespace m6rec
