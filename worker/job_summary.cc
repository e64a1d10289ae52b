#include "worker/job_summary.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

#include "worker/evaluator.h"

namespace m6rec {

using nlohmann::json;

namespace {

json SumsToJson(const MetricSums& m) {
  json j = {{"users", m.users()}, {"sums", json::object()}};
  for (const auto& [k, v] : m.sums()) j["sums"][k] = v;
  return j;
}

StatusOr<MetricSums> SumsFromJson(const json& j, const std::string& what) {
  if (!j.is_object() || !j.contains("users") || !j["users"].is_number_unsigned())
    return Status::Corruption(what + ": expected {\"users\": n, \"sums\": {...}}");
  MetricSums m;
  m.AddUsers(j["users"].get<uint64_t>());
  if (j.contains("sums"))
    for (const auto& [k, v] : j["sums"].items()) {
      if (!v.is_number()) return Status::Corruption(what + ": sum '" + k + "' is not a number");
      m.Add(k, v.get<double>());
    }
  return m;
}

const char* ProtocolKey(Dataset::Protocol p) {
  return p == Dataset::Protocol::kFullRanking ? "full_ranking" : "sampled";
}

}  // namespace

json WorkerSummary::ToJson() const {
  json eps = json::array();
  for (const auto& e : epochs) {
    json ej = {{"epoch", e.epoch},
               {"loss", e.loss},
               {"elapsed_s", e.elapsed_s},
               {"test", SumsToJson(e.test)},
               {"valid", SumsToJson(e.valid)}};
    for (const auto& [k, v] : e.report.items()) ej[k] = v;
    eps.push_back(ej);
  }
  json j = {{"rank", rank},
            {"job", job},
            {"dataset", dataset},
            {"protocol", ProtocolKey(protocol)},
            {"negatives", negatives},
            {"popularity", SumsToJson(popularity)},
            {"epochs", eps},
            {"best_epoch", best_epoch},
            {"steps", steps},
            {"samples", samples},
            {"train_s", train_s},
            {"eval_s", eval_s},
            {"samples_per_s", samples_per_s},
            {"first_loss", first_loss},
            {"last_loss", last_loss},
            {"dense_params", dense_params},
            {"collective", collective},
            {"param_fingerprints", param_fingerprints},
            {"final_fingerprint", final_fingerprint}};
  if (!stream.empty()) j["stream"] = stream;
  if (!domain_best_epochs.empty()) j["domain_best_epochs"] = domain_best_epochs;
  if (!domain_trained_until.empty()) j["domain_trained_until"] = domain_trained_until;
  for (const auto& [k, v] : model.items()) j[k] = v;
  return j;
}

StatusOr<WorkerSummary> WorkerSummary::FromJson(const json& j) {
  if (!j.is_object()) return Status::Corruption("worker summary: not a JSON object");
  WorkerSummary w;
  try {
    w.rank = j.at("rank").get<uint32_t>();
    w.job = j.at("job").get<std::string>();
    w.dataset = j.at("dataset").get<std::string>();
    const std::string p = j.at("protocol").get<std::string>();
    if (p != "sampled" && p != "full_ranking")
      return Status::Corruption("worker summary: protocol '" + p + "'");
    w.protocol = p == "sampled" ? Dataset::Protocol::kSampled : Dataset::Protocol::kFullRanking;
    w.negatives = j.at("negatives").get<int>();
    M6_ASSIGN_OR_RETURN(w.popularity, SumsFromJson(j.at("popularity"), "popularity"));
    for (const auto& e : j.at("epochs")) {
      EpochRecord r;
      r.epoch = e.at("epoch").get<int>();
      r.loss = e.at("loss").get<double>();
      r.elapsed_s = e.at("elapsed_s").get<double>();
      M6_ASSIGN_OR_RETURN(r.test, SumsFromJson(e.at("test"), "epoch test"));
      M6_ASSIGN_OR_RETURN(r.valid, SumsFromJson(e.at("valid"), "epoch valid"));
      for (const auto& [k, v] : e.items())
        if (k != "epoch" && k != "loss" && k != "elapsed_s" && k != "test" && k != "valid")
          r.report[k] = v;
      w.epochs.push_back(std::move(r));
    }
    w.best_epoch = j.at("best_epoch").get<int>();
    w.steps = j.at("steps").get<uint64_t>();
    w.samples = j.at("samples").get<uint64_t>();
    w.train_s = j.at("train_s").get<double>();
    w.eval_s = j.at("eval_s").get<double>();
    w.samples_per_s = j.at("samples_per_s").get<double>();
    w.first_loss = j.at("first_loss").get<double>();
    w.last_loss = j.at("last_loss").get<double>();
    w.dense_params = j.at("dense_params").get<int64_t>();
    w.collective = j.at("collective").get<std::string>();
    w.param_fingerprints = j.at("param_fingerprints").get<std::vector<std::string>>();
    w.final_fingerprint = j.at("final_fingerprint").get<std::string>();
    if (j.contains("stream")) w.stream = j["stream"];
    if (j.contains("domain_best_epochs"))
      w.domain_best_epochs = j["domain_best_epochs"].get<std::map<std::string, int>>();
    if (j.contains("domain_trained_until"))
      w.domain_trained_until = j["domain_trained_until"].get<std::map<std::string, int>>();
  } catch (const json::exception& e) {
    return Status::Corruption(std::string("worker summary: ") + e.what());
  }
  static const char* kOwn[] = {"rank",
                               "job",
                               "dataset",
                               "protocol",
                               "negatives",
                               "popularity",
                               "epochs",
                               "best_epoch",
                               "steps",
                               "samples",
                               "train_s",
                               "eval_s",
                               "samples_per_s",
                               "first_loss",
                               "last_loss",
                               "dense_params",
                               "collective",
                               "param_fingerprints",
                               "final_fingerprint",
                               "stream",
                               "domain_best_epochs",
                               "domain_trained_until"};
  for (const auto& [k, v] : j.items())
    if (std::find(std::begin(kOwn), std::end(kOwn), k) == std::end(kOwn)) w.model[k] = v;
  return w;
}

SelectionRule SelectionFor(Dataset::Protocol p, const std::vector<TaskSpec>& tasks,
                           const std::string& select_by) {
  SelectionTerm retrieval;
  if (p == Dataset::Protocol::kFullRanking) {
    retrieval.on_validation = false;
    retrieval.metric = "Recall@20";
  }
  SelectionRule r;
  r.terms.clear();
  for (size_t i = 0; i < tasks.size(); ++i) {
    const TaskSpec& t = tasks[i];
    const bool named = select_by != "auto";
    if (named ? !(t.name == select_by || (i == 0 && select_by == "retrieval")) : t.weight <= 0)
      continue;
    if (t.type == TaskKind::kRetrieval) {
      r.terms.push_back(retrieval);
      continue;
    }
    SelectionTerm term;
    term.task = t.name;
    term.metric = t.type == TaskKind::kLike     ? "AUC"
                  : t.type == TaskKind::kRating ? "RMSE"
                                                : "accuracy";
    term.sign = t.type == TaskKind::kRating ? -1 : 1;
    r.terms.push_back(term);
  }
  if (r.terms.empty()) r.terms.push_back(retrieval);
  return r;
}

SelectionRule SelectionFor(const Dataset& ds, int negatives, const std::vector<TaskSpec>& tasks,
                           const std::string& select_by, uint64_t seed) {
  SelectionRule r = SelectionFor(ds.protocol, tasks, select_by);
  for (SelectionTerm& term : r.terms) {
    if (!term.task.empty()) {
      for (const TaskSpec& t : tasks)
        if (t.name == term.task) {
          term.chance = term.sign * TaskChance(ds, t, seed);
          term.examples = TaskValidationSize(ds, t, seed);
        }
      continue;
    }
    // Retrieval: the users with a target on the split the term reads.
    for (uint32_t u = 0; u < ds.num_users; ++u) {
      const bool valid = u < ds.valid_item.size() && ds.valid_item[u] >= 0;
      const bool test = (u < ds.test_item.size() && ds.test_item[u] >= 0) ||
                        (u < ds.test_sets.size() && !ds.test_sets[u].empty());
      term.examples += (term.on_validation ? valid : test) ? 1 : 0;
    }
    if (ds.protocol == Dataset::Protocol::kSampled && negatives >= 0) {
      // The target's rank uniform over the 1 + negatives candidates.
      double ndcg = 0;
      for (int rank = 1; rank <= std::min(10, negatives + 1); ++rank)
        ndcg += 1.0 / std::log2(rank + 1.0);
      term.chance = ndcg / (negatives + 1);
    }
  }
  return r;
}

std::string SelectionRule::Describe() const {
  std::string out;
  for (const SelectionTerm& t : terms) {
    if (!out.empty()) out += ", ";
    out += std::string(t.on_validation ? "valid " : "test ") +
           (t.task.empty() ? "" : t.task + " ") + (t.domain.empty() ? "" : t.domain + " ") +
           t.metric;
  }
  return terms.size() > 1 ? "mean share of best lift over chance, weighted by precision: " + out
                          : out;
}

double SelectionValue(const SelectionTerm& t, const MetricSums& test, const MetricSums& valid) {
  const MetricSums& m = t.on_validation ? valid : test;
  if (t.task.empty() && !t.domain.empty()) {
    const MetricSums g = m.Group(t.domain);
    return g.users() > 0 ? g.Mean(t.metric) : -std::numeric_limits<double>::infinity();
  }
  if (t.task.empty()) return m.Mean(t.metric);
  const auto metrics = SummaryMetrics(m.Group(TaskGroup(t.task)));
  auto it = metrics.find(t.metric);
  return it == metrics.end() ? -std::numeric_limits<double>::infinity() : t.sign * it->second;
}

std::vector<std::pair<std::string, SelectionRule>> DomainSelectionRules(const Dataset& ds) {
  std::vector<std::pair<std::string, SelectionRule>> rules;
  const SelectionTerm all = SelectionFor(ds.protocol).terms.front();
  if (!ds.multi_domain() || !all.on_validation) return rules;
  for (const auto& d : ds.domains) {
    if (!d.evaluate) continue;
    SelectionRule r;
    r.terms.front() = all;
    r.terms.front().domain = d.name;
    rules.emplace_back(d.name, std::move(r));
  }
  if (rules.size() < 2) rules.clear();
  return rules;
}

bool EpochSelector::Offer(int epoch, const MetricSums& test, const MetricSums& valid) {
  std::vector<double> v;
  for (const SelectionTerm& t : rule_.terms) v.push_back(SelectionValue(t, test, valid));
  return OfferValues(epoch, std::move(v));
}

bool EpochSelector::OfferValues(int epoch, std::vector<double> values) {
  values.resize(rule_.terms.size(), -std::numeric_limits<double>::infinity());
  epochs_.push_back(epoch);
  values_.push_back(std::move(values));
  const size_t now = values_.size() - 1;
  const double score = Score(now);
  const bool best = std::isfinite(score) && (selected_ < 0 || score > Score(size_t(selected_)));
  if (best) selected_ = int(now);
  return best;
}

double TermNoise(const SelectionTerm& t, double v) {
  if (t.examples <= 0 || !std::isfinite(v)) return 0;
  const double a = std::fabs(v);
  if (t.sign < 0) return a / std::sqrt(2 * t.examples);  // RMSE
  const double p = std::clamp(a, 0.0, 1.0);
  return std::sqrt(p * (1 - p) / t.examples);
}

double EpochSelector::Score(size_t i) const {
  const std::vector<double>& v = values_[i];
  if (rule_.terms.size() == 1) return v[0];
  double sum = 0, weights = 0;
  for (size_t k = 0; k < rule_.terms.size(); ++k) {
    const SelectionTerm& t = rule_.terms[k];
    double top = -std::numeric_limits<double>::infinity();
    for (const auto& e : values_) top = std::max(top, e[k]);
    const double lift = top - t.chance;
    // A task not yet above chance (or never measured) cannot tell epochs apart; an epoch where
    // a measured task is missing has none of its lift.
    const bool lifted = std::isfinite(top) && lift > 1e-12;
    const double e = lifted ? TermNoise(t, top) / lift : 0;
    const double w = 1 / (e * e + kShareTolerance * kShareTolerance);
    if (lifted && std::isfinite(v[k])) sum += w * (v[k] - t.chance) / lift;
    weights += w;
  }
  return sum / weights;
}

json EpochSelector::State() const {
  json values = json::array();
  // -inf (a metric not measured) as null.
  for (const auto& v : values_) {
    json row = json::array();
    for (double x : v) row.push_back(std::isfinite(x) ? json(x) : json(nullptr));
    values.push_back(row);
  }
  return {{"epochs", epochs_}, {"values", values}, {"selected", selected_}};
}

Status EpochSelector::Restore(const json& j) {
  try {
    epochs_ = j.at("epochs").get<std::vector<int>>();
    values_.clear();
    for (const auto& row : j.at("values")) {
      std::vector<double> v;
      for (const auto& x : row)
        v.push_back(x.is_null() ? -std::numeric_limits<double>::infinity() : x.get<double>());
      v.resize(rule_.terms.size(), -std::numeric_limits<double>::infinity());
      values_.push_back(std::move(v));
    }
    selected_ = j.at("selected").get<int>();
  } catch (const json::exception& e) {
    return Status::InvalidArgument(std::string("epoch selection state: ") + e.what());
  }
  if (epochs_.size() != values_.size() || selected_ >= int(values_.size()) || selected_ < -1)
    return Status::InvalidArgument("epoch selection state: inconsistent");
  return Status::OK();
}

json MetricsJson(const MetricSums& m) {
  json j = {{"users", m.users()}};
  for (const auto& [k, v] : SummaryMetrics(m)) j[k] = v;
  for (const auto& g : m.Groups()) {
    // Tasks' groups: "task:<name>" and "task:<name>:<domain>" (evaluator.h TaskGroup).
    if (g.rfind("cold:", 0) == 0) {  // a cold split's groups (evaluator.h kColdItemsGroup)
      j["cold_start"][g.substr(5)] = MetricsJson(m.Group(g));
      continue;
    }
    if (g.rfind("pop:", 0) == 0) {  // the target's training count (kTargetPopularityGroups)
      j["target_popularity"][g.substr(4)] = MetricsJson(m.Group(g));
      continue;
    }
    if (g.rfind("task:", 0) != 0) {
      j["domains"][g] = MetricsJson(m.Group(g));
      continue;
    }
    const MetricSums tg = m.Group(g);
    json t = {{"examples", tg.users()}};
    for (const auto& [k, v] : SummaryMetrics(tg)) t[k] = v;
    const std::string rest = g.substr(5);
    const size_t colon = rest.find(':');
    if (colon == std::string::npos)
      j["tasks"][rest].update(t);
    else
      j["tasks"][rest.substr(0, colon)]["domains"][rest.substr(colon + 1)] = t;
  }
  return j;
}

namespace {

// The index of the epoch whose validation value `at(valid)` (nullptr: the epoch lacks it) is
// the highest after `sign`; -1 when no epoch has it.
template <typename At>
int BestEpochBy(const json& epochs, double sign, At at) {
  int best = -1;
  double top = -std::numeric_limits<double>::infinity();
  for (size_t e = 0; e < epochs.size(); ++e) {
    if (!epochs[e].contains("valid")) continue;
    const json* x = at(epochs[e]["valid"]);
    if (x && sign * x->get<double>() > top) top = sign * x->get<double>(), best = int(e);
  }
  return best;
}

}  // namespace

StatusOr<json> MergeRunResult(const std::vector<WorkerSummary>& workers, double wall_s,
                              std::string* line) {
  if (workers.empty()) return Status::NotFound("no worker summaries");
  const WorkerSummary& w0 = workers[0];
  const bool full = w0.protocol == Dataset::Protocol::kFullRanking;
  json result = {{"dataset", w0.dataset}, {"protocol", ProtocolKey(w0.protocol)}, {"job", w0.job}};
  if (!full) result["negatives"] = w0.negatives;
  MetricSums pop;
  double sps = 0, train_s = 0;
  for (const auto& w : workers) {
    if (w.epochs.size() != w0.epochs.size())
      return Status::Corruption("worker " + std::to_string(w.rank) + " evaluated " +
                                std::to_string(w.epochs.size()) + " epochs, worker 0 " +
                                std::to_string(w0.epochs.size()));
    pop.Merge(w.popularity);
    sps += w.samples_per_s;
    train_s = std::max(train_s, w.train_s);
  }
  json epochs = json::array();
  int best = -1;
  for (size_t e = 0; e < w0.epochs.size(); ++e) {
    MetricSums test, valid;
    double loss = 0;
    for (const auto& w : workers) {
      test.Merge(w.epochs[e].test);
      valid.Merge(w.epochs[e].valid);
      loss += w.epochs[e].loss / workers.size();
    }
    json ep = {{"epoch", w0.epochs[e].epoch},
               {"loss", loss},
               {"elapsed_s", w0.epochs[e].elapsed_s},
               {"test", MetricsJson(test)}};
    if (!full) ep["valid"] = MetricsJson(valid);
    for (const char* k : {"thresholds", "wide_weights", "calibration"})
      if (w0.epochs[e].report.contains(k)) ep[k] = w0.epochs[e].report[k];
    if (w0.epochs[e].epoch == w0.best_epoch) best = static_cast<int>(e);
    epochs.push_back(ep);
  }
  result["epochs"] = epochs;
  result["popularity"] = MetricsJson(pop);
  result["samples_per_s"] = sps;
  result["train_s"] = train_s;
  result["wall_s"] = wall_s;
  std::string stream_line;
  if (!w0.stream.empty()) {
    // A stream job: its prequential numbers (global sums, the same on every worker).
    const json& st = w0.stream;
    result["stream"] = st;
    char sbuf[400];
    std::snprintf(sbuf, sizeof(sbuf),
                  "stream: %llu events in %zu chunks, prequential HR@10 %.4f NDCG@10 %.4f "
                  "(first half %.4f, second half %.4f); %.0f samples/s, %.1f s",
                  static_cast<unsigned long long>(st.value("events", uint64_t{0})),
                  st.value("chunks", json::array()).size(), st.value("HR@10", 0.0),
                  st.value("NDCG@10", 0.0),
                  st.contains("halves") ? st["halves"][0].value("HR@10", 0.0) : 0.0,
                  st.contains("halves") ? st["halves"][1].value("HR@10", 0.0) : 0.0, sps, wall_s);
    stream_line = sbuf;
    *line = stream_line;
  }
  if (best < 0) return result;
  const json& b = epochs[best];
  result["best_epoch"] = b["epoch"];
  result["selected_by"] = w0.model.value("selected_by", SelectionFor(w0.protocol).Describe());
  // Each voting task's metric for a model that knows nothing (what its lift is measured from).
  if (w0.model.contains("selection_chance"))
    result["selection_chance"] = w0.model["selection_chance"];
  result["test"] = b["test"];
  if (!full) result["valid"] = b["valid"];
  // The decision thresholds accuracy/precision/recall/F1 are read at (chosen on validation).
  if (b.contains("thresholds")) result["thresholds"] = b["thresholds"];
  // The weight of each attribute task's wide part (chosen on validation).
  if (b.contains("wide_weights")) result["wide_weights"] = b["wide_weights"];
  // The offsets per training-count bucket the retrieval scores were calibrated by (validation).
  if (b.contains("calibration")) result["calibration"] = b["calibration"];
  const auto heads = HeadlineMetrics(w0.protocol);
  char buf[400];
  std::snprintf(
      buf, sizeof(buf),
      "result (%s, best epoch %d): test %s %.4f %s %.4f over %.0f users (popularity %s %.4f); "
      "%.0f samples/s, %.1f s",
      ProtocolDescription(w0.protocol, w0.negatives).c_str(), b["epoch"].get<int>(), heads[0],
      b["test"].value(heads[0], 0.0), heads[1], b["test"].value(heads[1], 0.0),
      b["test"].value("users", 0.0), heads[0], result["popularity"].value(heads[0], 0.0), sps,
      wall_s);
  *line = buf;
  // With other tasks voting on the epoch, retrieval at the epoch its own validation metric
  // peaks too (result.json tasks_at_own_best.retrieval).
  json retrieval_best;
  if (!full && b["test"].contains("tasks")) {
    const int at = BestEpochBy(epochs, 1, [&](const json& v) -> const json* {
      return v.contains(heads[1]) ? &v[heads[1]] : nullptr;
    });
    if (at >= 0) {
      json test = epochs[at]["test"];
      for (const char* k : {"tasks", "domains", "cold_start"}) test.erase(k);
      retrieval_best = {{"epoch", epochs[at]["epoch"]},
                        {"selected_by", std::string("valid ") + heads[1]},
                        {"test", test}};
      if (at != best) {
        std::snprintf(buf, sizeof(buf), "; at its own best validation epoch %d: %s %.4f %s %.4f",
                      epochs[at]["epoch"].get<int>(), heads[0], test.value(heads[0], 0.0), heads[1],
                      test.value(heads[1], 0.0));
        *line += buf;
      }
    }
  }
  if (!stream_line.empty()) *line += "\n  " + stream_line;
  // A multi-domain run names every domain on its own line; a cold split its cold and warm
  // items' users. Each domain is also read at the epoch its own validation metric peaks: the
  // checkpoint it is served from (DomainSelectionRules, best.json's "domains").
  json domains_best = json::object();
  for (const char* key : {"domains", "cold_start"}) {
    if (!b["test"].contains(key)) continue;
    const json& pops = result["popularity"];
    for (const auto& [name, d] : b["test"][key].items()) {
      const json pop = pops.contains(key) ? pops[key].value(name, json::object()) : json::object();
      std::snprintf(buf, sizeof(buf), "\n  %s: %s %.4f %s %.4f over %.0f users (popularity %.4f)",
                    name.c_str(), heads[0], d.value(heads[0], 0.0), heads[1],
                    d.value(heads[1], 0.0), d.value("users", 0.0), pop.value(heads[0], 0.0));
      *line += buf;
      // The engine's own choice (what best.json points at), not a recount of the epochs.
      int at = -1;
      if (std::string(key) == "domains" && w0.domain_best_epochs.count(name))
        for (size_t e = 0; e < epochs.size(); ++e)
          if (epochs[e]["epoch"] == w0.domain_best_epochs.at(name)) at = int(e);
      if (at >= 0) {
        json test = epochs[at]["test"]["domains"][name];
        domains_best[name] = {{"epoch", epochs[at]["epoch"]},
                              {"selected_by", std::string("valid ") + name + " " + heads[1]},
                              {"test", test}};
        if (at != best) {
          std::snprintf(buf, sizeof(buf), "; at its own best validation epoch %d: %s %.4f %s %.4f",
                        epochs[at]["epoch"].get<int>(), heads[0], test.value(heads[0], 0.0),
                        heads[1], test.value(heads[1], 0.0));
          *line += buf;
        }
        if (w0.domain_trained_until.count(name)) {
          const int until = w0.domain_trained_until.at(name);
          domains_best[name]["trained_until"] = until;
          std::snprintf(buf, sizeof(buf), "; trained until epoch %d", until);
          *line += buf;
        }
      }
      if (d.contains("HR@10_all")) {  // a cold split's targets among all items
        std::snprintf(buf, sizeof(buf), "; among all items HR@10 %.4f NDCG@10 %.4f",
                      d.value("HR@10_all", 0.0), d.value("NDCG@10_all", 0.0));
        *line += buf;
      }
    }
  }
  if (!domains_best.empty()) result["domains_at_own_best"] = domains_best;
  // Each task at the epoch its own validation metric peaks (the metric a run of that task alone
  // selects by: RMSE, AUC, accuracy): one selected epoch is rarely every task's best.
  json own_best = json::object();
  if (!full && b["test"].contains("tasks"))
    for (const auto& [name, t] : b["test"]["tasks"].items()) {
      const char* metric = t.contains("RMSE")       ? "RMSE"
                           : t.contains("macro_F1") ? "accuracy"
                                                    : "AUC";
      const double sign = t.contains("RMSE") ? -1 : 1;
      const int at = BestEpochBy(epochs, sign, [&](const json& v) -> const json* {
        if (!v.contains("tasks") || !v["tasks"].contains(name)) return nullptr;
        const json& task = v["tasks"][name];
        return task.contains(metric) ? &task[metric] : nullptr;
      });
      if (at < 0) continue;
      own_best[name] = {{"epoch", epochs[at]["epoch"]},
                        {"selected_by", std::string("valid ") + metric},
                        {"test", epochs[at]["test"]["tasks"][name]}};
    }
  if (!retrieval_best.empty()) own_best["retrieval"] = retrieval_best;
  if (!own_best.empty()) result["tasks_at_own_best"] = own_best;
  // Every other task on its own line, next to its baseline.
  const json& pop_test = result["popularity"];
  if (b["test"].contains("tasks"))
    for (const auto& [name, t] : b["test"]["tasks"].items()) {
      const json base = pop_test.contains("tasks") ? pop_test["tasks"].value(name, json::object())
                                                   : json::object();
      if (t.contains("RMSE")) {
        std::snprintf(buf, sizeof(buf),
                      "\n  task %s: RMSE %.4f MAE %.4f over %.0f ratings (mean rating: RMSE %.4f)",
                      name.c_str(), t.value("RMSE", 0.0), t.value("MAE", 0.0),
                      t.value("examples", 0.0), base.value("RMSE", 0.0));
        if (b.contains("wide_weights") && b["wide_weights"].contains(name) &&
            t.contains("RMSE_deep")) {
          *line += buf;
          std::snprintf(buf, sizeof(buf), "; the deep model alone %.4f, neighbourhood weighted %g",
                        t.value("RMSE_deep", 0.0), b["wide_weights"][name].value("weight", 0.0));
        }
      } else if (t.contains("macro_F1")) {
        const json lr = pop_test.contains("tasks")
                            ? pop_test["tasks"].value(name + "_logreg", json::object())
                            : json::object();
        std::snprintf(buf, sizeof(buf),
                      "\n  task %s: accuracy %.4f macro-F1 %.4f over %.0f users (majority "
                      "%.4f, logistic regression on items %.4f / %.4f)",
                      name.c_str(), t.value("accuracy", 0.0), t.value("macro_F1", 0.0),
                      t.value("examples", 0.0), base.value("accuracy", 0.0),
                      lr.value("accuracy", 0.0), lr.value("macro_F1", 0.0));
        if (b.contains("wide_weights") && b["wide_weights"].contains(name)) {
          *line += buf;
          std::snprintf(buf, sizeof(buf), "; wide part weighted %g",
                        b["wide_weights"][name].value("weight", 0.0));
        }
      } else {
        std::snprintf(buf, sizeof(buf),
                      "\n  task %s: AUC %.4f accuracy %.4f precision %.4f recall %.4f F1 %.4f "
                      "over %.0f pairs",
                      name.c_str(), t.value("AUC", 0.0), t.value("accuracy", 0.0),
                      t.value("precision", 0.0), t.value("recall", 0.0), t.value("F1", 0.0),
                      t.value("examples", 0.0));
        if (b.contains("wide_weights") && b["wide_weights"].contains(name) &&
            t.contains("AUC_deep")) {
          *line += buf;
          std::snprintf(buf, sizeof(buf),
                        "; the like head alone AUC %.4f, neighbourhood weighted %g",
                        t.value("AUC_deep", 0.0), b["wide_weights"][name].value("weight", 0.0));
        }
      }
      *line += buf;
      if (own_best.contains(name) && own_best[name]["epoch"] != b["epoch"]) {
        const json& o = own_best[name];
        const char* metric = t.contains("RMSE")       ? "RMSE"
                             : t.contains("macro_F1") ? "accuracy"
                                                      : "AUC";
        std::snprintf(buf, sizeof(buf), "; at its own best validation epoch %d: %s %.4f",
                      o["epoch"].get<int>(), metric, o["test"].value(metric, 0.0));
        *line += buf;
      }
    }
  return result;
}

}  // namespace m6rec
