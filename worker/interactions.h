// The interactions file of the tsv and synthetic datasets:
//   interactions.tsv   user  item  [domain]  [timestamp]  [rating]   ids are dense 0-based integers
// tab- or space-separated, '#' comments allowed, one interaction per line. The reader rejects a
// bad line with "file:line: what is wrong" and never returns partial data.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace m6rec {

struct Interactions {
  uint32_t num_users = 0;
  uint32_t num_items = 0;
  // Per user, items in time order (the file's order breaks timestamp ties).
  std::vector<std::vector<uint32_t>> by_user;
  // Per user, the ratings of by_user's items (empty: the file has no rating column).
  std::vector<std::vector<float>> ratings_by_user;
  // The domain column: each user's and item's domain (-1: none seen). `partitioned`: every user
  // and every item kept to one domain, so the domains are separate datasets (false without the
  // column or when some user or item crosses domains).
  std::vector<int64_t> user_domain, item_domain;
  bool partitioned = false;
  uint64_t count = 0;
};

StatusOr<Interactions> ReadInteractions(const std::string& path);

}  // namespace m6rec
