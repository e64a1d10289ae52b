// Pretrained vectors through the real binary: `m6rec import` maps a word2vec file through a
// vocabulary into a rows file; a local cluster (2 RocksDB servers) starts its token table from
// it; `m6rec export` reads the trained table back. Frozen (trainable: false), every imported row
// comes back bit for bit and every other row is its initialiser's; trainable, the imported rows
// were only the start. A rows file of the wrong dimension stops the launch, naming the table.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <map>
#include <random>
#include <sstream>

#include "cluster_util.h"
#include "common/config.h"
#include "common/initializer.h"
#include "common/util.h"
#include "test_util.h"

namespace m6rec {
namespace {

using nlohmann::json;
using testing::Binary;
using testing::M6Config;
using testing::RunCommand;
using testing::TempDir;

// "id v1 v2 ..." lines (m6rec export --format ids) by id, parsed as the floats they print.
std::map<uint64_t, std::vector<float>> ReadIdVectors(const std::string& path) {
  std::map<uint64_t, std::vector<float>> rows;
  std::istringstream in(*ReadFileToString(path));
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream is(line);
    uint64_t id;
    is >> id;
    for (std::string v; is >> v;) rows[id].push_back(std::strtof(v.c_str(), nullptr));
  }
  return rows;
}

TEST(Import, FrozenVectorsComeBackExactlyAfterTrainingOnACluster) {
  TempDir dir;
  const int kTokens = 120, kDim = 16;  // M6Config's synthetic tokens and token table
  std::string vocab, vectors = "41 16\n";
  std::map<uint64_t, std::vector<float>> want;
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0, 0.3f);
  for (int t = 0; t < kTokens; ++t) vocab += "w" + std::to_string(t) + "\n";
  for (int t = 0; t < kTokens; t += 3) {
    vectors += "W" + std::to_string(t);  // matched case-insensitively
    for (int d = 0; d < kDim; ++d) {
      want[t].push_back(normal(rng));
      char buf[32];
      std::snprintf(buf, sizeof(buf), " %.9g", want[t].back());
      vectors += buf;
    }
    vectors += "\n";
  }
  vectors += "elsewhere";
  for (int d = 0; d < kDim; ++d) vectors += " 1";
  vectors += "\n";
  testing::WriteFile(dir / "vocab.txt", vocab);
  testing::WriteFile(dir / "vectors.txt", vectors);
  const std::string cfg = testing::WriteFile(dir / "job.yaml", M6Config(2));
  auto imp =
      RunCommand({Binary(), "import", "--config", cfg, "--table", "token", "--from",
                  dir / "vectors.txt", "--vocab", dir / "vocab.txt", "--out", dir / "token.rows"},
                 60);
  ASSERT_EQ(imp.exit_code, 0) << imp.output;
  json rep = json::parse(imp.stdout_text, nullptr, false);
  EXPECT_EQ(rep.value("rows_written", 0), 40) << imp.stdout_text;
  EXPECT_EQ(rep.value("vocabulary_words", 0), kTokens);
  EXPECT_EQ(rep.value("matched_case_insensitively", 0), 40);
  EXPECT_NE(imp.output.find("init: {from: " + dir / "token.rows" + "}"), std::string::npos)
      << "import says how to use the rows: " << imp.output;

  auto export_tokens = [&](const std::string& run) {
    auto r = RunCommand({Binary(), "export", "--run-dir", dir / run, "--table", "token", "--format",
                         "ids", "--out", dir / (run + ".txt")},
                        60);
    EXPECT_EQ(r.exit_code, 0) << r.output;
    return ReadIdVectors(dir / (run + ".txt"));
  };
  const std::string from = "tables.2.init.from=" + dir / "token.rows";
  json frozen =
      testing::RunLocalJob(dir, "frozen", M6Config(2), {from, "tables.2.trainable=false"}, 240);
  ASSERT_TRUE(frozen.contains("test"));
  auto rows = export_tokens("frozen");
  ASSERT_EQ(rows.size(), size_t(kTokens));
  auto job = LoadConfig(dir / "frozen/config.yaml", {});
  ASSERT_TRUE(job.ok()) << job.status().message();
  const TableSpec& spec = job->tables[2];
  for (const auto& [id, v] : rows) {
    std::vector<float> expect(kDim);
    if (want.count(id))
      expect = want[id];
    else
      InitRow(spec, MakeKey(spec.id, id), expect.data());
    EXPECT_EQ(v, expect) << "token " << id << (want.count(id) ? " (imported)" : " (initialiser)");
  }

  json trained = testing::RunLocalJob(dir, "trained", M6Config(2), {from}, 240);
  ASSERT_TRUE(trained.contains("test"));
  auto moved = export_tokens("trained");
  int changed = 0;
  for (const auto& [id, v] : want) changed += moved[id] != v;
  EXPECT_GT(changed, 20) << "trainable imported rows are only the start";

  // The wrong dimension: the servers refuse before serving and the launch stops, naming why.
  auto wrong =
      RunCommand({Binary(), "local", "--config", cfg, "--run-dir", dir / "wrong", "--set", from,
                  "--set", "tables.0.dim=8", "--set", "tables.1.dim=8", "--set", "tables.2.dim=8"},
                 120);
  EXPECT_NE(wrong.exit_code, 0);
  EXPECT_NE(wrong.output.find("table 'token' init.from: '" + dir / "token.rows" +
                              "' holds rows of dim 16, the table's dim is 8"),
            std::string::npos)
      << wrong.output;
  for (pid_t p : testing::PidsOf(dir / "wrong"))
    EXPECT_FALSE(testing::ProcessAlive(p)) << "pid " << p << " outlived the failed launch";
}

TEST(Import, BadVectorFilesExit2WithFileAndLine) {
  TempDir dir;
  const std::string cfg = testing::WriteFile(dir / "job.yaml", M6Config(1));
  testing::WriteFile(dir / "bad.txt", "a 1 2\nb 1\n");
  testing::WriteFile(dir / "vocab.txt", "a\nb\n");
  auto r = RunCommand({Binary(), "import", "--config", cfg, "--table", "token", "--from",
                       dir / "bad.txt", "--vocab", dir / "vocab.txt", "--out", dir / "x.rows"},
                      30);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find(dir / "bad.txt:2: 1 values, the file's vectors have 2"),
            std::string::npos)
      << r.output;
  auto no_vocab = RunCommand({Binary(), "import", "--config", cfg, "--table", "token", "--from",
                              dir / "bad.txt", "--out", dir / "x.rows"},
                             30);
  EXPECT_EQ(no_vocab.exit_code, 2);
  EXPECT_NE(no_vocab.output.find("give a vocabulary file"), std::string::npos) << no_vocab.output;
  auto dims = RunCommand({Binary(), "import", "--config", cfg, "--table", "item", "--format", "ids",
                          "--from", dir / "bad.txt", "--out", dir / "x.rows"},
                         30);
  EXPECT_EQ(dims.exit_code, 2);
  EXPECT_NE(dims.output.find("bad.txt:1: id 'a' is not a non-negative integer"), std::string::npos)
      << dims.output;
  EXPECT_FALSE(std::ifstream(dir / "x.rows")) << "nothing is written on an error";
}

}  // namespace
}  // namespace m6rec
