#include "scheduler/client.h"

#include <unistd.h>

// clang-format off
#include <utility>  // before asio: Boost 1.74 needs std::exchange declared
#include <boost/asio.hpp>
// clang-format on
#include <chrono>
#include <nlohmann/json.hpp>

#include "common/clock.h"
#include "common/logging.h"
#include "common/mutex.h"

namespace m6rec {

const char* ShutdownCauseName(ShutdownCause c) {
  switch (c) {
    case ShutdownCause::kShutdownOk:
      return "shutdown ok";
    case ShutdownCause::kShutdownFailed:
      return "shutdown failed";
    case ShutdownCause::kNodeDead:
      return "node dead";
    case ShutdownCause::kConnectionLost:
      return "connection lost";
    case ShutdownCause::kTimeout:
      return "timeout";
  }
  return "?";
}

namespace asio = boost::asio;
using asio::ip::tcp;
using nlohmann::json;

class SchedulerClient::Impl {
 public:
  explicit Impl(const SchedulerClientOptions& o)
      : opts_(o), clock_(o.clock ? o.clock : &steady_), sock_(io_) {}

  ~Impl() {
    {
      MutexLock lock(&mu_);
      stop_ = true;
    }
    cv_.NotifyAll();
    boost::system::error_code ec;
    sock_.shutdown(tcp::socket::shutdown_both, ec);
    if (heartbeat_.joinable()) heartbeat_.join();
    if (reader_.joinable()) reader_.join();
    sock_.close(ec);
  }

  // Attempts at once, then after 50, 100, 200, ... (at most 1000) ms on the clock, and gives
  // up at the first failure once the clock has passed connect_timeout_ms.
  Status Connect() {
    const int64_t deadline = clock_->NowMs() + opts_.connect_timeout_ms;
    int backoff_ms = 50;
    std::string last_error;
    boost::system::error_code ec;
    auto addr = asio::ip::make_address(opts_.host, ec);
    if (ec)
      return Status::InvalidArgument("scheduler address '" + opts_.host + "': " + ec.message());
    tcp::endpoint ep(addr, static_cast<unsigned short>(opts_.port));
    for (int attempt = 1;; ++attempt) {
      sock_.close(ec);
      sock_.connect(ep, ec);
      if (!ec) break;
      last_error = ec.message();
      const int64_t now = clock_->NowMs();
      if (now >= deadline)
        return Status::Unavailable(
            "cannot reach the scheduler at " + opts_.host + ":" + std::to_string(opts_.port) +
            " within " + std::to_string(opts_.connect_timeout_ms) + " ms (" +
            std::to_string(attempt) + " attempts, last error: " + last_error + ")");
      const int64_t retry_at = std::min<int64_t>(now + backoff_ms, deadline);
      for (int64_t t = now; t < retry_at; t = clock_->NowMs())
        std::this_thread::sleep_for(
            std::chrono::milliseconds(std::min(retry_at - t, SchedulerClient::kWaitSliceMs)));
      backoff_ms = std::min(backoff_ms * 2, 1000);
    }
    sock_.set_option(tcp::no_delay(true));
    reader_ = std::thread([this] { ReadLoop(); });
    return Status::OK();
  }

  Status Send(MsgType type, const json& payload) {
    MsgHeader h;
    h.type = static_cast<uint16_t>(type);
    h.token = opts_.token;
    h.request_id = ++next_id_;
    std::string frame = EncodeControlFrame(h, payload.dump());
    MutexLock lock(&write_mu_);
    boost::system::error_code ec;
    asio::write(sock_, asio::buffer(frame), ec);
    if (ec) return Status::Unavailable("lost the scheduler connection: " + ec.message());
    return Status::OK();
  }

  // Waits for (and removes) the first inbox frame of one of `types`, until the clock reads
  // deadline_ms (timeout_ms is only for the message).
  StatusOr<std::pair<MsgHeader, json>> WaitFor(std::initializer_list<MsgType> types,
                                               int64_t deadline_ms, int timeout_ms,
                                               const std::string& what,
                                               const std::string& name = "") {
    MutexLock lock(&mu_);
    for (;;) {
      for (auto it = inbox_.begin(); it != inbox_.end(); ++it) {
        auto t = static_cast<MsgType>(it->first.type);
        bool match = false;
        for (auto w : types) match |= (w == t);
        if (match && (name.empty() || it->second.value("name", "") == name)) {
          auto out = *it;
          inbox_.erase(it);
          if (t == MsgType::kControlError)
            return Status::InvalidArgument("the scheduler refused " + what + ": " +
                                           out.second.value("error", std::string("?")));
          return out;
        }
      }
      if (shutdown_ || lost_) return Status::Aborted("while waiting for " + what + ": " + failure_);
      const int64_t left = deadline_ms - clock_->NowMs();
      if (left <= 0)
        return Status::DeadlineExceeded("timed out after " + std::to_string(timeout_ms) +
                                        " ms waiting for " + what + " from the scheduler");
      cv_.WaitFor(&mu_, std::chrono::milliseconds(std::min(left, SchedulerClient::kWaitSliceMs)));
    }
  }

