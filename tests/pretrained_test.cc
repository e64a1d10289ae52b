// Pretrained vectors (`m6rec import`): the rows file round-trips exactly; vector files in the
// formats people bring are read, mapped through a vocabulary and refused with file:line when
// bad; imported rows land on the shard that owns them and nothing else changes; a frozen
// table refuses pushes; MovieLens titles become named word tokens.
#include "worker/pretrained.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>

#include "common/config.h"
#include "common/initializer.h"
#include "common/rows_file.h"
#include "common/util.h"
#include "ps/optimizer.h"
#include "ps/table_store.h"
#include "test_util.h"
#include "worker/dataset.h"
#include "worker/local_tables.h"

namespace m6rec {
namespace {

using testing::TempDir;
using testing::WriteFile;

Rows SomeRows(uint32_t dim, std::vector<uint64_t> ids) {
  Rows r;
  r.dim = dim;
  r.ids = std::move(ids);
  for (size_t i = 0; i < r.ids.size() * dim; ++i)
    r.values.push_back(std::ldexp(float(i % 97) - 48.3f, -int(i % 13)));  // many bits per value
  return r;
}

TEST(RowsFile, RoundTripsExactlyAndReadsOnlyWhatIsKept) {
  TempDir dir;
  Rows r = SomeRows(5, {0, 3, 7, 1000, uint64_t{1} << 40});
  ASSERT_TRUE(WriteRowsFile(dir / "r.rows", r).ok());
  auto back = ReadRowsFile(dir / "r.rows");
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_EQ(back->dim, 5u);
  EXPECT_EQ(back->ids, r.ids);
  ASSERT_EQ(back->values.size(), r.values.size());
  EXPECT_EQ(std::memcmp(back->values.data(), r.values.data(), r.values.size() * sizeof(float)), 0);
  auto odd = ReadRowsFile(dir / "r.rows", [](uint64_t id) { return id % 2 == 1; });
  ASSERT_TRUE(odd.ok());
  EXPECT_EQ(odd->ids, (std::vector<uint64_t>{3, 7}));
  EXPECT_EQ(odd->values[0], r.values[5]);  // row 1 of the file (id 3)
  EXPECT_EQ(odd->values[9], r.values[14]);
}

TEST(RowsFile, RefusesWhatIsNotARowsFileOrIsCut) {
  TempDir dir;
  WriteFile(dir / "text", "word 1 2 3\n");
  auto a = ReadRowsFile(dir / "text");
  ASSERT_FALSE(a.ok());
  EXPECT_NE(a.status().message().find("not a rows file"), std::string::npos)
      << a.status().message();
  ASSERT_TRUE(WriteRowsFile(dir / "r.rows", SomeRows(4, {1, 2, 3})).ok());
  std::string bytes = *ReadFileToString(dir / "r.rows");
  WriteFile(dir / "cut.rows", bytes.substr(0, bytes.size() - 3));
  auto b = ReadRowsFile(dir / "cut.rows");
  ASSERT_FALSE(b.ok());
  EXPECT_NE(b.status().message().find("truncated"), std::string::npos) << b.status().message();
  Rows unordered = SomeRows(2, {5, 4});
  EXPECT_FALSE(WriteRowsFile(dir / "u.rows", unordered).ok());
  EXPECT_FALSE(ReadRowsFile(dir / "missing.rows").ok());
}

TEST(Pretrained, ReadsWord2VecWithAHeaderAndGloVeWithout) {
  TempDir dir;
  WriteFile(dir / "w2v.txt", "3 2\nking 0.5 -1.25\nQueen 1e-3 2\nrook 7 8\n");
  WriteFile(dir / "glove.txt", "king 0.5 -1.25\r\nqueen 0.001 2\r\n");
  auto w = ReadVectorFile(dir / "w2v.txt", VectorFormat::kWords);
  ASSERT_TRUE(w.ok()) << w.status().message();
  EXPECT_EQ(w->dim, 2u);
  EXPECT_EQ(w->vectors, 3u);
  EXPECT_EQ(w->words, (std::vector<std::string>{"king", "Queen", "rook"}));
  EXPECT_EQ(w->values, (std::vector<float>{0.5f, -1.25f, 1e-3f, 2, 7, 8}));
  auto g = ReadVectorFile(dir / "glove.txt", VectorFormat::kWords,
                          [](const std::string& s) { return s != "king"; });
  ASSERT_TRUE(g.ok()) << g.status().message();
  EXPECT_EQ(g->vectors, 2u) << "every vector is read and counted";
  EXPECT_EQ(g->words, (std::vector<std::string>{"queen"})) << "only the kept ones are held";
  EXPECT_EQ(g->lines, (std::vector<uint64_t>{2}));
}

TEST(Pretrained, BadLinesAreRefusedNamingTheFileAndLine) {
  TempDir dir;
  struct Case {
    std::string text, says;
    VectorFormat format = VectorFormat::kWords;
  };
  const std::vector<Case> cases = {
      {"a 1 2 3\nb 1 2\n", "bad.txt:2: 2 values, the file's vectors have 3"},
      {"a 1 2\nb 1 x2\n", "bad.txt:2: value 2 'x2' is not a number"},
      {"a 1 2\n\nb nan 2\n", "bad.txt:3: value 1 is not finite"},
      {"a 1 2\nb 1e999 2\n", "bad.txt:2: value 1 '1e999' is not a number"},
      {"5 2\na 1 2\n", "bad.txt:1: the header says 5 vectors, the file has 1"},
      {"lonely\n", "bad.txt:1: expected 'word v1 v2 ...'"},
      {"", "bad.txt: no vectors"},
      {"3 1 2\nx 1 2\n", "bad.txt:2: id 'x' is not a non-negative integer", VectorFormat::kIds},
  };
  for (const auto& c : cases) {
    WriteFile(dir / "bad.txt", c.text);
    auto r = ReadVectorFile(dir / "bad.txt", c.format);
    ASSERT_FALSE(r.ok()) << c.text;
    EXPECT_NE(r.status().message().find(c.says), std::string::npos)
        << "for " << c.text << " got: " << r.status().message();
  }
  EXPECT_EQ(ReadVectorFile(dir / "absent.txt", VectorFormat::kWords).status().code(),
            StatusCode::kNotFound);
}

TEST(Pretrained, VocabulariesAreOneWordPerLineOrWordAndId) {
  TempDir dir;
  WriteFile(dir / "v1.txt", "the\ncat\nsat\n");
  WriteFile(dir / "v2.txt", "cat 7\ndog 3\n");
  WriteFile(dir / "mixed.txt", "cat 7\ndog\n");
  auto a = ReadVocabulary(dir / "v1.txt");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(*a, (Vocabulary{{"the", 0}, {"cat", 1}, {"sat", 2}}));
  auto b = ReadVocabulary(dir / "v2.txt");
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(*b, (Vocabulary{{"cat", 7}, {"dog", 3}}));
  auto c = ReadVocabulary(dir / "mixed.txt");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("mixed.txt:2:"), std::string::npos) << c.status().message();
}

TEST(Pretrained, WordsMapThroughTheVocabularyExactlyThenIgnoringCase) {
  TempDir dir;
  WriteFile(dir / "v.txt", "Paris 1 2\nparis 3 4\nLondon 5 6\nrome 7 8\n");
  auto file = ReadVectorFile(dir / "v.txt", VectorFormat::kWords);
  ASSERT_TRUE(file.ok());
  const Vocabulary vocab = {{"paris", 4}, {"london", 2}, {"oslo", 9}, {"", 5}};
  ImportReport rep;
  auto rows = MapVectors(dir / "v.txt", *file, &vocab, 2, 10, false, &rep);
  ASSERT_TRUE(rows.ok()) << rows.status().message();
  EXPECT_EQ(rows->ids, (std::vector<uint64_t>{2, 4}));
  EXPECT_EQ(rows->values, (std::vector<float>{5, 6, 3, 4})) << "exact 'paris' before 'Paris'";
  EXPECT_EQ(rep.vocabulary, 3u) << "an unnamed row is no vocabulary word";
  EXPECT_EQ(rep.matched, 2u);
  EXPECT_EQ(rep.matched_case, 1u);
  EXPECT_EQ(rep.missing, (std::vector<std::string>{"oslo"}));

  auto strict = MapVectors(dir / "v.txt", *file, &vocab, 2, 10, true, &rep);
  ASSERT_FALSE(strict.ok());
  EXPECT_NE(
      strict.status().message().find("1 of 3 vocabulary words have no vector (first: 'oslo')"),
      std::string::npos)
      << strict.status().message();
  auto wrong_dim = MapVectors(dir / "v.txt", *file, &vocab, 3, 10, false, &rep);
  ASSERT_FALSE(wrong_dim.ok());
  EXPECT_NE(wrong_dim.status().message().find("vectors of dimension 2, the table's dim is 3"),
            std::string::npos)
      << wrong_dim.status().message();
  auto outside = MapVectors(dir / "v.txt", *file, &vocab, 2, 5, false, &rep);
  ASSERT_FALSE(outside.ok());
  EXPECT_NE(outside.status().message().find("'oslo' names row 9, the table has 5 rows"),
            std::string::npos)
      << outside.status().message();
  const Vocabulary twice = {{"paris", 1}, {"rome", 1}};
  EXPECT_FALSE(MapVectors(dir / "v.txt", *file, &twice, 2, 0, false, &rep).ok());
}

TEST(Pretrained, IdVectorsOutsideTheTableOrGivenTwiceAreRefusedWithTheirLine) {
  TempDir dir;
  WriteFile(dir / "ids.tsv", "0\t1 2\n4\t3 4\n2\t5 6\n");
  auto file = ReadVectorFile(dir / "ids.tsv", VectorFormat::kIds);
  ASSERT_TRUE(file.ok()) << file.status().message();
  ImportReport rep;
  auto rows = MapVectors(dir / "ids.tsv", *file, nullptr, 2, 5, false, &rep);
  ASSERT_TRUE(rows.ok());
  EXPECT_EQ(rows->ids, (std::vector<uint64_t>{0, 2, 4}));
  EXPECT_EQ(rows->values, (std::vector<float>{1, 2, 5, 6, 3, 4}));
  auto small = MapVectors(dir / "ids.tsv", *file, nullptr, 2, 4, false, &rep);
  ASSERT_FALSE(small.ok());
  EXPECT_NE(small.status().message().find("ids.tsv:2: id 4 is outside the table (4 rows)"),
            std::string::npos)
      << small.status().message();
  WriteFile(dir / "dup.tsv", "1 1 2\n1 3 4\n");
  auto dup = ReadVectorFile(dir / "dup.tsv", VectorFormat::kIds);
  ASSERT_TRUE(dup.ok());
  auto d = MapVectors(dir / "dup.tsv", *dup, nullptr, 2, 0, false, &rep);
  ASSERT_FALSE(d.ok());
  EXPECT_NE(d.status().message().find("dup.tsv:2: id 1 again (first at line 1)"), std::string::npos)
      << d.status().message();
}

TableSpec TokenTable(const std::string& from, bool trainable) {
  TableSpec t;
  t.name = "token";
  t.id = 0;
  t.dim = 3;
  t.seed = 99;
  t.init.from = from;
  t.trainable = trainable;
  t.optimizer.kind = OptimizerSpec::Kind::kAdagrad;
  t.optimizer.initial_accumulator = 0.1f;
  return t;
}

// A fresh job's stores (RocksDB, two shards): each imported row is on the shard that owns its
// key, with its weights exactly and a fresh optimizer state; a row not in the file is the
// initialiser's; a restored store imports nothing.
TEST(Pretrained, ImportedRowsLandOnTheirShardAndTheRestKeepTheirInitialiser) {
  TempDir dir;
  const Rows file = SomeRows(3, {1, 2, 5, 8, 13, 21, 34});
  ASSERT_TRUE(WriteRowsFile(dir / "t.rows", file).ok());
  LocalStoresOptions lo;
  lo.tables = {TokenTable(dir / "t.rows", true)};
  lo.ps.store = PsConfig::Store::kRocksDB;
  lo.ps.num_slots = 64;
  lo.shard_dirs = {dir / "s0", dir / "s1"};
  auto stores = LocalStores::Open(lo);
  ASSERT_TRUE(stores.ok()) << stores.status().message();
  const TableSpec& spec = lo.tables[0];
  const uint32_t width = RowWidth(spec);
  std::vector<int> per_shard(2, 0);
  for (uint64_t id = 0; id < 40; ++id) {
    const Key k = MakeKey(0, id);
    std::vector<float> want(width);
    auto at = std::find(file.ids.begin(), file.ids.end(), id);
    if (at != file.ids.end()) {
      std::copy_n(&file.values[size_t(at - file.ids.begin()) * 3], 3, want.begin());
      InitOptimizerState(spec.optimizer, 3, want.data() + 3);
    } else {
      InitFullRow(spec, k, want.data());
    }
    const uint32_t owner = (*stores)->ShardOf(k);
    std::vector<float> got(width);
    ASSERT_TRUE((*stores)->shard(owner).Lookup(0, &k, 1, width, got.data()).ok());
    EXPECT_EQ(got, want) << "row " << id;
    if (at != file.ids.end()) ++per_shard[owner];
  }
  EXPECT_GT(per_shard[0], 0);
  EXPECT_GT(per_shard[1], 0);
  uint64_t written = 0;
  for (size_t s = 0; s < 2; ++s) written += (*stores)->shard(s).Stats().rows_written;
  EXPECT_EQ(written, file.ids.size()) << "each imported row written once, on its owner only";

  // A table whose file has another dimension does not open.
  LocalStoresOptions wide = lo;
  wide.tables[0].dim = 4;
  wide.shard_dirs = {dir / "w0", dir / "w1"};
  auto refused = LocalStores::Open(wide);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("holds rows of dim 3, the table's dim is 4"),
            std::string::npos)
      << refused.status().message();
}

