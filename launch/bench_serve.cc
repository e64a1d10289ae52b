#include "launch/bench_serve.h"

#include <algorithm>
#include <atomic>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>
#include <utility>  // before asio: Boost 1.74 needs std::exchange declared

#include "common/clock.h"

namespace m6rec {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using asio::ip::tcp;
using nlohmann::json;

struct Client {
  asio::io_context io;
  beast::tcp_stream stream{io};
  beast::flat_buffer buf;
  bool Connect(const std::string& host, int port, std::string* err) {
    beast::error_code ec;
    tcp::endpoint ep(asio::ip::make_address(host, ec), static_cast<unsigned short>(port));
    if (!ec) stream.connect(ep, ec);
    if (ec) *err = host + ":" + std::to_string(port) + ": " + ec.message();
    return !ec;
  }
  // One request; returns the status (0 on a transport error) and the body.
  int Get(const std::string& target, std::string* body) {
    http::request<http::empty_body> req{http::verb::get, target, 11};
    req.set(http::field::host, "m6rec");
    req.keep_alive(true);
    http::response<http::string_body> res;
    beast::error_code ec;
    http::write(stream, req, ec);
    if (!ec) http::read(stream, buf, res, ec);
    if (ec) return 0;
    if (body) *body = std::move(res.body());
    return res.result_int();
  }
};

struct Case {
  std::string route;
  int concurrency = 1;
  uint64_t requests = 0, errors = 0;
  double seconds = 0, p50 = 0, p90 = 0, p99 = 0;
};

double Percentile(std::vector<double>& v, double q) {
  if (v.empty()) return 0;
  const size_t i = std::min(v.size() - 1, size_t(q * double(v.size())));
  std::nth_element(v.begin(), v.begin() + long(i), v.end());
  return v[i];
}

Case Run(const ServeBenchOptions& o, const std::string& route, int conc, uint32_t users,
         std::string* err) {
  Case c;
  c.route = route;
  c.concurrency = conc;
  std::vector<std::vector<double>> lat{size_t(conc)};
  std::vector<uint64_t> errors(static_cast<size_t>(conc), uint64_t{0});
  std::vector<std::string> errs{static_cast<size_t>(conc)};
  const int64_t t0 = MonotonicMs();
  const int64_t deadline = t0 + int64_t(o.seconds * 1000);
  std::vector<std::thread> threads;
  for (int t = 0; t < conc; ++t)
    threads.emplace_back([&, t] {
      Client cl;
      if (!cl.Connect(o.host, o.port, &errs[size_t(t)])) return;
      std::mt19937_64 rng(o.seed * 7919 + uint64_t(t));
      while (MonotonicMs() < deadline) {
        const std::string target =
            route == "health"
                ? "/health"
                : "/recommend?user=" + std::to_string(rng() % users) + "&k=" + std::to_string(o.k);
        const auto a = std::chrono::steady_clock::now();
        const int st = cl.Get(target, nullptr);
        const auto b = std::chrono::steady_clock::now();
        if (st == 0) {
          errs[size_t(t)] = "connection lost";
          return;
        }
        if (st != 200) ++errors[size_t(t)];
        lat[size_t(t)].push_back(std::chrono::duration<double, std::milli>(b - a).count());
      }
    });
  for (auto& th : threads) th.join();
  c.seconds = double(MonotonicMs() - t0) / 1000.0;
  std::vector<double> all;
  for (size_t t = 0; t < lat.size(); ++t) {
    all.insert(all.end(), lat[t].begin(), lat[t].end());
    c.errors += errors[t];
    if (!errs[t].empty() && err->empty()) *err = errs[t];
  }
  c.requests = all.size();
  c.p50 = Percentile(all, 0.50);
  c.p90 = Percentile(all, 0.90);
  c.p99 = Percentile(all, 0.99);
  return c;
}

}  // namespace

int RunServeBench(const ServeBenchOptions& o) {
  Client probe;
  std::string err, body;
  if (!probe.Connect(o.host, o.port, &err)) {
    std::fprintf(stderr, "m6rec bench serve: cannot connect to %s\n", err.c_str());
    return 1;
  }
  if (probe.Get("/health", &body) != 200) {
    std::fprintf(stderr, "m6rec bench serve: %s:%d/health did not answer 200\n", o.host.c_str(),
                 o.port);
    return 1;
  }
  const json health = json::parse(body, nullptr, false);
  const uint32_t users = health.is_object() ? health.value("users", 0u) : 0u;
  if (users == 0) {
    std::fprintf(stderr, "m6rec bench serve: /health names no users: %s\n", body.c_str());
    return 1;
  }
  json out = json::array();
  if (!o.json)
    std::printf("%-10s %5s %9s %10s %8s %8s %8s %7s\n", "route", "conc", "requests", "req/s",
                "p50 ms", "p90 ms", "p99 ms", "errors");
  for (int conc : o.concurrency)
    for (const char* route : {"health", "recommend"}) {
      err.clear();
      Case c = Run(o, route, conc, users, &err);
      if (!err.empty()) {
        std::fprintf(stderr, "m6rec bench serve: %s\n", err.c_str());
        return 1;
      }
      const double rps = c.seconds > 0 ? double(c.requests) / c.seconds : 0;
      if (o.json) {
        out.push_back({{"route", c.route},
                       {"concurrency", conc},
                       {"requests", c.requests},
                       {"requests_per_s", rps},
                       {"p50_ms", c.p50},
                       {"p90_ms", c.p90},
                       {"p99_ms", c.p99},
                       {"errors", c.errors},
                       {"items", health.value("items", 0)}});
      } else {
        std::printf("%-10s %5d %9llu %10.1f %8.2f %8.2f %8.2f %7llu\n", route, conc,
                    (unsigned long long)c.requests, rps, c.p50, c.p90, c.p99,
                    (unsigned long long)c.errors);
        std::fflush(stdout);
      }
    }
  if (o.json) std::printf("%s\n", out.dump().c_str());
  return 0;
}

