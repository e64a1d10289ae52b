#include "scheduler/scheduler.h"

// clang-format off
#include <utility>  // before asio: Boost 1.74 needs std::exchange declared
#include <boost/asio.hpp>
// clang-format on
#include <deque>
#include <map>
#include <nlohmann/json.hpp>

#include "common/logging.h"
#include "common/protocol.h"
#include "common/util.h"
#include "scheduler/membership.h"

namespace m6rec {

namespace {
// Where the job is: forming (waiting for registrations), running, finishing (every worker
// finished, the shutdown sent), failed.
enum class Phase { kForming, kRunning, kFinishing, kFailed };
const char* PhaseName(Phase p) {
  switch (p) {
    case Phase::kForming:
      return "forming";
    case Phase::kRunning:
      return "running";
    case Phase::kFinishing:
      return "finishing";
    case Phase::kFailed:
      return "failed";
  }
  return "?";
}
}  // namespace

namespace asio = boost::asio;
using asio::ip::tcp;
using nlohmann::json;

class Scheduler::Impl {
 public:
  explicit Impl(const SchedulerOptions& o)
      : opts_(o),
        clock_(o.clock ? o.clock : &steady_),
        members_(o.cluster.servers, o.cluster.workers, o.num_slots, clock_),
        control_(io_),
        http_(io_),
        tick_(io_) {}

  Status Bind() {
    boost::system::error_code ec;
    tcp::endpoint ep(asio::ip::make_address(opts_.cluster.host, ec),
                     static_cast<unsigned short>(opts_.cluster.scheduler_port));
    if (ec)
      return Status::InvalidArgument("scheduler host '" + opts_.cluster.host +
                                     "': " + ec.message());
    M6_RETURN_IF_ERROR(Listen(control_, ep, "control"));
    control_port_ = control_.local_endpoint().port();
    if (opts_.cluster.http_port >= 0) {
      tcp::endpoint hep(ep.address(), static_cast<unsigned short>(opts_.cluster.http_port));
      M6_RETURN_IF_ERROR(Listen(http_, hep, "HTTP"));
      http_port_ = http_.local_endpoint().port();
    }
    if (!opts_.port_file.empty()) {
      M6_RETURN_IF_ERROR(WriteFileAtomic(opts_.port_file, std::to_string(control_port_) + " " +
                                                              std::to_string(http_port_) + "\n"));
    }
    return Status::OK();
  }

  Status Run() {
    start_ms_ = clock_->NowMs();
    LOG_INFO << "scheduler listening on " << opts_.cluster.host << ":" << control_port_
             << (http_port_ > 0 ? " (status: http://" + opts_.cluster.host + ":" +
                                      std::to_string(http_port_) + "/status)"
                                : std::string())
             << ", waiting for " << opts_.cluster.servers << " servers and "
             << opts_.cluster.workers << " workers";
    AcceptControl();
    if (http_port_ > 0) AcceptHttp();
    Tick();
    io_.run();
    return result_;
  }

  void Stop(const std::string& reason) {
    asio::post(io_, [this, reason] { Fail(reason); });
  }

  int control_port_ = 0;
  int http_port_ = -1;

 private:
  struct Session : std::enable_shared_from_this<Session> {
    Session(Impl* o, tcp::socket s, ConnId id) : owner(o), sock(std::move(s)), id(id) {}
    Impl* owner;
    tcp::socket sock;
    ConnId id;
    uint32_t len = 0;
    std::string body;
    std::deque<std::string> outq;
    bool closed = false;

    void ReadFrame() {
      auto self = shared_from_this();
      asio::async_read(sock, asio::buffer(&len, 4), [self](boost::system::error_code ec, size_t) {
        if (ec) return self->owner->OnClosed(self->id);
        if (self->len < sizeof(MsgHeader) || self->len > kMaxControlFrame) {
          self->owner->dropped_malformed_++;
          LOG_WARN << "control connection " << self->id << ": frame length " << self->len
                   << " out of range; closing it";
          return self->owner->Close(self->id);
        }
        self->body.resize(self->len);
        asio::async_read(self->sock, asio::buffer(&self->body[0], self->len),
                         [self](boost::system::error_code ec2, size_t) {
                           if (ec2) return self->owner->OnClosed(self->id);
                           if (!self->owner->OnFrame(self->id, self->body)) return;
                           self->ReadFrame();
                         });
      });
    }
    void Send(std::string frame) {
      if (closed) return;
      outq.push_back(std::move(frame));
      if (outq.size() == 1) WriteNext();
    }
    void WriteNext() {
      auto self = shared_from_this();
      asio::async_write(sock, asio::buffer(outq.front()),
                        [self](boost::system::error_code ec, size_t) {
                          if (ec) return;
                          self->outq.pop_front();
                          if (!self->outq.empty()) self->WriteNext();
                        });
    }
  };

