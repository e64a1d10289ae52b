// RocksDBStore: one RocksDB per server holding every row (weights + optimizer state) of every
// table it owns, with an optional in-memory hot tier (RowCache per table) in front.
//
// Keys are the 8-byte big-endian sparse key, so a table's rows are contiguous on disk. Values
// are the raw row floats. Reads: hot tier first, then one MultiGet for all misses. Updates are
// write-through: misses are loaded with MultiGet, every row is updated under its shard lock in
// the hot tier, and the batch goes to RocksDB as one WriteBatch (WAL on; fsync in kFsync mode)
// before Update returns, so an acknowledged push survives SIGKILL of the server. Updates are
// serialised by write_mu_ so the order rows reach RocksDB is the order they were applied.
// The hot tier only holds rows that are identical to RocksDB's (or newer, in flight under
// write_mu_), so evicting costs nothing; a failed write invalidates the batch's cached rows.
#include <rocksdb/db.h>
#include <rocksdb/filter_policy.h>
#include <rocksdb/memtablerep.h>
#include <rocksdb/slice_transform.h>
#include <rocksdb/table.h>
#include <rocksdb/utilities/checkpoint.h>
#include <rocksdb/write_batch.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <filesystem>
#include <unordered_map>

#include "common/logging.h"
#include "common/mutex.h"
#include "common/util.h"
#include "ps/optimizer.h"
#include "ps/row_cache.h"
#include "ps/stores.h"

namespace m6rec {
namespace {

const char kLayoutKey[] =
    "\xff"
    "m6rec.layout";

inline void EncodeKey(Key k, char* out) {
  for (int i = 7; i >= 0; --i) {
    out[i] = static_cast<char>(k & 0xff);
    k >>= 8;
  }
}

class RocksDBStore final : public TableStore {
 public:
  RocksDBStore(const StoreOptions& opts, const std::vector<TableSpec>& tables,
               std::unique_ptr<rocksdb::DB> db)
      : opts_(opts), specs_(tables), db_(std::move(db)) {
    for (const auto& t : tables) {
      widths_.push_back(RowWidth(t));
      caches_.push_back(opts.hot_rows ? std::make_unique<RowCache>(RowWidth(t), opts.hot_rows)
                                      : nullptr);
    }
    wopts_.sync = opts.durability == PsConfig::Durability::kFsync;
    wopts_.disableWAL = opts.durability == PsConfig::Durability::kNone;
  }

  ~RocksDBStore() override {
    Status s = Flush();
    if (!s.ok()) LOG_WARN << "closing RocksDB at " << opts_.path << ": " << s.ToString();
  }

  Status Lookup(TableId table, const Key* keys, size_t n, uint32_t cols, float* out) override {
    M6_RETURN_IF_ERROR(CheckTable(table, cols));
    RowCache* cache = caches_[table].get();
    const size_t bytes = size_t{cols} * sizeof(float);
    std::vector<size_t> miss;
    if (cache) {
      for (size_t i = 0; i < n; ++i) {
        float* dst = out + i * cols;
        if (!cache->Read(keys[i], [&](const float* row) { std::memcpy(dst, row, bytes); }))
          miss.push_back(i);
      }
      hits_ += n - miss.size();
    } else {
      miss.resize(n);
      for (size_t i = 0; i < n; ++i) miss[i] = i;
    }
    if (miss.empty()) return Status::OK();
    return ReadCold(table, keys, miss, [&](size_t i, const float* row, bool found) {
      float* dst = out + i * cols;
      if (found) {
        std::memcpy(dst, row, bytes);
      } else if (cols <= specs_[table].dim) {
        InitRowPrefix(specs_[table], keys[i], cols, dst);
      } else {
        InitFullRow(specs_[table], keys[i], dst);
      }
    });
  }

