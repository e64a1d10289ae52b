// MemoryStore: every row in a RowCache per table; not durable.
#include <atomic>

#include "ps/optimizer.h"
#include "ps/row_cache.h"
#include "ps/stores.h"

namespace m6rec {
namespace {

class MemoryStore final : public TableStore {
 public:
  explicit MemoryStore(const std::vector<TableSpec>& tables) : specs_(tables) {
    for (const auto& t : tables) caches_.push_back(std::make_unique<RowCache>(RowWidth(t), 0));
  }

  Status Lookup(TableId table, const Key* keys, size_t n, uint32_t cols, float* out) override {
    M6_RETURN_IF_ERROR(CheckTable(table, cols));
    RowCache& cache = *caches_[table];
    const TableSpec& spec = specs_[table];
    const size_t bytes = size_t{cols} * sizeof(float);
    uint64_t misses = 0;
    for (size_t i = 0; i < n; ++i) {
      float* dst = out + i * cols;
      bool hit = cache.Read(keys[i], [&](const float* row) { std::memcpy(dst, row, bytes); });
      if (!hit) {
        ++misses;
        if (cols <= spec.dim) {
          InitRowPrefix(spec, keys[i], cols, dst);
        } else {
          InitFullRow(spec, keys[i], dst);
        }
      }
    }
    hits_ += n - misses;
    initialised_ += misses;
    return Status::OK();
  }

  Status Update(TableId table, const Key* keys, size_t n, const RowFn& fn) override {
    M6_RETURN_IF_ERROR(CheckTable(table, 0));
    RowCache& cache = *caches_[table];
    const TableSpec& spec = specs_[table];
    for (size_t i = 0; i < n; ++i) {
      cache.Upsert(
          keys[i], [&](float* row) { InitFullRow(spec, keys[i], row); },
          [&](float* row) { fn(i, row); });
    }
    written_ += n;
    return Status::OK();
  }

  Status Flush() override { return Status::OK(); }

  StoreStats Stats() const override {
    StoreStats s;
    for (const auto& c : caches_) s.rows_cached += c->size();
    s.hot_hits = hits_;
    s.initialised = initialised_;
    s.rows_written = written_;
    return s;
  }
  bool durable() const override { return false; }
  std::string name() const override { return "memory"; }

 private:
  Status CheckTable(TableId table, uint32_t cols) const {
    if (table >= specs_.size())
      return Status::InvalidArgument("unknown table id " + std::to_string(table));
    if (cols > caches_[table]->width())
      return Status::InvalidArgument("asked for " + std::to_string(cols) + " columns of a row of " +
                                     std::to_string(caches_[table]->width()));
    return Status::OK();
  }

  std::vector<TableSpec> specs_;
  std::vector<std::unique_ptr<RowCache>> caches_;
  std::atomic<uint64_t> hits_{0}, initialised_{0}, written_{0};
};

}  // namespace

std::unique_ptr<TableStore> NewMemoryStore(const std::vector<TableSpec>& tables) {
  return std::make_unique<MemoryStore>(tables);
}

}  // namespace m6rec
