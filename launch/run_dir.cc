#include "launch/run_dir.h"

#include <cstdio>
#include <ctime>
#include <map>
#include <nlohmann/json.hpp>

#include "common/logging.h"
#include "common/util.h"
#include "launch/local_cluster.h"
#include "worker/evaluator.h"

namespace m6rec {

StatusOr<std::string> PrepareRunDir(const std::string& config_path, const std::vector<std::string>& overrides,
                                    const std::string& run_dir_in, JobConfig* cfg,
                                    const std::string& default_suffix) {
  std::string run_dir = run_dir_in;
  std::string text;
  if (config_path.empty()) {
    text = DefaultConfigYaml();  // written out below so every process reads the same file
  } else {
    M6_ASSIGN_OR_RETURN(text, ReadFileToString(config_path));
  }
  M6_ASSIGN_OR_RETURN(JobConfig parsed, ParseConfig(text, config_path.empty() ? "<built-in default>" : config_path, overrides));
  if (run_dir.empty() && !default_suffix.empty()) run_dir = "runs/" + parsed.name + "-" + default_suffix;
  if (run_dir.empty()) {
    char ts[32];
    time_t now = time(nullptr);
    strftime(ts, sizeof(ts), "%Y%m%d-%H%M%S", localtime(&now));
    run_dir = "runs/" + parsed.name + "-" + ts;
  }
  M6_RETURN_IF_ERROR(MakeDirs(run_dir + "/logs"));
  const std::string src = run_dir + "/config.source.yaml";
  if (config_path.empty()) M6_RETURN_IF_ERROR(WriteFileAtomic(src, text));
  M6_RETURN_IF_ERROR(WriteEffectiveConfig(config_path.empty() ? src : config_path, overrides, run_dir + "/config.yaml"));
  M6_ASSIGN_OR_RETURN(*cfg, LoadConfig(run_dir + "/config.yaml"));
  return run_dir;
}

// Combines the workers' per-epoch metric sums into the job's result: the best epoch (by
// validation NDCG@10 under the sampled protocol; by test Recall@20 under full ranking, whose
// published splits have no validation set) and its test metrics, next to popularity.
Status WriteRunResult(const JobConfig& cfg, const std::string& run_dir, double wall) {
using nlohmann::json;
  json workers = json::array();
  for (int w = 0; w < cfg.cluster.workers; ++w) {
    auto text = ReadFileToString(run_dir + "/worker-" + std::to_string(w) + ".json");
    if (!text.ok()) continue;
    auto j = json::parse(*text, nullptr, false);
    if (!j.is_discarded()) workers.push_back(j);
  }
  json result = {{"job", cfg.name}, {"config", run_dir + "/config.yaml"}, {"run_dir", run_dir},
                 {"wall_s", wall}, {"workers", workers}};
  if (!workers.empty() && workers[0].contains("epochs")) {
    const bool full = workers[0].value("protocol", "") == "full_ranking";
    auto means = [](const json& parts, const char* which) {
      MetricSums total;
      for (const auto& p : parts) {
        const json& m = which ? p[which] : p;
        MetricSums one;
        for (uint64_t u = 0, n = m.value("users", uint64_t{0}); u < n; ++u) one.AddUser();
        if (m.contains("sums"))
          for (auto& [k, v] : m["sums"].items()) one.Add(k, v.get<double>());
        total.Merge(one);
      }
      json out = json::object();
      for (const auto& [k, v] : SummaryMetrics(total)) out[k] = v;
      out["users"] = total.users();
      return out;
    };
    json epochs = json::array();
    const size_t n_epochs = workers[0]["epochs"].size();
    int best = -1;
    double best_score = -1;
    for (size_t e = 0; e < n_epochs; ++e) {
      json parts = json::array();
      double loss = 0;
      for (const auto& w : workers) {
        if (e >= w["epochs"].size()) continue;
        parts.push_back(w["epochs"][e]);
        loss += w["epochs"][e].value("loss", 0.0) / workers.size();
      }
      json ep = {{"epoch", workers[0]["epochs"][e]["epoch"]},
                 {"loss", loss},
                 {"elapsed_s", workers[0]["epochs"][e].value("elapsed_s", 0.0)},
                 {"test", means(parts, "test")}};
      if (!full) ep["valid"] = means(parts, "valid");
      const double score = full ? ep["test"].value("Recall@20", 0.0) : ep["valid"].value("NDCG@10", 0.0);
      if (score > best_score) {
        best_score = score;
        best = static_cast<int>(e);
      }
      epochs.push_back(ep);
    }
    json pops = json::array();
    double sps = 0, train_s = 0;
    for (const auto& w : workers) {
      pops.push_back(w["popularity"]);
      sps += w.value("samples_per_s", 0.0);
      train_s = std::max(train_s, w.value("train_s", 0.0));
    }
    result["dataset"] = workers[0].value("dataset", "");
    result["protocol"] = full ? "full_ranking" : "sampled";
    result["epochs"] = epochs;
    result["popularity"] = means(pops, nullptr);
    result["samples_per_s"] = sps;
    result["train_s"] = train_s;
    if (best >= 0) {
      result["best_epoch"] = epochs[best]["epoch"];
      result["test"] = epochs[best]["test"];
      if (!full) result["valid"] = epochs[best]["valid"];
      const char* m1 = full ? "Recall@20" : "HR@10";
      const char* m2 = full ? "NDCG@20" : "NDCG@10";
      char line[320];
      std::snprintf(line, sizeof(line),
                    "result (%s, best epoch %d): test %s %.4f %s %.4f over %.0f users "
                    "(popularity %s %.4f); %.0f samples/s, %.1f s",
                    full ? "full ranking" : "sampled, 99 negatives", epochs[best]["epoch"].get<int>(),
                    m1, result["test"].value(m1, 0.0), m2, result["test"].value(m2, 0.0),
                    result["test"].value("users", 0.0), m1, result["popularity"].value(m1, 0.0), sps, wall);
      LOG_INFO << line;
    }
  }
  M6_RETURN_IF_ERROR(WriteFileAtomic(run_dir + "/result.json", result.dump(2) + "\n"));
  LOG_INFO << "all processes exited cleanly; results in " << run_dir << "/result.json";
  return Status::OK();
}

}  // namespace m6rec