TEST(Pretrained, AFrozenTableRefusesPushesAndKeepsItsRows) {
  LocalStoresOptions lo;
  lo.tables = {TokenTable("", false)};
  lo.ps.store = PsConfig::Store::kMemory;
  auto stores = LocalStores::Open(lo);
  ASSERT_TRUE(stores.ok());
  const Key k = MakeKey(0, 3);
  std::vector<float> before(3), after(3), grad = {1, 1, 1};
  auto tables = MakeLocalTables(*stores);
  ASSERT_TRUE(tables->Pull(0, &k, 1, before.data()).ok());
  Status s = tables->Push(0, &k, 1, grad.data());
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("'token' is not trainable"), std::string::npos) << s.message();
  ASSERT_TRUE(tables->Pull(0, &k, 1, after.data()).ok());
  EXPECT_EQ(before, after);
}

TEST(Pretrained, ConfigNamesTheRowsFileAndFrozenTables) {
  auto cfg = ParseConfig(R"(tables:
  - {name: user, dim: 8}
  - {name: item, dim: 8}
  - {name: token, dim: 8, trainable: false, init: {type: uniform, from: "${M6REC_TEST_ROWS:-x.rows}"}}
)",
                         "t.yaml", {});
  ASSERT_TRUE(cfg.ok()) << cfg.status().message();
  EXPECT_TRUE(cfg->tables[0].trainable);
  EXPECT_FALSE(cfg->tables[2].trainable);
  EXPECT_EQ(cfg->tables[2].init.from, "x.rows");
  EXPECT_EQ(cfg->tables[2].init.kind, InitializerSpec::Kind::kUniform) << "the fallback";
  auto bad = ParseConfig("data: {source: synth, title_words: true}\n", "t.yaml", {});
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("data.title_words"), std::string::npos)
      << bad.status().message();
}