  Status Listen(tcp::acceptor& acc, const tcp::endpoint& ep, const char* what) {
    boost::system::error_code ec;
    acc.open(ep.protocol(), ec);
    if (!ec) acc.set_option(tcp::acceptor::reuse_address(true), ec);
    if (!ec) acc.bind(ep, ec);
    if (!ec) acc.listen(asio::socket_base::max_listen_connections, ec);
    if (ec)
      return Status::Unavailable(std::string("scheduler cannot listen (") + what + ") on " +
                                 ep.address().to_string() + ":" + std::to_string(ep.port()) + ": " +
                                 ec.message());
    return Status::OK();
  }

  void AcceptControl() {
    control_.async_accept([this](boost::system::error_code ec, tcp::socket s) {
      if (ec) return;
      s.set_option(tcp::no_delay(true));
      ConnId id = ++next_conn_;
      auto sess = std::make_shared<Session>(this, std::move(s), id);
      sessions_[id] = sess;
      sess->ReadFrame();
      AcceptControl();
    });
  }

  void AcceptHttp() {
    http_.async_accept([this](boost::system::error_code ec, tcp::socket s) {
      if (ec) return;
      auto sock = std::make_shared<tcp::socket>(std::move(s));
      auto buf = std::make_shared<asio::streambuf>(8192);
      asio::async_read_until(*sock, *buf, "\r\n\r\n",
                             [this, sock, buf](boost::system::error_code ec2, size_t) {
                               std::string line;
                               if (!ec2) {
                                 std::istream is(buf.get());
                                 std::getline(is, line);
                               }
                               ServeHttp(sock, line);
                             });
      AcceptHttp();
    });
  }

  void ServeHttp(std::shared_ptr<tcp::socket> sock, const std::string& request_line) {
    std::string code = "200 OK", body;
    if (request_line.rfind("GET /status", 0) == 0) {
      body = StatusJson().dump(2) + "\n";
    } else if (request_line.rfind("GET /healthz", 0) == 0) {
      body = "{\"ok\": true}\n";
    } else {
      code = "404 Not Found";
      body = "{\"error\": \"try GET /status or GET /healthz\"}\n";
    }
    auto resp = std::make_shared<std::string>(
        "HTTP/1.0 " + code + "\r\nContent-Type: application/json\r\nContent-Length: " +
        std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body);
    asio::async_write(*sock, asio::buffer(*resp), [sock, resp](boost::system::error_code, size_t) {
      boost::system::error_code ignored;
      sock->shutdown(tcp::socket::shutdown_both, ignored);
    });
  }

  json StatusJson() {
    const int64_t now = clock_->NowMs();
    json nodes = json::array();
    for (const auto& m : members_.All())
      nodes.push_back({{"role", RoleName(m.role)},
                       {"rank", m.rank},
                       {"host", m.host},
                       {"port", m.port},
                       {"pid", m.pid},
                       {"alive", m.alive},
                       {"finished", m.finished},
                       {"silent_ms", now - m.last_seen_ms}});
    return {{"job", opts_.job_name},
            {"phase", PhaseName(phase_)},
            {"uptime_s", (now - start_ms_) / 1000.0},
            {"expected", {{"servers", opts_.cluster.servers}, {"workers", opts_.cluster.workers}}},
            {"missing", members_.MissingDescription()},
            {"nodes", nodes},
            {"num_slots", opts_.num_slots},
            {"dropped_bad_token", dropped_bad_token_},
            {"dropped_malformed", dropped_malformed_}};
  }

  void Tick() {
    const int interval = std::max(20, std::min(200, opts_.cluster.heartbeat_interval_ms));
    tick_.expires_after(std::chrono::milliseconds(interval));
    tick_.async_wait([this](boost::system::error_code ec) {
      if (ec || done_) return;
      const int64_t now = clock_->NowMs();
      if (phase_ == Phase::kForming && now - start_ms_ > opts_.cluster.connect_timeout_ms) {
        return Fail(
            "rendezvous timed out after " + std::to_string(opts_.cluster.connect_timeout_ms) +
            " ms (cluster.connect_timeout_ms): still missing " + members_.MissingDescription());
      }
      if (phase_ == Phase::kRunning) {
        for (const auto& m : members_.CheckTimeouts(opts_.cluster.heartbeat_timeout_ms)) {
          return NodeDied(m, "silent for more than " +
                                 std::to_string(opts_.cluster.heartbeat_timeout_ms) + " ms");
        }
      }
      if (phase_ == Phase::kFinishing && now - finish_ms_ > 10000) {
        LOG_WARN << "servers did not disconnect within 10 s of shutdown; exiting anyway";
        return Finish();
      }
      Tick();
    });
  }

