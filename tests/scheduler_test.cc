// The scheduler in-process (its Asio thread) with real SchedulerClients over loopback TCP, and
// the client against a bare socket standing in for the scheduler. Timeout logic runs on a
// FakeClock the test advances: no test waits out a timeout in real time, and no result depends
// on how fast this machine is. Real-time waits below are of two kinds only: bounds against
// hanging (kHangGuard, far above any real duration) and "nothing happens for a while" checks,
// which can miss a bug on a slow machine but never fail a correct client.
#include "scheduler/scheduler.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <future>
#include <nlohmann/json.hpp>
#include <thread>

#include "common/clock.h"
#include "common/protocol.h"
#include "launch/progress_line.h"
#include "scheduler/client.h"
#include "scheduler/dashboard.h"

namespace m6rec {

namespace {

using nlohmann::json;
using std::chrono::milliseconds;

constexpr uint64_t kToken = 77;
// Only against hanging: every wait bounded by it ends on an event long before.
constexpr auto kHangGuard = std::chrono::seconds(30);
constexpr int kHangGuardMs = 30000;
// How long a "nothing happens" check watches (real time).
constexpr auto kQuietWindow = milliseconds(200);
// A timeout no real wait could reach within the test: only a FakeClock passes it.
constexpr int kTenMinutesMs = 600000;

struct Running {
  std::unique_ptr<Scheduler> sched;
  std::future<Status> result;
};

Running Start(int servers, int workers, int connect_timeout_ms = 10000, int hb_timeout_ms = 10000,
              const Clock* clock = nullptr) {
  SchedulerOptions o;
  o.cluster.servers = servers;
  o.cluster.workers = workers;
  o.cluster.http_port = 0;
  o.cluster.heartbeat_interval_ms = 50;
  o.cluster.heartbeat_timeout_ms = hb_timeout_ms;
  o.cluster.connect_timeout_ms = connect_timeout_ms;
  o.num_slots = 32;
  o.token = kToken;
  o.clock = clock;
  auto s = Scheduler::Create(o);
  EXPECT_TRUE(s.ok()) << s.status().message();
  Running r;
  r.sched = std::move(*s);
  Scheduler* raw = r.sched.get();
  r.result = std::async(std::launch::async, [raw] { return raw->Run(); });
  return r;
}

std::unique_ptr<SchedulerClient> Connect(int port, uint64_t token = kToken, int timeout_ms = 5000,
                                         const Clock* clock = nullptr,
                                         int heartbeat_interval_ms = 50) {
  SchedulerClientOptions o;
  o.port = port;
  o.token = token;
  o.connect_timeout_ms = timeout_ms;
  o.heartbeat_interval_ms = heartbeat_interval_ms;
  o.clock = clock;
  auto c = SchedulerClient::Connect(o);
  EXPECT_TRUE(c.ok()) << c.status().message();
  return c.ok() ? std::move(*c) : nullptr;
}

struct HttpReply {
  int code = 0;  // from the status line; 0 when there was no reply
  json body;     // the JSON body (discarded when it is not JSON)
  std::string raw;
};

HttpReply HttpGet(int port, const std::string& path) {
  HttpReply reply;
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
    close(fd);
    return reply;
  }
  std::string req = "GET " + path + " HTTP/1.0\r\n\r\n";
  (void)!write(fd, req.data(), req.size());
  char buf[4096];
  ssize_t n;
  while ((n = read(fd, buf, sizeof(buf))) > 0) reply.raw.append(buf, n);
  close(fd);
  // "HTTP/1.0 200 OK\r\n<headers>\r\n\r\n<body>"
  const size_t sp = reply.raw.find(' '), end = reply.raw.find("\r\n\r\n");
  if (sp != std::string::npos) reply.code = std::atoi(reply.raw.c_str() + sp + 1);
  reply.body = json::parse(end == std::string::npos ? std::string() : reply.raw.substr(end + 4),
                           nullptr, false);
  return reply;
}

// The scheduler's status (STATUS_REPLY) as JSON.
json StatusOf(SchedulerClient& c) {
  auto s = c.QueryStatus(kHangGuardMs);
  EXPECT_TRUE(s.ok()) << s.status().message();
  return json::parse(s.ok() ? *s : std::string("{}"), nullptr, false);
}

// Waits (polling the status, bounded by kHangGuard) until the scheduler lists `n` nodes.
bool WaitForNodes(SchedulerClient& observer, size_t n) {
  const auto until = std::chrono::steady_clock::now() + kHangGuard;
  while (std::chrono::steady_clock::now() < until) {
    json st = StatusOf(observer);
    if (st.is_object() && st["nodes"].size() >= n) return true;
    std::this_thread::sleep_for(milliseconds(10));
  }
  return false;
}

// Advances `clock` by step_ms at a time until `f` is ready; returns how far it advanced in all,
// or -1 when f was still not ready after 1000 steps (a hang).
template <typename T>
int64_t AdvanceUntilReady(FakeClock& clock, std::future<T>& f, int64_t step_ms) {
  int64_t advanced = 0;
  for (int i = 0; i < 1000; ++i) {
    if (f.wait_for(milliseconds(10)) == std::future_status::ready) return advanced;
    clock.Advance(step_ms);
    advanced += step_ms;
  }
  return f.wait_for(milliseconds(0)) == std::future_status::ready ? advanced : -1;
}

// A listening loopback socket that plays the scheduler byte for byte.
class FakeScheduler {
 public:
  FakeScheduler() {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ok_ = listen_fd_ >= 0 && ::bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0 &&
          ::listen(listen_fd_, 4) == 0;
    socklen_t len = sizeof(a);
    ok_ = ok_ && ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len) == 0;
    port_ = ntohs(a.sin_port);
  }
  ~FakeScheduler() {
    CloseConnection();
    if (listen_fd_ >= 0) ::close(listen_fd_);
  }
  bool ok() const { return ok_; }
  int port() const { return port_; }
  bool Accept() { return (conn_ = ::accept(listen_fd_, nullptr, nullptr)) >= 0; }
  void CloseConnection() {
    if (conn_ >= 0) ::close(conn_);
    conn_ = -1;
  }
  void StopListening() {
    ::close(listen_fd_);
    listen_fd_ = -1;
  }
  // Reads the next frame the client sent; false when none arrives within timeout_ms.
  bool Read(int timeout_ms, MsgType* type) {
    uint32_t len = 0;
    if (!ReadExactly(&len, sizeof(len), timeout_ms) || len < sizeof(MsgHeader) ||
        len > kMaxControlFrame)
      return false;
    std::string body(len, '\0');
    if (!ReadExactly(&body[0], len, kHangGuardMs)) return false;
    MsgHeader h;
    std::string payload;
    if (!DecodeControlFrame(body.data(), body.size(), &h, &payload).ok()) return false;
    *type = static_cast<MsgType>(h.type);
    return true;
  }

