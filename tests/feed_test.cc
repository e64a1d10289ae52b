// `m6rec feed` with a FeedSource, as a streaming job would use them: real processes, a real
// ZeroMQ socket on 127.0.0.1. Every event reaches the consumer once, in order, across a
// consumer restart from its saved position; a request without the job's token gets nothing;
// bad lines stop the producer naming file:line.
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <thread>

#include "cluster_util.h"
#include "common/util.h"
#include "test_util.h"
#include "worker/checkpoint.h"
#include "worker/stream_source.h"

namespace m6rec {
namespace {

using nlohmann::json;
using testing::Background;
using testing::Binary;
using testing::RunCommand;
using testing::TempDir;

constexpr uint64_t kToken = 0x00c0ffee12345678ULL;
const char* kTokenHex = "00c0ffee12345678";

TEST(Feed, EveryEventOnceInOrderAcrossAConsumerRestart) {
  TempDir dir;
  std::string lines;
  for (int k = 0; k < 50; ++k)
    lines +=
        std::to_string(k) + " " + std::to_string(100 + k) + " " + std::to_string(1000 + k) + "\n";
  testing::WriteFile(dir / "events.tsv", lines);
  Background feed({Binary(), "feed", "--from", dir / "events.tsv", "--token", kTokenHex, "--rate",
                   "2000", "--port-file", dir / "port"},
                  dir / "feed.log");
  const std::string port = testing::WaitForFile(dir / "port", 60);
  ASSERT_FALSE(port.empty()) << feed.Output();
  const std::string ep = "tcp://127.0.0.1:" + std::to_string(std::stoi(port));

  std::vector<StreamEvent> got;
  auto src = FeedSource::Open(ep, kToken);
  ASSERT_TRUE(src.ok()) << src.status().message();
  // Take 20 (bounded wait for the rate-limited release), then "crash" with the position saved.
  for (int i = 0; i < 600 && got.size() < 20; ++i) {
    auto n = (*src)->Poll(20 - got.size(), &got);
    ASSERT_TRUE(n.ok()) << n.status().message();
    if (*n == 0) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_EQ(got.size(), 20u);
  const nlohmann::json saved = (*src)->position().ToJson();
  src->reset();
  auto pos = SourcePosition::FromJson(saved);
  ASSERT_TRUE(pos.ok());
  auto again = FeedSource::Open(ep, kToken, *pos);
  ASSERT_TRUE(again.ok()) << again.status().message();
  for (int i = 0; i < 600 && !(*again)->finished(); ++i) {
    auto n = (*again)->Poll(7, &got);
    ASSERT_TRUE(n.ok()) << n.status().message();
    if (*n == 0) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_EQ(got.size(), 50u);
  for (uint32_t k = 0; k < 50; ++k) {
    EXPECT_EQ(got[k].user, k);
    EXPECT_EQ(got[k].item, 100 + k);
    EXPECT_EQ(got[k].ts, int64_t(1000 + k));
  }
  // Another job's token: the feed drops the request, the consumer says so after its deadline.
  auto stranger = FeedSource::Open(ep, kToken + 1, {}, /*timeout_ms=*/300);
  ASSERT_TRUE(stranger.ok());
  std::vector<StreamEvent> none;
  auto refused = (*stranger)->Poll(10, &none);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("this job's token"), std::string::npos);
  EXPECT_TRUE(none.empty());
  feed.Kill(SIGTERM);
  ASSERT_TRUE(feed.Wait(30)) << feed.Output();
  EXPECT_EQ(feed.exit_code(), 0) << feed.Output();
}

TEST(Feed, ABadLineStopsTheProducerNamingFileAndLine) {
  TempDir dir;
  testing::WriteFile(dir / "bad.tsv", "1 2\n3 oops\n");
  auto r = RunCommand({Binary(), "feed", "--from", dir / "bad.tsv", "--token", kTokenHex}, 30);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find(dir / "bad.tsv:2: expected 'user item [timestamp]'"), std::string::npos)
      << r.output;
}

// A stream job on a local cluster (2 servers, 2 workers, each worker reading the feed) trains
// from `m6rec feed`; a worker SIGKILLed mid-stream ends the job, and `train --resume` continues
// from the last snapshot's position until the feed is done: every event once, in order.
TEST(Feed, AKilledStreamJobResumesFromItsSnapshotAndTakesEveryEventOnce) {
  TempDir dir;
  std::string lines;
  for (int k = 0; k < 2000; ++k)
    lines += std::to_string((k * 13) % 600) + "\t" + std::to_string((k * 7) % 300) + "\t" +
             std::to_string(5000 + k) + "\n";
  testing::WriteFile(dir / "events.tsv", lines);
  Background feed({Binary(), "feed", "--from", dir / "events.tsv", "--token", kTokenHex, "--rate",
                   "250", "--port-file", dir / "port"},
                  dir / "feed.log");
  const std::string port = testing::WaitForFile(dir / "port", 60);
  ASSERT_FALSE(port.empty()) << feed.Output();
  const std::string ep = "tcp://127.0.0.1:" + std::to_string(std::stoi(port));
  testing::WriteFile(dir / "job.yaml",
                     testing::M6Config(1) +
                         "checkpoint: {every_epochs: 0, best: false, keep: 2}\n"
                         "stream: {chunk: 100, wait_ms: 60000, snapshot_every: 1, token: " +
                         kTokenHex + "}\n");
  {
    Background job({Binary(), "train", "--config", dir / "job.yaml", "--run-dir", dir / "run",
                    "--stream", "feed:" + ep},
                   dir / "job.log");
    // Bounded wait for the event: a snapshot two chunks into the stream; then a worker dies.
    ASSERT_TRUE(testing::WaitForCheckpoint(dir / "run", 120, [](const json& m) {
      return m.contains("stream") && m["stream"]["chunks"].get<int>() >= 2;
    })) << job.Output();
    const auto pids = testing::PidsOf(dir / "run");
    const json names = testing::ReadJson(dir / "run/pids.json");
    ASSERT_TRUE(names.contains("worker 1")) << names.dump();
    ::kill(names["worker 1"].get<pid_t>(), SIGKILL);
    ASSERT_TRUE(job.Wait(120)) << job.Output();
    EXPECT_NE(job.exit_code(), 0) << "a dead worker fails the job\n" << job.Output();
    for (pid_t p : pids)
      for (int i = 0; i < 100 && testing::ProcessAlive(p); ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  auto killed_at = LatestCheckpoint(dir / "run");
  ASSERT_TRUE(killed_at.ok());
  const uint64_t before = ReadManifest(*killed_at)->at("stream").at("events").get<uint64_t>();
  EXPECT_LT(before, 2000u) << "the kill came before the end of the feed";

  auto resumed = RunCommand({Binary(), "train", "--resume", dir / "run"}, 300);
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  const json r = testing::ReadJson(dir / "run/result.json");
  EXPECT_EQ(r["stream"]["events"], 2000) << r.dump();
  auto latest = LatestCheckpoint(dir / "run");
  ASSERT_TRUE(latest.ok()) << latest.status().message();
  auto text = ReadFileToString(*latest + "/stream-events.tsv");
  ASSERT_TRUE(text.ok());
  EXPECT_EQ(*text, lines) << "every event of the feed once, in order, across the kill";
  feed.Kill(SIGTERM);
  ASSERT_TRUE(feed.Wait(30)) << feed.Output();
}

}  // namespace
}  // namespace m6rec
