#include "common/keys.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <set>
#include <string>
#include <vector>

#include "common/cluster_view.h"
#include "common/initializer.h"

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

// Golden values. HashId, Mix64 and SlotOf define the on-disk key space: a string id's row key
// and every key's slot (hence its server) are stored in the servers' RocksDB directories and
// checkpoints, and HashId also derives each table's initialiser seed from the job seed. A change
// to any of them would orphan every stored row and make resumed jobs start from other rows. The
// expected values below were computed once from the implementation (and checked against an
// independent Python re-implementation of FNV-1a 64 + splitmix64's finaliser); they must never
// be updated to match a new implementation: a new hash needs a new key-space version instead.
TEST(Keys, HashIdIsPinnedToItsGoldenValues) {
  const std::string nul("a\0b", 3);
  const struct {
    std::string in;
    uint64_t want;
  } cases[] = {
      {"", 0x2d3fb62b3c344fULL},
      {"a", 0xd2960f93be2488ULL},
      {"user:42", 0x5b45fd08997c7aULL},
      {"user:alice", 0xc96c2f02c5d268ULL},
      {"user:alicf", 0xa39c4a9bf34ddeULL},  // one bit from the one above
      {"item:the quick brown fox jumps over the lazy dog; 0123456789", 0xf505ff6de8ed08ULL},
      {std::string(1000, 'x'), 0x4da89f348300b6ULL},
      {"usuario:Jos\xc3\xa9-\xe5\x8c\x97\xe4\xba\xac", 0x18b0b97258dc6bULL},  // UTF-8 "José-北京"
      {nul, 0xfa69b6f6ffbbedULL},  // an embedded NUL is part of the id
  };
  for (const auto& c : cases) {
    EXPECT_EQ(HashId(c.in), c.want)
        << "HashId of a " << c.in.size() << "-byte id '" << c.in.substr(0, 40)
        << "' changed: every stored row keyed by a string id would be orphaned";
    EXPECT_EQ(HashId(c.in) & ~kIdMask, 0u) << "a hashed id must fit the 56 id bits";
  }
  EXPECT_NE(HashId("a"), HashId(nul)) << "the bytes after a NUL count";
}

TEST(Keys, Mix64AndSlotOfArePinnedToTheirGoldenValues) {
  EXPECT_EQ(Mix64(0), 0u);
  EXPECT_EQ(Mix64(1), 0x5692161d100b05e5ULL);
  EXPECT_EQ(Mix64(42), 0xa759ea27d4727622ULL);
  EXPECT_EQ(Mix64(0x0123456789abcdefULL), 0xb2c058e4ebb5112cULL);
  EXPECT_EQ(Mix64(~uint64_t{0}), 0xb4d055fcf2cbbd7bULL);
  // A key's slot decides which server holds its row; 4096 is the default ps.num_slots.
  const struct {
    Key key;
    uint32_t slot_4096, slot_256, slot_7;
  } cases[] = {
      {MakeKey(0, 0), 0, 0, 0},
      {MakeKey(0, 1), 1509, 229, 6},
      {MakeKey(1, 42), 503, 247, 2},
      {MakeKey(255, kIdMask), 3451, 123, 0},
      {MakeKey(3, HashId("user:42")), 3629, 45, 4},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(SlotOf(c.key, 4096), c.slot_4096) << "key " << std::hex << c.key;
    EXPECT_EQ(SlotOf(c.key, 256), c.slot_256) << "key " << std::hex << c.key;
    EXPECT_EQ(SlotOf(c.key, 7), c.slot_7) << "key " << std::hex << c.key;
  }
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
