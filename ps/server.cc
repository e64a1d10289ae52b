#include "ps/server.h"

#include <pthread.h>

#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>

#include "common/keys.h"
#include "common/logging.h"
#include "common/transport.h"
#include "ps/optimizer.h"

namespace m6rec {

Server::Server(const ServerOptions& opts)
    : opts_(opts),
      ctx_(opts.io_threads),
      frontend_(ctx_, zmq::socket_type::router),
      backend_(ctx_, zmq::socket_type::dealer) {}

Server::~Server() { Stop(); }

StatusOr<std::unique_ptr<Server>> Server::Create(const ServerOptions& opts) {
  std::unique_ptr<Server> s(new Server(opts));
  StoreOptions so;
  so.kind = opts.ps.store;
  so.durability = opts.ps.durability;
  so.path = opts.data_dir;
  so.hot_rows = opts.ps.hot_rows;
  so.restore_from = opts.restore_from;
  M6_ASSIGN_OR_RETURN(s->store_, OpenTableStore(so, opts.tables));
  s->lifecycle_ = std::make_unique<RowLifecycle>(opts.tables, opts.servers,
                                                 opts.clock ? opts.clock : &s->steady_);
  // A restored server's rows enter the lifecycle before it serves.
  if (!opts.restore_from.empty()) M6_RETURN_IF_ERROR(s->lifecycle_->Seed(*s->store_));
  try {
    s->frontend_.set(zmq::sockopt::maxmsgsize, static_cast<int64_t>(opts.ps.max_message_bytes));
    s->frontend_.set(zmq::sockopt::linger, 0);
    s->frontend_.set(zmq::sockopt::sndhwm, 0);
    s->frontend_.set(zmq::sockopt::rcvhwm, 0);
    s->frontend_.bind(TcpEndpoint(opts.host, opts.port));
  } catch (const zmq::error_t& e) {
    return Status::Unavailable("server cannot bind " + TcpEndpoint(opts.host, opts.port) + ": " +
                               e.what());
  }
  M6_ASSIGN_OR_RETURN(s->port_, BoundPort(s->frontend_));
  s->backend_ep_ = "inproc://ps-backend-" + std::to_string(reinterpret_cast<uintptr_t>(s.get()));
  s->backend_.set(zmq::sockopt::linger, 0);
  s->backend_.set(zmq::sockopt::sndhwm, 0);
  s->backend_.set(zmq::sockopt::rcvhwm, 0);
  s->backend_.bind(s->backend_ep_);
  s->owned_.assign(opts.ps.num_slots, 1);
  return s;
}

void Server::SetOwnedSlots(std::vector<uint8_t> owned) { owned_ = std::move(owned); }

StatusOr<uint64_t> Server::ImportRows() {
  const uint32_t slots = static_cast<uint32_t>(owned_.size());
  uint64_t total = 0;
  for (const TableSpec& t : opts_.tables) {
    uint64_t n = 0;
    M6_RETURN_IF_ERROR(m6rec::ImportRows(
        *store_, t, [&](Key k) { return owned_[SlotOf(k, slots)] != 0; }, &n));
    total += n;
  }
  return total;
}

void Server::Start() {
  if (started_) return;
  started_ = true;
  if (opts_.ps.threads == 1) {
    // One handler: it owns the ROUTER itself, saving the proxy thread and a hop per message.
    handlers_.emplace_back([this] { HandlerLoop(0, frontend_); });
    return;
  }
  // The handlers' sockets are made here, on the caller's thread, before any thread starts: a
  // Stop() right after Start() may terminate the context at any moment, and a socket created
  // on a terminated context throws (a handler thread dying of that aborted the process).
  for (int i = 0; i < opts_.ps.threads; ++i) {
    auto own = std::make_shared<zmq::socket_t>(ctx_, zmq::socket_type::dealer);
    own->set(zmq::sockopt::linger, 0);
    own->set(zmq::sockopt::sndhwm, 0);
    own->set(zmq::sockopt::rcvhwm, 0);
    own->connect(backend_ep_);
    // Thread creation orders the socket's construction before its use on the new thread.
    handlers_.emplace_back([this, i, own] {
      HandlerLoop(i, *own);
      own->close();
    });
  }
  proxy_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "ps-proxy");
    try {
      zmq::proxy(frontend_, backend_);
    } catch (const zmq::error_t&) {
      // context shut down: normal stop
    }
  });
}

void Server::Stop() {
  if (stopping_.exchange(true)) return;
  ctx_.shutdown();
  if (proxy_.joinable()) proxy_.join();
  for (auto& t : handlers_) t.join();
  handlers_.clear();
  frontend_.close();
  backend_.close();
  ctx_.close();
}