  Status Update(TableId table, const Key* keys, size_t n, const RowFn& fn) override
      EXCLUDES(write_mu_) {
    M6_RETURN_IF_ERROR(CheckTable(table, 0));
    if (opts_.read_only)
      return Status::PermissionDenied("RocksDB at " + opts_.path + " is open read-only");
    const TableSpec& spec = specs_[table];
    const uint32_t width = widths_[table];
    const size_t row_bytes = size_t{width} * sizeof(float);
    RowCache* cache = caches_[table].get();

    MutexLock wlock(&write_mu_);
    // 1. Find which rows are not in memory and load them in one MultiGet.
    std::vector<size_t> miss;
    if (cache) {
      for (size_t i = 0; i < n; ++i)
        if (!cache->Read(keys[i], [](const float*) {})) miss.push_back(i);
      hits_ += n - miss.size();
    } else {
      miss.resize(n);
      for (size_t i = 0; i < n; ++i) miss[i] = i;
    }
    std::unordered_map<Key, std::vector<float>> loaded;  // rows read from disk or initialised
    loaded.reserve(miss.size());
    M6_RETURN_IF_ERROR(ReadCold(table, keys, miss, [&](size_t i, const float* row, bool found) {
      auto& v = loaded[keys[i]];
      if (!v.empty()) return;  // duplicate key in the batch: keep the first load
      v.resize(width);
      if (found)
        std::memcpy(v.data(), row, row_bytes);
      else
        InitFullRow(spec, keys[i], v.data());
    }));

    // 2. Apply the updates row by row and stage the new values, in key order: RocksDB's
    //    memtable skiplist inserts a sorted batch several times faster (it reuses the splice).
    std::vector<uint32_t> order(n);
    for (size_t i = 0; i < n; ++i) order[i] = static_cast<uint32_t>(i);
    std::stable_sort(order.begin(), order.end(),
                     [keys](uint32_t a, uint32_t b) { return keys[a] < keys[b]; });
    rocksdb::WriteBatch batch(static_cast<size_t>(n) * (row_bytes + 24) + 64);
    Status read_error;
    char kbuf[8];
    for (uint32_t i : order) {
      auto put = [&](float* row) {
        fn(i, row);
        EncodeKey(keys[i], kbuf);
        batch.Put(rocksdb::Slice(kbuf, 8),
                  rocksdb::Slice(reinterpret_cast<const char*>(row), row_bytes));
      };
      if (cache) {
        cache->Upsert(
            keys[i],
            [&](float* row) {
              auto it = loaded.find(keys[i]);
              if (it != loaded.end()) {
                std::memcpy(row, it->second.data(), row_bytes);
              } else {
                // A hit of step 1 that this batch's own inserts evicted since: it is on disk.
                std::vector<size_t> one{i};
                Status st = ReadCold(table, keys, one, [&](size_t, const float* r, bool found) {
                  if (found)
                    std::memcpy(row, r, row_bytes);
                  else
                    InitFullRow(spec, keys[i], row);
                });
                if (!st.ok()) read_error = st;
              }
            },
            put);
      } else {
        put(loaded[keys[i]].data());
      }
    }
    // 3. Make it durable, all or nothing.
    rocksdb::Status s = read_error.ok() ? db_->Write(wopts_, &batch) : rocksdb::Status::Aborted();
    if (!s.ok()) {
      if (cache)
        for (size_t i = 0; i < n; ++i) cache->Erase(keys[i]);
      if (!read_error.ok()) return read_error;
      return Status::IOError("RocksDB write at " + opts_.path + ": " + s.ToString());
    }
    written_ += n;
    ++batches_;
    wal_bytes_ += batch.GetDataSize();
    if (wal_bytes_ >= opts_.max_wal_bytes) {
      // Switch to a new memtable and flush the old one in the background; once it is on disk,
      // RocksDB deletes the logs it covered.
      wal_bytes_ = 0;
      rocksdb::FlushOptions fo;
      fo.wait = false;
      fo.allow_write_stall = true;
      rocksdb::Status fs = db_->Flush(fo);
      if (!fs.ok())
        LOG_WARN << "RocksDB background flush at " << opts_.path << ": " << fs.ToString();
    }
    return Status::OK();
  }