 private:
  bool ReadExactly(void* out, size_t n, int timeout_ms) {
    char* p = static_cast<char*>(out);
    while (n > 0) {
      pollfd pfd{conn_, POLLIN, 0};
      if (::poll(&pfd, 1, timeout_ms) != 1) return false;
      ssize_t got = ::read(conn_, p, n);
      if (got <= 0) return false;
      p += got;
      n -= static_cast<size_t>(got);
    }
    return true;
  }

  int listen_fd_ = -1, conn_ = -1, port_ = 0;
  bool ok_ = false;
};

}  // namespace

TEST(Scheduler, RendezvousBarrierStatusAndOrderlyShutdown) {
  Running r = Start(1, 2);
  const int port = r.sched->port();
  auto server = Connect(port);
  auto w0 = Connect(port), w1 = Connect(port);
  auto fs = std::async(std::launch::async, [&] {
    return server->Register("server", "127.0.0.1", 4000, -1, kHangGuardMs);
  });
  auto f0 = std::async(std::launch::async,
                       [&] { return w0->Register("worker", "127.0.0.1", 0, 1, kHangGuardMs); });
  auto f1 = std::async(std::launch::async,
                       [&] { return w1->Register("worker", "127.0.0.1", 0, -1, kHangGuardMs); });
  auto vs = fs.get(), v0 = f0.get(), v1 = f1.get();
  ASSERT_TRUE(vs.ok() && v0.ok() && v1.ok()) << vs.status().message() << v0.status().message();
  EXPECT_EQ(v0->rank, 1u) << "a requested rank is honoured";
  EXPECT_EQ(v1->rank, 0u);
  ASSERT_EQ(v0->servers.size(), 1u);
  EXPECT_EQ(v0->servers[0].port, 4000);
  EXPECT_EQ(v0->slot_map.size(), 32u);

  // The status page over HTTP and over the control connection: the same JSON.
  HttpReply page = HttpGet(r.sched->http_port(), "/status");
  EXPECT_EQ(page.code, 200) << page.raw;
  ASSERT_TRUE(page.body.is_object()) << "the status page is JSON: " << page.raw;
  EXPECT_EQ(page.body["phase"], "running") << page.body.dump();
  EXPECT_EQ(page.body["nodes"].size(), 3u) << page.body.dump();
  json st = StatusOf(*w0);
  EXPECT_EQ(st["phase"], "running") << st.dump();
  EXPECT_EQ(st["expected"], json({{"servers", 1}, {"workers", 2}})) << st.dump();
  EXPECT_EQ(st["missing"], "") << st.dump();
  HttpReply nope = HttpGet(r.sched->http_port(), "/nope");
  EXPECT_EQ(nope.code, 404) << nope.raw;
  EXPECT_TRUE(nope.body.is_object() && nope.body.contains("error")) << nope.raw;

  auto b0 =
      std::async(std::launch::async, [&] { return w0->Barrier("x", "workers", kHangGuardMs); });
  EXPECT_EQ(b0.wait_for(kQuietWindow), std::future_status::timeout)
      << "the barrier must wait for the second worker";
  ASSERT_TRUE(w1->Barrier("x", "workers", kHangGuardMs).ok());
  ASSERT_TRUE(b0.get().ok());

  ASSERT_TRUE(w0->Finished(true, "", "{\"hr\": 1}").ok());
  ASSERT_TRUE(w1->Finished(true, "", "{}").ok());
  ShutdownNotice n = server->WaitShutdown(kHangGuardMs);
  EXPECT_TRUE(n.ok) << n.reason;
  EXPECT_EQ(n.cause, ShutdownCause::kShutdownOk) << ShutdownCauseName(n.cause);
  server.reset();  // the server leaving lets the scheduler finish
  ASSERT_EQ(r.result.wait_for(kHangGuard), std::future_status::ready);
  EXPECT_TRUE(r.result.get().ok());
}