// MovieLens titles as word tokens: lowercased, the year and stop words dropped, one token per
// distinct word shared by the items that have it; genres and decades are named too.
TEST(Pretrained, MovieLensTitlesBecomeNamedWordTokens) {
  TempDir dir;
  std::string items;
  const char* titles[] = {"Toy Story (1995)", "Usual Suspects, The (1995)",
                          "Story of Us, The (1999)", "Se7en (1995)"};
  for (int i = 0; i < 4; ++i) {
    items += std::to_string(i + 1) + "|" + titles[i] + "|01-Jan-1995||http://x";
    for (int g = 0; g < 19; ++g) items += g == 5 ? "|1" : "|0";
    items += "\n";
  }
  WriteFile(dir / "u.item", items);
  std::string data;
  for (int u = 1; u <= 3; ++u)
    for (int i = 1; i <= 4; ++i)
      data += std::to_string(u) + "\t" + std::to_string(i) + "\t4\t" + std::to_string(i) + "\n";
  WriteFile(dir / "u.data", data);
  auto plain = LoadMovieLens(dir.path());
  ASSERT_TRUE(plain.ok()) << plain.status().message();
  auto ds = LoadMovieLens(dir.path(), "", /*title_words=*/true);
  ASSERT_TRUE(ds.ok()) << ds.status().message();
  auto words_of = [&](uint32_t item) {
    std::vector<std::string> w;
    for (uint32_t t : ds->item_tokens[item])
      if (t >= 200) w.push_back(ds->token_names[t]);
    return w;
  };
  EXPECT_EQ(words_of(1), (std::vector<std::string>{"toy", "story"}));
  EXPECT_EQ(words_of(2), (std::vector<std::string>{"usual", "suspects"}));
  EXPECT_EQ(words_of(3), (std::vector<std::string>{"story", "us"}));
  EXPECT_EQ(words_of(4), (std::vector<std::string>{"se7en"}));
  EXPECT_EQ(ds->item_tokens[1][ds->item_tokens[1].size() - 1],
            ds->item_tokens[3][ds->item_tokens[3].size() - 2])
      << "'story' is one token";
  EXPECT_EQ(ds->token_names[5], "comedy");
  EXPECT_EQ(ds->token_names[29], "1990s");
  for (uint32_t i = 1; i <= 4; ++i)
    EXPECT_EQ(std::vector<uint32_t>(ds->item_tokens[i].begin(), ds->item_tokens[i].begin() + 2),
              plain->item_tokens[i])
        << "the genre and decade tokens stay as they were";
}

}  // namespace
}  // namespace m6rec
