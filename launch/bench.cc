#include "launch/bench.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <deque>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>
#include <thread>
#include <zmq.hpp>

#include "common/cluster_view.h"
#include "common/logging.h"
#include "common/transport.h"
#include "common/util.h"
#include "ps/optimizer.h"
#include "ps/server.h"
#include "worker/ps_client.h"

namespace m6rec {

using nlohmann::json;
using Clk = std::chrono::steady_clock;

namespace {

double Seconds(Clk::time_point a, Clk::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t i = static_cast<size_t>(p * (v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

// memcpy of a 256 MiB buffer, median of 5, in MB/s (1 MB = 1e6 bytes).
double MeasureMemcpy() {
  const size_t n = 256u << 20;
  std::vector<char> a(n, 1), b(n, 2);
  std::vector<double> r;
  for (int i = 0; i < 5; ++i) {
    auto t0 = Clk::now();
    std::memcpy(b.data(), a.data(), n);
    auto t1 = Clk::now();
    r.push_back(n / Seconds(t0, t1) / 1e6);
    a[i] = b[n - 1 - i];  // keep the copies observable
  }
  return Percentile(r, 0.5);
}

// Raw ZeroMQ TCP loopback: PUSH -> PULL of `bytes`-byte messages, each a fresh, fully written
// buffer (as a server writes each reply), timed from the first send to the last receive with
// the high-water marks at 4 messages, so queues cannot hide the wire. MB/s.
double MeasureZmqLoopback(size_t bytes, double seconds) {
  zmq::context_t ctx(1);
  zmq::socket_t pull(ctx, zmq::socket_type::pull), push(ctx, zmq::socket_type::push);
  for (auto* s : {&pull, &push}) {
    s->set(zmq::sockopt::linger, 0);
    s->set(zmq::sockopt::sndhwm, 4);
    s->set(zmq::sockopt::rcvhwm, 4);
  }
  pull.bind("tcp://127.0.0.1:0");
  int port = *BoundPort(pull);
  push.connect(TcpEndpoint("127.0.0.1", port));
  zmq::message_t m;
  push.send(zmq::str_buffer("warm-up"), zmq::send_flags::none);
  (void)pull.recv(m);  // the connection is up
  const int count =
      static_cast<int>(std::max<double>(8, seconds * 1.5e9 / std::max<size_t>(bytes, 1024)));
  auto t0 = Clk::now();
  std::thread sender([&] {
    for (int i = 0; i < count; ++i) {
      zmq::message_t out(bytes);
      std::memset(out.data(), i, bytes);
      push.send(out, zmq::send_flags::none);
    }
  });
  for (int i = 0; i < count; ++i) (void)pull.recv(m);
  auto t1 = Clk::now();
  sender.join();
  return double(bytes) * count / Seconds(t0, t1) / 1e6;
}

struct Case {
  std::string store;  // memory | rocksdb-hot | rocksdb-cold
  int servers, dim, batch;
};

struct Measure {
  double rows_per_s = 0, mb_per_s = 0, p50 = 0, p99 = 0;
  int requests = 0;
};

class Bench {
 public:
  explicit Bench(const PsBenchOptions& o) : o_(o) {}

  int Run() {
    const double memcpy_mb = MeasureMemcpy();
    Emit({{"op", "memcpy"}, {"bytes", 256u << 20}, {"mb_per_s", memcpy_mb}});
    // The reference wire for each case: raw ZeroMQ loopback moving the case's reply size
    // (dim x batch x 4 bytes) as one message; 1 MiB (the PS client's message size) for context.
    std::map<size_t, double> loop;  // bytes -> MB/s
    std::vector<size_t> sizes{size_t{1} << 20};
    for (int d : o_.dims)
      for (int b : o_.batches) sizes.push_back(size_t(d) * b * 4);
    for (size_t bytes : sizes) {
      if (loop.count(bytes)) continue;
      loop[bytes] = Percentile({MeasureZmqLoopback(bytes, 0.15), MeasureZmqLoopback(bytes, 0.15),
                                MeasureZmqLoopback(bytes, 0.15)},
                               0.5);
      Emit({{"op", "zmq_loopback"}, {"bytes", bytes}, {"mb_per_s", loop[bytes]}});
    }
    std::vector<Case> cases;
    for (const auto& st : o_.stores)
      for (int s : o_.servers)
        for (int d : o_.dims)
          for (int b : o_.batches) cases.push_back({st, s, d, b});
    if (!o_.json) PrintHeader(memcpy_mb);
    for (const auto& c : cases) {
      Measure pull, push;
      Status s = RunCase(c, &pull, &push);
      if (!s.ok()) {
        LOG_ERROR << "bench case " << c.store << " S=" << c.servers << " dim=" << c.dim
                  << " batch=" << c.batch << ": " << s.ToString();
        return 1;
      }
      const double lb = loop[size_t(c.dim) * c.batch * 4];
      for (auto [op, m] : {std::make_pair("pull", pull), std::make_pair("push", push)}) {
        json j = {{"op", op},
                  {"store", c.store == "memory" ? "memory" : "rocksdb"},
                  {"tier", c.store == "rocksdb-cold" ? "cold" : "hot"},
                  {"servers", c.servers},
                  {"dim", c.dim},
                  {"batch", c.batch},
                  {"depth", o_.depth},
                  {"threads", o_.threads},
                  {"message_bytes", o_.message_bytes},
                  {"requests", m.requests},
                  {"rows_per_s", m.rows_per_s},
                  {"mb_per_s", m.mb_per_s},
                  {"p50_ms", m.p50},
                  {"p99_ms", m.p99},
                  {"frac_zmq_loopback", m.mb_per_s / lb},
                  {"frac_memcpy", m.mb_per_s / memcpy_mb}};
        Emit(j);
        if (!o_.json) PrintRow(j);
      }
    }
    if (o_.json) std::printf("%s\n", out_.dump(1).c_str());
    return 0;
  }

 private:
  void Emit(const json& j) { out_.push_back(j); }

  void PrintHeader(double memcpy_mb) {
    std::printf("memcpy (256 MiB): %.0f MB/s\nzmq loopback (TCP, PUSH/PULL, fresh buffers):",
                memcpy_mb);
    for (const auto& j : out_)
      if (j["op"] == "zmq_loopback")
        std::printf(" %zu KiB: %.0f MB/s;", j["bytes"].get<size_t>() >> 10,
                    j["mb_per_s"].get<double>());
    std::printf("\n%%loop compares with the loopback of the same bytes as one message\n");
    std::printf("client: depth %d, %zu-byte messages; servers: %d handler thread(s)\n\n", o_.depth,
                o_.message_bytes, o_.threads);
    std::printf("%-5s %-8s %-5s %2s %4s %7s %12s %9s %8s %8s %7s %7s\n", "op", "store", "tier", "S",
                "dim", "batch", "rows/s", "MB/s", "p50 ms", "p99 ms", "%loop", "%mcpy");
    std::fflush(stdout);
  }
  void PrintRow(const json& j) {
    std::printf("%-5s %-8s %-5s %2d %4d %7d %12.0f %9.1f %8.3f %8.3f %6.1f%% %6.1f%%\n",
                j["op"].get<std::string>().c_str(), j["store"].get<std::string>().c_str(),
                j["tier"].get<std::string>().c_str(), j["servers"].get<int>(), j["dim"].get<int>(),
                j["batch"].get<int>(), j["rows_per_s"].get<double>(), j["mb_per_s"].get<double>(),
                j["p50_ms"].get<double>(), j["p99_ms"].get<double>(),
                100 * j["frac_zmq_loopback"].get<double>(), 100 * j["frac_memcpy"].get<double>());
    std::fflush(stdout);
  }

  Status RunCase(const Case& c, Measure* pull, Measure* push) {
    TableSpec t;
    t.name = "bench";
    t.id = 0;
    t.dim = c.dim;
    t.seed = 7;
    t.optimizer.kind = OptimizerSpec::Kind::kAdagrad;
    t.optimizer.lr = 0.01f;
    const size_t width_bytes = size_t(RowWidth(t)) * 4;
    size_t population = std::min<size_t>(2 * size_t(c.batch), (256u << 20) / width_bytes);
    population = std::max<size_t>(population, c.batch);

    const std::string dir = o_.tmp_dir + "/m6rec-bench-" + std::to_string(::getpid());
    (void)RemoveTree(dir);
    const uint64_t token = RandomU64();
    std::vector<std::unique_ptr<Server>> servers;
    ClusterView view;
    view.slot_map = RoundRobinSlotMap(4096, c.servers);
    for (int s = 0; s < c.servers; ++s) {
      ServerOptions so;
      so.tables = {t};
      so.ps.store = c.store == "memory" ? PsConfig::Store::kMemory : PsConfig::Store::kRocksDB;
      so.ps.durability = PsConfig::Durability::kWal;
      so.ps.hot_rows = c.store == "rocksdb-cold" ? 0 : population;
      so.ps.threads = o_.threads;
      so.data_dir = dir + "/server-" + std::to_string(s);
      so.token = token;
      so.rank = s;
      M6_ASSIGN_OR_RETURN(auto srv, Server::Create(so));
      srv->SetOwnedSlots(view.OwnedSlots(s));
      srv->Start();
      view.servers.push_back(NodeAddr{static_cast<uint32_t>(s), "127.0.0.1", srv->port(), 0});
      servers.push_back(std::move(srv));
    }
    PsClientOptions po;
    po.view = view;
    po.tables = {t};
    po.token = token;
    po.target_message_bytes = o_.message_bytes;
    M6_ASSIGN_OR_RETURN(auto client, PsClient::Create(po));

    // Keys: a shuffled population; each request takes a window of distinct keys.
    std::mt19937_64 rng(c.dim * 1000003ull + c.batch);
    std::vector<Key> keys(population);
    for (size_t i = 0; i < population; ++i) keys[i] = MakeKey(0, i * 2654435761ull % (1ull << 40));
    std::shuffle(keys.begin(), keys.end(), rng);
    keys.insert(keys.end(), keys.begin(), keys.begin() + c.batch);  // windows may wrap
    std::vector<float> grads(size_t(c.batch) * c.dim);
    for (size_t i = 0; i < grads.size(); ++i) grads[i] = 1e-3f * float(i % 17);
    // Materialise every row (so the stores hold them), then move the cold case to disk.
    for (size_t off = 0; off < population; off += c.batch)
      M6_RETURN_IF_ERROR(
          client->Push(0, &keys[off], std::min<size_t>(c.batch, population - off), grads.data()));
    if (c.store == "rocksdb-cold")
      for (int s = 0; s < c.servers; ++s) M6_RETURN_IF_ERROR(client->Admin(s, "flush").status());

    std::vector<float> out(size_t(c.batch) * c.dim);
    // Throughput is the median over 5 windows of seconds/5 each (this machine's neighbours make
    // single windows noisy); latency percentiles are over every request.
    auto run = [&](bool is_pull, Measure* m) -> Status {
      std::vector<double> lat, window_rates;
      std::deque<std::pair<PsClient::Ticket, Clk::time_point>> inflight;
      size_t done = 0;
      auto finish_one = [&]() -> Status {
        auto [tk, ts] = inflight.front();
        inflight.pop_front();
        if (is_pull)
          M6_RETURN_IF_ERROR(client->WaitPull(tk, out.data()));
        else
          M6_RETURN_IF_ERROR(client->WaitPush(tk));
        lat.push_back(Seconds(ts, Clk::now()) * 1e3);
        ++done;
        return Status::OK();
      };
      const int kWindows = 5;
      for (int w = 0; w < kWindows; ++w) {
        const auto t0 = Clk::now();
        const size_t done0 = done;
        for (;;) {
          if (Seconds(t0, Clk::now()) >= o_.seconds / kWindows && done - done0 >= 2) break;
          size_t off = rng() % population;
          auto ts = Clk::now();
          PsClient::Ticket tk;
          if (is_pull) {
            M6_ASSIGN_OR_RETURN(tk, client->PullAsync(0, &keys[off], c.batch));
          } else {
            M6_ASSIGN_OR_RETURN(tk, client->PushAsync(0, &keys[off], c.batch, grads.data()));
          }
          inflight.emplace_back(tk, ts);
          if (static_cast<int>(inflight.size()) >= o_.depth) M6_RETURN_IF_ERROR(finish_one());
        }
        window_rates.push_back(double(done - done0) * c.batch / Seconds(t0, Clk::now()));
      }
      while (!inflight.empty()) M6_RETURN_IF_ERROR(finish_one());
      m->requests = static_cast<int>(done);
      m->rows_per_s = Percentile(window_rates, 0.5);
      m->mb_per_s = m->rows_per_s * c.dim * 4 / 1e6;
      m->p50 = Percentile(lat, 0.5);
      m->p99 = Percentile(lat, 0.99);
      return Status::OK();
    };
    M6_RETURN_IF_ERROR(run(true, pull));
    M6_RETURN_IF_ERROR(run(false, push));
    client.reset();
    for (auto& s : servers) s->Stop();
    servers.clear();
    (void)RemoveTree(dir);
    return Status::OK();
  }

  PsBenchOptions o_;
  json out_ = json::array();
};

}  // namespace

int RunPsBench(const PsBenchOptions& opts) { return Bench(opts).Run(); }

}  // namespace m6rec
