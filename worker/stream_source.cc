#include "worker/stream_source.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <zmq.hpp>

#include "common/config.h"
#include "common/transport.h"
#include "common/util.h"

namespace m6rec {
namespace {

bool Complete(const std::string& name) {
  return !name.empty() && name[0] != '.' &&
         !(name.size() >= 4 && name.compare(name.size() - 4, 4, ".tmp") == 0);
}

bool ParseU32(const std::string& s, uint32_t* out) {
  if (s.empty() || s.size() > 10 || !std::all_of(s.begin(), s.end(), ::isdigit)) return false;
  const uint64_t v = std::stoull(s);
  if (v > UINT32_MAX) return false;
  *out = uint32_t(v);
  return true;
}

}  // namespace

StatusOr<SourcePosition> SourcePosition::FromJson(const nlohmann::json& j) {
  if (!j.is_object() || !j.contains("file") || !j["file"].is_string() || !j.contains("offset") ||
      !j["offset"].is_number_unsigned())
    return Status::InvalidArgument("a source position is {\"file\": NAME, \"offset\": BYTES}");
  return SourcePosition{j["file"].get<std::string>(), j["offset"].get<uint64_t>()};
}

StatusOr<std::unique_ptr<ReplaySource>> ReplaySource::Open(std::vector<StreamEvent> events,
                                                           const SourcePosition& from) {
  if (!from.file.empty() && (from.file != "replay" || from.offset > events.size()))
    return Status::InvalidArgument(
        "stream position {" + from.file + ", " + std::to_string(from.offset) +
        "} is not a position of this replay (" + std::to_string(events.size()) + " events)");
  std::unique_ptr<ReplaySource> s(new ReplaySource());
  s->events_ = std::move(events);
  s->next_ = from.offset;
  return s;
}

StatusOr<size_t> ReplaySource::Poll(size_t max, std::vector<StreamEvent>* out) {
  const size_t n = std::min<uint64_t>(max, events_.size() - next_);
  out->insert(out->end(), events_.begin() + long(next_), events_.begin() + long(next_ + n));
  next_ += n;
  return n;
}

StatusOr<std::unique_ptr<StreamSource>> OpenStreamSource(const StreamConfig& cfg, const Dataset& ds,
                                                         uint64_t job_token,
                                                         const SourcePosition& from) {
  switch (cfg.source) {
    case StreamKind::kReplay: {
      M6_ASSIGN_OR_RETURN(auto s, ReplaySource::Open(ds.stream_events, from));
      return std::unique_ptr<StreamSource>(std::move(s));
    }
    case StreamKind::kDirectory: {
      M6_ASSIGN_OR_RETURN(auto s, DirectorySource::Open(cfg.path, from));
      return std::unique_ptr<StreamSource>(std::move(s));
    }
    case StreamKind::kFeed: {
      uint64_t token = job_token;
      if (!cfg.token.empty() && !ParseToken(cfg.token, &token))
        return Status::InvalidArgument("stream.token '" + cfg.token + "': 16 hex digits");
      M6_ASSIGN_OR_RETURN(auto s, FeedSource::Open(cfg.path, token, from));
      return std::unique_ptr<StreamSource>(std::move(s));
    }
    case StreamKind::kNone:
      break;
  }
  return Status::InvalidArgument("the job has no stream (stream.source: none)");
}

StatusOr<std::unique_ptr<DirectorySource>> DirectorySource::Open(const std::string& dir,
                                                                 const SourcePosition& from) {
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec))
    return Status::NotFound("stream directory '" + dir + "' does not exist");
  std::unique_ptr<DirectorySource> s(new DirectorySource(dir));
  s->pos_ = from;
  // Files at or before the position were seen by the run that saved it.
  M6_ASSIGN_OR_RETURN(auto files, s->Scan());
  for (const auto& f : files)
    if (f <= from.file) s->known_.insert(f);
  if (!from.file.empty()) {
    if (!s->known_.count(from.file))
      return Status::NotFound("stream position: '" + dir + "/" + from.file +
                              "' is gone (the position's file must stay until it is done)");
    // Count the lines before the offset, for file:line errors.
    std::ifstream in(dir + "/" + from.file, std::ios::binary);
    std::string line;
    uint64_t at = 0;
    while (at < from.offset && std::getline(in, line)) {
      at += line.size() + 1;
      ++s->line_;
    }
  }
  return s;
}

StatusOr<std::vector<std::string>> DirectorySource::Scan() {
  std::vector<std::string> files;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir_, ec))
    if (e.is_regular_file(ec) && Complete(e.path().filename().string()))
      files.push_back(e.path().filename().string());
  if (ec) return Status::IOError("stream directory '" + dir_ + "': " + ec.message());
  std::sort(files.begin(), files.end());
  for (const auto& f : files) {
    if (known_.count(f)) continue;
    if (!pos_.file.empty() && f < pos_.file)
      return Status::InvalidArgument("stream directory '" + dir_ + "': '" + f +
                                     "' arrived after '" + pos_.file +
                                     "' but sorts before it (name files in the order written)");
    known_.insert(f);
  }
  return files;
}

