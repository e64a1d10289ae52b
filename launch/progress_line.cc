#include "launch/progress_line.h"

#include <sys/ioctl.h>
#include <unistd.h>

// clang-format off
#include <utility>  // before asio: Boost 1.74 needs std::exchange declared
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
// clang-format on
#include <algorithm>
#include <cstdio>
#include <regex>

#include "common/clock.h"

namespace m6rec {

using nlohmann::json;

namespace {

std::string HhMmSs(double s) {
  const long t = long(std::max(0.0, s) + 0.5);
  char buf[32];
  if (t >= 3600)
    std::snprintf(buf, sizeof(buf), "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
  else
    std::snprintf(buf, sizeof(buf), "%ld:%02ld", t / 60, t % 60);
  return buf;
}

void WriteErr(const std::string& s) {
  ssize_t ignored = ::write(2, s.data(), s.size());
  (void)ignored;
}

int TerminalWidth() {
  winsize w{};
  if (::ioctl(2, TIOCGWINSZ, &w) == 0 && w.ws_col > 20) return w.ws_col;
  return 100;
}

}  // namespace

bool ProgressLine::IsProgressLogLine(const std::string& line) {
  static const std::regex kStep(R"( I epoch [0-9]+ step [0-9]+ loss )");
  return std::regex_search(line, kStep);
}

std::string ProgressLine::Render(const json& status, int width) {
  if (!status.is_object() || !status.contains("nodes")) return "";
  const json* lead = nullptr;
  double sps = 0;
  for (const json& n : status["nodes"]) {
    if (n.value("role", std::string()) != "worker" || !n.contains("stats")) continue;
    sps += n["stats"].value("samples_per_s", 0.0);
    if (n.value("rank", -1) == 0) lead = &n["stats"];
  }
  if (!lead) return "";
  const json& s = *lead;
  char buf[256];
  std::string out;
  if (s.contains("stream")) {
    std::snprintf(buf, sizeof(buf), "stream: %llu chunks, %llu events",
                  static_cast<unsigned long long>(s["stream"].value("chunks", uint64_t{0})),
                  static_cast<unsigned long long>(s["stream"].value("events", uint64_t{0})));
    out = buf;
  } else {
    const uint64_t per = s.value("steps_per_epoch", uint64_t{0});
    const uint64_t in = std::min(per, s.value("step_in_epoch", uint64_t{0}));
    const double frac = per ? double(in) / double(per) : 0.0;
    const int bar = 20, filled = int(frac * bar + 0.5);
    std::snprintf(buf, sizeof(buf), "epoch %d/%d [%s%s] %3d%% %llu/%llu", s.value("epoch", 0),
                  s.value("epochs", 0), std::string(size_t(filled), '#').c_str(),
                  std::string(size_t(bar - filled), '-').c_str(), int(frac * 100 + 0.5),
                  static_cast<unsigned long long>(in), static_cast<unsigned long long>(per));
    out = buf;
  }
  std::snprintf(buf, sizeof(buf), " | %.0f samples/s | loss %.4f", sps, s.value("loss", 0.0));
  out += buf;
  if (s.contains("eta_epoch_s") && !s.contains("stream"))
    out += " | ETA epoch " + HhMmSs(s["eta_epoch_s"].get<double>()) + ", job " +
           HhMmSs(s["eta_job_s"].get<double>());
  if (s.contains("last_eval") && s["last_eval"].contains("test")) {
    const json& t = s["last_eval"]["test"];
    for (const char* m : {"HR@10", "Recall@20"})
      if (t.contains(m)) {
        std::snprintf(buf, sizeof(buf), " | %s %.4f (epoch %d)", m, t[m].get<double>(),
                      s["last_eval"].value("epoch", 0));
        out += buf;
        break;
      }
  }
  if (int(out.size()) > width - 1) out.resize(size_t(std::max(0, width - 1)));
  return out;
}

void ProgressLine::Clear() {
  if (!enabled_ || !shown_) return;
  WriteErr("\r\033[K");
  shown_ = false;
}

void ProgressLine::Redraw() {
  if (!enabled_ || line_.empty()) return;
  WriteErr("\r\033[K" + line_);
  shown_ = true;
}

void ProgressLine::Update(const std::string& host, int http_port) {
  if (!enabled_ || http_port <= 0) return;
  const int64_t now = MonotonicMs();
  if (now - last_ms_ < 500) return;
  last_ms_ = now;
  namespace asio = boost::asio;
  namespace beast = boost::beast;
  namespace http = beast::http;
  asio::io_context io;
  beast::tcp_stream s(io);
  s.expires_after(std::chrono::milliseconds(200));
  beast::error_code ec;
  s.connect(asio::ip::tcp::endpoint(asio::ip::make_address(host, ec),
                                    static_cast<unsigned short>(http_port)),
            ec);
  if (ec) return;
  http::request<http::empty_body> req{http::verb::get, "/status", 11};
  req.set(http::field::host, host);
  http::write(s, req, ec);
  beast::flat_buffer buf;
  http::response<http::string_body> res;
  if (!ec) http::read(s, buf, res, ec);
  if (ec || res.result_int() != 200) return;
  const std::string line = Render(json::parse(res.body(), nullptr, false), TerminalWidth());
  if (line.empty()) return;
  line_ = line;
  Redraw();
}

void ProgressLine::Finish() {
  if (enabled_ && shown_) WriteErr("\n");
  shown_ = false;
}

}  // namespace m6rec