  void Broadcast(MsgType type, const json& payload) {
    MsgHeader h;
    h.type = static_cast<uint16_t>(type);
    h.token = opts_.token;
    std::string frame = EncodeControlFrame(h, payload.dump());
    for (const auto& m : members_.All())
      if (m.alive) SendTo(m.conn, frame);
  }

  void SendTo(ConnId id, const std::string& frame) {
    auto it = sessions_.find(id);
    if (it != sessions_.end()) it->second->Send(frame);
  }

  void Reply(ConnId id, const MsgHeader& req, MsgType type, const json& payload,
             StatusCode code = StatusCode::kOk) {
    MsgHeader h = req;
    h.type = static_cast<uint16_t>(type);
    h.status = static_cast<uint32_t>(code);
    h.sender = kNoRank;
    SendTo(id, EncodeControlFrame(h, payload.dump()));
  }

  // Returns false when the connection was closed.
  bool OnFrame(ConnId id, const std::string& body) {
    MsgHeader h;
    std::string payload;
    if (!DecodeControlFrame(body.data(), body.size(), &h, &payload).ok()) {
      dropped_malformed_++;
      LOG_WARN << "control connection " << id << ": malformed frame; closing it";
      Close(id);
      return false;
    }
    if (h.token != opts_.token) {
      dropped_bad_token_++;
      LOG_WARN << "control connection " << id << ": wrong job token; closing it";
      Close(id);
      return false;
    }
    auto j = json::parse(payload.empty() ? std::string("{}") : payload, nullptr, false);
    if (j.is_discarded() || !j.is_object()) {
      dropped_malformed_++;
      Reply(id, h, MsgType::kControlError, {{"error", "payload is not a JSON object"}},
            StatusCode::kInvalidArgument);
      return true;
    }
    switch (static_cast<MsgType>(h.type)) {
      case MsgType::kRegister:
        OnRegister(id, h, j);
        break;
      case MsgType::kHeartbeat:
        members_.Heartbeat(id);
        break;
      case MsgType::kBarrier: {
        std::string name = j.value("name", ""), group = j.value("group", "workers");
        if (name.empty() || !members_.Find(id)) {
          Reply(id, h, MsgType::kControlError,
                {{"error", "barrier needs a name and a registered node"}},
                StatusCode::kInvalidArgument);
          break;
        }
        members_.Heartbeat(id);
        for (ConnId c : members_.ArriveBarrier(name, group, id))
          Reply(c, h, MsgType::kBarrierRelease, {{"name", name}});
        break;
      }
      case MsgType::kFinished: {
        Member* m = members_.Find(id);
        if (!m) break;
        bool ok = j.value("ok", false);
        members_.MarkFinished(id, ok, j.contains("summary") ? j["summary"].dump() : "{}");
        LOG_INFO << RoleName(m->role) << " " << m->rank << " finished "
                 << (ok ? "OK" : "with an error: " + j.value("error", std::string("?")));
        if (!ok) {
          Fail(std::string(RoleName(m->role)) + " " + std::to_string(m->rank) +
               " failed: " + j.value("error", std::string("?")));
        } else if (members_.AllWorkersFinished()) {
          BeginShutdown();
        }
        break;
      }
      case MsgType::kStatusRequest:
        Reply(id, h, MsgType::kStatusReply, StatusJson());
        break;
      default:
        dropped_malformed_++;
        Reply(id, h, MsgType::kControlError,
              {{"error", std::string("unexpected message type ") +
                             MsgTypeName(static_cast<MsgType>(h.type))}},
              StatusCode::kInvalidArgument);
    }
    return sessions_.count(id) > 0;
  }

  void OnRegister(ConnId id, const MsgHeader& h, const json& j) {
    Role role;
    if (!j.contains("role") || !j["role"].is_string() || !ParseRole(j["role"], &role)) {
      Reply(id, h, MsgType::kControlError, {{"error", "REGISTER needs role server|worker"}},
            StatusCode::kInvalidArgument);
      return;
    }
    if (phase_ != Phase::kForming) {
      Reply(id, h, MsgType::kControlError,
            {{"error", "the cluster is already formed (phase " + std::string(PhaseName(phase_)) +
                           "); late joins are not supported"}},
            StatusCode::kAborted);
      return;
    }
    auto r = members_.Register(role, j.value("host", std::string()), j.value("port", 0),
                               j.value("rank", -1), j.value("pid", 0), id);
    if (!r.ok()) {
      Reply(id, h, MsgType::kControlError, {{"error", r.status().message()}},
            StatusCode::kInvalidArgument);
      return;
    }
    LOG_INFO << RoleName(role) << " " << *r << " registered from " << j.value("host", std::string())
             << ":" << j.value("port", 0) << " (pid " << j.value("pid", 0) << ")";
    if (members_.Complete()) {
      phase_ = Phase::kRunning;
      LOG_INFO << "all " << opts_.cluster.servers << " servers and " << opts_.cluster.workers
               << " workers registered; publishing the cluster view";
      for (const auto& m : members_.All()) {
        MsgHeader vh = h;
        vh.type = static_cast<uint16_t>(MsgType::kClusterView);
        SendTo(m.conn, EncodeControlFrame(vh, members_.ViewFor(m.role, m.rank).ToJson()));
        members_.Heartbeat(m.conn);
      }
    }
  }

