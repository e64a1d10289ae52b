// One contract suite, run against every TableStore implementation in a temporary directory.
#include "ps/table_store.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <thread>

#include "ps/optimizer.h"
#include "test_util.h"

namespace m6rec {

namespace {

std::vector<TableSpec> Tables() {
  TableSpec a;
  a.name = "user";
  a.id = 0;
  a.dim = 4;
  a.seed = 11;
  a.optimizer.kind = OptimizerSpec::Kind::kAdagrad;
  a.optimizer.lr = 0.1f;
  TableSpec b = a;
  b.name = "item";
  b.id = 1;
  b.dim = 3;
  b.seed = 12;
  b.optimizer.kind = OptimizerSpec::Kind::kSgd;
  return {a, b};
}

struct StoreParam {
  const char* name;
  PsConfig::Store kind;
  uint64_t hot_rows;
};

class TableStoreContract : public ::testing::TestWithParam<StoreParam> {
 protected:
  StatusOr<std::unique_ptr<TableStore>> Open(const std::vector<TableSpec>& tables = Tables()) {
    StoreOptions o;
    o.kind = GetParam().kind;
    o.hot_rows = GetParam().hot_rows;
    o.path = dir_ / "db";
    return OpenTableStore(o, tables);
  }
  testing::TempDir dir_;
};

}  // namespace

TEST_P(TableStoreContract, UnwrittenRowsReadAsTheirInitialValue) {
  auto s = Open();
  ASSERT_TRUE(s.ok()) << s.status().message();
  auto tables = Tables();
  Key keys[3] = {MakeKey(0, 1), MakeKey(0, 2), MakeKey(0, 1)};
  std::vector<float> out(3 * 4), want(RowWidth(tables[0]));
  ASSERT_TRUE((*s)->Lookup(0, keys, 3, 4, out.data()).ok());
  for (int i = 0; i < 3; ++i) {
    InitFullRow(tables[0], keys[i], want.data());
    for (int d = 0; d < 4; ++d) EXPECT_EQ(out[i * 4 + d], want[d]);
  }
  EXPECT_EQ((*s)->Stats().rows_written, 0u);
}

TEST_P(TableStoreContract, UpdateIsReadModifyWriteAndVisible) {
  auto s = Open();
  ASSERT_TRUE(s.ok()) << s.status().message();
  auto tables = Tables();
  Key keys[2] = {MakeKey(1, 7), MakeKey(1, 7)};  // duplicates apply in order
  ASSERT_TRUE((*s)->Update(1, keys, 2, [](size_t i, float* row) { row[0] += 1.0f + i; }).ok());
  std::vector<float> init(3), out(3);
  InitFullRow(tables[1], keys[0], init.data());
  ASSERT_TRUE((*s)->Lookup(1, keys, 1, 3, out.data()).ok());
  EXPECT_FLOAT_EQ(out[0], init[0] + 3.0f);
  EXPECT_FLOAT_EQ(out[1], init[1]);
  // Whole rows (weights + state) can be read too.
  std::vector<float> full(RowWidth(tables[0]));
  Key u = MakeKey(0, 3);
  ASSERT_TRUE((*s)->Update(0, &u, 1, [](size_t, float* row) { row[4] = 9.0f; }).ok());
  ASSERT_TRUE((*s)->Lookup(0, &u, 1, RowWidth(tables[0]), full.data()).ok());
  EXPECT_EQ(full[4], 9.0f);
}

TEST_P(TableStoreContract, RejectsUnknownTablesAndWideReads) {
  auto s = Open();
  ASSERT_TRUE(s.ok());
  Key k = MakeKey(5, 1);
  float out[64];
  EXPECT_EQ((*s)->Lookup(5, &k, 1, 4, out).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ((*s)->Update(9, &k, 1, [](size_t, float*) {}).code(), StatusCode::kInvalidArgument);
  Key u = MakeKey(0, 1);
  EXPECT_EQ((*s)->Lookup(0, &u, 1, 64, out).code(), StatusCode::kInvalidArgument);
}

TEST_P(TableStoreContract, ConcurrentUpdatesLoseNothing) {
  auto s = Open();
  ASSERT_TRUE(s.ok());
  const int threads = 4, rounds = 200;
  std::vector<Key> keys;
  for (int i = 0; i < 100; ++i) keys.push_back(MakeKey(1, i));
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t)
    ts.emplace_back([&] {
      for (int r = 0; r < rounds; ++r)
        ASSERT_TRUE(
            (*s)->Update(1, keys.data(), keys.size(), [](size_t, float* row) { row[2] += 1.0f; })
                .ok());
    });
  for (auto& t : ts) t.join();
  std::vector<float> out(keys.size() * 3), init(3);
  ASSERT_TRUE((*s)->Lookup(1, keys.data(), keys.size(), 3, out.data()).ok());
  for (size_t i = 0; i < keys.size(); ++i) {
    InitFullRow(Tables()[1], keys[i], init.data());
    EXPECT_FLOAT_EQ(out[i * 3 + 2], init[2] + threads * rounds) << "key " << i;
  }
}

TEST_P(TableStoreContract, PersistenceAcrossReopen) {
  if (GetParam().kind == PsConfig::Store::kMemory) {
    auto s = Open();
    ASSERT_TRUE(s.ok());
    EXPECT_FALSE((*s)->durable()) << "the memory store must not claim durability";
    return;
  }
  std::vector<float> before(3);
  Key k = MakeKey(1, 42);
  {
    auto s = Open();
    ASSERT_TRUE(s.ok());
    EXPECT_TRUE((*s)->durable());
    ASSERT_TRUE((*s)->Update(1, &k, 1, [](size_t, float* row) { row[1] = 123.5f; }).ok());
    ASSERT_TRUE((*s)->Lookup(1, &k, 1, 3, before.data()).ok());
  }
  auto s = Open();
  ASSERT_TRUE(s.ok()) << s.status().message();
  std::vector<float> after(3);
  ASSERT_TRUE((*s)->Lookup(1, &k, 1, 3, after.data()).ok());
  EXPECT_EQ(after, before);
  EXPECT_EQ(after[1], 123.5f);
}

TEST_P(TableStoreContract, EvictedRowsComeBackFromDisk) {
  // Many more rows than the hot tier holds: every row must still read its latest value.
  auto s = Open();
  ASSERT_TRUE(s.ok());
  std::vector<Key> keys;
  for (int i = 0; i < 3000; ++i) keys.push_back(MakeKey(1, i));
  for (int r = 0; r < 3; ++r)
    ASSERT_TRUE((*s)->Update(1, keys.data(), keys.size(),
                             [](size_t i, float* row) { row[0] = float(i) + 0.5f; })
                    .ok());
  std::vector<float> out(keys.size() * 3);
  ASSERT_TRUE((*s)->Lookup(1, keys.data(), keys.size(), 3, out.data()).ok());
  for (size_t i = 0; i < keys.size(); ++i) ASSERT_EQ(out[i * 3], float(i) + 0.5f) << "row " << i;
}

INSTANTIATE_TEST_SUITE_P(
    Stores, TableStoreContract,
    ::testing::Values(StoreParam{"memory", PsConfig::Store::kMemory, 0},
                      StoreParam{"rocksdb_hot", PsConfig::Store::kRocksDB, 1 << 20},
                      StoreParam{"rocksdb_tiny_hot_tier", PsConfig::Store::kRocksDB, 256},
                      StoreParam{"rocksdb_no_hot_tier", PsConfig::Store::kRocksDB, 0}),
    [](const ::testing::TestParamInfo<StoreParam>& i) { return std::string(i.param.name); });

TEST(RocksDBStore, RefusesToReopenUnderAChangedLayout) {
  testing::TempDir dir;
  StoreOptions o;
  o.kind = PsConfig::Store::kRocksDB;
  o.path = dir / "db";
  { ASSERT_TRUE(OpenTableStore(o, Tables()).ok()); }
  auto tables = Tables();
  tables[0].dim = 8;
  auto s = OpenTableStore(o, tables);
  ASSERT_FALSE(s.ok()) << "a changed dim must not open the old rows";
  EXPECT_NE(s.status().message().find("user:4"), std::string::npos) << s.status().message();
  // Adding a table at the end keeps the old ones readable.
  auto more = Tables();
  TableSpec extra = more[1];
  extra.name = "token";
  extra.id = 2;
  more.push_back(extra);
  EXPECT_TRUE(OpenTableStore(o, more).ok());
}

TEST(RocksDBStore, RewritingTheSameRowsKeepsTheDirectoryBounded) {
  // In-place memtable updates never fill the memtable; the WAL bound must still flush it and
  // recycle the logs, or the directory grows with every push.
  testing::TempDir dir;
  StoreOptions o;
  o.kind = PsConfig::Store::kRocksDB;
  o.path = dir / "db";
  o.max_wal_bytes = 4 << 20;
  auto s = OpenTableStore(o, Tables());
  ASSERT_TRUE(s.ok());
  std::vector<Key> keys;
  for (int i = 0; i < 2000; ++i) keys.push_back(MakeKey(0, i));
  // 2000 rows x 32 bytes = 64 KB per batch; 2000 batches = 128 MB written in total. Background
  // flushes may lag under load, so settle them (Flush waits) before measuring.
  for (int r = 0; r < 2000; ++r)
    ASSERT_TRUE(
        (*s)->Update(0, keys.data(), keys.size(), [](size_t, float* row) { row[0] += 1; }).ok());
  ASSERT_TRUE((*s)->Flush().ok());
  uint64_t bytes = 0;
  for (const auto& f : std::filesystem::recursive_directory_iterator(dir / "db"))
    if (f.is_regular_file()) bytes += f.file_size();
  EXPECT_LT(bytes, 40u << 20) << "128 MB of rewrites of the same 2000 rows left " << (bytes >> 20)
                              << " MB on disk";
  std::vector<float> out(4);
  ASSERT_TRUE((*s)->Lookup(0, keys.data(), 1, 4, out.data()).ok());
  std::vector<float> init(RowWidth(Tables()[0]));
  InitFullRow(Tables()[0], keys[0], init.data());
  EXPECT_FLOAT_EQ(out[0], init[0] + 2000);
}

TEST(RocksDBStore, ReportsAnUnopenableDirectory) {
  testing::TempDir dir;
  testing::WriteFile(dir / "file", "x");
  StoreOptions o;
  o.kind = PsConfig::Store::kRocksDB;
  o.path = dir / "file/db";
  auto s = OpenTableStore(o, Tables());
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find(dir / "file/db"), std::string::npos) << s.status().message();
}

}  // namespace m6rec
