// A handle on an MPI communicator: a group of MPI ranks that the "mpi" collective runs over
// (CollectiveOptions::mpi_comm). Cluster launches make the workers' own one by splitting the
// world (launch/mpi_launch.h) and pass it down explicitly; there is no process-global
// communicator. Opaque so that headers never include mpi.h: the MPI_Comm is in
// worker/mpi_communicator_impl.h, for the few .cc files built with MPI that need it.
// The handle owns the communicator and frees it when destroyed (skipped once MPI is finalised).
// Immutable after creation: rank() and size() may be read from any thread.
#pragma once

#include <memory>

namespace m6rec {

class MpiCommunicator {
 public:
  struct Impl;  // holds the MPI_Comm (worker/mpi_communicator_impl.h)
  explicit MpiCommunicator(std::unique_ptr<Impl> impl);
  ~MpiCommunicator();
  MpiCommunicator(const MpiCommunicator&) = delete;
  MpiCommunicator& operator=(const MpiCommunicator&) = delete;

  int rank() const { return rank_; }  // this process's rank in the group
  int size() const { return size_; }  // the group's size
  const Impl& impl() const { return *impl_; }

 private:
  std::unique_ptr<Impl> impl_;
  int rank_ = 0, size_ = 0;
};

}  // namespace m6rec