namespace {

int64_t UnixMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

int RunFreshnessBench(const FreshnessBenchOptions& o) {
  Client cl;
  std::string err, body;
  if (!cl.Connect(o.host, o.port, &err) || cl.Get("/health", &body) != 200) {
    std::fprintf(stderr, "m6rec bench freshness: no m6rec serve at %s:%d %s\n", o.host.c_str(),
                 o.port, err.c_str());
    return 1;
  }
  const json health = json::parse(body, nullptr, false);
  const uint32_t users = health.is_object() ? health.value("users", 0u) : 0u;
  if (users == 0) {
    std::fprintf(stderr, "m6rec bench freshness: /health names no users: %s\n", body.c_str());
    return 1;
  }
  // The user's answer: its top item and how many items it has seen.
  auto ask = [&](uint32_t u, int64_t* top, uint64_t* seen, bool* has_item, int64_t item) {
    std::string b;
    if (cl.Get("/recommend?user=" + std::to_string(u) + "&k=10", &b) != 200) return false;
    const json j = json::parse(b, nullptr, false);
    if (!j.is_object() || !j.contains("items") || j["items"].empty()) return false;
    *top = j["items"][0].value("item", int64_t{-1});
    *seen = j.value("seen", uint64_t{0});
    *has_item = false;
    for (const auto& it : j["items"])
      *has_item = *has_item || it.value("item", int64_t{-1}) == item;
    return true;
  };
  std::mt19937_64 rng(o.seed);
  std::vector<double> lat;
  const std::string stamp = std::to_string(UnixMs());
  for (int e = 0; e < o.events; ++e) {
    uint32_t u = 0;
    int64_t item = -1;
    uint64_t seen = 0;
    bool has = false;
    for (int tries = 0; tries < 100 && item < 0; ++tries) {
      u = uint32_t(rng() % users);
      if (!ask(u, &item, &seen, &has, -1)) item = -1;
    }
    if (item < 0) {
      std::fprintf(stderr, "m6rec bench freshness: no user with recommendations\n");
      return 1;
    }
    char name[128];
    std::snprintf(name, sizeof(name), "fresh-%s-%06d.tsv", stamp.c_str(), e);
    const std::string path = o.stream_dir + "/" + name;
    // The stream directory's protocol: written under a dot-name, renamed when complete.
    const std::string hidden = o.stream_dir + "/." + name;
    const auto t0 = std::chrono::steady_clock::now();
    {
      std::ofstream f(hidden);
      f << u << "\t" << item << "\t" << UnixMs() / 1000 << "\n";
      if (!f.flush()) {
        std::fprintf(stderr, "m6rec bench freshness: cannot write %s\n", hidden.c_str());
        return 1;
      }
    }
    std::error_code ec;
    std::filesystem::rename(hidden, path, ec);
    if (ec) {
      std::fprintf(stderr, "m6rec bench freshness: %s -> %s: %s\n", hidden.c_str(), path.c_str(),
                   ec.message().c_str());
      return 1;
    }
    for (;;) {
      int64_t top = -1;
      uint64_t now_seen = 0;
      bool listed = true;
      const bool ok = ask(u, &top, &now_seen, &listed, item);
      const double ms =
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      if (ok && now_seen > seen && !listed) {
        lat.push_back(ms);
        break;
      }
      if (ms > o.timeout_s * 1000) {
        std::fprintf(stderr,
                     "m6rec bench freshness: user %u's interaction with item %lld (%s) did not "
                     "show in %.0f s: is a stream job reading %s, and serve following it?\n",
                     u, static_cast<long long>(item), name, o.timeout_s, o.stream_dir.c_str());
        return 1;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(o.poll_ms));
    }
  }
  std::vector<double> sorted = lat;
  std::sort(sorted.begin(), sorted.end());
  const double p50 = Percentile(lat, 0.5), p99 = Percentile(lat, 0.99), mx = sorted.back();
  if (o.json)
    std::printf("%s\n", json({{"events", lat.size()},
                              {"p50_ms", p50},
                              {"p99_ms", p99},
                              {"max_ms", mx},
                              {"delays_ms", sorted}})
                            .dump()
                            .c_str());
  else
    std::printf("freshness over %zu interactions: p50 %.0f ms, p99 %.0f ms, max %.0f ms\n",
                lat.size(), p50, p99, mx);
  return 0;
}

}  // namespace m6rec
