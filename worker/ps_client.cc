#include "worker/ps_client.h"

#include <algorithm>
#include <cstring>
#include <nlohmann/json.hpp>

#include "common/clock.h"
#include "common/protocol.h"
#include "common/transport.h"

namespace m6rec {

PsClient::PsClient(const PsClientOptions& opts) : opts_(opts), ctx_(1) {}

PsClient::~PsClient() {
  for (auto& s : servers_)
    if (s.sock) s.sock->close();
  ctx_.close();
}

StatusOr<std::unique_ptr<PsClient>> PsClient::Create(const PsClientOptions& opts) {
  if (opts.view.servers.empty()) return Status::InvalidArgument("PS client: no servers");
  if (opts.view.slot_map.empty()) return Status::InvalidArgument("PS client: empty slot map");
  std::unique_ptr<PsClient> c(new PsClient(opts));
  M6_RETURN_IF_ERROR(c->Connect());
  return c;
}

Status PsClient::Connect() {
  for (const auto& s : opts_.view.servers) {
    ServerConn conn;
    conn.endpoint = TcpEndpoint(s.host, s.port);
    conn.sock = std::make_unique<zmq::socket_t>(ctx_, zmq::socket_type::dealer);
    try {
      conn.sock->set(zmq::sockopt::linger, 0);
      conn.sock->set(zmq::sockopt::sndhwm, 0);
      conn.sock->set(zmq::sockopt::rcvhwm, 0);
      conn.sock->connect(conn.endpoint);
    } catch (const zmq::error_t& e) {
      return Status::Unavailable("cannot connect to server " + std::to_string(s.rank) + " at " +
                                 conn.endpoint + ": " + e.what());
    }
    servers_.push_back(std::move(conn));
  }
  return Status::OK();
}

Status PsClient::Group(TableId table, const Key* keys, size_t n, Pending* p,
                       std::vector<std::vector<Key>>* per_server) {
  if (table >= opts_.tables.size())
    return Status::InvalidArgument("PS client: unknown table id " + std::to_string(table));
  p->table = table;
  p->dim = opts_.tables[table].dim;
  p->where.resize(n);
  per_server->assign(servers_.size(), {});
  dedup_.Clear();
  const uint32_t num_slots = static_cast<uint32_t>(opts_.view.slot_map.size());
  for (size_t i = 0; i < n; ++i) {
    const Key k = keys[i];
    uint32_t u = dedup_.Find(k);
    if (u == KeyIndex::kNone) {
      if (KeyTable(k) != table)
        return Status::InvalidArgument("key " + std::to_string(k) + " is not of table " +
                                       std::to_string(table));
      const uint32_t s = opts_.view.slot_map[SlotOf(k, num_slots)];
      auto& list = (*per_server)[s];
      // Pack (server, index) into the value: index < 2^24 per server and request.
      u = (s << 24) | static_cast<uint32_t>(list.size());
      if (list.size() >= (1u << 24) || s >= 256)
        return Status::InvalidArgument("PS client: batch too large (>16M unique keys per server)");
      list.push_back(k);
      dedup_.Insert(k, u);
    }
    p->where[i] = u;
  }
  p->first_part.assign(servers_.size(), -1);
  stats_.keys_requested += n;
  stats_.keys_unique += dedup_.size();
  return Status::OK();
}

uint32_t PsClient::ChunkKeys(uint32_t dim) const {
  if (opts_.target_message_bytes == 0) return 1u << 24;
  return static_cast<uint32_t>(
      std::max<size_t>(256, opts_.target_message_bytes / (size_t{dim} * sizeof(float))));
}

Status PsClient::SendPart(Pending* p, uint32_t server, uint16_t type, const Key* keys, size_t n,
                          zmq::message_t* values) {
  Part part;
  part.server = server;
  part.request_id = next_request_++;
  part.count = n;
  MsgHeader h;
  h.type = type;
  h.token = opts_.token;
  h.request_id = part.request_id;
  h.table = p->table;
  h.dim = p->dim;
  h.num_keys = n;
  h.sender = opts_.sender_rank;
  std::vector<zmq::message_t> msg;
  msg.emplace_back(&h, sizeof(h));
  msg.emplace_back(keys, n * sizeof(Key));
  stats_.bytes_sent += sizeof(h) + n * sizeof(Key) + (values ? values->size() : 0);
  if (values) msg.push_back(std::move(*values));
  M6_RETURN_IF_ERROR(SendMultipart(*servers_[server].sock, msg)
                         .WithContext("sending to server " + std::to_string(server) + " at " +
                                      servers_[server].endpoint));
  p->parts.push_back(std::move(part));
  p->outstanding++;
  return Status::OK();
}

Status PsClient::SendAll(Pending* p, uint16_t type, const std::vector<std::vector<Key>>& per_server,
                         std::vector<zmq::message_t>* values) {
  size_t v = 0;
  for (uint32_t s = 0; s < per_server.size(); ++s) {
    const auto& keys = per_server[s];
    if (keys.empty()) continue;
    p->first_part[s] = static_cast<int>(p->parts.size());
    for (size_t off = 0; off < keys.size(); off += p->chunk) {
      const size_t n = std::min<size_t>(p->chunk, keys.size() - off);
      M6_RETURN_IF_ERROR(
          SendPart(p, s, type, keys.data() + off, n, values ? &(*values)[v++] : nullptr));
    }
  }
  return Status::OK();
}

StatusOr<PsClient::Ticket> PsClient::PullAsync(TableId table, const Key* keys, size_t n) {
  Pending p;
  p.is_pull = true;
  std::vector<std::vector<Key>> per_server;
  M6_RETURN_IF_ERROR(Group(table, keys, n, &p, &per_server));
  p.chunk = ChunkKeys(p.dim);
  M6_RETURN_IF_ERROR(SendAll(&p, static_cast<uint16_t>(MsgType::kPull), per_server, nullptr));
  stats_.pulls++;
  Ticket t = next_ticket_++;
  for (const auto& part : p.parts) by_request_[part.request_id] = t;
  pending_.emplace(t, std::move(p));
  return t;
}

StatusOr<PsClient::Ticket> PsClient::PushAsync(TableId table, const Key* keys, size_t n,
                                               const float* grads) {
  Pending p;
  p.is_pull = false;
  std::vector<std::vector<Key>> per_server;
  M6_RETURN_IF_ERROR(Group(table, keys, n, &p, &per_server));
  const uint32_t dim = p.dim;
  const uint32_t chunk = p.chunk = ChunkKeys(dim);
  // One gradient frame per request, filled in place: the first occurrence of a key (in input
  // order) is copied, later ones are added. Frames of server s start at frame_base[s].
  std::vector<zmq::message_t> frames;
  std::vector<float*> fptr;
  std::vector<size_t> frame_base(per_server.size(), 0), filled(per_server.size(), 0);
  for (uint32_t s = 0; s < per_server.size(); ++s) {
    frame_base[s] = frames.size();
    for (size_t off = 0; off < per_server[s].size(); off += chunk) {
      const size_t m = std::min<size_t>(chunk, per_server[s].size() - off);
      frames.emplace_back(m * dim * sizeof(float));
      fptr.push_back(static_cast<float*>(frames.back().data()));
    }
  }
  const size_t row_bytes = size_t{dim} * sizeof(float);
  for (size_t i = 0; i < n; ++i) {
    const uint32_t s = p.where[i] >> 24, u = p.where[i] & 0xffffff;
    float* __restrict dst = fptr[frame_base[s] + u / chunk] + size_t{u % chunk} * dim;
    const float* __restrict src = grads + i * dim;
    if (u == filled[s]) {  // indices within a server are handed out in first-seen order
      std::memcpy(dst, src, row_bytes);
      ++filled[s];
    } else {
      for (uint32_t d = 0; d < dim; ++d) dst[d] += src[d];
    }
  }
  M6_RETURN_IF_ERROR(SendAll(&p, static_cast<uint16_t>(MsgType::kPush), per_server, &frames));
  stats_.pushes++;
  Ticket t = next_ticket_++;
  for (const auto& part : p.parts) by_request_[part.request_id] = t;
  pending_.emplace(t, std::move(p));
  return t;
}

void PsClient::Dispatch(uint32_t server, std::vector<zmq::message_t>& parts) {
  for (const auto& m : parts) stats_.bytes_received += m.size();
  MsgHeader h;
  if (parts.empty() || !DecodeHeader(parts[0].data(), parts[0].size(), &h).ok() ||
      h.token != opts_.token)
    return;  // not ours: ignore
  auto it = by_request_.find(h.request_id);
  if (it == by_request_.end()) return;  // a reply to an abandoned request
  Pending& p = pending_.at(it->second);
  by_request_.erase(it);
  Part* found = nullptr;
  for (auto& part : p.parts)
    if (part.request_id == h.request_id) found = &part;
  if (!found || found->server != server || found->done) return;
  Part& part = *found;
  part.done = true;
  p.outstanding--;
  const auto type = static_cast<MsgType>(h.type);
  const std::string who =
      "server " + std::to_string(server) + " (" + servers_[server].endpoint + ")";
  if (type == MsgType::kError) {
    std::string text = parts.size() > 1
                           ? std::string(static_cast<const char*>(parts[1].data()), parts[1].size())
                           : std::string();
    if (p.error.ok())
      p.error = Status(static_cast<StatusCode>(h.status), who + " refused the request: " + text);
    return;
  }
  if (p.is_pull) {
    const size_t want = part.count * p.dim * sizeof(float);
    if (type != MsgType::kPullReply || parts.size() != 2 || parts[1].size() != want) {
      if (p.error.ok()) p.error = Status::Corruption(who + " sent a malformed pull reply");
      return;
    }
    part.rows = std::move(parts[1]);
  } else if (type != MsgType::kPushAck) {
    if (p.error.ok()) p.error = Status::Corruption(who + " sent a malformed push ack");
  }
}

Status PsClient::Drive(Ticket t) {
  auto pit = pending_.find(t);
  if (pit == pending_.end()) return Status::InvalidArgument("unknown PS ticket");
  const int64_t deadline = MonotonicMs() + opts_.request_timeout_ms;
  std::vector<zmq::pollitem_t> items(servers_.size());
  std::vector<zmq::message_t> parts;
  while (pit->second.outstanding > 0) {
    std::string why;
    if (opts_.should_abort && opts_.should_abort(&why)) {
      for (const auto& part : pit->second.parts) by_request_.erase(part.request_id);
      pending_.erase(pit);
      return Status::Aborted("PS request abandoned: " + why);
    }
    const int64_t left = deadline - MonotonicMs();
    if (left <= 0) {
      std::string missing;
      for (const auto& part : pit->second.parts)
        if (!part.done)
          missing += (missing.empty() ? "" : ", ") + std::string("server ") +
                     std::to_string(part.server) + " at " + servers_[part.server].endpoint;
      Status s =
          Status::DeadlineExceeded("no reply within " + std::to_string(opts_.request_timeout_ms) +
                                   " ms (cluster.request_timeout_ms) from " + missing);
      for (const auto& part : pit->second.parts) by_request_.erase(part.request_id);
      pending_.erase(pit);
      return s;
    }
    for (size_t i = 0; i < servers_.size(); ++i)
      items[i] = zmq::pollitem_t{static_cast<void*>(*servers_[i].sock), 0, ZMQ_POLLIN, 0};
    try {
      zmq::poll(items.data(), items.size(),
                std::chrono::milliseconds(std::min<int64_t>(left, 100)));
    } catch (const zmq::error_t& e) {
      return Status::IOError(std::string("PS client poll: ") + e.what());
    }
    for (size_t i = 0; i < servers_.size(); ++i) {
      if (!(items[i].revents & ZMQ_POLLIN)) continue;
      // Drain everything this socket has ready.
      for (;;) {
        auto got = RecvMultipart(*servers_[i].sock, &parts, 0);
        if (!got.ok()) return got.status();
        if (!*got) break;
        Dispatch(static_cast<uint32_t>(i), parts);
      }
    }
  }
  return Status::OK();
}

Status PsClient::WaitPull(Ticket t, float* out) {
  M6_RETURN_IF_ERROR(Drive(t));
  auto it = pending_.find(t);
  Pending p = std::move(it->second);
  pending_.erase(it);
  if (!p.is_pull) return Status::InvalidArgument("WaitPull on a push ticket");
  M6_RETURN_IF_ERROR(p.error);
  const uint32_t dim = p.dim;
  const size_t row_bytes = size_t{dim} * sizeof(float);
  std::vector<const char*> base(p.parts.size());
  for (size_t j = 0; j < p.parts.size(); ++j)
    base[j] = static_cast<const char*>(p.parts[j].rows.data());
  const uint32_t chunk = p.chunk;
  for (size_t i = 0; i < p.where.size(); ++i) {
    const uint32_t s = p.where[i] >> 24, u = p.where[i] & 0xffffff;
    std::memcpy(out + i * dim, base[p.first_part[s] + u / chunk] + size_t{u % chunk} * row_bytes,
                row_bytes);
  }
  return Status::OK();
}

Status PsClient::WaitPush(Ticket t) {
  M6_RETURN_IF_ERROR(Drive(t));
  auto it = pending_.find(t);
  Pending p = std::move(it->second);
  pending_.erase(it);
  if (p.is_pull) return Status::InvalidArgument("WaitPush on a pull ticket");
  return p.error;
}

Status PsClient::Checkpoint(const std::string& dir) {
  for (uint32_t s = 0; s < servers_.size(); ++s) {
    auto r = Admin(s, "checkpoint", {{"dir", dir + "/server-" + std::to_string(s)}});
    if (!r.ok()) return r.status().WithContext("checkpoint");
  }
  return Status::OK();
}

StatusOr<std::string> PsClient::Admin(uint32_t server, const std::string& cmd,
                                      const std::map<std::string, std::string>& fields) {
  if (server >= servers_.size())
    return Status::InvalidArgument("no server " + std::to_string(server));
  MsgHeader h;
  h.type = static_cast<uint16_t>(MsgType::kAdmin);
  h.token = opts_.token;
  h.request_id = next_request_++;
  h.sender = opts_.sender_rank;
  nlohmann::json req = {{"cmd", cmd}};
  for (const auto& [k, v] : fields) req[k] = v;
  const std::string body = req.dump();
  std::vector<zmq::message_t> msg;
  msg.emplace_back(&h, sizeof(h));
  msg.emplace_back(body.data(), body.size());
  M6_RETURN_IF_ERROR(SendMultipart(*servers_[server].sock, msg));
  const int64_t deadline = MonotonicMs() + opts_.request_timeout_ms;
  std::vector<zmq::message_t> parts;
  while (MonotonicMs() < deadline) {
    auto got = RecvMultipart(*servers_[server].sock, &parts, 100);
    if (!got.ok()) return got.status();
    if (!*got) continue;
    MsgHeader r;
    if (!DecodeHeader(parts[0].data(), parts[0].size(), &r).ok() || r.request_id != h.request_id) {
      // A reply to a data request still in flight: hand it to its ticket.
      Dispatch(server, parts);
      continue;
    }
    std::string text = parts.size() > 1
                           ? std::string(static_cast<const char*>(parts[1].data()), parts[1].size())
                           : std::string();
    if (static_cast<MsgType>(r.type) == MsgType::kError)
      return Status(static_cast<StatusCode>(r.status),
                    "server " + std::to_string(server) + ": " + text);
    return text;
  }
  return Status::DeadlineExceeded("server " + std::to_string(server) + " did not answer ADMIN " +
                                  cmd);
}

}  // namespace m6rec
