#include "launch/run_dir.h"

#include <cstdio>
#include <ctime>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>

#include "common/logging.h"
#include "common/util.h"
#include "launch/local_cluster.h"
#include "launch/report.h"
#include "worker/checkpoint.h"
#include "worker/job_summary.h"

namespace m6rec {

StatusOr<std::string> PrepareRunDir(const std::string& config_path,
                                    const std::vector<std::string>& overrides,
                                    const std::string& run_dir_in, JobConfig* cfg,
                                    const std::string& default_suffix) {
  std::string run_dir = run_dir_in;
  std::string text;
  if (config_path.empty()) {
    text = DefaultConfigYaml();  // written out below so every process reads the same file
  } else {
    M6_ASSIGN_OR_RETURN(text, ReadFileToString(config_path));
  }
  M6_ASSIGN_OR_RETURN(
      JobConfig parsed,
      ParseConfig(text, config_path.empty() ? "<built-in default>" : config_path, overrides));
  if (run_dir.empty() && !default_suffix.empty())
    run_dir = "runs/" + parsed.name + "-" + default_suffix;
  if (run_dir.empty()) {
    char ts[32];
    time_t now = time(nullptr);
    strftime(ts, sizeof(ts), "%Y%m%d-%H%M%S", localtime(&now));
    run_dir = "runs/" + parsed.name + "-" + ts;
  }
  M6_RETURN_IF_ERROR(MakeDirs(run_dir + "/logs"));
  const std::string src = run_dir + "/config.source.yaml";
  if (config_path.empty()) M6_RETURN_IF_ERROR(WriteFileAtomic(src, text));
  M6_RETURN_IF_ERROR(WriteEffectiveConfig(config_path.empty() ? src : config_path, overrides,
                                          run_dir + "/config.yaml"));
  M6_ASSIGN_OR_RETURN(*cfg, LoadConfig(run_dir + "/config.yaml"));
  return run_dir;
}

StatusOr<std::string> PrepareResume(const LocalClusterOptions& o, JobConfig* cfg) {
  const std::string path = o.resume_dir + "/config.yaml";
  if (!o.config_path.empty())
    return Status::InvalidArgument("--resume continues " + path +
                                   "; --config cannot change it (use --set)");
  if (!ReadFileToString(path).ok())
    return Status::NotFound("'" + o.resume_dir + "' is not a run directory (no config.yaml)");
  if (!o.overrides.empty()) M6_RETURN_IF_ERROR(WriteEffectiveConfig(path, o.overrides, path));
  M6_ASSIGN_OR_RETURN(*cfg, LoadConfig(path));
  return LatestCheckpoint(o.resume_dir);
}

StatusOr<std::string> BackboneCheckpoint(const std::string& run_dir) {
  auto ckpt = BestCheckpoint(run_dir);
  if (!ckpt.ok()) ckpt = LatestCheckpoint(run_dir);
  if (!ckpt.ok())
    return Status::NotFound("adapt --from '" + run_dir +
                            "': no complete checkpoint to start from (" + ckpt.status().message() +
                            ")");
  return std::filesystem::absolute(*ckpt).lexically_normal().string();
}

StatusOr<std::string> PrepareAdaptRun(const LocalClusterOptions& o, JobConfig* cfg) {
  if (o.config_path.empty())
    return Status::InvalidArgument("adapt: --config names the new domain(s) (a YAML file)");
  const std::string backbone_cfg = o.adapt_from + "/config.yaml";
  if (!ReadFileToString(backbone_cfg).ok())
    return Status::NotFound("adapt --from '" + o.adapt_from +
                            "' is not a run directory (no config.yaml)");
  M6_ASSIGN_OR_RETURN(const std::string ckpt, BackboneCheckpoint(o.adapt_from));
  std::string run_dir = o.run_dir;
  if (run_dir.empty()) {
    char ts[32];
    time_t now = time(nullptr);
    strftime(ts, sizeof(ts), "%Y%m%d-%H%M%S", localtime(&now));
    std::string base = o.adapt_from;
    while (base.size() > 1 && base.back() == '/') base.pop_back();
    run_dir = "runs/" + base.substr(base.find_last_of('/') + 1) + "-adapt-" + ts;
  }
  M6_RETURN_IF_ERROR(MakeDirs(run_dir + "/logs"));
  M6_RETURN_IF_ERROR(
      WriteAdaptConfig(backbone_cfg, o.config_path, o.overrides, ckpt, run_dir + "/config.yaml"));
  M6_ASSIGN_OR_RETURN(*cfg, LoadConfig(run_dir + "/config.yaml"));
  return run_dir;
}

Status WriteRunResult(const JobConfig& cfg, const std::string& run_dir, double wall) {
  using nlohmann::json;
  json raw = json::array();
  std::vector<WorkerSummary> workers;
  for (int w = 0; w < cfg.cluster.workers; ++w) {
    const std::string path = run_dir + "/worker-" + std::to_string(w) + ".json";
    M6_ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
    json j = json::parse(text, nullptr, false);
    auto summary = WorkerSummary::FromJson(j);
    if (!summary.ok()) return summary.status().WithContext(path);
    raw.push_back(j);
    workers.push_back(std::move(*summary));
  }
  std::string line;
  M6_ASSIGN_OR_RETURN(json result, MergeRunResult(workers, wall, &line));
  result["job"] = cfg.name;
  result["config"] = run_dir + "/config.yaml";
  result["run_dir"] = run_dir;
  result["workers"] = raw;
  if (!line.empty()) LOG_INFO << line;
  M6_RETURN_IF_ERROR(WriteFileAtomic(run_dir + "/result.json", result.dump(2) + "\n"));
  LOG_INFO << "all processes exited cleanly; results in " << run_dir << "/result.json";
  // The report is for people: a failure to write it does not fail the job.
  Status data = WriteReportData(run_dir);
  if (!data.ok()) LOG_INFO << "report: no item map (" << data.message() << ")";
  Status report = WriteRunReport(run_dir);
  if (report.ok())
    LOG_INFO << "report: " << run_dir << "/report.html";
  else
    LOG_WARN << "no report.html: " << report.message();
  return Status::OK();
}

}  // namespace m6rec