  void NodeDied(const Member& m, const std::string& why) {
    std::string what = std::string(RoleName(m.role)) + " " + std::to_string(m.rank) + " (pid " +
                       std::to_string(m.pid) + ") is dead: " + why;
    LOG_ERROR << what;
    Broadcast(MsgType::kNodeDead, {{"role", RoleName(m.role)}, {"rank", m.rank}, {"reason", why}});
    Fail(what);
  }

  void OnClosed(ConnId id) {
    Member m;
    bool failure = members_.MarkDisconnected(id, &m);
    sessions_.erase(id);
    if (failure && phase_ == Phase::kRunning)
      return NodeDied(m, "its connection to the scheduler closed");
    if (failure && phase_ == Phase::kForming) {
      LOG_ERROR << RoleName(m.role) << " " << m.rank << " left before the cluster formed";
      return Fail(std::string(RoleName(m.role)) + " " + std::to_string(m.rank) +
                  " left before the cluster formed");
    }
    if (phase_ == Phase::kFinishing) {
      for (const auto& s : members_.servers())
        if (s.alive) return;
      Finish();
    }
  }

  void Close(ConnId id) {
    auto it = sessions_.find(id);
    if (it == sessions_.end()) return;
    boost::system::error_code ec;
    it->second->closed = true;
    it->second->sock.close(ec);
  }

  void BeginShutdown() {
    if (phase_ == Phase::kFinishing || done_) return;
    phase_ = Phase::kFinishing;
    finish_ms_ = clock_->NowMs();
    LOG_INFO << "all workers finished; shutting the cluster down";
    Broadcast(MsgType::kShutdown, {{"ok", true}, {"reason", "job complete"}});
    bool any = false;
    for (const auto& s : members_.servers()) any |= s.alive;
    if (!any) Finish();
  }

  void Fail(const std::string& reason) {
    if (done_ || phase_ == Phase::kFailed) return;
    if (result_.ok()) result_ = Status::Aborted(reason);
    phase_ = Phase::kFailed;
    LOG_ERROR << "job failed: " << reason;
    Broadcast(MsgType::kShutdown, {{"ok", false}, {"reason", reason}});
    // Give the shutdown frames a moment to leave, then stop.
    auto t = std::make_shared<asio::steady_timer>(io_, std::chrono::milliseconds(200));
    t->async_wait([this, t](boost::system::error_code) { Finish(); });
  }

  void Finish() {
    if (done_) return;
    done_ = true;
    boost::system::error_code ec;
    control_.close(ec);
    http_.close(ec);
    tick_.cancel();
    for (auto& [id, s] : sessions_) s->sock.close(ec);
    sessions_.clear();
    io_.stop();
  }

  SchedulerOptions opts_;
  SteadyClock steady_;
  const Clock* clock_;
  Membership members_;
  asio::io_context io_;
  tcp::acceptor control_, http_;
  asio::steady_timer tick_;
  std::map<ConnId, std::shared_ptr<Session>> sessions_;
  ConnId next_conn_ = 0;
  Phase phase_ = Phase::kForming;
  int64_t start_ms_ = 0, finish_ms_ = 0;
  bool done_ = false;
  Status result_;
  uint64_t dropped_bad_token_ = 0, dropped_malformed_ = 0;
};

Scheduler::Scheduler(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Scheduler::~Scheduler() = default;

StatusOr<std::unique_ptr<Scheduler>> Scheduler::Create(const SchedulerOptions& opts) {
  auto impl = std::make_unique<Impl>(opts);
  M6_RETURN_IF_ERROR(impl->Bind());
  return std::unique_ptr<Scheduler>(new Scheduler(std::move(impl)));
}

int Scheduler::port() const { return impl_->control_port_; }
int Scheduler::http_port() const { return impl_->http_port_; }
Status Scheduler::Run() { return impl_->Run(); }
void Scheduler::Stop(const std::string& reason) { impl_->Stop(reason); }

}  // namespace m6rec
