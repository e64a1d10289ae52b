// Cluster launches: `mpirun -np N m6rec train --config X.yaml` (or `srun m6rec train ...`) runs a
// whole job, each process taking its role from its MPI rank (cluster.placement), MPI carrying the
// rendezvous (rank 0 runs the scheduler and broadcasts its address and the job token; see
// Rendezvous) and the workers' dense allreduce (their own MPI communicator). Works across hosts
// with cluster.host: auto (each process binds its own host's address); the run directory must then
// be on shared storage.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/config.h"
#include "common/status.h"
#include "launch/local_cluster.h"
#include "worker/mpi_communicator.h"

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
  int index = 0;  // rank within the role
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

// How the ranks of a cluster launch meet: rank 0 publishes a few messages (0: the run directory
// or why there is none, 1: the scheduler's address) and every other rank receives them, over an
// MPI broadcast (mpirun) or files (srun). Each message is a control frame: a MsgHeader (type
// RENDEZVOUS, the job token that rank 0 made, request_id = the message's index, sender 0) and
// a JSON object. Receivers check the framing, magic, version, type and index, and that every
// message after the first carries the first one's token; a message that does not check out is
// an error naming where it came from (the file), never a wrong value.
// Threading: one thread per process; every rank calls Share for the same messages in order.
class Rendezvous {
 public:
  virtual ~Rendezvous() = default;
  // The next message: rank 0 publishes *token and *body; any other rank receives them into
  // *token and *body. `where` (optional) names the carrier, for the caller's own errors.
  Status Share(uint64_t* token, nlohmann::json* body, std::string* where = nullptr);
  // The workers' own communicator, where the launch has one (MPI; else null).
  virtual StatusOr<std::shared_ptr<const MpiCommunicator>> SplitWorkers(bool is_worker,
                                                                        int index) = 0;
  // Once the job is over (or failed), on every rank.
  virtual void Finish() = 0;

 protected:
  explicit Rendezvous(int rank) : rank_(rank) {}
  // The transport: message k's bytes from rank 0 to every rank; *where names what carried them.
  virtual Status Transfer(int k, std::string* bytes, std::string* where) = 0;

 private:
  const int rank_;
  int next_ = 0;
  uint64_t token_ = 0;  // message 0's, which later ones must repeat
};

// Rank 0 writes message k to DIR/.rendezvous-<id>-<k> (atomically: write, then rename); the
// others poll for it for up to timeout_ms. <id> names the job step, so a reused directory never
// serves stale news. Finish() removes rank 0's files.
std::unique_ptr<Rendezvous> MakeFileRendezvous(const std::string& dir, const std::string& id,
                                               int rank, int64_t timeout_ms);

// The bytes of rendezvous message `index`, and their checked decoding (`where` names the
// source in errors). Decode does not check the token: Rendezvous::Share does, across messages.
std::string EncodeRendezvousMessage(uint64_t token, uint64_t index, const nlohmann::json& body);
Status DecodeRendezvousMessage(const std::string& bytes, uint64_t index, const std::string& where,
                               uint64_t* token, nlohmann::json* body);

// The node index of each rank of a step under block distribution, from
// SLURM_STEP_TASKS_PER_NODE ("4", "2(x3),1"); "" = all on one node.
StatusOr<std::vector<int>> SlurmNodeOfRank(const std::string& tasks_per_node, int world);

}  // namespace m6rec
