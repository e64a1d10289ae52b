// The MPI_Comm behind an MpiCommunicator. Include only from .cc files built with MPI
// (M6REC_HAVE_MPI): the mpi collective and the launcher's split.
#pragma once

#include <mpi.h>

#include "worker/mpi_communicator.h"

namespace m6rec {

struct MpiCommunicator::Impl {
  MPI_Comm comm = MPI_COMM_NULL;  // owned: freed by ~MpiCommunicator
};

}  // namespace m6rec
