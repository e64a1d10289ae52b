#include "launch/bench_rows.h"

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>
#include <vector>

#include "common/clock.h"
#include "common/config.h"
#include "common/util.h"
#include "ps/row_lifecycle.h"
#include "ps/table_store.h"

namespace m6rec {
namespace {

using nlohmann::json;

uint64_t RssBytes() {
  std::ifstream f("/proc/self/statm");
  uint64_t pages = 0, rss = 0;
  f >> pages >> rss;
  return rss * uint64_t(sysconf(_SC_PAGESIZE));
}

uint64_t DirBytes(const std::string& dir) {
  uint64_t n = 0;
  std::error_code ec;
  for (auto it = std::filesystem::recursive_directory_iterator(dir, ec);
       !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec))
    if (it->is_regular_file(ec)) n += it->file_size(ec);
  return n;
}

// One stream; a row per tenth of it.
StatusOr<json> Stream(const RowsBenchOptions& o, uint64_t max_rows, const std::string& dir) {
  TableSpec t;
  t.name = "ids";
  t.dim = o.dim;
  t.seed = 1;
  t.optimizer.kind = OptimizerSpec::Kind::kAdagrad;
  t.max_rows = max_rows;
  StoreOptions so;
  so.kind = o.store == "memory" ? PsConfig::Store::kMemory : PsConfig::Store::kRocksDB;
  so.durability = PsConfig::Durability::kWal;
  so.path = dir;
  so.hot_rows = 1 << 16;
  M6_ASSIGN_OR_RETURN(auto store, OpenTableStore(so, {t}));
  SteadyClock clock;
  RowLifecycle lc({t}, 1, &clock);
  std::vector<Key> keys(o.batch);
  std::vector<float> grads(size_t(o.batch) * o.dim, 0.01f);
  json points = json::array();
  const uint64_t step = std::max<uint64_t>(o.batch, o.ids / 10);
  const int64_t t0 = MonotonicMs();
  for (uint64_t done = 0; done < o.ids;) {
    const uint64_t n = std::min<uint64_t>(o.batch, o.ids - done);
    // Distinct ids, scattered over the key space as hashed ids are.
    for (uint64_t i = 0; i < n; ++i) keys[i] = MakeKey(0, Mix64(done + i) & kIdMask);
    M6_RETURN_IF_ERROR(ApplyPush(*store, t, keys.data(), n, grads.data(), &lc));
    done += n;
    if (done % step == 0 || done == o.ids) {
      const double s = double(MonotonicMs() - t0) / 1000.0;
      const LifecycleStats l = lc.Stats(0);
      points.push_back(
          {{"ids", done},
           {"rows", max_rows ? l.rows : done},
           {"evicted", l.evicted},
           {"rss_mb", double(RssBytes()) / (1 << 20)},
           {"disk_mb",
            so.kind == PsConfig::Store::kRocksDB ? double(DirBytes(dir)) / (1 << 20) : 0.0},
           {"ids_per_s", s > 0 ? double(done) / s : 0.0}});
      if (!o.json) {
        const json& p = points.back();
        std::printf("%-9s %11llu %10llu %10llu %9.0f %9.0f %11.0f\n",
                    max_rows ? "capped" : "uncapped", (unsigned long long)done,
                    (unsigned long long)p["rows"].get<uint64_t>(), (unsigned long long)l.evicted,
                    p["rss_mb"].get<double>(), p["disk_mb"].get<double>(),
                    p["ids_per_s"].get<double>());
        std::fflush(stdout);
      }
    }
  }
  M6_RETURN_IF_ERROR(store->Flush());
  return json{{"max_rows", max_rows}, {"points", points}};
}

}  // namespace

int RunRowsBench(const RowsBenchOptions& o) {
  const std::string base = o.tmp_dir + "/m6rec-bench-rows-" + std::to_string(getpid());
  json out = json::array();
  if (!o.json)
    std::printf("%-9s %11s %10s %10s %9s %9s %11s\n", "table", "ids", "rows", "evicted", "rss MB",
                "disk MB", "ids/s");
  int rc = 0;
  std::vector<uint64_t> caps{o.max_rows};
  if (o.uncapped && o.max_rows != 0) caps.push_back(0);
  for (uint64_t cap : caps) {
    const std::string dir = base + (cap ? "-capped" : "-uncapped");
    auto r = Stream(o, cap, dir);
    (void)RemoveTree(dir);
    if (!r.ok()) {
      std::fprintf(stderr, "m6rec bench rows: %s\n", r.status().message().c_str());
      rc = 1;
      break;
    }
    out.push_back(*r);
  }
  if (o.json) std::printf("%s\n", out.dump().c_str());
  return rc;
}

}  // namespace m6rec
