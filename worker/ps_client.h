// PsClient: a worker's connection to every parameter server.
// A pull or push takes the batch's keys in any order with duplicates, de-duplicates them, groups
// them by server (slot map), and sends one request per server, all in flight at once. Pulled rows
// come back gathered into one contiguous buffer in the caller's key order; pushed gradients are
// summed per unique key before they leave. The API is asynchronous (Pull/PushAsync return a
// ticket, Wait completes it) so a worker can prefetch the next batch while it computes; replies
// for any outstanding ticket are taken in whatever order they arrive.
// Threading: one PsClient per thread (it owns ZeroMQ sockets). Not thread-safe.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>
#include <zmq.hpp>

#include "common/cluster_view.h"
#include "common/config.h"
#include "common/key_index.h"
#include "common/protocol.h"
#include "common/status.h"
#include "worker/sparse_tables.h"

namespace m6rec {

struct PsClientOptions {
  ClusterView view;
  std::vector<TableSpec> tables;
  uint64_t token = 0;
  uint32_t sender_rank = kNoRank;
  int request_timeout_ms = 60000;
  // A server's share of a batch larger than this (in row bytes) is split into several requests
  // sent together, so the server's lookups, the transfer and the client's gather overlap even
  // for one synchronous pull. 0 = one request per server.
  size_t target_message_bytes = 1 << 20;
  // Polled while waiting for replies (every 100 ms): returning true (with a reason) abandons the
  // wait with Aborted, so a worker stops promptly when the scheduler declares the job failed
  // instead of waiting out request_timeout_ms on a dead server.
  std::function<bool(std::string*)> should_abort;
};

struct PsClientStats {
  uint64_t pulls = 0, pushes = 0;
  uint64_t keys_requested = 0, keys_unique = 0;
  uint64_t bytes_sent = 0, bytes_received = 0;
};

class PsClient final : public SparseTables {
 public:
  static StatusOr<std::unique_ptr<PsClient>> Create(const PsClientOptions& opts);
  ~PsClient() override;
  PsClient(const PsClient&) = delete;
  PsClient& operator=(const PsClient&) = delete;

  // Starts pulling the rows of keys[0..n) of `table`. The keys are copied; the caller's buffer
  // may be reused at once.
  StatusOr<Ticket> PullAsync(TableId table, const Key* keys, size_t n) override;
  // Waits for a pull and writes n * dim floats to out, row i for keys[i].
  Status WaitPull(Ticket t, float* out) override;

  // Starts pushing gradients (n * dim floats, row i for keys[i]); duplicates are summed.
  StatusOr<Ticket> PushAsync(TableId table, const Key* keys, size_t n, const float* grads) override;
  // Waits until every server acknowledged (i.e. applied and made durable) its part.
  Status WaitPush(Ticket t) override;

  // Every server snapshots its store to dir/server-<rank> (ADMIN checkpoint).
  Status Checkpoint(const std::string& dir) override;
  size_t num_shards() const override { return servers_.size(); }

  // Sends {"cmd": cmd} (and the request's other fields) to one server; returns its JSON reply.
  StatusOr<std::string> Admin(uint32_t server, const std::string& cmd,
                              const std::map<std::string, std::string>& fields = {});

  size_t num_servers() const { return servers_.size(); }
  const PsClientStats& stats() const { return stats_; }

 private:
  struct ServerConn {
    std::string endpoint;
    std::unique_ptr<zmq::socket_t> sock;
  };
  struct Part {
    uint32_t server;
    uint64_t request_id;
    uint64_t count;  // unique keys in this request
    bool done = false;
    zmq::message_t rows;  // pull reply payload
  };
  struct Pending {
    bool is_pull = true;
    TableId table = 0;
    uint32_t dim = 0;
    std::vector<uint32_t> where;  // per input key: (server << 24) | index among its server's keys
    std::vector<Part> parts;      // a server's requests are consecutive, `chunk` keys each
    std::vector<int> first_part;  // server -> index of its first part, -1 if none
    uint32_t chunk = 0;           // keys per request
    size_t outstanding = 0;
    Status error;
  };

  explicit PsClient(const PsClientOptions& opts);
  Status Connect();
  // Groups keys by server (de-duplicated) into pending.where and per-server key lists.
  Status Group(TableId table, const Key* keys, size_t n, Pending* p,
               std::vector<std::vector<Key>>* per_server);
  Status SendPart(Pending* p, uint32_t server, uint16_t type, const Key* keys, size_t n,
                  zmq::message_t* values);
  // Sends every server's keys (and, for a push, gradient frames) in chunks.
  Status SendAll(Pending* p, uint16_t type, const std::vector<std::vector<Key>>& per_server,
                 std::vector<zmq::message_t>* values);
  uint32_t ChunkKeys(uint32_t dim) const;
  // Receives replies until ticket t has none outstanding (or the deadline passes).
  Status Drive(Ticket t);
  void Dispatch(uint32_t server, std::vector<zmq::message_t>& parts);

  PsClientOptions opts_;
  zmq::context_t ctx_;
  std::vector<ServerConn> servers_;
  std::map<Ticket, Pending> pending_;
  std::map<uint64_t, Ticket> by_request_;  // request id -> ticket
  Ticket next_ticket_ = 1;
  uint64_t next_request_ = 1;
  KeyIndex dedup_;
  PsClientStats stats_;
};

}  // namespace m6rec