void Server::HandlerLoop(int id, zmq::socket_t& sock) {
  pthread_setname_np(pthread_self(), ("ps-handler-" + std::to_string(id)).c_str());
  std::vector<zmq::message_t> parts, reply;
  while (!stopping_) {
    auto got = RecvMultipart(sock, &parts, -1);
    if (!got.ok() || !*got) break;  // context terminated
    reply.clear();
    Handle(parts, &reply);
    if (reply.empty()) continue;
    if (!SendMultipart(sock, reply).ok()) break;
  }
}

namespace {

zmq::message_t HeaderMessage(const MsgHeader& h) { return zmq::message_t(&h, sizeof(h)); }

void ErrorReply(zmq::message_t& identity, MsgHeader h, StatusCode code, const std::string& text,
                uint32_t rank, std::vector<zmq::message_t>* reply) {
  h.type = static_cast<uint16_t>(MsgType::kError);
  h.status = static_cast<uint32_t>(code);
  h.sender = rank;
  reply->emplace_back(std::move(identity));
  reply->push_back(HeaderMessage(h));
  reply->emplace_back(text.data(), text.size());
}

// A frame's bytes as T*, copied into `scratch` when zmq's buffer is not aligned for T.
template <typename T>
const T* AlignedView(const zmq::message_t& m, std::vector<T>* scratch) {
  if (reinterpret_cast<uintptr_t>(m.data()) % alignof(T) == 0)
    return static_cast<const T*>(m.data());
  scratch->resize(m.size() / sizeof(T));
  std::memcpy(scratch->data(), m.data(), m.size());
  return scratch->data();
}

}  // namespace