  // Blocks until SHUTDOWN arrives or the connection is lost (true), or the clock reads
  // deadline_ms (false).
  bool WaitShutdownOrLost(int64_t deadline_ms) REQUIRES(mu_) {
    while (!shutdown_ && !lost_) {
      const int64_t left = deadline_ms - clock_->NowMs();
      if (left <= 0) return false;
      cv_.WaitFor(&mu_, std::chrono::milliseconds(std::min(left, SchedulerClient::kWaitSliceMs)));
    }
    return true;
  }

  // One heartbeat now, then one each time the clock has moved heartbeat_interval_ms past the
  // previous one.
  void StartHeartbeats() {
    if (heartbeat_.joinable()) return;
    heartbeat_ = std::thread([this] {
      MutexLock lock(&mu_);
      int64_t due = clock_->NowMs();
      while (!stop_ && !lost_) {
        const int64_t now = clock_->NowMs();
        if (now >= due) {
          const json beat = stats_.empty() ? json::object() : json{{"stats", stats_}};
          lock.Unlock();
          Status s = Send(MsgType::kHeartbeat, beat);
          lock.Lock();
          if (!s.ok()) break;
          due = now + opts_.heartbeat_interval_ms;
          continue;
        }
        cv_.WaitFor(&mu_,
                    std::chrono::milliseconds(std::min(due - now, SchedulerClient::kWaitSliceMs)),
                    [this]() REQUIRES(mu_) { return stop_ || lost_; });
      }
    });
  }

  void ReadLoop() {
    for (;;) {
      uint32_t len = 0;
      boost::system::error_code ec;
      asio::read(sock_, asio::buffer(&len, 4), ec);
      std::string body;
      if (!ec) {
        if (len < sizeof(MsgHeader) || len > kMaxControlFrame) {
          ec = asio::error::invalid_argument;
        } else {
          body.resize(len);
          asio::read(sock_, asio::buffer(&body[0], len), ec);
        }
      }
      MutexLock lock(&mu_);
      if (ec) {
        if (!stop_ && !shutdown_) {
          lost_ = true;
          failure_ = "lost the connection to the scheduler at " + opts_.host + ":" +
                     std::to_string(opts_.port) + " (" + ec.message() + ")";
        }
        cv_.NotifyAll();
        return;
      }
      MsgHeader h;
      std::string payload;
      if (!DecodeControlFrame(body.data(), body.size(), &h, &payload).ok() ||
          h.token != opts_.token) {
        LOG_WARN << "dropping a malformed frame from the scheduler";
        continue;
      }
      json j = json::parse(payload, nullptr, false);
      if (j.is_discarded()) j = json::object();
      auto t = static_cast<MsgType>(h.type);
      if (t == MsgType::kShutdown) {
        shutdown_ = true;
        shutdown_ok_ = j.value("ok", false);
        failure_ = j.value("reason", std::string("shutdown"));
        if (!shutdown_ok_) failed_ = true;
      } else if (t == MsgType::kNodeDead) {
        failed_ = true;
        node_dead_ = true;
        failure_ = j.value("role", std::string("?")) + " " + std::to_string(j.value("rank", -1)) +
                   " died: " + j.value("reason", std::string("?"));
      } else {
        inbox_.emplace_back(h, std::move(j));
      }
      cv_.NotifyAll();
    }
  }

  SchedulerClientOptions opts_;
  SteadyClock steady_;  // the clock when the options name none
  const Clock* clock_;
  asio::io_context io_;
  tcp::socket sock_;
  Mutex write_mu_;  // one frame at a time on sock_ (the reader thread reads it without a lock)
  std::atomic<uint64_t> next_id_{0};
  std::thread reader_, heartbeat_;

