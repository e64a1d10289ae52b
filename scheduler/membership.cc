#include "scheduler/membership.h"

#include <algorithm>

namespace m6rec {

bool ParseRole(const std::string& s, Role* out) {
  Role r;
  if (!ParseEnum(s, &r) || r == Role::kScheduler) return false;
  *out = r;
  return true;
}

Membership::Membership(int servers, int workers, uint32_t num_slots, const Clock* clock)
    : n_servers_(servers),
      n_workers_(workers),
      clock_(clock),
      server_taken_(servers, false),
      worker_taken_(workers, false),
      slot_map_(RoundRobinSlotMap(num_slots, static_cast<uint32_t>(servers))) {}

StatusOr<uint32_t> Membership::Register(Role role, const std::string& host, int port,
                                        int requested_rank, int pid, ConnId conn) {
  if (Find(conn)) return Status::InvalidArgument("this connection already registered");
  auto& taken = Taken(role);
  const int expected = role == Role::kServer ? n_servers_ : n_workers_;
  int rank = -1;
  if (requested_rank >= 0) {
    if (requested_rank >= expected)
      return Status::InvalidArgument(
          std::string(RoleName(role)) + " rank " + std::to_string(requested_rank) +
          " is out of range: the job has " + std::to_string(expected) + " " + RoleName(role) + "s");
    if (taken[requested_rank])
      return Status::InvalidArgument(std::string(RoleName(role)) + " rank " +
                                     std::to_string(requested_rank) + " is already registered");
    rank = requested_rank;
  } else {
    for (int r = 0; r < expected; ++r)
      if (!taken[r]) {
        rank = r;
        break;
      }
    if (rank < 0)
      return Status::InvalidArgument(std::string("all ") + std::to_string(expected) + " " +
                                     RoleName(role) + " ranks are taken");
  }
  if (role == Role::kServer && port <= 0)
    return Status::InvalidArgument("a server must advertise its data port");
  taken[rank] = true;
  Member m;
  m.role = role;
  m.rank = static_cast<uint32_t>(rank);
  m.host = host;
  m.port = port;
  m.pid = pid;
  m.conn = conn;
  m.last_seen_ms = clock_->NowMs();
  auto& g = Group(role);
  g.push_back(m);
  std::sort(g.begin(), g.end(), [](const Member& a, const Member& b) { return a.rank < b.rank; });
  return static_cast<uint32_t>(rank);
}

bool Membership::Complete() const {
  return static_cast<int>(servers_.size()) == n_servers_ &&
         static_cast<int>(workers_.size()) == n_workers_;
}

std::string Membership::MissingDescription() const {
  std::string out;
  auto add = [&](const std::vector<bool>& taken, const char* role) {
    for (size_t r = 0; r < taken.size(); ++r)
      if (!taken[r]) out += (out.empty() ? "" : ", ") + std::string(role) + " " + std::to_string(r);
  };
  add(server_taken_, "server");
  add(worker_taken_, "worker");
  return out;
}

ClusterView Membership::ViewFor(Role role, uint32_t rank) const {
  ClusterView v;
  v.role = RoleName(role);
  v.rank = rank;
  for (const auto& m : servers_) v.servers.push_back(NodeAddr{m.rank, m.host, m.port, m.pid});
  for (const auto& m : workers_) v.workers.push_back(NodeAddr{m.rank, m.host, m.port, m.pid});
  v.slot_map = slot_map_;
  return v;
}

Member* Membership::Find(ConnId conn) {
  for (auto* g : {&servers_, &workers_})
    for (auto& m : *g)
      if (m.conn == conn) return &m;
  return nullptr;
}

void Membership::Heartbeat(ConnId conn) {
  if (Member* m = Find(conn)) m->last_seen_ms = clock_->NowMs();
}

std::vector<Member> Membership::CheckTimeouts(int64_t timeout_ms) {
  std::vector<Member> dead;
  const int64_t now = clock_->NowMs();
  for (auto* g : {&servers_, &workers_})
    for (auto& m : *g)
      if (m.alive && !m.finished && now - m.last_seen_ms > timeout_ms) {
        m.alive = false;
        dead.push_back(m);
      }
  return dead;
}

bool Membership::MarkDisconnected(ConnId conn, Member* out) {
  Member* m = Find(conn);
  if (!m || !m->alive) return false;
  m->alive = false;
  *out = *m;
  // A worker that reported its result and then left is not a failure.
  return !(m->role == Role::kWorker && m->finished);
}

std::vector<ConnId> Membership::ArriveBarrier(const std::string& name, const std::string& group,
                                              ConnId conn) {
  auto& arrived = barriers_[name];
  arrived.insert(conn);
  std::vector<ConnId> members;
  for (const auto& m : workers_)
    if (m.alive) members.push_back(m.conn);
  if (group == "all")
    for (const auto& m : servers_)
      if (m.alive) members.push_back(m.conn);
  for (ConnId c : members)
    if (!arrived.count(c)) return {};
  std::vector<ConnId> release(arrived.begin(), arrived.end());
  barriers_.erase(name);
  return release;
}

void Membership::MarkFinished(ConnId conn, bool ok, const std::string& summary) {
  if (Member* m = Find(conn)) {
    m->finished = true;
    m->finished_ok = ok;
    m->summary = summary;
  }
}

bool Membership::AllWorkersFinished() const {
  if (static_cast<int>(workers_.size()) != n_workers_) return false;
  for (const auto& m : workers_)
    if (!m.finished) return false;
  return true;
}

bool Membership::AnyWorkerFailed() const {
  for (const auto& m : workers_)
    if (m.finished && !m.finished_ok) return true;
  return false;
}

std::vector<Member> Membership::All() const {
  std::vector<Member> all(servers_);
  all.insert(all.end(), workers_.begin(), workers_.end());
  return all;
}

}  // namespace m6rec