  Status Checkpoint(const std::string& dir) override EXCLUDES(write_mu_) {
    MutexLock wlock(&write_mu_);  // no update half in, half out
    rocksdb::Checkpoint* raw = nullptr;
    rocksdb::Status s = rocksdb::Checkpoint::Create(db_.get(), &raw);
    std::unique_ptr<rocksdb::Checkpoint> cp(raw);
    // log_size_for_flush 0: the memtable is flushed first, so the checkpoint's SST files hold
    // every row and it opens read-only without replaying logs.
    if (s.ok()) s = cp->CreateCheckpoint(dir, /*log_size_for_flush=*/0);
    if (!s.ok())
      return Status::IOError("RocksDB checkpoint of " + opts_.path + " to '" + dir +
                             "': " + s.ToString());
    return Status::OK();
  }

  Status Erase(TableId table, const Key* keys, size_t n) override EXCLUDES(write_mu_) {
    M6_RETURN_IF_ERROR(CheckTable(table, 0));
    if (opts_.read_only)
      return Status::PermissionDenied("RocksDB at " + opts_.path + " is open read-only");
    MutexLock wlock(&write_mu_);
    rocksdb::WriteBatch batch;
    char kbuf[8];
    for (size_t i = 0; i < n; ++i) {
      if (caches_[table]) caches_[table]->Erase(keys[i]);
      EncodeKey(keys[i], kbuf);
      batch.Delete(rocksdb::Slice(kbuf, 8));
    }
    rocksdb::Status s = db_->Write(wopts_, &batch);
    if (!s.ok()) return Status::IOError("RocksDB delete at " + opts_.path + ": " + s.ToString());
    erased_ += n;
    return Status::OK();
  }

  Status ForEachKey(TableId table, const std::function<void(Key)>& fn) override {
    M6_RETURN_IF_ERROR(CheckTable(table, 0));
    // Every row is on disk (the hot tier writes through). Keys are 8 big-endian bytes, so a
    // table's rows are one contiguous range; the layout record is longer and skipped.
    rocksdb::ReadOptions ro;
    ro.total_order_seek = true;  // across the 8-byte prefix buckets
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro));
    char start[8];
    EncodeKey(MakeKey(table, 0), start);
    for (it->Seek(rocksdb::Slice(start, 8)); it->Valid(); it->Next()) {
      const rocksdb::Slice k = it->key();
      if (k.size() != 8) continue;
      Key key = 0;
      for (int i = 0; i < 8; ++i) key = (key << 8) | static_cast<unsigned char>(k[i]);
      if (KeyTable(key) != table) break;
      fn(key);
    }
    if (!it->status().ok())
      return Status::IOError("RocksDB scan at " + opts_.path + ": " + it->status().ToString());
    return Status::OK();
  }

  Status Flush() override EXCLUDES(write_mu_) {
    if (opts_.read_only) return Status::OK();
    MutexLock wlock(&write_mu_);
    rocksdb::Status s = db_->FlushWAL(/*sync=*/true);
    if (s.ok()) s = db_->Flush(rocksdb::FlushOptions());
    if (!s.ok()) return Status::IOError("RocksDB flush at " + opts_.path + ": " + s.ToString());
    return Status::OK();
  }

  StoreStats Stats() const override {
    StoreStats st;
    for (const auto& c : caches_)
      if (c) {
        st.rows_cached += c->size();
        st.evictions += c->evictions();
      }
    st.hot_hits = hits_;
    st.cold_reads = cold_;
    st.initialised = initialised_;
    st.erased = erased_;
    st.rows_written = written_;
    st.write_batches = batches_;
    return st;
  }
  bool durable() const override { return opts_.durability != PsConfig::Durability::kNone; }
  std::string name() const override { return "rocksdb"; }

 private:
  Status CheckTable(TableId table, uint32_t cols) const {
    if (table >= specs_.size())
      return Status::InvalidArgument("unknown table id " + std::to_string(table));
    if (cols > widths_[table])
      return Status::InvalidArgument("asked for " + std::to_string(cols) + " columns of a row of " +
                                     std::to_string(widths_[table]));
    return Status::OK();
  }

