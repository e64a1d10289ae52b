// Membership: the scheduler's bookkeeping, free of any I/O so it can be tested with a FakeClock.
// Registration and rank assignment, the slot map, heartbeats and failure detection, barriers and
// job completion. Not thread-safe: the scheduler calls it from its single I/O thread.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/cluster_view.h"
#include "common/config.h"
#include "common/status.h"

namespace m6rec {

// The roles that register (server, worker); Role is common/config.h's.
inline const char* RoleName(Role r) { return EnumName(r); }
bool ParseRole(const std::string& s, Role* out);  // false for anything but server / worker

using ConnId = uint64_t;

struct Member {
  Role role = Role::kWorker;
  uint32_t rank = 0;
  std::string host;
  int port = 0;
  int pid = 0;
  ConnId conn = 0;
  int64_t last_seen_ms = 0;
  bool alive = true;
  bool finished = false;
  bool finished_ok = false;
  std::string summary;  // worker's final report (JSON)
};

class Membership {
 public:
  Membership(int servers, int workers, uint32_t num_slots, const Clock* clock);

  // Registers a node. requested_rank < 0 takes the lowest free rank of the role.
  StatusOr<uint32_t> Register(Role role, const std::string& host, int port, int requested_rank,
                              int pid, ConnId conn);
  bool Complete() const;
  // The view for member (role, rank); valid once Complete().
  ClusterView ViewFor(Role role, uint32_t rank) const;
  std::string MissingDescription() const;  // "server 1, worker 0" not yet registered

  Member* Find(ConnId conn);
  void Heartbeat(ConnId conn);
  // Members silent for longer than timeout_ms become dead; returns them (newly dead only).
  std::vector<Member> CheckTimeouts(int64_t timeout_ms);
  // The connection of a live member closed; returns the member if this killed it.
  bool MarkDisconnected(ConnId conn, Member* out);

  // Barrier `name` over the group ("workers" or "all"); returns the connections to release
  // once every live member of the group has arrived (empty while waiting).
  std::vector<ConnId> ArriveBarrier(const std::string& name, const std::string& group, ConnId conn);

  void MarkFinished(ConnId conn, bool ok, const std::string& summary);
  bool AllWorkersFinished() const;
  bool AnyWorkerFailed() const;

  const std::vector<Member>& servers() const { return servers_; }
  const std::vector<Member>& workers() const { return workers_; }
  std::vector<Member> All() const;
  const std::vector<uint32_t>& slot_map() const { return slot_map_; }
  int expected_servers() const { return n_servers_; }
  int expected_workers() const { return n_workers_; }

 private:
  std::vector<Member>& Group(Role r) { return r == Role::kServer ? servers_ : workers_; }
  std::vector<bool>& Taken(Role r) { return r == Role::kServer ? server_taken_ : worker_taken_; }

  int n_servers_, n_workers_;
  const Clock* clock_;
  std::vector<Member> servers_, workers_;  // indexed by rank once complete
  std::vector<bool> server_taken_, worker_taken_;
  std::vector<uint32_t> slot_map_;
  std::map<std::string, std::set<ConnId>> barriers_;
};

}  // namespace m6rec
