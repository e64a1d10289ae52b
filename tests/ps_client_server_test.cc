// The PS data plane in one process: real Server objects on 127.0.0.1 sockets, a real PsClient,
// and a raw ZeroMQ socket for messages no well-behaved client would send.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>
#include <thread>
#include <zmq.hpp>

#include "common/transport.h"
#include "ps/optimizer.h"
#include "ps/server.h"
#include "test_util.h"
#include "worker/ps_client.h"

namespace m6rec {

namespace {

constexpr uint64_t kToken = 0x1234abcd5678ef00ULL;
// Only against hanging: a wait for a reply or a count that is sure to come.
constexpr int kHangGuardMs = 30000;

// Waits (at most kHangGuardMs) until `counter` reaches `want` and returns its value. A server
// counts a dropped message on its own thread, with no reply to wait for: a test that read the
// counter right after a fixed real-time wait would depend on how busy the machine is.
uint64_t AwaitCount(const std::atomic<uint64_t>& counter, uint64_t want) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(kHangGuardMs);
  while (counter.load() < want && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  return counter.load();
}

TableSpec Table(TableId id, uint32_t dim, OptimizerSpec::Kind opt, float lr) {
  TableSpec t;
  t.name = "t" + std::to_string(id);
  t.id = id;
  t.dim = dim;
  t.seed = 100 + id;
  t.optimizer.kind = opt;
  t.optimizer.lr = lr;
  return t;
}

class PsTest : public ::testing::Test {
 protected:
  void StartServers(int n, PsConfig::Store store = PsConfig::Store::kMemory) {
    tables_ = {Table(0, 4, OptimizerSpec::Kind::kSgd, 0.5f),
               Table(1, 3, OptimizerSpec::Kind::kAdagrad, 0.1f)};
    tables_[0].max_rows = cap_;
    view_.slot_map = RoundRobinSlotMap(64, n);
    for (int s = 0; s < n; ++s) {
      ServerOptions o;
      o.tables = tables_;
      o.ps.store = store;
      o.ps.num_slots = 64;
      o.ps.max_message_bytes = 1 << 20;
      o.data_dir = dir_ / ("s" + std::to_string(s));
      o.token = kToken;
      o.rank = s;
      o.servers = uint32_t(n);
      auto srv = Server::Create(o);
      ASSERT_TRUE(srv.ok()) << srv.status().message();
      (*srv)->SetOwnedSlots(view_.OwnedSlots(s));
      (*srv)->Start();
      view_.servers.push_back(NodeAddr{static_cast<uint32_t>(s), "127.0.0.1", (*srv)->port(), 0});
      servers_.push_back(std::move(*srv));
    }
  }
  std::unique_ptr<PsClient> Client(uint64_t token = kToken, int timeout_ms = 5000) {
    PsClientOptions o;
    o.view = view_;
    o.tables = tables_;
    o.token = token;
    o.request_timeout_ms = timeout_ms;
    auto c = PsClient::Create(o);
    EXPECT_TRUE(c.ok());
    return std::move(*c);
  }
  std::vector<float> Init(TableId t, Key k) {
    std::vector<float> r(RowWidth(tables_[t]));
    InitFullRow(tables_[t], k, r.data());
    r.resize(tables_[t].dim);
    return r;
  }
  // Sends raw frames on a fresh DEALER and returns the reply frames (empty on timeout). Where a
  // reply must come the timeout is a hang guard; a test that expects none passes a short one (a
  // late reply could then go unseen, but a server that correctly stays silent always passes).
  std::vector<std::string> Raw(int server, const std::vector<std::string>& frames,
                               int timeout_ms = kHangGuardMs) {
    zmq::socket_t s(ctx_, zmq::socket_type::dealer);
    s.set(zmq::sockopt::linger, 0);
    s.connect(TcpEndpoint("127.0.0.1", view_.servers[server].port));
    std::vector<zmq::message_t> msg;
    for (const auto& f : frames) msg.emplace_back(f.data(), f.size());
    EXPECT_TRUE(SendMultipart(s, msg).ok());
    std::vector<zmq::message_t> parts;
    auto got = RecvMultipart(s, &parts, timeout_ms);
    std::vector<std::string> out;
    if (got.ok() && *got)
      for (auto& p : parts) out.emplace_back(static_cast<const char*>(p.data()), p.size());
    return out;
  }
  static std::string Bytes(const void* p, size_t n) {
    return std::string(static_cast<const char*>(p), n);
  }
  static std::string Hdr(MsgType type, uint64_t n, uint32_t table, uint32_t dim,
                         uint64_t token = kToken) {
    MsgHeader h;
    h.type = static_cast<uint16_t>(type);
    h.token = token;
    h.num_keys = n;
    h.table = table;
    h.dim = dim;
    h.request_id = 1;
    return Bytes(&h, sizeof(h));
  }
  // The first key of table 0 owned by `server`.
  Key OwnedBy(int server) {
    for (uint64_t id = 0;; ++id)
      if (view_.ServerOf(MakeKey(0, id)) == static_cast<uint32_t>(server)) return MakeKey(0, id);
  }

