#include "worker/checkpoint.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/util.h"

namespace m6rec {

namespace fs = std::filesystem;
using nlohmann::json;

std::string CheckpointRoot(const std::string& run_dir) { return run_dir + "/checkpoints"; }

std::string CheckpointDir(const std::string& run_dir, uint64_t step) {
  char name[32];
  std::snprintf(name, sizeof(name), "step-%010llu", static_cast<unsigned long long>(step));
  return CheckpointRoot(run_dir) + "/" + name;
}

StatusOr<json> ReadManifest(const std::string& dir) {
  auto text = ReadFileToString(dir + "/manifest.json");
  if (!text.ok())
    return Status::NotFound("'" + dir + "' is not a complete checkpoint (no manifest.json)");
  json j = json::parse(*text, nullptr, false);
  if (!j.is_object() || !j.contains("step"))
    return Status::Corruption(dir + "/manifest.json: not a checkpoint manifest");
  return j;
}

namespace {

// Every step-* directory under run_dir/checkpoints, oldest first.
std::vector<std::string> StepDirs(const std::string& run_dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(CheckpointRoot(run_dir), ec))
    if (e.is_directory() && e.path().filename().string().rfind("step-", 0) == 0)
      out.push_back(e.path().string());
  std::sort(out.begin(), out.end());  // zero-padded step numbers sort as numbers
  return out;
}

}  // namespace

std::vector<std::string> ValidCheckpoints(const std::string& run_dir) {
  std::vector<std::string> out;
  for (const auto& d : StepDirs(run_dir))
    if (ReadManifest(d).ok()) out.push_back(d);
  return out;
}

StatusOr<std::string> LatestCheckpoint(const std::string& run_dir) {
  auto all = ValidCheckpoints(run_dir);
  if (all.empty())
    return Status::NotFound("no complete checkpoint under '" + CheckpointRoot(run_dir) + "'");
  return all.back();
}

namespace {

// best.json, or an empty object when the run has none yet.
StatusOr<json> ReadBestPointers(const std::string& run_dir) {
  const std::string path = CheckpointRoot(run_dir) + "/best.json";
  auto text = ReadFileToString(path);
  if (!text.ok()) return json::object();
  json j = json::parse(*text, nullptr, false);
  if (!j.is_object()) return Status::Corruption(path + ": expected a JSON object");
  return j;
}

// The checkpoint directory a pointer ({"checkpoint": "step-...", ...}) names.
StatusOr<std::string> PointedDir(const std::string& run_dir, const json& p,
                                 const std::string& what) {
  if (!p.is_object() || !p.contains("checkpoint") || !p["checkpoint"].is_string())
    return Status::Corruption(CheckpointRoot(run_dir) + "/best.json: " + what +
                              " is not {\"checkpoint\": \"step-...\"}");
  const std::string dir = CheckpointRoot(run_dir) + "/" + p["checkpoint"].get<std::string>();
  if (!ReadManifest(dir).ok())
    return Status::Corruption(CheckpointRoot(run_dir) + "/best.json: " + what + " is " +
                              p["checkpoint"].get<std::string>() +
                              ", which is not a complete checkpoint");
  return dir;
}

}  // namespace

StatusOr<std::string> BestCheckpoint(const std::string& run_dir, const std::string& domain) {
  M6_ASSIGN_OR_RETURN(const json j, ReadBestPointers(run_dir));
  if (!domain.empty() && j.contains("domains") && j["domains"].contains(domain))
    return PointedDir(run_dir, j["domains"][domain], "domain '" + domain + "'");
  if (!j.contains("checkpoint"))
    return Status::NotFound("no best checkpoint ('" + CheckpointRoot(run_dir) +
                            "/best.json' is missing or names none)");
  return PointedDir(run_dir, j, "the best epoch");
}

Status WriteBestPointer(const std::string& run_dir, const std::string& checkpoint_dir, int epoch,
                        bool overall, const std::vector<std::string>& domains) {
  // An unreadable best.json is replaced: the pointers written from here on are the right ones.
  auto read = ReadBestPointers(run_dir);
  json j = read.ok() ? *std::move(read) : json::object();
  const json p = {{"checkpoint", fs::path(checkpoint_dir).filename().string()}, {"epoch", epoch}};
  if (overall) {
    j["checkpoint"] = p["checkpoint"];
    j["epoch"] = epoch;
  }
  for (const auto& d : domains) j["domains"][d] = p;
  return WriteFileAtomic(CheckpointRoot(run_dir) + "/best.json", j.dump() + "\n");
}

Status PruneCheckpoints(const std::string& run_dir, int keep) {
  // Never the best epoch's checkpoint, nor any domain's.
  std::vector<std::string> pinned;
  if (auto j = ReadBestPointers(run_dir); j.ok()) {
    auto pin = [&](const json& p) {
      if (p.is_object() && p.contains("checkpoint") && p["checkpoint"].is_string())
        pinned.push_back(CheckpointRoot(run_dir) + "/" + p["checkpoint"].get<std::string>());
    };
    pin(*j);
    if (j->contains("domains"))
      for (const auto& [name, p] : (*j)["domains"].items()) pin(p);
  }
  const auto valid = ValidCheckpoints(run_dir);
  const std::string newest = valid.empty() ? "" : valid.back();
  const size_t first_kept = valid.size() > size_t(keep) ? valid.size() - keep : 0;
  for (const auto& d : StepDirs(run_dir)) {
    if (std::find(pinned.begin(), pinned.end(), d) != pinned.end()) continue;
    const auto it = std::find(valid.begin(), valid.end(), d);
    const bool is_valid = it != valid.end();
    const bool drop =
        is_valid ? size_t(it - valid.begin()) < first_kept : (!newest.empty() && d < newest);
    if (drop) M6_RETURN_IF_ERROR(RemoveTree(d));
  }
  return Status::OK();
}

Status WriteStreamEvents(const std::string& checkpoint_dir, const std::vector<StreamEvent>& ev) {
  std::string text;
  text.reserve(ev.size() * 24);
  for (const StreamEvent& e : ev)
    text +=
        std::to_string(e.user) + "\t" + std::to_string(e.item) + "\t" + std::to_string(e.ts) + "\n";
  return WriteFileAtomic(checkpoint_dir + "/stream-events.tsv", text);
}

StatusOr<std::vector<StreamEvent>> ReadStreamEvents(const std::string& checkpoint_dir) {
  const std::string path = checkpoint_dir + "/stream-events.tsv";
  std::vector<StreamEvent> ev;
  if (!std::filesystem::exists(path)) return ev;
  std::ifstream in(path);
  std::string line;
  for (uint64_t n = 1; std::getline(in, line); ++n) {
    std::istringstream is(line);
    StreamEvent e;
    std::string rest;
    if (!(is >> e.user >> e.item >> e.ts) || (is >> rest))
      return Status::Corruption(path + ":" + std::to_string(n) + ": expected 'user item ts'");
    ev.push_back(e);
  }
  return ev;
}

}  // namespace m6rec