TEST(Scheduler, RendezvousTimeoutNamesTheMissingNodes) {
  // The scheduler runs on a FakeClock: its rendezvous timeout passes when the test advances it.
  FakeClock clock;
  Running r = Start(2, 1, /*connect_timeout_ms=*/kTenMinutesMs, 10000, &clock);
  auto s0 = Connect(r.sched->port());
  auto observer = Connect(r.sched->port());
  auto reg = std::async(std::launch::async,
                        [&] { return s0->Register("server", "127.0.0.1", 1, 0, kHangGuardMs); });
  // Once the status lists server 0, the scheduler runs and has read its start time.
  ASSERT_TRUE(WaitForNodes(*observer, 1));
  json st = StatusOf(*observer);
  EXPECT_EQ(st["phase"], "forming") << st.dump();
  EXPECT_EQ(st["missing"], "server 1, worker 0") << st.dump();
  clock.Advance(kTenMinutesMs - 1);
  EXPECT_EQ(r.result.wait_for(kQuietWindow), std::future_status::timeout)
      << "before connect_timeout_ms has passed on its clock the rendezvous stays open";
  clock.Advance(2);
  ASSERT_EQ(r.result.wait_for(kHangGuard), std::future_status::ready)
      << "once connect_timeout_ms has passed on its clock the scheduler fails the job";
  Status result = r.result.get();
  EXPECT_FALSE(result.ok());
  EXPECT_NE(result.message().find("still missing server 1, worker 0"), std::string::npos)
      << result.message();
  auto v = reg.get();
  EXPECT_FALSE(v.ok()) << "the waiting node is told the job ended";
}

