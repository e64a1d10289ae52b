#include "launch/mpi_launch.h"

#ifdef M6REC_HAVE_MPI
#include <mpi.h>

#include "worker/mpi_communicator_impl.h"
#endif

namespace m6rec {

#ifdef M6REC_HAVE_MPI
namespace {

bool g_mpi_started = false;  // MpiStart ran and MpiStop has not

Status MpiError(int code, const char* what) {
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(code, msg, &len);
  return Status::Internal(std::string("MPI ") + what + ": " + std::string(msg, len));
}

}  // namespace

StatusOr<MpiProcess> MpiStart(int* argc, char*** argv) {
  int provided = 0;
  int rc = MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
  if (rc != MPI_SUCCESS) return MpiError(rc, "init");
  g_mpi_started = true;
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  MpiProcess p;
  MPI_Comm_rank(MPI_COMM_WORLD, &p.rank);
  MPI_Comm_size(MPI_COMM_WORLD, &p.size);
  return p;
}

void MpiStop() {
  if (!g_mpi_started) return;
  MPI_Finalize();
  g_mpi_started = false;
}

Status MpiBroadcastString(std::string* s, int root) {
  int n = static_cast<int>(s->size());
  int rc = MPI_Bcast(&n, 1, MPI_INT, root, MPI_COMM_WORLD);
  if (rc != MPI_SUCCESS) return MpiError(rc, "broadcast");
  s->resize(n);
  rc = MPI_Bcast(s->data(), n, MPI_CHAR, root, MPI_COMM_WORLD);
  return rc == MPI_SUCCESS ? Status::OK() : MpiError(rc, "broadcast");
}

StatusOr<std::vector<std::string>> MpiAllGatherString(const std::string& mine) {
  int size = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  int n = static_cast<int>(mine.size());
  std::vector<int> lens(size), offs(size);
  int rc = MPI_Allgather(&n, 1, MPI_INT, lens.data(), 1, MPI_INT, MPI_COMM_WORLD);
  if (rc != MPI_SUCCESS) return MpiError(rc, "allgather");
  int total = 0;
  for (int r = 0; r < size; ++r) {
    offs[r] = total;
    total += lens[r];
  }
  std::string all(total, '\0');
  rc = MPI_Allgatherv(mine.data(), n, MPI_CHAR, all.data(), lens.data(), offs.data(), MPI_CHAR,
                      MPI_COMM_WORLD);
  if (rc != MPI_SUCCESS) return MpiError(rc, "allgather");
  std::vector<std::string> out;
  for (int r = 0; r < size; ++r) out.push_back(all.substr(offs[r], lens[r]));
  return out;
}

StatusOr<std::shared_ptr<const MpiCommunicator>> MpiSplitWorkers(bool is_worker, int key) {
  MPI_Comm comm = MPI_COMM_NULL;
  int rc = MPI_Comm_split(MPI_COMM_WORLD, is_worker ? 1 : MPI_UNDEFINED, key, &comm);
  if (rc != MPI_SUCCESS) return MpiError(rc, "split");
  if (!is_worker) return std::shared_ptr<const MpiCommunicator>();
  MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN);
  auto impl = std::make_unique<MpiCommunicator::Impl>();
  impl->comm = comm;
  return std::shared_ptr<const MpiCommunicator>(std::make_shared<MpiCommunicator>(std::move(impl)));
}
#else
namespace {
Status NoMpi() {
  return Status::Unavailable("this build has no MPI (configure with an MPI installed)");
}
}  // namespace
StatusOr<MpiProcess> MpiStart(int*, char***) { return NoMpi(); }
void MpiStop() {}
Status MpiBroadcastString(std::string*, int) { return NoMpi(); }
StatusOr<std::vector<std::string>> MpiAllGatherString(const std::string&) { return NoMpi(); }
StatusOr<std::shared_ptr<const MpiCommunicator>> MpiSplitWorkers(bool, int) { return NoMpi(); }
#endif

}  // namespace m6rec
