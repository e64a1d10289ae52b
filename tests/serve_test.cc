// `m6rec serve` as a client sees it: a real server process over a trained run, real HTTP on
// 127.0.0.1. It answers what `m6rec recommend` answers, refuses bad requests with 4xx and a
// reason and keeps serving, `m6rec bench serve` measures it, and SIGTERM stops it cleanly.
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <boost/beast/http.hpp>
#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <thread>
#include <utility>

#include "cluster_util.h"
#include "common/util.h"
#include "test_util.h"
#include "worker/checkpoint.h"

namespace m6rec {
namespace {

namespace http = boost::beast::http;
using nlohmann::json;
using testing::Background;
using testing::Binary;
using testing::RunCommand;
using testing::TempDir;

struct Reply {
  int status = 0;
  json body;
};

Reply Request(int port, http::verb verb, const std::string& target, const std::string& body = "",
              const std::string& raw = "") {
  const testing::HttpReply r =
      testing::Http(port, std::string(http::to_string(verb)), target, body, raw);
  return {r.status, json::parse(r.body, nullptr, false)};
}

// `m6rec serve --run-dir DIR/run --port-file DIR/port ARGS...` in the background (its output in
// DIR/serve.log), and the port it listens on once written (0 when it was not within 120 s:
// server.Output() says why).
struct ServeProcess {
  ServeProcess(const TempDir& dir, const std::vector<std::string>& args)
      : server(Args(dir, args), dir / "serve.log") {
    const std::string text = testing::WaitForFile(dir / "port", 120);
    port = text.empty() ? 0 : std::stoi(text);
  }
  static std::vector<std::string> Args(const TempDir& dir, const std::vector<std::string>& args) {
    std::vector<std::string> all = {Binary(),    "serve",       "--run-dir",
                                    dir / "run", "--port-file", dir / "port"};
    all.insert(all.end(), args.begin(), args.end());
    return all;
  }
  Background server;
  int port = 0;
};

TEST(Serve, AnswersAsRecommendDoesRefusesBadRequestsAndKeepsServing) {
  TempDir dir;
  json trained = testing::RunLocalJob(dir, "run", testing::M6Config(1), {}, 240);
  ASSERT_TRUE(trained.contains("test"));
  ServeProcess serve(dir, {"--max-k", "50"});
  Background& server = serve.server;
  ASSERT_GT(serve.port, 0) << server.Output();
  const int port = serve.port;

  Reply health = Request(port, http::verb::get, "/health");
  ASSERT_EQ(health.status, 200) << server.Output();
  EXPECT_EQ(health.body["status"], "ok");
  EXPECT_EQ(health.body["users"], 600);

  // The same answer as the command line's, from the same checkpoint.
  Reply served = Request(port, http::verb::get, "/recommend?user=3&k=5");
  ASSERT_EQ(served.status, 200) << served.body.dump();
  auto cli =
      RunCommand({Binary(), "recommend", "--run-dir", dir / "run", "--user", "3", "-k", "5"}, 120);
  ASSERT_EQ(cli.exit_code, 0) << cli.output;
  const json offline = json::parse(cli.stdout_text);
  ASSERT_EQ(served.body["items"].size(), 5u);
  for (size_t i = 0; i < 5; ++i) {
    EXPECT_EQ(served.body["items"][i]["item"], offline["items"][i]["item"]) << i;
    EXPECT_NEAR(served.body["items"][i]["score"].get<double>(),
                offline["items"][i]["score"].get<double>(), 1e-5);
  }
  // A user the run never saw, by POST; explanations on request.
  Reply fresh = Request(port, http::verb::post, "/recommend",
                        R"({"history": [3, 8, 21], "k": 4, "explain": true})");
  ASSERT_EQ(fresh.status, 200) << fresh.body.dump();
  EXPECT_EQ(fresh.body["user"], "new");
  ASSERT_EQ(fresh.body["items"].size(), 4u);
  EXPECT_TRUE(fresh.body["items"][0].contains("why")) << fresh.body.dump();

  struct Bad {
    http::verb verb;
    std::string target, body;
    int status;
    std::string says;
  };
  const std::vector<Bad> bad = {
      {http::verb::post, "/recommend", "{not json", 400, "not a JSON object"},
      {http::verb::get, "/recommend?user=600", "", 400, "the data has users 0..599"},
      {http::verb::get, "/recommend?user=3&k=0", "", 400, "k 0: an integer in 1..50"},
      {http::verb::get, "/recommend?user=3&k=51", "", 400, "k 51"},
      {http::verb::get, "/recommend?user=x", "", 400, "user=x: not an integer"},
      {http::verb::get, "/recommend?k=3", "", 400, "needs user=ID"},
      {http::verb::post, "/recommend", R"({"k": 3})", 400, "who:"},
      {http::verb::post, "/recommend", R"({"user": 1, "history": [2]})", 400, "not both"},
      {http::verb::post, "/recommend", R"({"history": [99999]})", 400, "history item 99999"},
      {http::verb::post, "/recommend", R"({"history": [1], "colour": 1})", 400, "'colour'"},
      {http::verb::get, "/statusX", "", 404, "no route /statusX"},
      {http::verb::delete_, "/recommend", "", 405, "GET or POST"},
  };
  for (const auto& b : bad) {
    Reply r = Request(port, b.verb, b.target, b.body);
    EXPECT_EQ(r.status, b.status) << b.target << " " << b.body << " -> " << r.body.dump();
    EXPECT_NE(r.body.value("error", "").find(b.says), std::string::npos)
        << b.target << " " << b.body << " -> " << r.body.dump();
  }
  Reply garbage = Request(port, http::verb::get, "", "", "THIS IS NOT HTTP\r\n\r\n");
  EXPECT_EQ(garbage.status, 400) << garbage.body.dump();
  Reply after = Request(port, http::verb::get, "/health");
  ASSERT_EQ(after.status, 200) << "still serving after bad requests: " << server.Output();
  EXPECT_GE(after.body["errors"].get<int>(), int(bad.size()));

  // The load generator measures it.
  auto bench = RunCommand({Binary(), "bench", "serve", "--port", std::to_string(port), "--seconds",
                           "0.3", "--concurrency", "2", "--json"},
                          60);
  ASSERT_EQ(bench.exit_code, 0) << bench.output;
  const json cases = json::parse(bench.stdout_text, nullptr, false);
  ASSERT_TRUE(cases.is_array()) << bench.output;
  ASSERT_EQ(cases.size(), 2u) << bench.output;
  for (const auto& c : cases) {
    EXPECT_GT(c["requests"].get<int>(), 0) << c.dump();
    EXPECT_EQ(c["errors"], 0) << c.dump();
    EXPECT_GE(c["p99_ms"].get<double>(), c["p50_ms"].get<double>()) << c.dump();
  }

  server.Kill(SIGTERM);
  ASSERT_TRUE(server.Wait(30)) << server.Output();
  EXPECT_EQ(server.exit_code(), 0) << server.Output();
}

// --follow: a server started on a run's older checkpoint switches to the newest one by itself
// and answers from it as `recommend --checkpoint <newest>` does.
TEST(Serve, FollowsTheNewestCheckpointOfARun) {
  TempDir dir;
  json trained = testing::RunLocalJob(dir, "run", testing::M6Config(2), {"checkpoint.keep=5"}, 240);
  ASSERT_TRUE(trained.contains("test"));
  const auto ckpts = ValidCheckpoints(dir / "run");
  ASSERT_GE(ckpts.size(), 2u);
  auto newest = LatestCheckpoint(dir / "run");
  ASSERT_TRUE(newest.ok());
  const std::string oldest = ckpts.front() == *newest ? ckpts.back() : ckpts.front();
  ASSERT_NE(oldest, *newest);
  ServeProcess serve(dir, {"--checkpoint", oldest, "--follow", "0.2"});
  Background& server = serve.server;
  ASSERT_GT(serve.port, 0) << server.Output();
  const int port = serve.port;
  // Bounded wait for the event: /health names the newest checkpoint.
  Reply h;
  for (int i = 0; i < 600; ++i) {
    h = Request(port, http::verb::get, "/health");
    if (h.status == 200 && h.body["checkpoint"] == *newest) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_EQ(h.body["checkpoint"], *newest) << h.body.dump() << "\n" << server.Output();
  EXPECT_EQ(h.body["reloads"], 1);
  Reply served = Request(port, http::verb::get, "/recommend?user=5&k=5");
  ASSERT_EQ(served.status, 200) << served.body.dump();
  auto cli = RunCommand({Binary(), "recommend", "--run-dir", dir / "run", "--checkpoint", *newest,
                         "--user", "5", "-k", "5"},
                        120);
  ASSERT_EQ(cli.exit_code, 0) << cli.output;
  const json offline = json::parse(cli.stdout_text);
  for (size_t i = 0; i < 5; ++i)
    EXPECT_EQ(served.body["items"][i]["item"], offline["items"][i]["item"]) << i;
  server.Kill(SIGTERM);
  ASSERT_TRUE(server.Wait(30)) << server.Output();
  EXPECT_EQ(server.exit_code(), 0) << server.Output();
}

// A multi-domain run: each domain the job chose another epoch for is answered from that
// epoch's checkpoint (best.json's "domains"), by serve as by `recommend --domain`; the other
// domains from the best epoch's. The run's pointer for one domain is moved to the other epoch's
// checkpoint, so the two models certainly differ.
TEST(Serve, AnswersEachDomainFromItsOwnBestEpoch) {
  TempDir dir;
  json trained = testing::RunLocalJob(dir, "run", testing::M6Config(2),
                                      {"data.synth.domains=2", "checkpoint.keep=5"}, 240);
  ASSERT_TRUE(trained.contains("test"));
  ASSERT_EQ(trained["test"]["domains"].size(), 2u) << trained["test"].dump();
  std::vector<std::string> names;
  for (const auto& [name, d] : trained["test"]["domains"].items()) names.push_back(name);
  const std::string own = names[0], other = names[1];
  auto best = BestCheckpoint(dir / "run");
  ASSERT_TRUE(best.ok()) << best.status().message();
  std::string first;  // the other epoch's checkpoint
  for (const auto& c : ValidCheckpoints(dir / "run"))
    if (c != *best) first = c;
  ASSERT_FALSE(first.empty());
  const std::string pointers = dir / "run/checkpoints/best.json";
  json j = json::parse(*ReadFileToString(pointers));
  j["domains"] = {{own,
                   {{"checkpoint", std::filesystem::path(first).filename()},
                    {"epoch", ReadManifest(first)->at("epoch")}}}};
  ASSERT_TRUE(WriteFileAtomic(pointers, j.dump()).ok());

  ServeProcess serve(dir, {});
  Background& server = serve.server;
  ASSERT_GT(serve.port, 0) << server.Output();
  const int port = serve.port;
  Reply health = Request(port, http::verb::get, "/health");
  ASSERT_EQ(health.status, 200) << server.Output();
  EXPECT_EQ(health.body["checkpoint"], *best);
  EXPECT_EQ(health.body["domain_checkpoints"], json({{own, first}})) << health.body.dump();

  auto cli = [&](const std::string& domain, const std::string& ckpt) {
    std::vector<std::string> args = {Binary(), "recommend", "--run-dir", dir / "run", "--user",
                                     "3",      "-k",        "5",         "--domain",  domain};
    if (!ckpt.empty()) args.insert(args.end(), {"--checkpoint", ckpt});
    auto r = RunCommand(args, 120);
    EXPECT_EQ(r.exit_code, 0) << r.output;
    return json::parse(r.stdout_text, nullptr, false);
  };
  auto same = [](const json& a, const json& b) {
    if (!a.contains("items") || !b.contains("items") || a["items"].size() != b["items"].size())
      return false;
    for (size_t i = 0; i < a["items"].size(); ++i)
      if (a["items"][i]["item"] != b["items"][i]["item"] ||
          std::abs(a["items"][i]["score"].get<double>() - b["items"][i]["score"].get<double>()) >
              1e-5)
        return false;
    return true;
  };
  for (const auto& [domain, ckpt] : {std::pair{own, first}, std::pair{other, *best}}) {
    Reply served = Request(port, http::verb::get, "/recommend?user=3&k=5&domain=" + domain);
    ASSERT_EQ(served.status, 200) << served.body.dump();
    EXPECT_TRUE(same(served.body, cli(domain, ckpt))) << domain << ": " << served.body.dump();
    EXPECT_TRUE(same(served.body, cli(domain, "")))
        << domain << ": recommend --domain picks " << ckpt << " by itself";
  }
  EXPECT_FALSE(same(cli(own, first), cli(own, *best)))
      << "the two epochs' models must answer differently for the test to mean anything";
  server.Kill(SIGTERM);
  ASSERT_TRUE(server.Wait(30)) << server.Output();
  EXPECT_EQ(server.exit_code(), 0) << server.Output();
  // A domain's checkpoint gone: an error naming it, not another model served in its place.
  std::filesystem::remove_all(first);
  auto broken = RunCommand(
      {Binary(), "recommend", "--run-dir", dir / "run", "--user", "3", "--domain", own}, 120);
  EXPECT_NE(broken.exit_code, 0) << broken.output;
  EXPECT_NE(broken.output.find(std::filesystem::path(first).filename().string()), std::string::npos)
      << broken.output;
}

// A stream job next to a following serve: a user's new interactions, dropped into the stream's
// directory, reach the served answers (its seen items grow, those items leave its list and the
// ranking changes), and `m6rec bench freshness` times that path.
TEST(Serve, FollowsAStreamJobAndAUsersNewInteractionsChangeItsRanking) {
  TempDir dir;
  std::filesystem::create_directories(dir / "in");
  testing::WriteFile(dir / "in/0000.tsv", "1\t2\n2\t3\n");  // a first chunk: a first snapshot
  testing::WriteFile(dir / "job.yaml", testing::M6Config(1) +
                                           "checkpoint: {every_epochs: 0, best: false, keep: 3}\n"
                                           "stream: {chunk: 50, wait_ms: 20, snapshot_every: 1}\n");
  Background job({Binary(), "train", "--config", dir / "job.yaml", "--run-dir", dir / "run",
                  "--stream", "dir:" + (dir / "in")},
                 dir / "job.log");
  std::string first;
  for (int i = 0; i < 1200 && first.empty(); ++i) {  // bounded: the epoch, then chunk 1
    auto c = LatestCheckpoint(dir / "run");
    if (c.ok() && ReadManifest(*c).ok() && ReadManifest(*c)->contains("stream")) first = *c;
    if (first.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_FALSE(first.empty()) << "a stream snapshot\n" << job.Output();
  ServeProcess serve(dir, {"--follow", "0.1"});
  Background& server = serve.server;
  ASSERT_GT(serve.port, 0) << server.Output();
  const int port = serve.port;
  Reply before = Request(port, http::verb::get, "/recommend?user=7&k=10");
  ASSERT_EQ(before.status, 200) << before.body.dump() << server.Output();
  const uint64_t seen = before.body["seen"].get<uint64_t>();
  std::string ev;
  std::vector<int64_t> taken;
  for (int k = 0; k < 3; ++k) {
    taken.push_back(before.body["items"][k]["item"].get<int64_t>());
    ev += "7\t" + std::to_string(taken.back()) + "\t" + std::to_string(k) + "\n";
  }
  testing::WriteFile(dir / "in/.0001.tsv", ev);  // the directory's protocol: renamed when whole
  std::filesystem::rename(dir / "in/.0001.tsv", dir / "in/0001.tsv");
  Reply after;
  for (int i = 0; i < 600; ++i) {  // bounded wait for the event: the seen items grew
    after = Request(port, http::verb::get, "/recommend?user=7&k=10");
    if (after.status == 200 && after.body["seen"].get<uint64_t>() == seen + 3) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_EQ(after.body["seen"].get<uint64_t>(), seen + 3) << after.body.dump() << "\n"
                                                          << job.Output() << server.Output();
  std::vector<int64_t> ranked;
  for (const auto& it : after.body["items"]) ranked.push_back(it["item"].get<int64_t>());
  for (int64_t t : taken)
    EXPECT_EQ(std::count(ranked.begin(), ranked.end(), t), 0)
        << "item " << t << " is seen now: " << after.body.dump();
  EXPECT_NE(after.body["items"], before.body["items"]) << "the served ranking changed";

  auto fresh = RunCommand({Binary(), "bench", "freshness", "--port", std::to_string(port),
                           "--stream-dir", dir / "in", "--events", "3", "--json"},
                          180);
  ASSERT_EQ(fresh.exit_code, 0) << fresh.output << job.Output();
  const json f = json::parse(fresh.stdout_text, nullptr, false);
  ASSERT_TRUE(f.is_object()) << fresh.stdout_text;
  EXPECT_EQ(f["events"], 3);
  EXPECT_GT(f["p50_ms"].get<double>(), 0.0);

  job.Kill(SIGINT);
  EXPECT_TRUE(job.Wait(60)) << job.Output();
  server.Kill(SIGTERM);
  ASSERT_TRUE(server.Wait(30)) << server.Output();
}

}  // namespace
}  // namespace m6rec