TEST(Scheduler, ADisconnectedNodeIsDeclaredDeadAndEveryoneIsTold) {
  Running r = Start(1, 1);
  auto server = Connect(r.sched->port());
  auto worker = Connect(r.sched->port());
  auto fs = std::async(std::launch::async, [&] {
    return server->Register("server", "127.0.0.1", 1, -1, kHangGuardMs);
  });
  ASSERT_TRUE(worker->Register("worker", "127.0.0.1", 0, -1, kHangGuardMs).ok());
  ASSERT_TRUE(fs.get().ok());
  server.reset();  // the server's process "dies": its connection closes
  ShutdownNotice n = worker->WaitShutdown(kHangGuardMs);
  EXPECT_FALSE(n.ok);
  EXPECT_EQ(n.cause, ShutdownCause::kNodeDead) << "a failed shutdown after NODE_DEAD, got "
                                               << ShutdownCauseName(n.cause) << ": " << n.reason;
  std::string why;
  EXPECT_TRUE(worker->failed(&why));
  EXPECT_NE(why.find("server 0"), std::string::npos) << why;
  ASSERT_EQ(r.result.wait_for(kHangGuard), std::future_status::ready);
  Status st = r.result.get();
  EXPECT_NE(st.message().find("server 0"), std::string::npos) << st.message();
}

TEST(SchedulerClient, ShutdownNoticeSaysWhetherItTimedOutFailedOrLostTheScheduler) {
  Running r = Start(1, 1);
  FakeClock clock;  // the worker's
  auto server = Connect(r.sched->port());
  auto worker = Connect(r.sched->port(), kToken, 5000, &clock);
  auto fs = std::async(std::launch::async, [&] {
    return server->Register("server", "127.0.0.1", 1, -1, kHangGuardMs);
  });
  ASSERT_TRUE(worker->Register("worker", "127.0.0.1", 0, -1, kHangGuardMs).ok());
  ASSERT_TRUE(fs.get().ok());
  // Nothing ends the job: the wait ends when the worker's clock passes its timeout.
  auto wait = std::async(std::launch::async, [&] { return worker->WaitShutdown(kTenMinutesMs); });
  const int64_t advanced = AdvanceUntilReady(clock, wait, kTenMinutesMs / 10);
  ASSERT_GE(advanced, 0) << "WaitShutdown never returned though its clock passed the timeout";
  EXPECT_GE(advanced, kTenMinutesMs) << "it gave up before its clock reached the timeout";
  ShutdownNotice n = wait.get();
  EXPECT_EQ(n.cause, ShutdownCause::kTimeout)
      << "nothing happened yet: " << ShutdownCauseName(n.cause);
  EXPECT_FALSE(n.ok);
  // The worker reports a failure: the scheduler fails the job (no node died).
  ASSERT_TRUE(worker->Finished(false, "broken on purpose", "{}").ok());
  n = server->WaitShutdown(kHangGuardMs);
  EXPECT_EQ(n.cause, ShutdownCause::kShutdownFailed)
      << ShutdownCauseName(n.cause) << ": " << n.reason;
  EXPECT_FALSE(n.ok);
  ASSERT_EQ(r.result.wait_for(kHangGuard), std::future_status::ready);
  EXPECT_FALSE(r.result.get().ok());
}

TEST(SchedulerClient, AVanishedSchedulerIsAConnectionLostNotice) {
  // A "scheduler" that accepts the connection and then closes it without a word.
  FakeScheduler fake;
  ASSERT_TRUE(fake.ok());
  auto c = Connect(fake.port());
  ASSERT_TRUE(c);
  ASSERT_TRUE(fake.Accept());
  fake.CloseConnection();
  fake.StopListening();
  ShutdownNotice n = c->WaitShutdown(kHangGuardMs);
  EXPECT_EQ(n.cause, ShutdownCause::kConnectionLost)
      << ShutdownCauseName(n.cause) << ": " << n.reason;
  EXPECT_FALSE(n.ok);
}