  uint64_t cap_ = 0;  // table 0's max_rows
  testing::TempDir dir_;
  zmq::context_t ctx_{1};
  std::vector<TableSpec> tables_;
  ClusterView view_;
  std::vector<std::unique_ptr<Server>> servers_;
};

}  // namespace

TEST_F(PsTest, PullGathersRowsInCallerOrderAcrossServers) {
  StartServers(2);
  auto c = Client();
  std::vector<Key> keys;
  for (uint64_t id : {5, 1, 5, 9, 2, 1, 77, 5}) keys.push_back(MakeKey(0, id));
  std::vector<float> out(keys.size() * 4);
  ASSERT_TRUE(c->Pull(0, keys.data(), keys.size(), out.data()).ok());
  for (size_t i = 0; i < keys.size(); ++i)
    EXPECT_EQ(std::vector<float>(out.begin() + i * 4, out.begin() + i * 4 + 4), Init(0, keys[i]))
        << i;
  EXPECT_EQ(c->stats().keys_unique, 5u) << "duplicates are pulled once";
  uint64_t pulled = 0;
  for (auto& s : servers_) pulled += s->counters().rows_pulled;
  EXPECT_EQ(pulled, 5u);
  EXPECT_GT(servers_[0]->counters().pulls.load(), 0u) << "both servers must take part";
  EXPECT_GT(servers_[1]->counters().pulls.load(), 0u);
}

// A row cap over the wire: two RocksDB servers, each keeping its share of the table's rows (the
// least recently updated go), and an evicted row reads as its initialiser again.
TEST_F(PsTest, ACappedTableKeepsItsShareOnEveryServer) {
  cap_ = 30;
  StartServers(2, PsConfig::Store::kRocksDB);
  auto c = Client();
  for (uint64_t b = 0; b < 10; ++b) {
    std::vector<Key> keys;
    for (uint64_t i = 0; i < 20; ++i) keys.push_back(MakeKey(0, b * 20 + i));
    std::vector<float> g(keys.size() * 4, 1.0f);
    ASSERT_TRUE(c->Push(0, keys.data(), keys.size(), g.data()).ok());
  }
  uint64_t rows = 0, evicted = 0;
  for (auto& srv : servers_) {
    const LifecycleStats st = srv->lifecycle().Stats(0);
    EXPECT_EQ(srv->lifecycle().cap(0), 15u);
    EXPECT_LE(st.rows, 15u);
    rows += st.rows;
    evicted += st.evicted;
    EXPECT_NE(srv->StatsJson().find("\"lifecycle\""), std::string::npos);
  }
  EXPECT_EQ(rows + evicted, 200u);
  EXPECT_GE(rows, 28u) << "both servers full (keys spread by slot)";
  std::vector<float> first(4), last(4);
  const Key k0 = MakeKey(0, 0), k199 = MakeKey(0, 199);
  ASSERT_TRUE(c->Pull(0, &k0, 1, first.data()).ok());
  ASSERT_TRUE(c->Pull(0, &k199, 1, last.data()).ok());
  EXPECT_EQ(first, Init(0, k0)) << "the oldest row was evicted";
  EXPECT_NE(last, Init(0, k199)) << "the newest is kept";
}

TEST_F(PsTest, PushSumsDuplicatesAndAppliesTheServerOptimizer) {
  StartServers(2, PsConfig::Store::kRocksDB);
  auto c = Client();
  Key a = MakeKey(0, 3), b = MakeKey(0, 8);
  std::vector<Key> keys{a, b, a};
  std::vector<float> g{1, 2, 3, 4, 10, 10, 10, 10, 0.5f, 0.5f, 0.5f, 0.5f};
  ASSERT_TRUE(c->Push(0, keys.data(), keys.size(), g.data()).ok());
  std::vector<float> out(8);
  ASSERT_TRUE(c->Pull(0, keys.data(), 2, out.data()).ok());
  auto ia = Init(0, a), ib = Init(0, b);
  for (int d = 0; d < 4; ++d) {
    EXPECT_FLOAT_EQ(out[d], ia[d] - 0.5f * (g[d] + g[8 + d])) << "SGD on the summed gradient";
    EXPECT_FLOAT_EQ(out[4 + d], ib[d] - 0.5f * 10);
  }
  uint64_t pushed = 0;
  for (auto& s : servers_) pushed += s->counters().rows_pushed;
  EXPECT_EQ(pushed, 2u) << "one row update per unique key";
}

TEST_F(PsTest, AsyncTicketsCompleteInAnyOrder) {
  StartServers(2);
  auto c = Client();
  std::vector<Key> k1{MakeKey(1, 1), MakeKey(1, 2)}, k2{MakeKey(1, 3)};
  auto t1 = c->PullAsync(1, k1.data(), k1.size());
  auto t2 = c->PullAsync(1, k2.data(), k2.size());
  std::vector<float> g(3, 1.0f);
  auto t3 = c->PushAsync(1, k2.data(), 1, g.data());
  ASSERT_TRUE(t1.ok() && t2.ok() && t3.ok());
  std::vector<float> o1(6), o2(3);
  ASSERT_TRUE(c->WaitPush(*t3).ok());
  ASSERT_TRUE(c->WaitPull(*t2, o2.data()).ok());
  ASSERT_TRUE(c->WaitPull(*t1, o1.data()).ok());
  EXPECT_EQ(std::vector<float>(o1.begin(), o1.begin() + 3), Init(1, k1[0]));
  // Requests in flight together may be served in any order (several handler threads): the
  // pull sees the row either before or after the push, never anything else.
  std::vector<float> after(3);
  ASSERT_TRUE(c->Pull(1, k2.data(), 1, after.data()).ok());
  EXPECT_NE(after, Init(1, k2[0])) << "a push is visible to every request sent after its ack";
  EXPECT_TRUE(o2 == Init(1, k2[0]) || o2 == after);
  EXPECT_FALSE(c->WaitPull(*t1, o1.data()).ok()) << "a ticket completes once";
}

TEST_F(PsTest, WrongTokenIsDroppedAndCountedAndTouchesNothing) {
  StartServers(1);
  Key k = MakeKey(0, 1);
  std::vector<float> g(4, 100.0f);
  auto reply =
      Raw(0, {Hdr(MsgType::kPush, 1, 0, 4, kToken ^ 1), Bytes(&k, 8), Bytes(g.data(), 16)}, 300);
  EXPECT_TRUE(reply.empty()) << "no reply to a foreign token";
  EXPECT_EQ(AwaitCount(servers_[0]->counters().dropped_bad_token, 1), 1u);
  EXPECT_EQ(servers_[0]->store().Stats().rows_written, 0u);
  auto bad = Client(kToken ^ 1, 300);
  std::vector<float> out(4);
  Status s = bad->Pull(0, &k, 1, out.data());
  EXPECT_EQ(s.code(), StatusCode::kDeadlineExceeded) << s.ToString();
  EXPECT_EQ(AwaitCount(servers_[0]->counters().dropped_bad_token, 2), 2u);
}

TEST_F(PsTest, MalformedRequestsAreRefusedWholeAndNeverCrash) {
  StartServers(1);
  Key k = OwnedBy(0);
  std::vector<float> g(4, 1.0f);
  auto error_code = [](const std::vector<std::string>& r) -> int {
    if (r.size() < 1) return -1;
    MsgHeader h;
    std::memcpy(&h, r[0].data(), sizeof(h));
    return h.type == static_cast<uint16_t>(MsgType::kError) ? static_cast<int>(h.status) : 0;
  };
  const int kInvalid = static_cast<int>(StatusCode::kInvalidArgument);
  // Garbage that is not an m6rec message at all: dropped and counted.
  EXPECT_TRUE(Raw(0, {"hello"}, 200).empty());
  EXPECT_TRUE(Raw(0, {std::string(48, 'x'), "y"}, 200).empty());
  EXPECT_EQ(AwaitCount(servers_[0]->counters().dropped_malformed, 2), 2u);
  // Truncated key frame.
  EXPECT_EQ(error_code(Raw(0, {Hdr(MsgType::kPull, 2, 0, 4), Bytes(&k, 8)})), kInvalid);
  // Truncated gradients.
  EXPECT_EQ(error_code(Raw(0, {Hdr(MsgType::kPush, 1, 0, 4), Bytes(&k, 8), Bytes(g.data(), 12)})),
            kInvalid);
  // Wrong dim for the table.
  EXPECT_EQ(error_code(Raw(0, {Hdr(MsgType::kPush, 1, 0, 3), Bytes(&k, 8), Bytes(g.data(), 12)})),
            kInvalid);
  // Unknown table.
  Key k9 = MakeKey(9, 1);
  EXPECT_EQ(error_code(Raw(0, {Hdr(MsgType::kPull, 1, 9, 4), Bytes(&k9, 8)})), kInvalid);
  // A key of another table.
  Key k1 = MakeKey(1, 1);
  EXPECT_EQ(error_code(Raw(0, {Hdr(MsgType::kPull, 1, 0, 4), Bytes(&k1, 8)})), kInvalid);
  // A non-finite gradient anywhere refuses the whole push.
  Key two[2] = {k, OwnedBy(0) + 0};
  std::vector<float> g2(8, 1.0f);
  g2[6] = std::nanf("");
  auto r = Raw(0, {Hdr(MsgType::kPush, 2, 0, 4), Bytes(two, 16), Bytes(g2.data(), 32)});
  EXPECT_EQ(error_code(r), kInvalid);
  ASSERT_GE(r.size(), 2u);
  EXPECT_NE(r[1].find("non-finite"), std::string::npos) << r[1];
  // A reply type sent as a request.
  EXPECT_EQ(error_code(Raw(0, {Hdr(MsgType::kPullReply, 1, 0, 4), Bytes(&k, 8)})), kInvalid);
  // Bad admin payloads.
  EXPECT_EQ(error_code(Raw(0, {Hdr(MsgType::kAdmin, 0, 0, 0), "{not json"})), kInvalid);
  EXPECT_EQ(error_code(Raw(0, {Hdr(MsgType::kAdmin, 0, 0, 0), "{\"cmd\":\"format-disk\"}"})),
            kInvalid);
  // Oversized: ZeroMQ drops the connection at max_message_bytes (1 MiB here).
  EXPECT_TRUE(Raw(0, {Hdr(MsgType::kPull, 1, 0, 4), std::string(2 << 20, 'k')}, 300).empty());

  EXPECT_EQ(servers_[0]->store().Stats().rows_written, 0u) << "no refused request may change a row";
  EXPECT_GE(servers_[0]->counters().refused.load(), 9u);
  // And the server still serves well-formed requests.
  auto c = Client();
  std::vector<float> out(4);
  ASSERT_TRUE(c->Pull(0, &k, 1, out.data()).ok());
  EXPECT_EQ(out, Init(0, k));
}

TEST_F(PsTest, KeysOfSlotsAServerDoesNotOwnAreRefused) {
  StartServers(2);
  Key foreign = OwnedBy(1);
  // Ask server 0 directly for server 1's key.
  auto r = Raw(0, {Hdr(MsgType::kPull, 1, 0, 4), Bytes(&foreign, 8)});
  ASSERT_GE(r.size(), 2u);
  EXPECT_NE(r[1].find("is not served by server 0"), std::string::npos) << r[1];
}

TEST_F(PsTest, AdminCommands) {
  StartServers(1, PsConfig::Store::kRocksDB);
  auto c = Client();
  auto tables = c->Admin(0, "tables");
  ASSERT_TRUE(tables.ok()) << tables.status().message();
  const nlohmann::json t = nlohmann::json::parse(*tables, nullptr, false);
  ASSERT_TRUE(t.is_array()) << *tables;
  ASSERT_EQ(t.size(), 2u) << *tables;
  EXPECT_EQ(t[0]["name"], "t0") << *tables;
  EXPECT_EQ(t[0]["optimizer"], "sgd") << *tables;
  EXPECT_EQ(t[1]["optimizer"], "adagrad") << *tables;
  EXPECT_EQ(t[1]["dim"], 3) << *tables;
  EXPECT_TRUE(c->Admin(0, "flush").ok());
  auto stats = c->Admin(0, "stats");
  ASSERT_TRUE(stats.ok());
  const nlohmann::json st = nlohmann::json::parse(*stats, nullptr, false);
  ASSERT_TRUE(st.is_object()) << *stats;
  EXPECT_EQ(st["store"], "rocksdb") << *stats;
  EXPECT_EQ(st["rank"], 0) << *stats;
  auto bad = c->Admin(0, "explode");
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
}

TEST_F(PsTest, AnUnreachableServerTimesOutNamingIt) {
  tables_ = {Table(0, 4, OptimizerSpec::Kind::kSgd, 0.5f)};
  // A port nothing listens on: bind-and-close to find one.
  zmq::socket_t probe(ctx_, zmq::socket_type::router);
  probe.bind("tcp://127.0.0.1:0");
  int port = *BoundPort(probe);
  probe.close();
  view_ = ClusterView::SingleServer("127.0.0.1", port, 64);
  auto c = Client(kToken, 300);
  Key k = MakeKey(0, 1);
  std::vector<float> out(4);
  Status s = c->Pull(0, &k, 1, out.data());
  EXPECT_EQ(s.code(), StatusCode::kDeadlineExceeded);
  EXPECT_NE(s.message().find("127.0.0.1:" + std::to_string(port)), std::string::npos)
      << s.message();
}

}  // namespace m6rec
