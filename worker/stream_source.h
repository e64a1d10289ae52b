// Streaming sources (issue 13's `train --stream`, first part): where interactions arrive from,
// behind one interface, with a position a job checkpoints so a restarted job continues exactly
// after the last interaction it took (each one taken once, in order, across restarts).
//   DirectorySource  a directory that receives files of "user item [timestamp]" lines (tab or
//                    space separated, '#' comments). Files are taken in name order; a producer
//                    writes a file under a name starting with '.' or ending in ".tmp" and renames
//                    it when complete (an atomic rename: a reader never sees half a file), and
//                    names its files so that they sort in the order written (a timestamp, a
//                    counter with leading zeros). A file that appears under a name sorting before
//                    the one being read is an error, not silently skipped.
// Not thread-safe: one reader.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "common/status.h"
#include "worker/dataset.h"

namespace m6rec {

// Where a source is: every file sorting before `file` is done, and `file` up to byte `offset`.
struct SourcePosition {
  std::string file;
  uint64_t offset = 0;
  nlohmann::json ToJson() const { return {{"file", file}, {"offset", offset}}; }
  static StatusOr<SourcePosition> FromJson(const nlohmann::json& j);
};

class StreamSource {
 public:
  virtual ~StreamSource() = default;
  // Appends up to `max` events that have arrived to *out; returns how many (0: none yet).
  virtual StatusOr<size_t> Poll(size_t max, std::vector<StreamEvent>* out) = 0;
  // The position after the last event Poll returned.
  virtual SourcePosition position() const = 0;
  // No event will ever come again (a replay at its end, a feed whose producer is done); a
  // directory never finishes.
  virtual bool finished() const { return false; }
};

// Recorded interactions replayed in order (a dataset's held-back stream, data.stream_split):
// all of them have arrived; the position is {"replay", events taken}.
class ReplaySource final : public StreamSource {
 public:
  static StatusOr<std::unique_ptr<ReplaySource>> Open(std::vector<StreamEvent> events,
                                                      const SourcePosition& from = {});
  StatusOr<size_t> Poll(size_t max, std::vector<StreamEvent>* out) override;
  SourcePosition position() const override { return {"replay", next_}; }
  bool finished() const override { return next_ >= events_.size(); }

 private:
  std::vector<StreamEvent> events_;
  uint64_t next_ = 0;
};

class DirectorySource final : public StreamSource {
 public:
  static StatusOr<std::unique_ptr<DirectorySource>> Open(const std::string& dir,
                                                         const SourcePosition& from = {});
  StatusOr<size_t> Poll(size_t max, std::vector<StreamEvent>* out) override;
  SourcePosition position() const override { return pos_; }

 private:
  explicit DirectorySource(std::string dir) : dir_(std::move(dir)) {}
  // The complete files now in the directory, sorted; refuses one that sorts before the
  // position's file and was not seen before.
  StatusOr<std::vector<std::string>> Scan();

  std::string dir_;
  SourcePosition pos_;
  uint64_t line_ = 0;            // lines of pos_.file consumed (for file:line errors)
  std::set<std::string> known_;  // files seen by any scan
};

// A ZeroMQ feed (`m6rec feed`, launch/feed.h): the producer keeps every event it has released,
// numbered from 0, and answers "the events from sequence number S" (each request carries the
// job token; a request without it is dropped). The consumer's position is the next sequence
// number (file = "feed:<endpoint>"), so a restarted job asks again from there: each event once.
class FeedSource final : public StreamSource {
 public:
  // endpoint: "tcp://host:port"; timeout_ms bounds each request.
  static StatusOr<std::unique_ptr<FeedSource>> Open(const std::string& endpoint, uint64_t token,
                                                    const SourcePosition& from = {},
                                                    int timeout_ms = 5000);
  ~FeedSource() override;
  StatusOr<size_t> Poll(size_t max, std::vector<StreamEvent>* out) override;
  SourcePosition position() const override;
  bool finished() const override { return finished_; }  // the producer released its last event

 private:
  FeedSource() = default;
  struct Conn;
  std::unique_ptr<Conn> conn_;
  std::string endpoint_;
  uint64_t token_ = 0, next_ = 0;
  int timeout_ms_ = 5000;
  bool finished_ = false;
};

// The source stream.source names (replay: ds's stream_events), continuing from `from`;
// job_token: a feed's token when stream.token is empty.
struct StreamConfig;
StatusOr<std::unique_ptr<StreamSource>> OpenStreamSource(const StreamConfig& cfg, const Dataset& ds,
                                                         uint64_t job_token,
                                                         const SourcePosition& from = {});

// The feed's wire format (JSON in one frame; the producer puts the router identity in front):
// request {"token": "<16 hex>", "from": S, "max": N}; reply {"first": S, "events":
// [[user, item, ts], ...], "released": R, "end": bool}.
nlohmann::json FeedRequest(uint64_t token, uint64_t from, size_t max);

}  // namespace m6rec
