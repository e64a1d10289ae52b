#include "worker/interactions.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "common/util.h"
#include "test_util.h"
#include "worker/synthetic_data.h"

namespace m6rec {

TEST(Data, ReadsInteractionsInTimeOrder) {
  testing::TempDir dir;
  std::string p =
      testing::WriteFile(dir / "i.tsv", "# comment\n0\t5\t0\t30\n0\t3\t0\t10\n2 1\n0 4 0 20\n");
  auto d = ReadInteractions(p);
  ASSERT_TRUE(d.ok()) << d.status().message();
  EXPECT_EQ(d->num_users, 3u);
  EXPECT_EQ(d->num_items, 6u);
  EXPECT_EQ(d->count, 4u);
  EXPECT_EQ(d->by_user[0], (std::vector<uint32_t>{3, 4, 5}));
}

TEST(Data, BadLinesNameFileAndLine) {
  testing::TempDir dir;
  struct Case {
    std::string text, expect;
  } cases[] = {
      {"0 1\n1 x\n", "i.tsv:2: item id 'x'"},
      {"0 1\n\n-1 2\n", "i.tsv:3: user id '-1'"},
      {"0 1 0 5 9 1\n", "i.tsv:1: expected 'user item"},
      {"0\n", "i.tsv:1: expected"},
      {"0 1 0 t\n", "i.tsv:1: timestamp 't'"},
      {"# only comments\n", "no interactions"},
      {"0 1 0 5 x\n", "i.tsv:1: rating 'x'"},
      {"0 1 0 5\n1 1 0 6 4\n", "i.tsv:2: a rating"},
  };
  for (const auto& c : cases) {
    auto d = ReadInteractions(testing::WriteFile(dir / "i.tsv", c.text));
    ASSERT_FALSE(d.ok()) << c.text;
    EXPECT_NE(d.status().message().find(c.expect), std::string::npos)
        << "expected '" << c.expect << "' in: " << d.status().message();
  }
  auto rated = ReadInteractions(testing::WriteFile(dir / "i.tsv", "0 1 0 5 4.5\n0 2 0 3 2\n"));
  ASSERT_TRUE(rated.ok()) << rated.status().message();
  EXPECT_EQ(rated->ratings_by_user[0], (std::vector<float>{2.0f, 4.5f})) << "in time order";
  auto missing = ReadInteractions(dir / "nope.tsv");
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
}

TEST(Data, SyntheticDataIsDeterministicAndComplete) {
  testing::TempDir dir;
  SynthConfig c;
  c.users = 200;
  c.items = 100;
  ASSERT_TRUE(WriteSynthetic(c, 5, dir / "a").ok());
  ASSERT_TRUE(WriteSynthetic(c, 5, dir / "b").ok());
  ASSERT_TRUE(WriteSynthetic(c, 6, dir / "c").ok());
  auto read = [](const std::string& p) {
    std::ifstream in(p);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  for (const char* f :
       {"interactions.tsv", "social.tsv", "item_tokens.tsv", "item_image.npy", "item_audio.npy"}) {
    std::string a = read(dir / "a/" + f);
    EXPECT_FALSE(a.empty()) << f;
    EXPECT_EQ(a, read(dir / "b/" + f)) << f << " must be the same for the same seed";
  }
  EXPECT_NE(read(dir / "a/interactions.tsv"), read(dir / "c/interactions.tsv"));
  auto d = ReadInteractions(dir / "a/interactions.tsv");
  ASSERT_TRUE(d.ok()) << d.status().message();
  EXPECT_EQ(d->num_users, 200u);
  std::string npy = read(dir / "a/item_image.npy");
  EXPECT_EQ(npy.substr(1, 5), "NUMPY");
  EXPECT_NE(npy.find("'shape': (100, 32)"), std::string::npos);
  EXPECT_EQ(npy.size() % 64, (100 * 32 * 4) % 64) << "the header is padded to 64 bytes";
}

}  // namespace m6rec

namespace m6rec {

TEST(Util, RemoveTreeRemovesNestedDirectoriesAndToleratesMissingPaths) {
  testing::TempDir dir;
  const std::string root = dir / "tree";
  ASSERT_TRUE(MakeDirs(root + "/a/b/c").ok());
  testing::WriteFile(root + "/a/b/c/f.txt", "x");
  testing::WriteFile(root + "/a/g.txt", "y");
  ASSERT_EQ(::symlink("/etc", (root + "/link").c_str()), 0);
  EXPECT_TRUE(RemoveTree(root).ok());
  EXPECT_FALSE(std::filesystem::exists(root));
  EXPECT_TRUE(std::filesystem::exists("/etc/hostname") || std::filesystem::exists("/etc"))
      << "links are removed, not followed";
  EXPECT_TRUE(RemoveTree(root).ok()) << "a missing path is no error";
}

}  // namespace m6rec
