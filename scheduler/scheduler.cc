#include "scheduler/scheduler.h"

// clang-format off
#include <utility>  // before asio: Boost 1.74 needs std::exchange declared
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
// clang-format on
#include <deque>
#include <map>
#include <nlohmann/json.hpp>

#include "common/logging.h"
#include "common/protocol.h"
#include "common/util.h"
#include "scheduler/dashboard.h"
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
namespace beast = boost::beast;
namespace http = beast::http;
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
             << (http_port_ > 0 ? " (dashboard: http://" + opts_.cluster.host + ":" +
                                      std::to_string(http_port_) + "/, also /status, /metrics)"
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

  // One HTTP/1.1 exchange per connection (Boost.Beast), routed on the exact path.
  struct HttpSession : std::enable_shared_from_this<HttpSession> {
    HttpSession(Impl* o, tcp::socket s) : owner(o), stream(std::move(s)) {}
    Impl* owner;
    beast::tcp_stream stream;
    beast::flat_buffer buf;
    http::request<http::string_body> req;
    http::response<http::string_body> res;
    void Read() {
      stream.expires_after(std::chrono::seconds(30));
      http::async_read(stream, buf, req, [self = shared_from_this()](beast::error_code ec, size_t) {
        if (ec) return;
        self->res = self->owner->Route(self->req);
        self->res.prepare_payload();
        http::async_write(self->stream, self->res, [self](beast::error_code, size_t) {
          beast::error_code ignored;
          self->stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
        });
      });
    }
  };

  void AcceptHttp() {
    http_.async_accept([this](boost::system::error_code ec, tcp::socket s) {
      if (ec) return;
      std::make_shared<HttpSession>(this, std::move(s))->Read();
      AcceptHttp();
    });
  }

  http::response<http::string_body> Route(const http::request<http::string_body>& req) {
    const std::string target(req.target());
    const std::string path = target.substr(0, target.find('?'));
    http::response<http::string_body> res{http::status::ok, req.version()};
    res.set(http::field::server, "m6rec scheduler");
    res.set(http::field::cache_control, "no-store");
    res.keep_alive(false);
    auto json_body = [&](http::status st, const json& j) {
      res.result(st);
      res.set(http::field::content_type, "application/json");
      res.body() = j.dump(2) + "\n";
    };
    if (req.method() != http::verb::get && req.method() != http::verb::head) {
      json_body(http::status::method_not_allowed, {{"error", "only GET"}});
    } else if (path == "/") {
      res.set(http::field::content_type, "text/html; charset=utf-8");
      res.body() = dashboard_page_;
    } else if (path == "/status") {
      json_body(http::status::ok, StatusJson(true));
    } else if (path == "/metrics") {
      res.set(http::field::content_type, "text/plain; version=0.0.4; charset=utf-8");
      res.body() = PrometheusText(StatusJson(false));
    } else if (path == "/healthz") {
      json_body(http::status::ok, {{"ok", true}});
    } else {
      json_body(http::status::not_found,
                {{"error", "no route " + path},
                 {"routes", {"/ (dashboard)", "/status", "/metrics", "/healthz"}}});
    }
    if (req.method() == http::verb::head) res.body().clear();
    return res;
  }

  // What happened when (seconds since the scheduler started), for the timeline.
  void Event(const std::string& what, const char* role = nullptr, uint32_t rank = 0) {
    json e = {{"t", (clock_->NowMs() - start_ms_) / 1000.0}, {"event", what}};
    if (role) e["role"] = role, e["rank"] = rank;
    if (events_.size() < 100000) events_.push_back(std::move(e));
  }

  void WriteTimeline() {
    if (opts_.timeline_path.empty()) return;
    json t = StatusJson(true);
    t["events"] = events_;
    Status s = WriteFileAtomic(opts_.timeline_path, t.dump() + "\n");
    if (!s.ok()) LOG_WARN << "timeline: " << s.message();
  }

  // A node's heartbeat stats (SchedulerClient::SetStats): kept as its latest, and as points of
  // its history for the dashboard's curves.
  void OnStats(ConnId id, const json& stats) {
    Member* m = members_.Find(id);
    if (!m || !stats.is_object()) return;
    const std::string key = std::string(RoleName(m->role)) + " " + std::to_string(m->rank);
    stats_[key] = stats;
    const double t = (clock_->NowMs() - start_ms_) / 1000.0;
    if (m->role == Role::kWorker) {
      json p = {{"t", t}};
      for (const char* k :
           {"steps", "loss", "samples_per_s", "epoch", "pull_wait_s", "push_wait_s"})
        if (stats.contains(k)) p[k] = stats[k];
      worker_history_[m->rank].Append(std::move(p));
      if (m->rank == 0) {
        const int epoch = stats.value("epoch", 0);
        if (epoch > last_epoch_) Event("epoch " + std::to_string(epoch), "worker", 0);
        last_epoch_ = std::max(last_epoch_, epoch);
        const uint64_t ck = stats.value("checkpoint_step", uint64_t{0});
        if (ck > last_checkpoint_) Event("checkpoint at step " + std::to_string(ck), "worker", 0);
        last_checkpoint_ = std::max(last_checkpoint_, ck);
      }
      if (m->rank == 0 && stats.contains("last_eval")) {
        const json& e = stats["last_eval"];
        if (evals_.empty() || evals_.back().value("epoch", -1) != e.value("epoch", -2)) {
          evals_.push_back(e);
          Event("evaluated epoch " + std::to_string(e.value("epoch", 0)), "worker", 0);
        }
      }
    } else if (m->role == Role::kServer) {
      auto& h = server_history_[m->rank];
      // A heartbeat repeating the last measurement adds no point (rates would read zero).
      if (!h.empty() && h.back().value("at_ms", int64_t{-1}) == stats.value("at_ms", int64_t{-2}))
        return;
      json p = {{"t", t}, {"at_ms", stats.value("at_ms", int64_t{0})}};
      for (const char* k :
           {"requests", "pulls", "pushes", "hot_hits", "cold_reads", "pull_us", "push_us"})
        p[k] = stats.value(k, 0.0);
      h.Append(std::move(p));
    }
  }

  // with_history: the nodes' curves too (the dashboard's /status; /metrics needs the latest).
  json StatusJson(bool with_history = false) {
    const int64_t now = clock_->NowMs();
    json nodes = json::array();
    for (const auto& m : members_.All()) {
      json n = {{"role", RoleName(m.role)},
                {"rank", m.rank},
                {"host", m.host},
                {"port", m.port},
                {"pid", m.pid},
                {"alive", m.alive},
                {"finished", m.finished},
                {"silent_ms", now - m.last_seen_ms}};
      auto st = stats_.find(std::string(RoleName(m.role)) + " " + std::to_string(m.rank));
      if (st != stats_.end()) n["stats"] = st->second;
      nodes.push_back(std::move(n));
    }
    json out = StatusCore(now, nodes);
    if (with_history) {
      json h = {{"workers", json::object()}, {"servers", json::object()}, {"evals", evals_}};
      for (const auto& [r, l] : worker_history_) h["workers"][std::to_string(r)] = l.points();
      for (const auto& [r, l] : server_history_) h["servers"][std::to_string(r)] = l.points();
      out["history"] = std::move(h);
    }
    return out;
  }

  json StatusCore(int64_t now, const json& nodes) {
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
        if (j.contains("stats")) OnStats(id, j["stats"]);
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
        Event(ok ? "finished" : "failed", RoleName(m->role), m->rank);
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
    Event("registered", RoleName(role), *r);
    LOG_INFO << RoleName(role) << " " << *r << " registered from " << j.value("host", std::string())
             << ":" << j.value("port", 0) << " (pid " << j.value("pid", 0) << ")";
    if (members_.Complete()) {
      phase_ = Phase::kRunning;
      Event("cluster formed");
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
    Event("dead: " + why, RoleName(m.role), m.rank);
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
    Event("job complete");
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
    Event("job failed: " + reason);
    Broadcast(MsgType::kShutdown, {{"ok", false}, {"reason", reason}});
    // Give the shutdown frames a moment to leave, then stop.
    auto t = std::make_shared<asio::steady_timer>(io_, std::chrono::milliseconds(200));
    t->async_wait([this, t](boost::system::error_code) { Finish(); });
  }

  void Finish() {
    if (done_) return;
    done_ = true;
    WriteTimeline();
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
  const std::string dashboard_page_ = DashboardPage(opts_.job_name);
  std::map<std::string, json> stats_;  // "worker 0" -> its latest heartbeat stats
  std::map<uint32_t, StatsHistory> worker_history_, server_history_;
  std::vector<json> evals_;   // worker 0's evaluations, one per epoch
  std::vector<json> events_;  // the timeline (Event)
  int last_epoch_ = 0;
  uint64_t last_checkpoint_ = 0;
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
