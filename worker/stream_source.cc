#include "worker/stream_source.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

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

}  // namespace m6rec
