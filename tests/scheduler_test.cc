// The scheduler in-process (its Asio thread) with real SchedulerClients over loopback TCP.
#include <gtest/gtest.h>

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <future>
#include <thread>

#include "common/clock.h"
#include "common/protocol.h"
#include "scheduler/client.h"
#include "scheduler/scheduler.h"

namespace m6rec {

namespace {

constexpr uint64_t kToken = 77;

struct Running {
  std::unique_ptr<Scheduler> sched;
  std::future<Status> result;
};

Running Start(int servers, int workers, int connect_timeout_ms = 10000, int hb_timeout_ms = 10000) {
  SchedulerOptions o;
  o.cluster.servers = servers;
  o.cluster.workers = workers;
  o.cluster.http_port = 0;
  o.cluster.heartbeat_interval_ms = 50;
  o.cluster.heartbeat_timeout_ms = hb_timeout_ms;
  o.cluster.connect_timeout_ms = connect_timeout_ms;
  o.num_slots = 32;
  o.token = kToken;
  auto s = Scheduler::Create(o);
  EXPECT_TRUE(s.ok()) << s.status().message();
  Running r;
  r.sched = std::move(*s);
  Scheduler* raw = r.sched.get();
  r.result = std::async(std::launch::async, [raw] { return raw->Run(); });
  return r;
}

std::unique_ptr<SchedulerClient> Connect(int port, uint64_t token = kToken, int timeout_ms = 5000) {
  SchedulerClientOptions o;
  o.port = port;
  o.token = token;
  o.connect_timeout_ms = timeout_ms;
  o.heartbeat_interval_ms = 50;
  auto c = SchedulerClient::Connect(o);
  EXPECT_TRUE(c.ok()) << c.status().message();
  return c.ok() ? std::move(*c) : nullptr;
}

std::string HttpGet(int port, const std::string& path) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) return "";
  std::string req = "GET " + path + " HTTP/1.0\r\n\r\n";
  (void)!write(fd, req.data(), req.size());
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = read(fd, buf, sizeof(buf))) > 0) out.append(buf, n);
  close(fd);
  return out;
}

}  // namespace

TEST(Scheduler, RendezvousBarrierStatusAndOrderlyShutdown) {
  Running r = Start(1, 2);
  const int port = r.sched->port();
  auto server = Connect(port);
  auto w0 = Connect(port), w1 = Connect(port);
  auto fs = std::async(std::launch::async, [&] { return server->Register("server", "127.0.0.1", 4000, -1, 5000); });
  auto f0 = std::async(std::launch::async, [&] { return w0->Register("worker", "127.0.0.1", 0, 1, 5000); });
  auto f1 = std::async(std::launch::async, [&] { return w1->Register("worker", "127.0.0.1", 0, -1, 5000); });
  auto vs = fs.get(), v0 = f0.get(), v1 = f1.get();
  ASSERT_TRUE(vs.ok() && v0.ok() && v1.ok()) << vs.status().message() << v0.status().message();
  EXPECT_EQ(v0->rank, 1u) << "a requested rank is honoured";
  EXPECT_EQ(v1->rank, 0u);
  ASSERT_EQ(v0->servers.size(), 1u);
  EXPECT_EQ(v0->servers[0].port, 4000);
  EXPECT_EQ(v0->slot_map.size(), 32u);

  std::string status = HttpGet(r.sched->http_port(), "/status");
  EXPECT_NE(status.find("200 OK"), std::string::npos) << status;
  EXPECT_NE(status.find("\"phase\": \"running\""), std::string::npos) << status;
  EXPECT_NE(HttpGet(r.sched->http_port(), "/nope").find("404"), std::string::npos);

  auto b0 = std::async(std::launch::async, [&] { return w0->Barrier("x", "workers", 5000); });
  EXPECT_EQ(b0.wait_for(std::chrono::milliseconds(200)), std::future_status::timeout)
      << "the barrier must wait for the second worker";
  ASSERT_TRUE(w1->Barrier("x", "workers", 5000).ok());
  ASSERT_TRUE(b0.get().ok());

  ASSERT_TRUE(w0->Finished(true, "", "{\"hr\": 1}").ok());
  ASSERT_TRUE(w1->Finished(true, "", "{}").ok());
  ShutdownNotice n = server->WaitShutdown(5000);
  EXPECT_TRUE(n.ok) << n.reason;
  EXPECT_EQ(n.cause, ShutdownCause::kShutdownOk) << ShutdownCauseName(n.cause);
  server.reset();  // the server leaving lets the scheduler finish
  ASSERT_EQ(r.result.wait_for(std::chrono::seconds(5)), std::future_status::ready);
  EXPECT_TRUE(r.result.get().ok());
}

TEST(Scheduler, RendezvousTimeoutNamesTheMissingNodes) {
  Running r = Start(2, 1, /*connect_timeout_ms=*/400);
  auto s0 = Connect(r.sched->port());
  auto reg = std::async(std::launch::async, [&] { return s0->Register("server", "127.0.0.1", 1, 0, 5000); });
  ASSERT_EQ(r.result.wait_for(std::chrono::seconds(5)), std::future_status::ready);
  Status st = r.result.get();
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("server 1, worker 0"), std::string::npos) << st.message();
  auto v = reg.get();
  EXPECT_FALSE(v.ok()) << "the waiting node is told the job ended";
}

