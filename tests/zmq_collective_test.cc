// The zmq collective over real loopback sockets, ranks as threads of this process.
#include "worker/zmq_collective.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <thread>
#include <zmq.hpp>

#include "common/protocol.h"

namespace m6rec {

namespace {
constexpr uint64_t kToken = 0x5eed;
// The collective's timeout where every rank takes part: only against hanging, so that a busy
// machine cannot fail a call that must succeed.
constexpr int kHangGuardMs = 30000;
// Where a test expects a call to fail (a rank that never calls, mismatched calls), the ranks
// left waiting in vain give up after this: it decides how soon the test ends.
constexpr int kFailFastMs = 3000;
// Rank 0 (which checks what the others send) waits as long as a hang guard; the rest fail fast.
int RankZeroPatient(int rank) { return rank == 0 ? kHangGuardMs : kFailFastMs; }

// Runs fn(rank, collective) on `n` ranks; returns each rank's status. `eps_out` receives the
// ranks' endpoints and `peers_out` their addresses, for tests that look at them; timeout_of(rank)
// is each rank's collective timeout (default kHangGuardMs).
std::vector<Status> RunRanks(int n, const std::function<Status(int, Collective&)>& fn,
                             int kill_rank = -1,
                             std::vector<std::shared_ptr<ZmqCollectiveEndpoint>>* eps_out = nullptr,
                             std::vector<std::string>* peers_out = nullptr,
                             int (*timeout_of)(int rank) = nullptr) {
  std::vector<std::shared_ptr<ZmqCollectiveEndpoint>> eps;
  std::vector<std::string> peers;
  for (int r = 0; r < n; ++r) {
    auto ep = ZmqCollectiveEndpoint::Bind("127.0.0.1");
    EXPECT_TRUE(ep.ok()) << ep.status().message();
    eps.push_back(*ep);
    peers.push_back("tcp://127.0.0.1:" + std::to_string((*ep)->port()));
  }
  if (eps_out) *eps_out = eps;
  if (peers_out) *peers_out = peers;
  std::vector<Status> out(n);
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r)
    threads.emplace_back([&, r] {
      ZmqCollectiveOptions o;
      o.endpoint = eps[r];
      o.rank = r;
      o.peers = peers;
      o.token = kToken;
      o.timeout_ms = timeout_of ? timeout_of(r) : kHangGuardMs;
      auto c = CreateZmqCollective(o);
      if (!c.ok()) {
        out[r] = c.status();
        return;
      }
      out[r] = r == kill_rank ? Status::OK() : fn(r, **c);
    });
  for (auto& t : threads) t.join();
  return out;
}
// A process that is not one of the workers, talking to an endpoint: whatever frames it likes.
class Intruder {
 public:
  explicit Intruder(const std::string& endpoint) : sock_(ctx_, zmq::socket_type::dealer) {
    sock_.set(zmq::sockopt::linger, 0);
    sock_.connect(endpoint);
  }
  void Send(const std::vector<std::string>& frames) {
    for (size_t i = 0; i < frames.size(); ++i)
      sock_.send(zmq::buffer(frames[i]),
                 i + 1 < frames.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
  }

 private:
  zmq::context_t ctx_{1};
  zmq::socket_t sock_;
};

std::string Bytes(const void* p, size_t n) { return std::string(static_cast<const char*>(p), n); }

// A collective message as a worker would send it.
std::vector<std::string> Message(MsgType type, uint64_t token, uint32_t sender, uint64_t seq,
                                 const std::vector<float>& data) {
  MsgHeader h;
  h.type = static_cast<uint16_t>(type);
  h.token = token;
  h.sender = sender;
  h.request_id = seq;
  h.num_keys = data.size();
  h.dim = static_cast<uint32_t>(ElementType::kFloat32);
  return {Bytes(&h, sizeof(h)), Bytes(data.data(), data.size() * sizeof(float))};
}
}  // namespace

TEST(ZmqCollective, AllReduceIsTheRankOrderSumAndBitIdentical) {
  const int n = 3;
  const size_t len = 50000;
  std::vector<std::vector<float>> results(n);
  auto st = RunRanks(n, [&](int r, Collective& c) -> Status {
    std::vector<float> v(len);
    for (size_t i = 0; i < len; ++i) v[i] = 1.0f / float(1 + i + 7 * r) + 1e6f * float(r == 1);
    if (!c.capabilities().host_buffers || c.capabilities().device_buffers)
      return Status::Internal("the zmq collective must say it takes host buffers");
    for (int round = 0; round < 3; ++round) M6_RETURN_IF_ERROR(c.AllReduceSum(v.data(), len));
    results[r] = v;
    return Status::OK();
  });
  for (int r = 0; r < n; ++r) ASSERT_TRUE(st[r].ok()) << r << ": " << st[r].message();
  // The expected value, summed in rank order, three times over.
  std::vector<float> want(len);
  for (size_t i = 0; i < len; ++i) {
    float x[n];
    for (int r = 0; r < n; ++r) x[r] = 1.0f / float(1 + i + 7 * r) + 1e6f * float(r == 1);
    for (int round = 0; round < 3; ++round) {
      float s = x[0];
      for (int r = 1; r < n; ++r) s += x[r];
      for (int r = 0; r < n; ++r) x[r] = s;
    }
    want[i] = x[0];
  }
  for (int r = 0; r < n; ++r)
    EXPECT_EQ(0, std::memcmp(results[r].data(), want.data(), len * sizeof(float))) << "rank " << r;
}

TEST(ZmqCollective, DoubleSumsStayExactPastFloatPrecisionAndBitIdentical) {
  const int n = 3;
  std::vector<std::vector<double>> got(n);
  auto st = RunRanks(n, [&](int r, Collective& c) -> Status {
    std::vector<float> f(3, 1.0f);
    M6_RETURN_IF_ERROR(c.AllReduceSum(f.data(), f.size()));  // float and double calls interleave
    std::vector<double> v =
        r == 0 ? std::vector<double>{16777216.0, 1e15, 0.1}
               : std::vector<double>{r == 1 ? 1.0 : 0.0, r == 1 ? 1.0 : 0.0, 0.2 * r};
    M6_RETURN_IF_ERROR(c.AllReduceSum(v.data(), v.size()));
    M6_RETURN_IF_ERROR(c.AllReduceSum(f.data(), f.size()));
    if (f != std::vector<float>(3, 9.0f))
      return Status::Internal("float sums around it went wrong");
    got[r] = v;
    return Status::OK();
  });
  for (int r = 0; r < n; ++r) ASSERT_TRUE(st[r].ok()) << r << ": " << st[r].message();
  EXPECT_EQ(got[0][0], 16777217.0) << "2^24 + 1 survives";
  EXPECT_EQ(got[0][1], 1e15 + 1) << "1e15 + 1 survives";
  EXPECT_EQ(got[0][2], (0.1 + 0.2) + 0.4) << "summed in rank order";
  for (int r = 1; r < n; ++r)
    EXPECT_EQ(0, std::memcmp(got[r].data(), got[0].data(), 3 * sizeof(double))) << "rank " << r;
}

TEST(ZmqCollective, FloatOnOneRankAndDoubleOnAnotherIsReportedNotMisread) {
  auto st = RunRanks(
      2,
      [&](int r, Collective& c) -> Status {
        if (r == 0) {
          std::vector<double> v(4, 1.0);
          return c.AllReduceSum(v.data(), v.size());
        }
        std::vector<float> v(4, 1.0f);
        return c.AllReduceSum(v.data(), v.size());
      },
      -1, nullptr, nullptr, RankZeroPatient);
  EXPECT_FALSE(st[0].ok());
  EXPECT_NE(st[0].message().find("different collectives"), std::string::npos) << st[0].message();
}

TEST(ZmqCollective, BroadcastFromAnyRootAndBarrier) {
  const int n = 3;
  std::vector<std::vector<float>> got(n);
  auto st = RunRanks(n, [&](int r, Collective& c) -> Status {
    std::vector<float> v{float(r), float(r * 10)};
    M6_RETURN_IF_ERROR(c.Broadcast(v.data(), v.size(), 2));
    M6_RETURN_IF_ERROR(c.Barrier());
    got[r] = v;
    return Status::OK();
  });
  for (int r = 0; r < n; ++r) {
    ASSERT_TRUE(st[r].ok()) << st[r].message();
    EXPECT_EQ(got[r], (std::vector<float>{2.0f, 20.0f}));
  }
}

TEST(ZmqCollective, ADeadPeerFailsTheCallWithinTheDeadline) {
  // Rank 2 joins and then never calls: the others must fail, not hang.
  auto st = RunRanks(
      3,
      [&](int, Collective& c) -> Status {
        float x = 1;
        return c.AllReduceSum(&x, 1);
      },
      /*kill_rank=*/2, nullptr, nullptr, [](int) { return kFailFastMs; });
  EXPECT_FALSE(st[0].ok());
  EXPECT_NE(st[0].message().find("no message"), std::string::npos) << st[0].message();
  EXPECT_FALSE(st[1].ok());
}

TEST(ZmqCollective, MismatchedCallsAreReportedNotMisread) {
  auto st = RunRanks(
      2,
      [&](int r, Collective& c) -> Status {
        std::vector<float> v(r == 0 ? 4 : 5, 1.0f);
        return c.AllReduceSum(v.data(), v.size());
      },
      -1, nullptr, nullptr, RankZeroPatient);
  EXPECT_FALSE(st[0].ok());
  EXPECT_NE(st[0].message().find("different collectives"), std::string::npos) << st[0].message();
}

TEST(ZmqCollective, ForeignAndGarbageMessagesAreDroppedAndCountedWhileTheAllReduceCompletes) {
  const int n = 3;
  const size_t len = 4;
  std::vector<std::shared_ptr<ZmqCollectiveEndpoint>> eps;
  std::vector<std::string> peers;
  std::vector<std::vector<float>> got(n);
  // RunRanks fills eps and peers before any rank runs.
  auto st = RunRanks(
      n,
      [&](int r, Collective& c) -> Status {
        if (r == 1) {
          // While rank 0 waits for rank 1's buffer, others write to rank 0's endpoint: a message
          // posing as rank 1's reduce with another job's token, and three that are not m6rec.
          Intruder in(peers[0]);
          in.Send(Message(MsgType::kCollectiveReduce, kToken + 1, 1, 1,
                          std::vector<float>(len, 1e30f)));
          in.Send({"GET / HTTP/1.0\r\n\r\n"});
          MsgHeader bad_magic;
          bad_magic.magic = 0x12345678;
          in.Send({Bytes(&bad_magic, sizeof(bad_magic)), std::string(len * sizeof(float), '\0')});
          auto lying =
              Message(MsgType::kCollectiveReduce, kToken, 1, 1, std::vector<float>(len, 1e30f));
          lying[1].resize(lying[1].size() - 3);  // the header says 4 floats; 13 bytes follow
          in.Send(lying);
          // Waits for the event (all four counted); the bound is only against hanging.
          const auto deadline =
              std::chrono::steady_clock::now() + std::chrono::milliseconds(kHangGuardMs);
          while (std::chrono::steady_clock::now() < deadline) {
            auto s = eps[0]->stats();
            if (s.dropped_bad_token + s.dropped_malformed >= 4) break;
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
          }
        }
        std::vector<float> v(len, float(r + 1));
        M6_RETURN_IF_ERROR(c.AllReduceSum(v.data(), len));
        got[r] = v;
        return Status::OK();
      },
      -1, &eps, &peers);
  for (int r = 0; r < n; ++r) {
    ASSERT_TRUE(st[r].ok()) << "rank " << r << ": " << st[r].message();
    EXPECT_EQ(got[r], std::vector<float>(len, 6.0f))
        << "rank " << r << ": only the workers' buffers are summed";
  }
  const auto s = eps[0]->stats();
  EXPECT_EQ(s.dropped_bad_token, 1u) << "the foreign-token message is counted as such";
  EXPECT_EQ(s.dropped_malformed, 3u) << "text, a bad magic and a payload shorter than its header";
}

}  // namespace m6rec