TEST(Scheduler, WrongTokenConnectionsAreClosedAndCounted) {
  Running r = Start(1, 1, 2000);
  auto intruder = Connect(r.sched->port(), kToken + 1);
  auto v = intruder->Register("server", "127.0.0.1", 1, -1, kHangGuardMs);
  EXPECT_FALSE(v.ok()) << "a foreign token never joins the cluster";
  HttpReply page = HttpGet(r.sched->http_port(), "/status");
  ASSERT_TRUE(page.body.is_object()) << page.raw;
  EXPECT_EQ(page.body["dropped_bad_token"], 1) << page.body.dump();
  EXPECT_EQ(page.body["nodes"], json::array()) << page.body.dump();
  r.sched->Stop("test over");
  EXPECT_FALSE(r.result.get().ok());
}

TEST(SchedulerClient, RegisterTimesOutWhenItsClockPassesTheTimeout) {
  // The worker never comes, so the cluster view never does; the server's client runs on a
  // FakeClock, so its ten-minute timeout passes when the test advances the clock.
  Running r = Start(1, 1, /*connect_timeout_ms=*/kTenMinutesMs, /*hb_timeout_ms=*/kTenMinutesMs);
  FakeClock clock;
  auto server = Connect(r.sched->port(), kToken, 5000, &clock);
  auto observer = Connect(r.sched->port());
  auto reg = std::async(std::launch::async, [&] {
    return server->Register("server", "127.0.0.1", 1, -1, kTenMinutesMs);
  });
  // Register reads its clock before it sends REGISTER: once the scheduler lists the server,
  // the deadline is fixed at (the clock now) + ten minutes.
  ASSERT_TRUE(WaitForNodes(*observer, 1));
  clock.Advance(kTenMinutesMs - 1);
  EXPECT_EQ(reg.wait_for(kQuietWindow), std::future_status::timeout)
      << "1 ms before its deadline Register still waits";
  clock.Advance(1);
  ASSERT_EQ(reg.wait_for(kHangGuard), std::future_status::ready)
      << "Register must give up once its clock reaches the deadline";
  auto v = reg.get();
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.status().code(), StatusCode::kDeadlineExceeded) << v.status().message();
  EXPECT_NE(v.status().message().find("timed out after 600000 ms waiting for the cluster view"),
            std::string::npos)
      << v.status().message();
  r.sched->Stop("test over");
  EXPECT_FALSE(r.result.get().ok());
}

TEST(SchedulerClient, BarrierAndStatusQueriesTimeOutOnTheirClock) {
  // A barrier the other worker never reaches, and a status query to a "scheduler" that never
  // answers, each with a ten-minute timeout on a FakeClock.
  Running r = Start(1, 2, 10000, /*hb_timeout_ms=*/kTenMinutesMs);
  FakeClock clock;
  auto server = Connect(r.sched->port());
  auto w0 = Connect(r.sched->port(), kToken, 5000, &clock), w1 = Connect(r.sched->port());
  auto fs = std::async(std::launch::async, [&] {
    return server->Register("server", "127.0.0.1", 1, -1, kHangGuardMs);
  });
  auto f1 = std::async(std::launch::async,
                       [&] { return w1->Register("worker", "127.0.0.1", 0, -1, kHangGuardMs); });
  ASSERT_TRUE(w0->Register("worker", "127.0.0.1", 0, -1, kHangGuardMs).ok());
  ASSERT_TRUE(fs.get().ok() && f1.get().ok());
  auto barrier = std::async(std::launch::async,
                            [&] { return w0->Barrier("alone", "workers", kTenMinutesMs); });
  const int64_t advanced = AdvanceUntilReady(clock, barrier, kTenMinutesMs / 10);
  ASSERT_GE(advanced, 0) << "Barrier never returned though its clock passed the timeout";
  EXPECT_GE(advanced, kTenMinutesMs) << "it gave up before its clock reached the timeout";
  Status b = barrier.get();
  EXPECT_EQ(b.code(), StatusCode::kDeadlineExceeded) << b.message();
  r.sched->Stop("test over");
  EXPECT_FALSE(r.result.get().ok());

  FakeScheduler silent;
  ASSERT_TRUE(silent.ok());
  FakeClock clock2;
  auto c = Connect(silent.port(), kToken, 5000, &clock2);
  ASSERT_TRUE(c);
  ASSERT_TRUE(silent.Accept());
  auto query = std::async(std::launch::async, [&] { return c->QueryStatus(kTenMinutesMs); });
  const int64_t advanced2 = AdvanceUntilReady(clock2, query, kTenMinutesMs / 10);
  ASSERT_GE(advanced2, 0) << "QueryStatus never returned though its clock passed the timeout";
  EXPECT_GE(advanced2, kTenMinutesMs) << "it gave up before its clock reached the timeout";
  auto q = query.get();
  EXPECT_EQ(q.status().code(), StatusCode::kDeadlineExceeded) << q.status().message();
}

