// MPI as the launcher of a whole job (mpirun): process start and stop, the broadcasts and
// gathers of the cluster rendezvous, and the split that gives the workers their own
// communicator (handed to the "mpi" collective through its options, never kept globally).
// All functions but MpiStart/MpiStop are collective over MPI_COMM_WORLD. Call them from the
// thread that called MpiStart (MPI_THREAD_FUNNELED). Builds without MPI keep the same API:
// every call fails with Unavailable (MpiStop does nothing).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "worker/mpi_communicator.h"

namespace m6rec {

struct MpiProcess {
  int rank = 0, size = 1;  // in MPI_COMM_WORLD
};
// MPI_Init_thread (funneled); errors are returned, not fatal, from then on.
StatusOr<MpiProcess> MpiStart(int* argc, char*** argv);
// MPI_Finalize, when MpiStart ran. Communicators still held are not freed after this.
void MpiStop();

// Every rank ends with root's *s.
Status MpiBroadcastString(std::string* s, int root);
// Every rank's `mine`, in rank order.
StatusOr<std::vector<std::string>> MpiAllGatherString(const std::string& mine);

// Splits the world: the ranks with is_worker form a communicator ordered by `key`, returned to
// them; the others get null. Drop the handle before MpiStop.
StatusOr<std::shared_ptr<const MpiCommunicator>> MpiSplitWorkers(bool is_worker, int key);

}  // namespace m6rec