void Server::Handle(std::vector<zmq::message_t>& parts, std::vector<zmq::message_t>* reply) {
  counters_.requests++;
  if (parts.size() < 2) {
    counters_.dropped_malformed++;
    return;
  }
  MsgHeader h;
  if (!DecodeHeader(parts[1].data(), parts[1].size(), &h).ok()) {
    counters_.dropped_malformed++;
    return;
  }
  if (h.token != opts_.token) {
    counters_.dropped_bad_token++;
    return;
  }
  auto refuse = [&](StatusCode code, const std::string& text) {
    counters_.refused++;
    ErrorReply(parts[0], h, code, text, opts_.rank, reply);
  };
  std::vector<size_t> sizes;
  for (size_t i = 1; i < parts.size(); ++i) sizes.push_back(parts[i].size());
  RequestLimits limits{opts_.ps.max_keys_per_request, opts_.ps.max_message_bytes};
  Status v = ValidateRequestFrames(h, sizes.data(), sizes.size(), limits);
  if (!v.ok()) return refuse(v.code(), v.message());

  const auto type = static_cast<MsgType>(h.type);
  if (type == MsgType::kAdmin) {
    counters_.admins++;
    auto req = nlohmann::json::parse(static_cast<const char*>(parts[2].data()),
                                     static_cast<const char*>(parts[2].data()) + parts[2].size(),
                                     nullptr, /*allow_exceptions=*/false);
    if (req.is_discarded() || !req.is_object() || !req.contains("cmd") || !req["cmd"].is_string())
      return refuse(StatusCode::kInvalidArgument, "ADMIN payload must be {\"cmd\": ...}");
    std::string cmd = req["cmd"];
    nlohmann::json out;
    if (cmd == "stats") {
      out = nlohmann::json::parse(StatsJson());
    } else if (cmd == "flush") {
      Status s = store_->Flush();
      if (!s.ok()) return refuse(s.code(), s.message());
      out = {{"flushed", true}};
    } else if (cmd == "checkpoint") {
      // A snapshot of this server's rows into a new directory (the caller holds the cut: no
      // push of the job is in flight).
      if (!req.contains("dir") || !req["dir"].is_string() || req["dir"].get<std::string>().empty())
        return refuse(StatusCode::kInvalidArgument, "checkpoint needs {\"dir\": \"...\"}");
      Status s = store_->Checkpoint(req["dir"].get<std::string>());
      if (!s.ok()) return refuse(s.code(), s.message());
      out = {{"checkpoint", req["dir"]}};
    } else if (cmd == "tables") {
      out = nlohmann::json::array();
      for (const auto& t : opts_.tables)
        out.push_back({{"id", t.id},
                       {"name", t.name},
                       {"dim", t.dim},
                       {"optimizer", OptimizerName(t.optimizer.kind)},
                       {"lr", t.optimizer.lr},
                       {"width", RowWidth(t)}});
    } else {
      return refuse(StatusCode::kInvalidArgument,
                    "unknown admin command '" + cmd + "' (stats, flush, checkpoint, tables)");
    }
    std::string body = out.dump();
    MsgHeader rh = h;
    rh.type = static_cast<uint16_t>(MsgType::kAdminReply);
    rh.sender = opts_.rank;
    reply->emplace_back(std::move(parts[0]));
    reply->push_back(HeaderMessage(rh));
    reply->emplace_back(body.data(), body.size());
    return;
  }

  // PULL or PUSH: check the table, the dim and every key before touching the store.
  const int64_t t0 = MonotonicUs();
  if (h.table >= opts_.tables.size())
    return refuse(StatusCode::kInvalidArgument, "unknown table id " + std::to_string(h.table));
  const TableSpec& spec = opts_.tables[h.table];
  if (type == MsgType::kPush && h.dim != spec.dim)
    return refuse(StatusCode::kInvalidArgument, "table '" + spec.name + "' has dim " +
                                                    std::to_string(spec.dim) + ", push has " +
                                                    std::to_string(h.dim));
  const size_t n = h.num_keys;
  thread_local std::vector<Key> key_scratch;
  const Key* keys = AlignedView<Key>(parts[2], &key_scratch);
  const uint32_t num_slots = static_cast<uint32_t>(owned_.size());
  for (size_t i = 0; i < n; ++i) {
    if (KeyTable(keys[i]) != h.table)
      return refuse(StatusCode::kInvalidArgument,
                    "key " + std::to_string(keys[i]) + " belongs to table " +
                        std::to_string(KeyTable(keys[i])) + ", request is for table " +
                        std::to_string(h.table));
    if (!owned_[SlotOf(keys[i], num_slots)])
      return refuse(StatusCode::kInvalidArgument, "key " + std::to_string(keys[i]) + " (slot " +
                                                      std::to_string(SlotOf(keys[i], num_slots)) +
                                                      ") is not served by server " +
                                                      std::to_string(opts_.rank));
  }

  MsgHeader rh = h;
  rh.sender = opts_.rank;
  rh.status = 0;
  if (type == MsgType::kPull) {
    counters_.pulls++;
    rh.type = static_cast<uint16_t>(MsgType::kPullReply);
    rh.dim = spec.dim;
    zmq::message_t rows(n * spec.dim * sizeof(float));
    Status s = store_->Lookup(h.table, keys, n, spec.dim, static_cast<float*>(rows.data()));
    if (!s.ok()) return refuse(s.code(), s.message());
    counters_.rows_pulled += n;
    counters_.pull_us += uint64_t(MonotonicUs() - t0);
    reply->emplace_back(std::move(parts[0]));
    reply->push_back(HeaderMessage(rh));
    reply->push_back(std::move(rows));
    return;
  }

  // PUSH
  thread_local std::vector<float> grad_scratch;
  const float* grads = AlignedView<float>(parts[3], &grad_scratch);
  Status s = ApplyPush(*store_, spec, keys, n, grads, lifecycle_.get());
  if (!s.ok()) return refuse(s.code(), s.message());
  counters_.pushes++;
  counters_.rows_pushed += n;
  counters_.push_us += uint64_t(MonotonicUs() - t0);
  rh.type = static_cast<uint16_t>(MsgType::kPushAck);
  rh.num_keys = n;
  reply->emplace_back(std::move(parts[0]));
  reply->push_back(HeaderMessage(rh));
}

std::string Server::StatsJson() const {
  StoreStats st = store_->Stats();
  nlohmann::json j = {
      {"rank", opts_.rank},
      {"store", store_->name()},
      {"port", port_},
      {"requests", counters_.requests.load()},
      {"pulls", counters_.pulls.load()},
      {"pushes", counters_.pushes.load()},
      {"admins", counters_.admins.load()},
      {"rows_pulled", counters_.rows_pulled.load()},
      {"rows_pushed", counters_.rows_pushed.load()},
      {"dropped_bad_token", counters_.dropped_bad_token.load()},
      {"dropped_malformed", counters_.dropped_malformed.load()},
      {"refused", counters_.refused.load()},
      {"pull_us", counters_.pull_us.load()},
      {"push_us", counters_.push_us.load()},
      {"rows_cached", st.rows_cached},
      {"hot_hits", st.hot_hits},
      {"cold_reads", st.cold_reads},
      {"initialised", st.initialised},
      {"rows_written", st.rows_written},
      {"evictions", st.evictions},
      {"erased", st.erased},
  };
  for (const TableSpec& t : opts_.tables) {
    if (!t.lifecycle()) continue;
    const LifecycleStats l = lifecycle_->Stats(t.id);
    j["lifecycle"][t.name] = {{"rows", l.rows},       {"cap", lifecycle_->cap(t.id)},
                              {"created", l.created}, {"not_admitted", l.not_admitted},
                              {"evicted", l.evicted}, {"expired", l.expired}};
  }
  return j.dump();
}

}  // namespace m6rec
