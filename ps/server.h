// Server: the data plane of one parameter server. Binds a ZeroMQ ROUTER on tcp://host:port,
// fans requests out to `threads` handler threads (inproc DEALER backend), and answers PULL,
// PUSH and ADMIN requests against its TableStore. It owns a set of key slots; a key outside
// them, a key of another table, a wrong dim, a non-finite gradient or a malformed message is
// refused whole (ERROR reply) before any row is touched; a message without the job's token or
// without a valid header is dropped and counted.
// Threading: Create, SetOwnedSlots and Start from one thread; Stop from any thread (idempotent);
// counters are atomics, readable from any thread.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>
#include <zmq.hpp>

#include "common/clock.h"
#include "common/config.h"
#include "common/protocol.h"
#include "ps/row_lifecycle.h"
#include "ps/table_store.h"

namespace m6rec {

struct ServerOptions {
  std::vector<TableSpec> tables;
  PsConfig ps;
  std::string host = "127.0.0.1";
  int port = 0;              // 0 = any free port
  std::string data_dir;      // RocksDB directory
  std::string restore_from;  // start from these rows (a checkpoint's server-<rank>; "" = none)
  uint64_t token = 0;
  uint32_t rank = 0;
  int io_threads = 1;            // ZeroMQ I/O threads
  uint32_t servers = 1;          // how many servers share the tables (their row caps' share)
  const Clock* clock = nullptr;  // the row lifecycle's time (null: the steady clock)
};

struct ServerCounters {
  std::atomic<uint64_t> requests{0}, pulls{0}, pushes{0}, admins{0};
  std::atomic<uint64_t> rows_pulled{0}, rows_pushed{0};
  std::atomic<uint64_t> dropped_bad_token{0}, dropped_malformed{0}, refused{0};
  // Time spent serving pulls and pushes (checks, store, optimizer), in microseconds: divided by
  // pulls/pushes over an interval it is the server's share of a request's latency.
  std::atomic<uint64_t> pull_us{0}, push_us{0};
};

class Server {
 public:
  static StatusOr<std::unique_ptr<Server>> Create(const ServerOptions& opts);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  int port() const { return port_; }
  // owned[slot] != 0 for the slots this server serves; num_slots = owned.size().
  void SetOwnedSlots(std::vector<uint8_t> owned);
  // Writes the imported rows (tables' init.from) of the owned slots; after SetOwnedSlots and
  // before Start, on a fresh job only (a restored server has its rows). Returns the row count.
  StatusOr<uint64_t> ImportRows();
  void Start();
  void Stop();

  TableStore& store() { return *store_; }
  RowLifecycle& lifecycle() { return *lifecycle_; }
  const ServerCounters& counters() const { return counters_; }
  std::string StatsJson() const;

 private:
  explicit Server(const ServerOptions& opts);
  // Serves requests on `sock` until the context is shut down.
  void HandlerLoop(int id, zmq::socket_t& sock);
  // Handles one request (parts[0] is the routing identity); fills `reply` or leaves it empty
  // to drop the message.
  void Handle(std::vector<zmq::message_t>& parts, std::vector<zmq::message_t>* reply);

  ServerOptions opts_;
  std::unique_ptr<TableStore> store_;
  SteadyClock steady_;
  std::unique_ptr<RowLifecycle> lifecycle_;
  std::vector<uint8_t> owned_;
  zmq::context_t ctx_;
  zmq::socket_t frontend_;
  zmq::socket_t backend_;
  int port_ = 0;
  std::string backend_ep_;
  std::thread proxy_;
  std::vector<std::thread> handlers_;
  std::atomic<bool> stopping_{false};
  bool started_ = false;
  ServerCounters counters_;
};

}  // namespace m6rec