TEST(Scheduler, ADisconnectedNodeIsDeclaredDeadAndEveryoneIsTold) {
  Running r = Start(1, 1);
  auto server = Connect(r.sched->port());
  auto worker = Connect(r.sched->port());
  auto fs = std::async(std::launch::async, [&] { return server->Register("server", "127.0.0.1", 1, -1, 5000); });
  ASSERT_TRUE(worker->Register("worker", "127.0.0.1", 0, -1, 5000).ok());
  ASSERT_TRUE(fs.get().ok());
  server.reset();  // the server's process "dies": its connection closes
  ShutdownNotice n = worker->WaitShutdown(5000);
  EXPECT_FALSE(n.ok);
  EXPECT_EQ(n.cause, ShutdownCause::kNodeDead) << "a failed shutdown after NODE_DEAD, got "
                                               << ShutdownCauseName(n.cause) << ": " << n.reason;
  std::string why;
  EXPECT_TRUE(worker->failed(&why));
  EXPECT_NE(why.find("server 0"), std::string::npos) << why;
  ASSERT_EQ(r.result.wait_for(std::chrono::seconds(5)), std::future_status::ready);
  Status st = r.result.get();
  EXPECT_NE(st.message().find("server 0"), std::string::npos) << st.message();
}

TEST(SchedulerClient, ShutdownNoticeSaysWhetherItTimedOutFailedOrLostTheScheduler) {
  Running r = Start(1, 1);
  auto server = Connect(r.sched->port());
  auto worker = Connect(r.sched->port());
  auto fs = std::async(std::launch::async,
                       [&] { return server->Register("server", "127.0.0.1", 1, -1, 5000); });
  ASSERT_TRUE(worker->Register("worker", "127.0.0.1", 0, -1, 5000).ok());
  ASSERT_TRUE(fs.get().ok());
  ShutdownNotice n = worker->WaitShutdown(50);
  EXPECT_EQ(n.cause, ShutdownCause::kTimeout)
      << "nothing happened yet: " << ShutdownCauseName(n.cause);
  EXPECT_FALSE(n.ok);
  // The worker reports a failure: the scheduler fails the job (no node died).
  ASSERT_TRUE(worker->Finished(false, "broken on purpose", "{}").ok());
  n = server->WaitShutdown(5000);
  EXPECT_EQ(n.cause, ShutdownCause::kShutdownFailed)
      << ShutdownCauseName(n.cause) << ": " << n.reason;
  EXPECT_FALSE(n.ok);
  ASSERT_EQ(r.result.wait_for(std::chrono::seconds(5)), std::future_status::ready);
  EXPECT_FALSE(r.result.get().ok());
}

TEST(SchedulerClient, AVanishedSchedulerIsAConnectionLostNotice) {
  // A "scheduler" that accepts the connection and then closes it without a word.
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  ASSERT_EQ(::listen(fd, 1), 0);
  socklen_t len = sizeof(a);
  ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len), 0);
  auto c = Connect(ntohs(a.sin_port));
  int conn = ::accept(fd, nullptr, nullptr);
  ASSERT_GE(conn, 0);
  ::close(conn);
  ::close(fd);
  ShutdownNotice n = c->WaitShutdown(5000);
  EXPECT_EQ(n.cause, ShutdownCause::kConnectionLost)
      << ShutdownCauseName(n.cause) << ": " << n.reason;
  EXPECT_FALSE(n.ok);
}

TEST(Scheduler, WrongTokenConnectionsAreClosedAndCounted) {
  Running r = Start(1, 1, 2000);
  auto intruder = Connect(r.sched->port(), kToken + 1);
  auto v = intruder->Register("server", "127.0.0.1", 1, -1, 2000);
  EXPECT_FALSE(v.ok()) << "a foreign token never joins the cluster";
  std::string status = HttpGet(r.sched->http_port(), "/status");
  EXPECT_NE(status.find("\"dropped_bad_token\": 1"), std::string::npos) << status;
  EXPECT_NE(status.find("\"nodes\": []"), std::string::npos) << status;
  r.sched->Stop("test over");
  EXPECT_FALSE(r.result.get().ok());
}

TEST(SchedulerClient, UnreachableSchedulerFailsWithinTheTimeout) {
  SchedulerClientOptions o;
  o.port = 1;  // nothing listens on port 1
  o.connect_timeout_ms = 600;
  auto t0 = std::chrono::steady_clock::now();
  auto c = SchedulerClient::Connect(o);
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("cannot reach the scheduler at 127.0.0.1:1"), std::string::npos)
      << c.status().message();
  EXPECT_GE(secs, 0.3) << "it retried with back-off";
  EXPECT_LT(secs, 2.0) << "and gave up at the timeout";
}

}  // namespace m6rec