  mutable Mutex mu_;
  CondVar cv_;  // signalled on every change of the state below
  std::deque<std::pair<MsgHeader, json>> inbox_ GUARDED_BY(mu_);
  bool stop_ GUARDED_BY(mu_) = false;
  bool lost_ GUARDED_BY(mu_) = false;
  json stats_ GUARDED_BY(mu_);  // sent with every heartbeat (SetStats)
  bool shutdown_ GUARDED_BY(mu_) = false;
  bool shutdown_ok_ GUARDED_BY(mu_) = false;
  bool failed_ GUARDED_BY(mu_) = false;
  bool node_dead_ GUARDED_BY(mu_) = false;  // a NODE_DEAD arrived
  std::string failure_ GUARDED_BY(mu_);
};

SchedulerClient::SchedulerClient(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
SchedulerClient::~SchedulerClient() = default;

StatusOr<std::unique_ptr<SchedulerClient>> SchedulerClient::Connect(
    const SchedulerClientOptions& opts) {
  auto impl = std::make_unique<Impl>(opts);
  M6_RETURN_IF_ERROR(impl->Connect());
  return std::unique_ptr<SchedulerClient>(new SchedulerClient(std::move(impl)));
}

StatusOr<ClusterView> SchedulerClient::Register(const std::string& role, const std::string& host,
                                                int port, int requested_rank, int timeout_ms) {
  const int64_t deadline = impl_->clock_->NowMs() + timeout_ms;
  M6_RETURN_IF_ERROR(impl_->Send(MsgType::kRegister, {{"role", role},
                                                      {"host", host},
                                                      {"port", port},
                                                      {"rank", requested_rank},
                                                      {"pid", static_cast<int>(::getpid())}}));
  // Heartbeats start now: the scheduler knows us, and the wait for the others may be long.
  impl_->StartHeartbeats();
  M6_ASSIGN_OR_RETURN(auto msg, impl_->WaitFor({MsgType::kClusterView, MsgType::kControlError},
                                               deadline, timeout_ms, "the cluster view"));
  return ClusterView::FromJson(msg.second.dump());
}

Status SchedulerClient::Barrier(const std::string& name, const std::string& group, int timeout_ms) {
  const int64_t deadline = impl_->clock_->NowMs() + timeout_ms;
  M6_RETURN_IF_ERROR(impl_->Send(MsgType::kBarrier, {{"name", name}, {"group", group}}));
  auto r = impl_->WaitFor({MsgType::kBarrierRelease, MsgType::kControlError}, deadline, timeout_ms,
                          "barrier '" + name + "'", name);
  return r.ok() ? Status::OK() : r.status();
}

Status SchedulerClient::Finished(bool ok, const std::string& error,
                                 const std::string& summary_json) {
  json summary = json::parse(summary_json.empty() ? "{}" : summary_json, nullptr, false);
  if (summary.is_discarded()) summary = json::object();
  return impl_->Send(MsgType::kFinished, {{"ok", ok}, {"error", error}, {"summary", summary}});
}

ShutdownNotice SchedulerClient::WaitShutdown(int timeout_ms) {
  const int64_t deadline = impl_->clock_->NowMs() + timeout_ms;
  MutexLock lock(&impl_->mu_);
  const bool got = impl_->WaitShutdownOrLost(deadline);
  ShutdownNotice n;
  if (!got) {
    n.cause = ShutdownCause::kTimeout;
    n.reason = "no shutdown from the scheduler within the timeout";
    return n;
  }
  if (!impl_->shutdown_)
    n.cause = ShutdownCause::kConnectionLost;
  else if (impl_->shutdown_ok_)
    n.cause = ShutdownCause::kShutdownOk;
  else if (impl_->node_dead_)
    n.cause = ShutdownCause::kNodeDead;
  else
    n.cause = ShutdownCause::kShutdownFailed;
  n.ok = n.cause == ShutdownCause::kShutdownOk;
  n.reason = impl_->failure_;
  return n;
}

bool SchedulerClient::failed(std::string* why) const {
  MutexLock lock(&impl_->mu_);
  if (why) *why = impl_->failure_;
  return impl_->failed_ || impl_->lost_;
}

bool SchedulerClient::shutdown_received() const {
  MutexLock lock(&impl_->mu_);
  return impl_->shutdown_;
}

void SchedulerClient::SetStats(const json& stats) {
  MutexLock lock(&impl_->mu_);
  impl_->stats_ = stats;
}

StatusOr<std::string> SchedulerClient::QueryStatus(int timeout_ms) {
  const int64_t deadline = impl_->clock_->NowMs() + timeout_ms;
  M6_RETURN_IF_ERROR(impl_->Send(MsgType::kStatusRequest, json::object()));
  M6_ASSIGN_OR_RETURN(auto msg,
                      impl_->WaitFor({MsgType::kStatusReply}, deadline, timeout_ms, "status"));
  return msg.second.dump();
}

}  // namespace m6rec