  // MultiGet for keys[idx[...]]; calls fn(i, row or nullptr, found) for each.
  template <typename F>
  Status ReadCold(TableId table, const Key* keys, const std::vector<size_t>& idx, F&& fn) {
    const size_t m = idx.size();
    if (m == 0) return Status::OK();
    const size_t row_bytes = size_t{widths_[table]} * sizeof(float);
    std::vector<char> kbytes(m * 8);
    std::vector<rocksdb::Slice> ks(m);
    for (size_t j = 0; j < m; ++j) {
      EncodeKey(keys[idx[j]], &kbytes[j * 8]);
      ks[j] = rocksdb::Slice(&kbytes[j * 8], 8);
    }
    std::vector<rocksdb::PinnableSlice> vals(m);
    std::vector<rocksdb::Status> sts(m);
    db_->MultiGet(rocksdb::ReadOptions(), db_->DefaultColumnFamily(), m, ks.data(), vals.data(),
                  sts.data());
    uint64_t found = 0;
    for (size_t j = 0; j < m; ++j) {
      if (sts[j].IsNotFound()) {
        fn(idx[j], nullptr, false);
        continue;
      }
      if (!sts[j].ok())
        return Status::IOError("RocksDB read at " + opts_.path + ": " + sts[j].ToString());
      if (vals[j].size() != row_bytes)
        return Status::Corruption("row of table '" + specs_[table].name + "' has " +
                                  std::to_string(vals[j].size()) + " bytes on disk, expected " +
                                  std::to_string(row_bytes));
      // PinnableSlice data is not guaranteed float-aligned: copy through memcpy in fn.
      static thread_local std::vector<float> tmp;
      tmp.resize(widths_[table]);
      std::memcpy(tmp.data(), vals[j].data(), row_bytes);
      fn(idx[j], tmp.data(), true);
      ++found;
    }
    cold_ += found;
    initialised_ += m - found;
    return Status::OK();
  }

  const StoreOptions opts_;
  const std::vector<TableSpec> specs_;
  std::vector<uint32_t> widths_;
  std::unique_ptr<rocksdb::DB> db_;
  std::vector<std::unique_ptr<RowCache>> caches_;
  rocksdb::WriteOptions wopts_;
  Mutex write_mu_;                                // serialises Update, Checkpoint and Flush
  uint64_t wal_bytes_ GUARDED_BY(write_mu_) = 0;  // written since the last flush request
  std::atomic<uint64_t> hits_{0}, cold_{0}, initialised_{0}, written_{0}, batches_{0}, erased_{0};
};

}  // namespace

namespace {

// Replaces `path` with a copy of the checkpoint `from`: its SST files are immutable, so they are
// hard-linked where the file system allows; the rest (MANIFEST, CURRENT, OPTIONS, logs) copied.
Status CopyCheckpoint(const std::string& from, const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(from, ec))
    return Status::NotFound("checkpoint '" + from + "' is not a directory");
  M6_RETURN_IF_ERROR(RemoveTree(path));
  fs::create_directories(path, ec);
  if (ec) return Status::IOError("cannot create '" + path + "': " + ec.message());
  for (const auto& e : fs::directory_iterator(from, ec)) {
    const fs::path dst = fs::path(path) / e.path().filename();
    if (e.path().extension() == ".sst") {
      fs::create_hard_link(e.path(), dst, ec);
      if (!ec) continue;
      ec.clear();
    }
    fs::copy_file(e.path(), dst, ec);
    if (ec)
      return Status::IOError("cannot copy '" + e.path().string() + "' to '" + dst.string() +
                             "': " + ec.message());
  }
  if (ec) return Status::IOError("cannot read '" + from + "': " + ec.message());
  return Status::OK();
}

}  // namespace

