#include "ps/row_cache.h"

#include <gtest/gtest.h>

#include <map>
#include <random>
#include <thread>

#include "common/key_index.h"

namespace m6rec {

TEST(KeyIndex, MatchesStdMapUnderRandomInsertsAndErases) {
  KeyIndex idx;
  std::map<Key, uint32_t> ref;
  std::mt19937_64 rng(5);
  for (int step = 0; step < 200000; ++step) {
    Key k = rng() % 5000;
    if (rng() % 3 == 0) {
      idx.Erase(k);
      ref.erase(k);
    } else if (!ref.count(k)) {
      uint32_t v = static_cast<uint32_t>(rng() % 1000000);
      idx.Insert(k, v);
      ref[k] = v;
    }
    if (step % 997 == 0) {
      ASSERT_EQ(idx.size(), ref.size());
      for (Key q = 0; q < 5000; q += 7) {
        auto it = ref.find(q);
        ASSERT_EQ(idx.Find(q), it == ref.end() ? KeyIndex::kNone : it->second) << "key " << q;
      }
    }
  }
  idx.Clear();
  EXPECT_EQ(idx.size(), 0u);
  EXPECT_EQ(idx.Find(1), KeyIndex::kNone);
}

TEST(RowCache, BoundedCacheEvictsAndKeepsRecentlyUsed) {
  RowCache cache(4, 64 * 4);  // 4 rows per shard
  for (Key k = 0; k < 10000; ++k)
    cache.Upsert(
        k, [&](float* r) { r[0] = float(k); }, [](float*) {});
  EXPECT_LE(cache.size(), 64u * 4) << "the cache must respect its capacity";
  EXPECT_GT(cache.evictions(), 0u);
  // Whatever is cached is the right row.
  int seen = 0;
  cache.ForEach([&](Key k, const float* r) {
    EXPECT_EQ(r[0], float(k));
    ++seen;
  });
  EXPECT_EQ(static_cast<uint64_t>(seen), cache.size());
}

TEST(RowCache, ConcurrentUpsertsAreAtomicPerRow) {
  RowCache cache(8, 0);
  const int threads = 4, iters = 20000, keys = 50;
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t)
    ts.emplace_back([&] {
      for (int i = 0; i < iters; ++i)
        cache.Upsert(
            i % keys, [](float* r) { std::fill(r, r + 8, 0.0f); },
            [](float* r) {
              for (int d = 0; d < 8; ++d) r[d] += 1.0f;
            });
    });
  for (auto& t : ts) t.join();
  for (Key k = 0; k < keys; ++k) {
    bool found = cache.Read(k, [&](const float* r) {
      for (int d = 0; d < 8; ++d) EXPECT_EQ(r[d], float(threads * iters / keys)) << "key " << k;
    });
    EXPECT_TRUE(found);
  }
}

}  // namespace m6rec
