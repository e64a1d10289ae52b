#include "cluster_util.h"

// clang-format off
#include <utility>  // before asio: Boost 1.74 needs std::exchange declared
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
// clang-format on

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <thread>

#include "common/util.h"
#include "worker/checkpoint.h"

namespace m6rec {
namespace testing {

using nlohmann::json;

std::string MfConfig(int epochs) {
  return R"(job: {name: mf-test, seed: 5}
cluster: {servers: 2, workers: 2, heartbeat_interval_ms: 100, heartbeat_timeout_ms: 5000}
ps: {store: rocksdb, num_slots: 256}
tables:
  - {name: user, dim: 16, init: {type: normal, std: 0.1}, optimizer: {type: adagrad, lr: 0.1}}
  - {name: item, dim: 16, init: {type: normal, std: 0.1}, optimizer: {type: adagrad, lr: 0.1}}
data:
  synth: {users: 600, items: 300, clusters: 6, interactions_per_user: 24}
train: {job: mf, epochs: )" +
         std::to_string(epochs) + R"(, batch_size: 128, negatives: 4, log_every: 10}
)";
}

std::string M6Config(int epochs) {
  return R"(job: {name: m6-test, seed: 5}
cluster: {servers: 2, workers: 2, heartbeat_interval_ms: 100, heartbeat_timeout_ms: 5000}
ps: {store: rocksdb, num_slots: 256}
tables:
  - {name: user, dim: 16, init: {type: normal, std: 0.1}, optimizer: {type: adagrad, lr: 0.1}}
  - {name: item, dim: 16, init: {type: normal, std: 0.1}, optimizer: {type: adagrad, lr: 0.1}}
  - {name: token, dim: 16, init: {type: normal, std: 0.1}, optimizer: {type: adagrad, lr: 0.1}}
data:
  synth: {users: 600, items: 300, clusters: 6, interactions_per_user: 24, tokens: 120, image_dim: 8, audio_dim: 4}
model: {seq_len: 10, fanout: 5, hidden: 32, content_tokens: 12}
train: {job: m6, epochs: )" +
         std::to_string(epochs) +
         R"(, batch_size: 128, negatives: 32, loss: softmax, temperature: 0.2, log_every: 10}
)";
}

HttpReply Http(int port, const std::string& method, const std::string& target,
               const std::string& body, const std::string& raw) {
  namespace asio = boost::asio;
  namespace beast = boost::beast;
  namespace http = beast::http;
  asio::io_context io;
  beast::tcp_stream s(io);
  s.expires_after(std::chrono::seconds(30));
  beast::error_code ec;
  s.connect(asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"),
                                    static_cast<unsigned short>(port)),
            ec);
  if (ec) return {};
  if (!raw.empty()) {
    asio::write(s.socket(), asio::buffer(raw), ec);
  } else {
    http::request<http::string_body> req{http::string_to_verb(method), target, 11};
    req.set(http::field::host, "test");
    req.body() = body;
    req.prepare_payload();
    http::write(s, req, ec);
  }
  beast::flat_buffer buf;
  http::response<http::string_body> res;
  if (!ec) http::read(s, buf, res, ec);
  if (ec) return {};
  return {static_cast<int>(res.result_int()), res.body()};
}

std::string OnPath(const std::string& program) {
  std::string path;
  if (FILE* f = popen(("command -v " + program).c_str(), "r")) {
    char buf[512] = {0};
    if (fgets(buf, sizeof(buf), f)) path = buf;
    pclose(f);
  }
  while (!path.empty() && (path.back() == '\n' || path.back() == ' ')) path.pop_back();
  return path;
}

json ReadJson(const std::string& path) {
  auto text = ReadFileToString(path);
  EXPECT_TRUE(text.ok()) << path;
  return json::parse(text.ok() ? *text : "{}", nullptr, false);
}

std::vector<json> ReadJsonLines(const std::string& path) {
  std::vector<json> lines;
  auto text = ReadFileToString(path);
  EXPECT_TRUE(text.ok()) << path;
  if (!text.ok()) return lines;
  size_t at = 0;
  while (at < text->size()) {
    size_t nl = text->find('\n', at);
    if (nl == std::string::npos) nl = text->size();
    const std::string line = text->substr(at, nl - at);
    json j = json::parse(line, nullptr, false);
    EXPECT_FALSE(j.is_discarded()) << path << ":" << lines.size() + 1 << " is not JSON: " << line;
    lines.push_back(std::move(j));
    at = nl + 1;
  }
  return lines;
}

json RunLocalJob(TempDir& dir, const std::string& run_name, const std::string& yaml,
                 const std::vector<std::string>& sets, int timeout_s) {
  const std::string cfg = testing::WriteFile(dir / (run_name + ".yaml"), yaml);
  std::vector<std::string> cmd{Binary(), "local", "--config", cfg, "--run-dir", dir / run_name};
  for (const auto& s : sets) {
    cmd.push_back("--set");
    cmd.push_back(s);
  }
  auto r = RunCommand(cmd, timeout_s);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  if (r.exit_code != 0) return json::object();
  json res = ReadJson(dir / run_name + "/result.json");
  EXPECT_TRUE(res.contains("test")) << res.dump();
  return res.contains("test") ? res : json::object();
}

std::vector<pid_t> PidsOf(const std::string& run_dir) {
  std::vector<pid_t> pids;
  json j = json::parse(testing::WaitForFile(run_dir + "/pids.json", 30), nullptr, false);
  if (j.is_object())
    for (auto& [name, pid] : j.items())
      if (name != "launcher") pids.push_back(pid.get<pid_t>());
  return pids;
}

bool WaitForCheckpoint(const std::string& run_dir, double timeout_s,
                       bool (*pred)(const json& manifest)) {
  for (int i = 0; i < timeout_s * 20; ++i) {
    for (const auto& c : ValidCheckpoints(run_dir)) {
      auto m = ReadManifest(c);
      if (m.ok() && (!pred || pred(*m))) return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

LongJob::LongJob(const TempDir& dir, const std::vector<std::string>& extra) {
  std::string cfg = WriteFile(dir / "job.yaml", MfConfig(1000));
  std::vector<std::string> args{Binary(),    "local",     "--config", cfg,
                                "--run-dir", dir / "run", "--set",    "checkpoint.every_steps=10"};
  args.insert(args.end(), extra.begin(), extra.end());
  launcher = std::make_unique<Background>(args, dir / "out.log");
  // Training has started once the first step checkpoint is complete.
  started = WaitForCheckpoint(dir / "run", 60);
  pids = PidsOf(dir / "run");
  auto text = ReadFileToString(dir / "run/pids.json");
  if (text.ok()) by_name = json::parse(*text, nullptr, false);
}

pid_t LongJob::Pid(const std::string& name) const {
  return by_name.is_object() && by_name.contains(name) ? by_name[name].get<pid_t>() : -1;
}

}  // namespace testing
}  // namespace m6rec
