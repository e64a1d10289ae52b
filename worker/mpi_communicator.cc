#include "worker/mpi_communicator.h"

#ifdef M6REC_HAVE_MPI
#include "worker/mpi_communicator_impl.h"
#endif

namespace m6rec {

#ifdef M6REC_HAVE_MPI
MpiCommunicator::MpiCommunicator(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {
  MPI_Comm_rank(impl_->comm, &rank_);
  MPI_Comm_size(impl_->comm, &size_);
}

MpiCommunicator::~MpiCommunicator() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized && impl_->comm != MPI_COMM_NULL) MPI_Comm_free(&impl_->comm);
}
#else
// Without MPI nothing can make one (there is no split); the type exists so that options
// structs can name it.
struct MpiCommunicator::Impl {};
MpiCommunicator::MpiCommunicator(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
MpiCommunicator::~MpiCommunicator() = default;
#endif

}  // namespace m6rec