StatusOr<std::unique_ptr<TableStore>> NewRocksDBStore(const StoreOptions& opts,
                                                      const std::vector<TableSpec>& tables) {
  if (opts.path.empty()) return Status::InvalidArgument("the RocksDB store needs a directory");
  std::error_code ec;
  if (!opts.restore_from.empty()) M6_RETURN_IF_ERROR(CopyCheckpoint(opts.restore_from, opts.path));
  if (opts.read_only && !std::filesystem::exists(opts.path + "/CURRENT", ec))
    return Status::NotFound("no RocksDB at '" + opts.path + "'");
  std::filesystem::create_directories(opts.path, ec);
  if (ec)
    return Status::IOError("cannot create RocksDB directory '" + opts.path + "': " + ec.message());
  rocksdb::Options o;
  o.create_if_missing = true;
  o.compression = rocksdb::kNoCompression;  // float rows do not compress
  o.write_buffer_size = 128 << 20;
  o.max_write_buffer_number = 3;
  // Rows are fixed-size and rewritten on every push: update them in place in the memtable
  // instead of appending a new version per write. The memtable then holds one entry per hot
  // key (no growth, no arena allocation per write) and pushes are several times faster.
  o.inplace_update_support = true;
  o.allow_concurrent_memtable_write = false;
  // In-place updates keep the memtable from filling, so it would never flush and the WAL would
  // grow forever (seen: 78 GB in 8 minutes of Gowalla training). Update() therefore asks for a
  // flush every max_wal_bytes of writes (RocksDB's own max_total_wal_size only acts with
  // several column families).
  // Point lookups only (8-byte keys): a hashed memtable finds a row in O(1) instead of a
  // skiplist descent per key.
  o.prefix_extractor.reset(rocksdb::NewFixedPrefixTransform(8));
  o.memtable_factory.reset(rocksdb::NewHashLinkListRepFactory(1 << 20));
  o.max_background_jobs = 2;
  o.IncreaseParallelism(2);
  rocksdb::BlockBasedTableOptions t;
  t.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));
  t.block_cache = rocksdb::NewLRUCache(128 << 20);
  o.table_factory.reset(rocksdb::NewBlockBasedTableFactory(t));
  // Every table file opened now (RocksDB's default, relied on): a checkpoint served read-only
  // (m6rec serve --follow) stays readable after the training job deletes it.
  o.max_open_files = -1;
  rocksdb::DB* raw = nullptr;
  rocksdb::Status s = opts.read_only ? rocksdb::DB::OpenForReadOnly(o, opts.path, &raw)
                                     : rocksdb::DB::Open(o, opts.path, &raw);
  if (!s.ok())
    return Status::IOError("cannot open RocksDB at '" + opts.path + "': " + s.ToString());
  std::unique_ptr<rocksdb::DB> db(raw);

  // The directory remembers the layout of its tables; a changed dim or optimizer would make
  // every stored row unreadable, so refuse to open instead.
  const std::string want = TablesLayout(tables);
  std::string have;
  s = db->Get(rocksdb::ReadOptions(), kLayoutKey, &have);
  if (s.ok()) {
    if (want.compare(0, have.size(), have) != 0)
      return Status::InvalidArgument("RocksDB at '" + opts.path + "' holds tables '" + have +
                                     "' but the config declares '" + want +
                                     "' (name:dim:optimizer:width): use a new directory");
  } else if (!s.IsNotFound()) {
    return Status::IOError("cannot read RocksDB at '" + opts.path + "': " + s.ToString());
  }
  if (have != want && opts.read_only)
    return Status::InvalidArgument("RocksDB at '" + opts.path + "' holds tables '" + have +
                                   "' but the config declares '" + want + "'");
  if (have != want) {
    rocksdb::WriteOptions wo;
    wo.sync = true;
    s = db->Put(wo, kLayoutKey, want);
    if (!s.ok())
      return Status::IOError("cannot write RocksDB at '" + opts.path + "': " + s.ToString());
  }
  return std::unique_ptr<TableStore>(new RocksDBStore(opts, tables, std::move(db)));
}

}  // namespace m6rec
