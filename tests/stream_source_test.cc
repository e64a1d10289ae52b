// A directory stream source: files taken in name order, each line once, a file only once it is
// complete (renamed from .tmp), and a source reopened at a saved position continues exactly
// after the last event taken; bad lines name file:line; a late file that sorts before the one
// being read is refused.
#include "worker/stream_source.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "test_util.h"

namespace m6rec {
namespace {

using testing::TempDir;
using testing::WriteFile;

std::vector<uint32_t> Users(const std::vector<StreamEvent>& ev) {
  std::vector<uint32_t> u;
  for (const auto& e : ev) u.push_back(e.user);
  return u;
}

TEST(DirectorySource, TakesEveryLineOnceInOrderAcrossARestart) {
  TempDir dir;
  WriteFile(dir / "0001.tsv", "1 10 100\n2 20 200\n# a comment\n3 30 300\n");
  WriteFile(dir / "0002.tsv.tmp", "9 9 9\n");  // still being written
  auto src = DirectorySource::Open(dir.path());
  ASSERT_TRUE(src.ok()) << src.status().message();
  std::vector<StreamEvent> ev;
  auto n = (*src)->Poll(2, &ev);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 2u);
  EXPECT_EQ(ev[1].item, 20u);
  EXPECT_EQ(ev[1].ts, 200);
  // The job checkpoints here, and is killed.
  const nlohmann::json saved = (*src)->position().ToJson();
  src->reset();
  std::filesystem::rename(dir / "0002.tsv.tmp", dir / "0002.tsv");
  WriteFile(dir / "0003.tsv", "4 40\n5 50");  // the last line without a newline
  auto pos = SourcePosition::FromJson(saved);
  ASSERT_TRUE(pos.ok());
  auto again = DirectorySource::Open(dir.path(), *pos);
  ASSERT_TRUE(again.ok()) << again.status().message();
  ev.clear();
  n = (*again)->Poll(100, &ev);
  ASSERT_TRUE(n.ok()) << n.status().message();
  EXPECT_EQ(Users(ev), (std::vector<uint32_t>{3, 9, 4, 5})) << "each once, in order";
  ev.clear();
  n = (*again)->Poll(100, &ev);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 0u) << "nothing new";
  WriteFile(dir / "0004.tsv", "6 60\n");
  n = (*again)->Poll(100, &ev);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(Users(ev), (std::vector<uint32_t>{6}));
  EXPECT_EQ((*again)->position().file, "0004.tsv");
}

TEST(DirectorySource, BadInputIsRefusedWithFileAndLine) {
  TempDir dir;
  WriteFile(dir / "a.tsv", "1 2\n3 x\n");
  auto src = DirectorySource::Open(dir.path());
  ASSERT_TRUE(src.ok());
  std::vector<StreamEvent> ev;
  auto n = (*src)->Poll(100, &ev);
  ASSERT_FALSE(n.ok());
  EXPECT_NE(n.status().message().find("a.tsv:2: expected 'user item [timestamp]'"),
            std::string::npos)
      << n.status().message();

  TempDir late;
  WriteFile(late / "b.tsv", "1 2\n");
  auto s2 = DirectorySource::Open(late.path());
  ASSERT_TRUE(s2.ok());
  ASSERT_TRUE((*s2)->Poll(100, &ev).ok());
  WriteFile(late / "a.tsv", "3 4\n");
  auto bad = (*s2)->Poll(100, &ev);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("'a.tsv' arrived after 'b.tsv'"), std::string::npos)
      << bad.status().message();

  EXPECT_FALSE(DirectorySource::Open(dir / "missing").ok());
  EXPECT_FALSE(DirectorySource::Open(dir.path(), {"gone.tsv", 3}).ok());
  EXPECT_FALSE(SourcePosition::FromJson(nlohmann::json{{"file", 3}}).ok());
}

}  // namespace
}  // namespace m6rec
