// `m6rec feed` with a FeedSource, as a streaming job would use them: real processes, a real
// ZeroMQ socket on 127.0.0.1. Every event reaches the consumer once, in order, across a
// consumer restart from its saved position; a request without the job's token gets nothing;
// bad lines stop the producer naming file:line.
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <thread>

#include "test_util.h"
#include "worker/stream_source.h"

namespace m6rec {
namespace {

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

}  // namespace
}  // namespace m6rec
