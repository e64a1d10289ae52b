// MemoryStore: every row in a RowCache per table; not durable. A checkpoint is one file,
// rows.bin: "M6ROWS1\n", u32 layout length + TablesLayout text, then per table u64 row count
// and (u64 key, width floats) per row. Restoring checks the layout and every length.
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "common/util.h"
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

  Status Erase(TableId table, const Key* keys, size_t n) override {
    M6_RETURN_IF_ERROR(CheckTable(table, 0));
    for (size_t i = 0; i < n; ++i) caches_[table]->Erase(keys[i]);
    erased_ += n;
    return Status::OK();
  }

  Status ForEachKey(TableId table, const std::function<void(Key)>& fn) override {
    M6_RETURN_IF_ERROR(CheckTable(table, 0));
    caches_[table]->ForEach([&](Key k, const float*) { fn(k); });
    return Status::OK();
  }

  Status Flush() override { return Status::OK(); }

  Status Checkpoint(const std::string& dir) override {
    std::error_code ec;
    if (std::filesystem::exists(dir, ec))
      return Status::InvalidArgument("checkpoint directory '" + dir + "' exists");
    std::filesystem::create_directories(dir, ec);
    if (ec) return Status::IOError("cannot create '" + dir + "': " + ec.message());
    std::string out = kMagic;
    const std::string layout = TablesLayout(specs_);
    Append(&out, uint32_t(layout.size()));
    out += layout;
    for (const auto& c : caches_) {
      std::string rows;
      uint64_t count = 0;
      const size_t bytes = size_t{c->width()} * sizeof(float);
      c->ForEach([&](Key k, const float* row) {
        Append(&rows, k);
        rows.append(reinterpret_cast<const char*>(row), bytes);
        ++count;
      });
      Append(&out, count);
      out += rows;
    }
    return WriteFileAtomic(dir + "/rows.bin", out);
  }

  // Loads a checkpoint written by Checkpoint (under the same tables' layout).
  Status Restore(const std::string& dir) {
    const std::string path = dir + "/rows.bin";
    M6_ASSIGN_OR_RETURN(std::string in, ReadFileToString(path));
    size_t at = 0;
    auto take = [&](void* dst, size_t n) {
      if (in.size() - at < n) return false;
      std::memcpy(dst, in.data() + at, n);
      at += n;
      return true;
    };
    auto bad = [&](const std::string& what) { return Status::Corruption(path + ": " + what); };
    if (in.compare(0, sizeof(kMagic) - 1, kMagic) != 0) return bad("not a memory-store checkpoint");
    at = sizeof(kMagic) - 1;
    uint32_t len = 0;
    if (!take(&len, 4) || in.size() - at < len) return bad("truncated");
    const std::string layout = in.substr(at, len);
    at += len;
    if (layout != TablesLayout(specs_))
      return Status::InvalidArgument(path + " holds tables '" + layout +
                                     "' but the config declares '" + TablesLayout(specs_) +
                                     "' (name:dim:optimizer:width)");
    std::vector<float> row;
    for (auto& c : caches_) {
      uint64_t count = 0;
      if (!take(&count, 8)) return bad("truncated");
      row.resize(c->width());
      for (uint64_t r = 0; r < count; ++r) {
        Key k = 0;
        if (!take(&k, 8) || !take(row.data(), row.size() * sizeof(float))) return bad("truncated");
        c->Upsert(
            k, [](float*) {}, [&](float* dst) { std::memcpy(dst, row.data(), row.size() * 4); });
      }
    }
    if (at != in.size()) return bad("trailing bytes");
    return Status::OK();
  }

  StoreStats Stats() const override {
    StoreStats s;
    for (const auto& c : caches_) s.rows_cached += c->size();
    s.hot_hits = hits_;
    s.initialised = initialised_;
    s.erased = erased_;
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

  static constexpr char kMagic[] = "M6ROWS1\n";
  template <typename T>
  static void Append(std::string* out, T v) {
    out->append(reinterpret_cast<const char*>(&v), sizeof(v));
  }

  std::vector<TableSpec> specs_;
  std::vector<std::unique_ptr<RowCache>> caches_;
  std::atomic<uint64_t> hits_{0}, initialised_{0}, written_{0}, erased_{0};
};

}  // namespace

StatusOr<std::unique_ptr<TableStore>> NewMemoryStore(const StoreOptions& options,
                                                     const std::vector<TableSpec>& tables) {
  auto store = std::make_unique<MemoryStore>(tables);
  if (!options.restore_from.empty()) M6_RETURN_IF_ERROR(store->Restore(options.restore_from));
  return std::unique_ptr<TableStore>(std::move(store));
}

}  // namespace m6rec
