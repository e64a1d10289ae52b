#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <set>
#include <vector>

#include "common/cluster_view.h"
#include "common/initializer.h"
#include "common/keys.h"

namespace m6rec {

TEST(Keys, TableAndIdRoundTrip) {
  Key k = MakeKey(7, 123456789);
  EXPECT_EQ(KeyTable(k), 7u);
  EXPECT_EQ(KeyId(k), 123456789u);
  // Ids wider than 56 bits are masked, never spill into the table bits.
  Key big = MakeKey(3, ~uint64_t{0});
  EXPECT_EQ(KeyTable(big), 3u) << "an oversized id must not change the table";
}

TEST(Keys, SlotsSpreadConsecutiveIdsEvenly) {
  const uint32_t slots = 4096;
  std::vector<int> count(slots, 0);
  const int n = 4096 * 50;
  for (int i = 0; i < n; ++i) count[SlotOf(MakeKey(1, i), slots)]++;
  int lo = *std::min_element(count.begin(), count.end());
  int hi = *std::max_element(count.begin(), count.end());
  EXPECT_GT(lo, 15) << "some slot got almost no keys: the mix is poor";
  EXPECT_LT(hi, 90) << "some slot got far more than its share (50 expected)";
}

TEST(Keys, SlotMapPlacesEveryKeyOnItsServer) {
  ClusterView v;
  v.slot_map = RoundRobinSlotMap(64, 3);
  for (int s = 0; s < 3; ++s) v.servers.push_back({static_cast<uint32_t>(s), "h", 1, 0});
  for (uint64_t id = 0; id < 1000; ++id) {
    Key k = MakeKey(0, id);
    uint32_t srv = v.ServerOf(k);
    ASSERT_LT(srv, 3u);
    EXPECT_TRUE(v.OwnedSlots(srv)[SlotOf(k, 64)]) << "server " << srv << " must own key " << id;
  }
}

TEST(Keys, HashIdIsStableAndDistinguishes) {
  EXPECT_EQ(HashId("user:alice"), HashId("user:alice"));
  EXPECT_NE(HashId("user:alice"), HashId("user:alicf"));
  EXPECT_EQ(HashId("x") & ~kIdMask, 0u);
}

TEST(Initializer, DeterministicPerKeyAndIndependentOfOrder) {
  TableSpec t;
  t.dim = 17;
  t.seed = 99;
  t.init.kind = InitializerSpec::Kind::kNormal;
  t.init.stddev = 0.5f;
  std::vector<float> a(17), b(17), c(17);
  InitRow(t, MakeKey(0, 5), a.data());
  InitRow(t, MakeKey(0, 6), c.data());  // another row in between changes nothing
  InitRow(t, MakeKey(0, 5), b.data());
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  t.seed = 100;
  InitRow(t, MakeKey(0, 5), b.data());
  EXPECT_NE(a, b) << "the table seed must change the row";
}

TEST(Initializer, DistributionsHaveTheirMoments) {
  TableSpec t;
  t.dim = 64;
  t.seed = 1;
  t.init.kind = InitializerSpec::Kind::kNormal;
  t.init.mean = 0.5f;
  t.init.stddev = 2.0f;
  double sum = 0, sq = 0;
  const int rows = 2000;
  std::vector<float> r(64);
  for (int k = 0; k < rows; ++k) {
    InitRow(t, MakeKey(0, k), r.data());
    for (float x : r) {
      sum += x;
      sq += x * x;
    }
  }
  const double n = rows * 64.0, mean = sum / n, var = sq / n - mean * mean;
  EXPECT_NEAR(mean, 0.5, 0.05);
  EXPECT_NEAR(std::sqrt(var), 2.0, 0.05);

  t.init.kind = InitializerSpec::Kind::kUniform;
  t.init.low = -1;
  t.init.high = 3;
  float lo = 1e9, hi = -1e9;
  for (int k = 0; k < 200; ++k) {
    InitRow(t, MakeKey(0, k), r.data());
    for (float x : r) {
      lo = std::min(lo, x);
      hi = std::max(hi, x);
    }
  }
  EXPECT_GE(lo, -1.0f);
  EXPECT_LT(hi, 3.0f);
  EXPECT_LT(lo, -0.9f);
  EXPECT_GT(hi, 2.9f);

  t.init.kind = InitializerSpec::Kind::kConstant;
  t.init.value = 0.25f;
  InitRow(t, MakeKey(0, 1), r.data());
  for (float x : r) EXPECT_EQ(x, 0.25f);
}

}  // namespace m6rec