TEST(SchedulerClient, HeartbeatsFollowItsClock) {
  FakeScheduler fake;
  ASSERT_TRUE(fake.ok());
  FakeClock clock;
  auto c = Connect(fake.port(), kToken, 5000, &clock, /*heartbeat_interval_ms=*/1000);
  ASSERT_TRUE(c);
  ASSERT_TRUE(fake.Accept());
  auto reg = std::async(std::launch::async,
                        [&] { return c->Register("worker", "127.0.0.1", 0, -1, kTenMinutesMs); });
  MsgType t;
  ASSERT_TRUE(fake.Read(kHangGuardMs, &t));
  EXPECT_EQ(t, MsgType::kRegister);
  ASSERT_TRUE(fake.Read(kHangGuardMs, &t));
  EXPECT_EQ(t, MsgType::kHeartbeat)
      << "the first heartbeat goes out as soon as the node registered";
  EXPECT_FALSE(fake.Read(std::chrono::duration_cast<milliseconds>(kQuietWindow).count(), &t))
      << "no heartbeat while the clock stands still";
  clock.Advance(999);
  EXPECT_FALSE(fake.Read(std::chrono::duration_cast<milliseconds>(kQuietWindow).count(), &t))
      << "no heartbeat before heartbeat_interval_ms has passed on the clock";
  clock.Advance(1);
  ASSERT_TRUE(fake.Read(kHangGuardMs, &t))
      << "a heartbeat once the interval has passed on the clock";
  EXPECT_EQ(t, MsgType::kHeartbeat);
  clock.Advance(5000);
  ASSERT_TRUE(fake.Read(kHangGuardMs, &t));
  EXPECT_EQ(t, MsgType::kHeartbeat);
  EXPECT_FALSE(fake.Read(std::chrono::duration_cast<milliseconds>(kQuietWindow).count(), &t))
      << "a jump of five intervals sends one heartbeat, not a burst of five";
  fake.CloseConnection();
  auto v = reg.get();
  EXPECT_EQ(v.status().code(), StatusCode::kAborted)
      << "the lost connection ends the wait: " << v.status().message();
}

TEST(SchedulerClient, ConnectBacksOffOnItsClockAndGivesUpAtTheDeadline) {
  // Nothing listens on port 1. The connect timeout (100 ms) runs on a FakeClock: while the
  // clock stands still the client keeps retrying, however much real time passes.
  FakeClock clock;
  SchedulerClientOptions o;
  o.port = 1;
  o.connect_timeout_ms = 100;
  o.clock = &clock;
  auto connect = std::async(std::launch::async, [&] { return SchedulerClient::Connect(o); });
  EXPECT_EQ(connect.wait_for(3 * kQuietWindow), std::future_status::timeout)
      << "it gave up though its clock had not moved";
  const int64_t advanced = AdvanceUntilReady(clock, connect, 10);
  ASSERT_GE(advanced, 0) << "Connect never gave up though its clock passed the timeout";
  EXPECT_GE(advanced, 100) << "it gave up before its clock reached connect_timeout_ms";
  auto c = connect.get();
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), StatusCode::kUnavailable) << c.status().message();
  // What a user reads when a node cannot find the scheduler: the address and the timeout.
  EXPECT_NE(c.status().message().find("cannot reach the scheduler at 127.0.0.1:1 within 100 ms"),
            std::string::npos)
      << c.status().message();
}

