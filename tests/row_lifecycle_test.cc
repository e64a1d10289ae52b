// The row lifecycle of open-ended tables (ps/row_lifecycle.h) on real stores: a capped table
// never holds more rows than its cap and keeps the most recently updated; rows idle past the
// TTL go (time advanced by hand); a key gets a row only after admit_after pushes; a deleted
// row reads as its initialiser again; the config names the fields.
#include "ps/row_lifecycle.h"

#include <gtest/gtest.h>

#include <numeric>

#include "common/clock.h"
#include "common/config.h"
#include "ps/optimizer.h"
#include "ps/stores.h"
#include "ps/table_store.h"
#include "test_util.h"
#include "worker/local_tables.h"

namespace m6rec {
namespace {

using testing::TempDir;

TableSpec Open(uint64_t max_rows, double ttl_s, uint32_t admit_after) {
  TableSpec t;
  t.name = "user";
  t.id = 0;
  t.dim = 4;
  t.seed = 3;
  t.optimizer.kind = OptimizerSpec::Kind::kSgd;
  t.optimizer.lr = 0.5f;
  t.max_rows = max_rows;
  t.ttl_s = ttl_s;
  t.admit_after = admit_after;
  return t;
}

std::unique_ptr<TableStore> Store(const TableSpec& t, PsConfig::Store kind, const TempDir& dir) {
  StoreOptions so;
  so.kind = kind;
  so.path = dir / "db";
  so.hot_rows = 64;  // RocksDB: most rows only on disk
  auto s = OpenTableStore(so, {t});
  EXPECT_TRUE(s.ok()) << s.status().message();
  return s.ok() ? std::move(*s) : nullptr;
}

Status PushOnes(TableStore& store, const TableSpec& t, RowLifecycle& lc, std::vector<Key> keys) {
  std::vector<float> g(keys.size() * t.dim, 1.0f);
  return ApplyPush(store, t, keys.data(), keys.size(), g.data(), &lc);
}

// Whether `k` reads as its initial row (no row, or one never changed).
bool Initial(TableStore& store, const TableSpec& t, Key k) {
  std::vector<float> got(t.dim), want(t.dim);
  EXPECT_TRUE(store.Lookup(t.id, &k, 1, t.dim, got.data()).ok());
  InitRowPrefix(t, k, t.dim, want.data());
  return got == want;
}

class Lifecycle : public ::testing::TestWithParam<PsConfig::Store> {};

TEST_P(Lifecycle, ACappedTableKeepsTheMostRecentlyUpdatedRowsAndNoMore) {
  TempDir dir;
  const TableSpec t = Open(/*max_rows=*/300, 0, 1);
  auto store = Store(t, GetParam(), dir);
  FakeClock clock;
  RowLifecycle lc({t}, /*servers=*/3, &clock);  // this server's share: 100
  ASSERT_EQ(lc.cap(0), 100u);
  Key next = 0;
  for (int b = 0; b < 200; ++b) {  // 10,000 distinct keys, 50 a push
    std::vector<Key> keys(50);
    std::iota(keys.begin(), keys.end(), next);
    next += 50;
    ASSERT_TRUE(PushOnes(*store, t, lc, keys).ok());
    clock.Advance(1);
    ASSERT_LE(lc.Stats(0).rows, 100u) << "push " << b;
  }
  const LifecycleStats s = lc.Stats(0);
  EXPECT_EQ(s.rows, 100u);
  EXPECT_EQ(s.created, 10000u);
  EXPECT_EQ(s.evicted, 9900u);
  EXPECT_EQ(store->Stats().erased, 9900u);
  // The newest 100 keep their update; everything older reads as its initialiser.
  for (Key k : {Key{9999}, Key{9900}}) EXPECT_FALSE(Initial(*store, t, k)) << k;
  for (Key k : {Key{9899}, Key{5000}, Key{0}}) EXPECT_TRUE(Initial(*store, t, k)) << k;
  // An old key that is updated again is the newest: the least recent of the rest goes.
  ASSERT_TRUE(PushOnes(*store, t, lc, {Key{9900}, Key{7}}).ok());
  EXPECT_FALSE(Initial(*store, t, 7));
  EXPECT_FALSE(Initial(*store, t, 9900)) << "updated again, so kept";
  EXPECT_TRUE(Initial(*store, t, 9901)) << "now the least recently updated";
  if (GetParam() == PsConfig::Store::kMemory) {
    EXPECT_EQ(store->Stats().rows_cached, 100u);
  }
}

TEST_P(Lifecycle, RowsIdlePastTheirTtlAreDeleted) {
  TempDir dir;
  const TableSpec t = Open(0, /*ttl_s=*/10, 1);
  auto store = Store(t, GetParam(), dir);
  FakeClock clock;
  RowLifecycle lc({t}, 1, &clock);
  ASSERT_TRUE(PushOnes(*store, t, lc, {1, 2}).ok());
  clock.Advance(6000);
  ASSERT_TRUE(PushOnes(*store, t, lc, {2, 3}).ok());
  clock.Advance(5000);  // key 1 idle 11 s, keys 2 and 3 5 s
  ASSERT_TRUE(lc.Expire(*store).ok());
  EXPECT_TRUE(Initial(*store, t, 1));
  EXPECT_FALSE(Initial(*store, t, 2));
  EXPECT_FALSE(Initial(*store, t, 3));
  EXPECT_EQ(lc.Stats(0).expired, 1u);
  clock.Advance(5001);
  ASSERT_TRUE(lc.Expire(*store).ok());
  EXPECT_EQ(lc.Stats(0).rows, 0u);
  EXPECT_TRUE(Initial(*store, t, 2));
}

TEST_P(Lifecycle, AKeyGetsARowOnlyAfterAdmitAfterPushes) {
  TempDir dir;
  const TableSpec t = Open(0, 0, /*admit_after=*/3);
  auto store = Store(t, GetParam(), dir);
  FakeClock clock;
  RowLifecycle lc({t}, 1, &clock);
  ASSERT_TRUE(PushOnes(*store, t, lc, {42}).ok());
  ASSERT_TRUE(PushOnes(*store, t, lc, {42, 43}).ok());
  EXPECT_TRUE(Initial(*store, t, 42)) << "seen twice: not admitted, gradients dropped";
  EXPECT_EQ(store->Stats().rows_written, 0u);
  ASSERT_TRUE(PushOnes(*store, t, lc, {42}).ok());
  EXPECT_FALSE(Initial(*store, t, 42)) << "the third push creates and updates the row";
  EXPECT_TRUE(Initial(*store, t, 43));
  const LifecycleStats s = lc.Stats(0);
  EXPECT_EQ(s.not_admitted, 3u);
  EXPECT_EQ(s.created, 1u);
  ASSERT_TRUE(PushOnes(*store, t, lc, {42}).ok());
  EXPECT_EQ(lc.Stats(0).not_admitted, 3u) << "an admitted key stays admitted";
}

// A restored server's rows (written before this lifecycle existed) are indexed at start and
// held to the cap; later pushes evict the oldest of them as usual.
TEST_P(Lifecycle, RowsAStoreAlreadyHoldsAreSeededAndCapped) {
  TempDir dir;
  const TableSpec t = Open(/*max_rows=*/20, 0, 1);
  auto store = Store(t, GetParam(), dir);
  std::vector<Key> keys(50);
  std::iota(keys.begin(), keys.end(), Key{100});
  std::vector<float> g(keys.size() * t.dim, 1.0f);
  ASSERT_TRUE(ApplyPush(*store, t, keys.data(), keys.size(), g.data()).ok());  // no lifecycle
  FakeClock clock;
  RowLifecycle lc({t}, 1, &clock);
  EXPECT_EQ(lc.Stats(0).rows, 0u);
  ASSERT_TRUE(lc.Seed(*store).ok());
  EXPECT_EQ(lc.Stats(0).rows, 20u);
  EXPECT_EQ(lc.Stats(0).evicted, 30u);
  uint64_t held = 0;
  ASSERT_TRUE(store->ForEachKey(0, [&](Key) { ++held; }).ok());
  EXPECT_EQ(held, 20u) << "the store holds what the index holds";
}

INSTANTIATE_TEST_SUITE_P(Stores, Lifecycle,
                         ::testing::Values(PsConfig::Store::kMemory, PsConfig::Store::kRocksDB),
                         [](const auto& info) {
                           return info.param == PsConfig::Store::kMemory ? "Memory" : "RocksDB";
                         });

// In-process jobs (LocalTables) keep the same rules as servers: each shard its share of a cap.
TEST(LifecycleConfig, LocalTablesApplyItPerShard) {
  LocalStoresOptions lo;
  lo.tables = {Open(/*max_rows=*/40, 0, 1)};
  lo.ps.store = PsConfig::Store::kMemory;
  lo.ps.num_slots = 64;
  lo.shard_dirs = {"", ""};
  auto stores = LocalStores::Open(lo);
  ASSERT_TRUE(stores.ok()) << stores.status().message();
  auto tables = MakeLocalTables(*stores);
  for (Key b = 0; b < 10; ++b) {
    std::vector<Key> keys(20);
    std::iota(keys.begin(), keys.end(), b * 20);
    std::vector<float> g(keys.size() * 4, 1.0f);
    ASSERT_TRUE(tables->Push(0, keys.data(), keys.size(), g.data()).ok());
  }
  uint64_t rows = 0;
  for (size_t s = 0; s < 2; ++s) {
    RowLifecycle* lc = (*stores)->LifecycleOf((*stores)->shard(s));
    ASSERT_NE(lc, nullptr);
    EXPECT_EQ(lc->cap(0), 20u);
    EXPECT_LE((*stores)->shard(s).Stats().rows_cached, 20u);
    rows += lc->Stats(0).rows;
  }
  EXPECT_EQ(rows, 40u);
}

TEST(LifecycleConfig, TablesNameTheirLifecycle) {
  auto cfg = ParseConfig(R"(tables:
  - {name: user, dim: 8, admit_after: 2, ttl_s: 3600, max_rows: 1000000}
  - {name: item, dim: 8}
)",
                         "t.yaml", {});
  ASSERT_TRUE(cfg.ok()) << cfg.status().message();
  EXPECT_EQ(cfg->tables[0].admit_after, 2u);
  EXPECT_EQ(cfg->tables[0].ttl_s, 3600);
  EXPECT_EQ(cfg->tables[0].max_rows, 1000000u);
  EXPECT_TRUE(cfg->tables[0].lifecycle());
  EXPECT_FALSE(cfg->tables[1].lifecycle());
  auto bad = ParseConfig("tables:\n  - {name: user, dim: 8, admit_after: 0}\n", "t.yaml", {});
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("admit_after"), std::string::npos);
}

}  // namespace
}  // namespace m6rec
