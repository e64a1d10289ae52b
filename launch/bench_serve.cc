#include "launch/bench_serve.h"

#include <algorithm>
#include <atomic>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <cstdio>
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

}  // namespace m6rec
