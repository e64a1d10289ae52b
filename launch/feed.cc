#include "launch/feed.h"

#include <csignal>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <zmq.hpp>

#include "common/clock.h"
#include "common/logging.h"
#include "common/transport.h"
#include "common/util.h"
#include "worker/stream_source.h"

namespace m6rec {
namespace {

volatile std::sig_atomic_t g_stop = 0;
void OnSignal(int) { g_stop = 1; }

StatusOr<std::vector<StreamEvent>> ReadEvents(const std::string& path) {
  std::ifstream in(path);
  if (!in) return Status::NotFound("--from: cannot open '" + path + "'");
  std::vector<StreamEvent> ev;
  std::string line;
  for (uint64_t n = 1; std::getline(in, line); ++n) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || line[0] == '#') continue;
    std::istringstream is(line);
    long long u = -1, i = -1, ts = 0;
    if (!(is >> u >> i) || u < 0 || i < 0 || u > UINT32_MAX || i > UINT32_MAX)
      return Status::InvalidArgument(path + ":" + std::to_string(n) +
                                     ": expected 'user item [timestamp]' (ids 0..2^32-1)");
    is >> ts;
    ev.push_back({uint32_t(u), uint32_t(i), int64_t(ts)});
  }
  return ev;
}

}  // namespace

int RunFeed(const FeedOptions& o) {
  uint64_t token = 0;
  if (!ParseToken(o.token, &token)) {
    std::fprintf(stderr, "m6rec feed: --token '%s': 16 hex digits\n", o.token.c_str());
    return 2;
  }
  auto events = ReadEvents(o.from);
  if (!events.ok()) {
    std::fprintf(stderr, "m6rec feed: %s\n", events.status().message().c_str());
    return 2;
  }
  zmq::context_t ctx(1);
  zmq::socket_t sock(ctx, zmq::socket_type::router);
  int port = 0;
  try {
    sock.set(zmq::sockopt::linger, 0);
    sock.bind(TcpEndpoint(o.host, o.port));
    auto p = BoundPort(sock);
    if (!p.ok()) throw zmq::error_t();
    port = *p;
  } catch (const zmq::error_t& e) {
    std::fprintf(stderr, "m6rec feed: cannot bind %s: %s\n", TcpEndpoint(o.host, o.port).c_str(),
                 e.what());
    return 1;
  }
  if (!o.port_file.empty() && !WriteFileAtomic(o.port_file, std::to_string(port) + "\n").ok())
    return 1;
  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);
  LOG_INFO << "feeding " << events->size() << " events from " << o.from << " on "
           << TcpEndpoint(o.host, port)
           << (o.rate > 0 ? " at " + std::to_string(o.rate) + "/s" : "");
  const int64_t t0 = MonotonicMs();
  uint64_t dropped = 0, served = 0;
  while (!g_stop) {
    std::vector<zmq::message_t> req;
    auto got = RecvMultipart(sock, &req, 100);
    if (!got.ok() || !*got || req.size() != 2) continue;
    const auto j = nlohmann::json::parse(req[1].to_string(), nullptr, false);
    uint64_t t = 0;
    if (!j.is_object() || !ParseToken(j.value("token", std::string()), &t) || t != token ||
        !j.contains("from") || !j["from"].is_number_unsigned()) {
      ++dropped;
      continue;
    }
    const uint64_t total = events->size();
    const uint64_t released =
        o.rate > 0 ? std::min<uint64_t>(total, uint64_t(double(MonotonicMs() - t0) * o.rate / 1000))
                   : total;
    const uint64_t from = j["from"].get<uint64_t>();
    const uint64_t to = std::min(released, from + j.value("max", uint64_t{1000}));
    nlohmann::json ev = nlohmann::json::array();
    for (uint64_t k = from; k < to; ++k)
      ev.push_back({(*events)[k].user, (*events)[k].item, (*events)[k].ts});
    served += ev.size();
    const std::string body = nlohmann::json{
        {"first", from},
        {"events", ev},
        {"released", released},
        {"end",
         released == total}}.dump();
    std::vector<zmq::message_t> reply;
    reply.push_back(std::move(req[0]));
    reply.emplace_back(body.data(), body.size());
    (void)SendMultipart(sock, reply);
  }
  LOG_INFO << "stopped: served " << served << " events, dropped " << dropped << " requests";
  return 0;
}

}  // namespace m6rec