// The progress line and /metrics are functions of /status: checked on a hand-made one.
// A node's history stays bounded over a long job and keeps its whole span at one resolution:
// the first tenth of the job holds about a tenth of the points (halving alone would leave it
// with a handful).
TEST(Dashboard, StatsHistoryKeepsTheWholeSpanEvenly) {
  StatsHistory h(100);
  for (int i = 0; i <= 20000; ++i) h.Append({{"t", i * 0.1}, {"steps", i}});
  const auto& p = h.points();
  ASSERT_LE(p.size(), 100u);
  ASSERT_GE(p.size(), 50u);
  EXPECT_EQ(p.front()["t"].get<double>(), 0.0);
  EXPECT_GT(p.back()["t"].get<double>(), 1900.0) << "recent points are kept";
  int first_tenth = 0;
  double widest = 0, narrowest = 1e9;
  for (size_t i = 0; i < p.size(); ++i) {
    if (p[i]["t"].get<double>() < 200.0) ++first_tenth;
    if (i > 0) {
      const double gap = p[i]["t"].get<double>() - p[i - 1]["t"].get<double>();
      widest = std::max(widest, gap);
      narrowest = std::min(narrowest, gap);
    }
  }
  EXPECT_GE(first_tenth, int(p.size()) / 20) << "the start of the job is not thinned away";
  EXPECT_LE(widest, 3.0 * narrowest) << "one resolution over the span";
}

TEST(Dashboard, ProgressLineAndMetricsReadTheWorkersStats) {
  const nlohmann::json st = nlohmann::json::parse(R"({
    "job": "j", "phase": "running", "uptime_s": 12.5,
    "nodes": [
      {"role": "server", "rank": 0, "alive": true, "silent_ms": 100,
       "stats": {"pulls": 10, "pushes": 9, "rows_pulled": 1000, "rows_pushed": 900,
                 "hot_hits": 950, "cold_reads": 50}},
      {"role": "worker", "rank": 1, "alive": false, "silent_ms": 9000,
       "stats": {"samples_per_s": 400, "steps": 7}},
      {"role": "worker", "rank": 0, "alive": true, "silent_ms": 200,
       "stats": {"epoch": 2, "epochs": 4, "steps": 30, "samples": 3840, "step_in_epoch": 5,
                 "steps_per_epoch": 20, "loss": 2.5, "samples_per_s": 600,
                 "eta_epoch_s": 15, "eta_job_s": 75,
                 "last_eval": {"epoch": 1, "test": {"HR@10": 0.4321, "users": 600}}}}]})");
  const std::string line = ProgressLine::Render(st, 200);
  EXPECT_EQ(line,
            "epoch 2/4 [#####---------------]  25% 5/20 | 1000 samples/s | loss 2.5000 | ETA "
            "epoch 0:15, job 1:15 | HR@10 0.4321 (epoch 1)");
  EXPECT_EQ(ProgressLine::Render(st, 30).size(), 29u) << "cut to the terminal's width";
  EXPECT_EQ(ProgressLine::Render(nlohmann::json::object(), 100), "");
  EXPECT_TRUE(ProgressLine::IsProgressLogLine(
      "19:45:48.054 I epoch 2 step 600 loss 4.72514 (1954 samples/s, ETA epoch 0:00, job 1:19)"));
  EXPECT_FALSE(ProgressLine::IsProgressLogLine("19:45:55.646 I epoch 2: train loss 4.72994"));

  const std::string m = PrometheusText(st);
  for (const char* want :
       {"m6rec_node_up{rank=\"1\",role=\"worker\"} 0", "m6rec_worker_steps_total{rank=\"0\"} 30",
        "m6rec_worker_eta_seconds{rank=\"0\"} 75", "m6rec_eval_metric{metric=\"HR@10\"} 0.4321",
        "m6rec_server_requests_total{op=\"pull\",rank=\"0\"} 10",
        "m6rec_server_hot_hits_total{rank=\"0\"} 950", "# TYPE m6rec_worker_steps_total counter",
        "m6rec_job_info{job=\"j\",phase=\"running\"} 1"})
    EXPECT_NE(m.find(want), std::string::npos) << want << "\n" << m;
  EXPECT_EQ(m.find("m6rec_eval_metric{metric=\"users\"}"), std::string::npos);
}

}  // namespace m6rec
