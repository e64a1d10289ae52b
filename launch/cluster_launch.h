// Cluster launches: `mpirun -np N m6rec train --config X.yaml` (or `srun m6rec train ...`) runs a whole job, each process
// taking its role from its MPI rank (cluster.placement), MPI carrying the rendezvous (rank 0
// runs the scheduler and broadcasts its address and the job token) and the workers' dense
// allreduce (their own MPI communicator). Works across hosts with cluster.host: auto (each
// process binds its own host's address); the run directory must then be on shared storage.
#pragma once

#include <string>
#include <vector>

#include "common/config.h"
#include "common/status.h"
#include "launch/local_cluster.h"

namespace m6rec {

// How this process was started.
struct LaunchEnv {
  enum class Kind { kNone, kMpi, kSlurm };
  Kind kind = Kind::kNone;
  int rank = 0, size = 1;
  std::string how;  // e.g. "OpenMPI (OMPI_COMM_WORLD_*)"
};
// Reads the launcher's environment variables (OpenMPI, MPICH/PMI, PMIx; then srun's). An MPI
// launch wins: mpirun inside a Slurm allocation also leaves SLURM_* variables behind.
LaunchEnv DetectLaunch();

struct RolePlan {
  Role role = Role::kWorker;
  int index = 0;     // rank within the role
};
// The role of every global rank. node_of_rank[r] = the node index of rank r (placement
// server_per_node only). Fails when there would be no worker.
StatusOr<std::vector<RolePlan>> PlanRoles(int world, int servers, Placement placement,
                                          const std::vector<int>& node_of_rank);

// "auto" -> this host's IPv4 address on `interface` (or its first non-loopback one); anything
// else is returned as is.
StatusOr<std::string> ResolveHost(const std::string& host, const std::string& interface);

// Runs this process's part of the job under mpirun; returns the process exit code.
int RunMpiJob(const LocalClusterOptions& o, int* argc, char*** argv);

// The same under srun without MPI (`srun m6rec train ...`): roles from SLURM_PROCID, rank 0's
// run directory and scheduler address reach the others through a file under the run directory
// (or runs/ when none is given), which must be on storage every node sees.
int RunSlurmJob(const LocalClusterOptions& o);
constexpr int64_t kSlurmRendezvousTimeoutMs = 120000;

// The node index of each rank of a step under block distribution, from
// SLURM_STEP_TASKS_PER_NODE ("4", "2(x3),1"); "" = all on one node.
StatusOr<std::vector<int>> SlurmNodeOfRank(const std::string& tasks_per_node, int world);

}  // namespace m6rec