StatusOr<size_t> DirectorySource::Poll(size_t max, std::vector<StreamEvent>* out) {
  M6_ASSIGN_OR_RETURN(auto files, Scan());
  size_t got = 0;
  // The current file first (it may have been complete since the last poll: it cannot grow, a
  // complete file is never rewritten), then the next ones.
  auto it = std::lower_bound(files.begin(), files.end(), pos_.file);
  for (; it != files.end() && got < max; ++it) {
    if (*it != pos_.file) {
      pos_ = {*it, 0};
      line_ = 0;
    }
    const std::string path = dir_ + "/" + *it;
    std::ifstream in(path, std::ios::binary);
    if (!in) return Status::IOError("cannot open '" + path + "'");
    in.seekg(std::streamoff(pos_.offset));
    std::string line;
    while (got < max && std::getline(in, line)) {
      ++line_;
      // A complete file is final: its last line counts with or without a newline.
      const uint64_t next = pos_.offset + line.size() + (in.eof() ? 0 : 1);
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (!line.empty() && line[0] != '#') {
        std::istringstream is(line);
        std::string u, i, ts;
        StreamEvent ev;
        if (!(is >> u >> i) || !ParseU32(u, &ev.user) || !ParseU32(i, &ev.item))
          return Status::InvalidArgument(path + ":" + std::to_string(line_) +
                                         ": expected 'user item [timestamp]' (ids 0..2^32-1)");
        if (is >> ts) {
          char* end = nullptr;
          ev.ts = std::strtoll(ts.c_str(), &end, 10);
          if (*end != '\0')
            return Status::InvalidArgument(path + ":" + std::to_string(line_) + ": timestamp '" +
                                           ts + "' is not an integer");
        }
        out->push_back(ev);
        ++got;
      }
      pos_.offset = next;
    }
  }
  return got;
}

nlohmann::json FeedRequest(uint64_t token, uint64_t from, size_t max) {
  return {{"token", FormatToken(token)}, {"from", from}, {"max", max}};
}

struct FeedSource::Conn {
  zmq::context_t ctx{1};
  zmq::socket_t sock{ctx, zmq::socket_type::dealer};
};

FeedSource::~FeedSource() = default;

StatusOr<std::unique_ptr<FeedSource>> FeedSource::Open(const std::string& endpoint, uint64_t token,
                                                       const SourcePosition& from, int timeout_ms) {
  std::unique_ptr<FeedSource> f(new FeedSource());
  f->endpoint_ = endpoint;
  f->token_ = token;
  f->timeout_ms_ = timeout_ms;
  const std::string want = "feed:" + endpoint;
  if (!from.file.empty() && from.file != want)
    return Status::InvalidArgument("stream position is of '" + from.file + "', not '" + want + "'");
  f->next_ = from.offset;
  f->conn_ = std::make_unique<Conn>();
  try {
    f->conn_->sock.set(zmq::sockopt::linger, 0);
    f->conn_->sock.connect(endpoint);
  } catch (const zmq::error_t& e) {
    return Status::InvalidArgument("feed endpoint '" + endpoint + "': " + e.what());
  }
  return f;
}

SourcePosition FeedSource::position() const { return {"feed:" + endpoint_, next_}; }

StatusOr<size_t> FeedSource::Poll(size_t max, std::vector<StreamEvent>* out) {
  const std::string req = FeedRequest(token_, next_, max).dump();
  std::vector<zmq::message_t> parts;
  parts.emplace_back(req.data(), req.size());
  M6_RETURN_IF_ERROR(SendMultipart(conn_->sock, parts));
  std::vector<zmq::message_t> reply;
  M6_ASSIGN_OR_RETURN(bool got, RecvMultipart(conn_->sock, &reply, timeout_ms_));
  if (!got || reply.empty())
    return Status::DeadlineExceeded("feed " + endpoint_ + " did not answer within " +
                                    std::to_string(timeout_ms_) +
                                    " ms (is it running, with this job's token?)");
  const auto j = nlohmann::json::parse(reply.back().to_string(), nullptr, false);
  if (!j.is_object() || !j.contains("events") || !j["events"].is_array() ||
      j.value("first", uint64_t{0}) != next_)
    return Status::InvalidArgument("feed " + endpoint_ + ": a malformed reply");
  size_t n = 0;
  for (const auto& e : j["events"]) {
    if (!e.is_array() || e.size() != 3)
      return Status::InvalidArgument("feed " + endpoint_ + ": a malformed event");
    out->push_back({e[0].get<uint32_t>(), e[1].get<uint32_t>(), e[2].get<int64_t>()});
    ++n;
  }
  next_ += n;
  finished_ = j.value("end", false) && next_ >= j.value("released", uint64_t{0});
  return n;
}

}  // namespace m6rec
