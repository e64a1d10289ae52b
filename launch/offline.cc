#include "launch/offline.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/config.h"
#include "common/logging.h"
#include "common/util.h"
#include "launch/roles.h"
#include "worker/checkpoint.h"
#include "worker/local_tables.h"
#include "worker/model_plugin.h"
#include "worker/strategy.h"
#include "worker/training_engine.h"

namespace m6rec {

namespace {

using nlohmann::json;

// The checkpoint to serve: the one asked for, else the best epoch's (o.domain's own, where the
// run chose one for it), else the newest.
StatusOr<std::string> ChooseCheckpoint(const OfflineOptions& o) {
  if (!o.checkpoint.empty()) {
    M6_RETURN_IF_ERROR(ReadManifest(o.checkpoint).status());
    return o.checkpoint;
  }
  auto best = BestCheckpoint(o.run_dir, o.domain);
  if (best.ok() || best.status().code() != StatusCode::kNotFound) return best;
  auto latest = LatestCheckpoint(o.run_dir);
  if (!latest.ok())
    return Status::NotFound(
        "'" + o.run_dir +
        "' has no checkpoint to serve (did the run finish? with "
        "checkpoint.every_epochs: 0 and checkpoint.best: false a run keeps none)");
  return latest;
}

// `m6rec strategy` without --fit: the stored strategies, edited when asked.
Status EditStrategies(const OfflineOptions& o, json* answer) {
  auto book = ReadStrategyBook(o.run_dir);
  if (!book.ok() && book.status().code() == StatusCode::kNotFound)
    return Status::NotFound("'" + o.run_dir +
                            "' has no strategy.json yet (m6rec strategy --run-dir " + o.run_dir +
                            " --fit fits them on the trained model)");
  M6_RETURN_IF_ERROR(book.status());
  for (const auto& a : o.strategy_sets) M6_RETURN_IF_ERROR(SetStrategyField(&*book, a));
  if (!o.strategy_sets.empty()) M6_RETURN_IF_ERROR(WriteStrategyBook(o.run_dir, *book));
  *answer = book->ToJson();
  std::fprintf(stderr, "%s", DescribeStrategies(*book).c_str());
  return Status::OK();
}

// recommend --explain for people: one block per item, the strongest parts first.
std::string ExplanationTable(const json& answer) {
  std::ostringstream o;
  auto strongest = [](const json& weights) {
    std::vector<std::pair<double, std::string>> v;
    for (const auto& [name, w] : weights.items()) v.push_back({w.get<double>(), name});
    std::sort(v.rbegin(), v.rend());
    std::ostringstream s;
    for (size_t k = 0; k < v.size(); ++k)
      s << (k ? ", " : "") << v[k].second << " " << std::fixed << std::setprecision(2)
        << v[k].first;
    return s.str();
  };
  auto items = [](const json& list) {
    std::ostringstream s;
    for (size_t k = 0; k < list.size(); ++k) s << (k ? ", " : "") << list[k]["item"];
    return s.str();
  };
  for (const auto& it : answer.value("items", json::array())) {
    if (!it.contains("why")) continue;
    const json& w = it["why"];
    o << "item " << it["item"] << " (score " << std::fixed << std::setprecision(3)
      << it["score"].get<double>() << ")\n"
      << "  user sources:  " << strongest(w["user_sources"]) << "\n"
      << "  item sources:  " << strongest(w["item_sources"]) << "\n"
      << "  attended:      " << items(w["history_attention"]) << "\n"
      << "  neighbours:    " << items(w["graph_neighbours"]) << "\n"
      << "  shared tokens: " << w["shared_tokens"].dump() << "\n";
  }
  return o.str();
}

// A new user from --history/--profile/--friends or --user-json.
StatusOr<NewUser> NewUserFromOptions(const OfflineOptions& o) {
  if (!o.user_json.empty()) {
    std::ifstream file;
    if (o.user_json != "-") {
      file.open(o.user_json);
      if (!file) return Status::NotFound("--user-json: cannot open '" + o.user_json + "'");
    }
    std::istream& in = o.user_json == "-" ? std::cin : file;
    json j = json::parse(in, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded())
      return Status::InvalidArgument("--user-json " + o.user_json + ": not JSON");
    auto n = ParseNewUser(j);
    if (!n.ok())
      return Status::InvalidArgument("--user-json " + o.user_json + ": " + n.status().message());
    return n;
  }
  NewUser n;
  auto ids = [](const std::string& flag, const std::string& list, std::vector<int64_t>* out) {
    std::stringstream ss(list);
    for (std::string x; std::getline(ss, x, ',');) {
      char* end = nullptr;
      const long long v = std::strtoll(x.c_str(), &end, 10);
      if (x.empty() || *end != '\0' || v < 0)
        return Status::InvalidArgument(flag + ": '" + x + "' is not an id");
      out->push_back(v);
    }
    return Status::OK();
  };
  M6_RETURN_IF_ERROR(ids("--history", o.history, &n.history));
  M6_RETURN_IF_ERROR(ids("--friends", o.friends, &n.friends));
  std::stringstream ss(o.profile);
  for (std::string kv; std::getline(ss, kv, ',');) {
    const size_t eq = kv.find('=');
    if (eq == std::string::npos || eq == 0)
      return Status::InvalidArgument("--profile: '" + kv + "' is not NAME=VALUE");
    n.profile[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  if (n.history.empty() && n.profile.empty() && n.friends.empty())
    return Status::InvalidArgument(
        "recommend: --user, or a new user's --history/--profile/--friends/--user-json");
  return n;
}

// `m6rec export`: a table's rows as text vectors ("%.9g": every float reads back exactly).
Status ExportTable(const OfflineOptions& o, const JobConfig& cfg, SparseTables& tables,
                   const Dataset& ds, json* answer) {
  const TableSpec* spec = nullptr;
  for (const TableSpec& t : cfg.tables)
    if (t.name == o.table) spec = &t;
  if (!spec) return Status::InvalidArgument("--table: the run has no table '" + o.table + "'");
  uint64_t rows = 0;
  if (o.table == cfg.model.token_table)
    rows = ds.num_tokens;
  else if (o.table == cfg.train.user_table)
    rows = ds.num_users;
  else if (o.table == cfg.train.item_table)
    rows = ds.num_items;
  else
    return Status::InvalidArgument("--table: the rows of '" + o.table +
                                   "' are not the data's users, items or tokens");
  const bool words = o.format == "words";
  if (words && o.table != cfg.model.token_table)
    return Status::InvalidArgument("--format words: only the token table's rows have names");
  std::vector<uint64_t> ids;
  for (uint64_t id = 0; id < rows; ++id)
    if (!words || (id < ds.token_names.size() && !ds.token_names[id].empty())) ids.push_back(id);
  if (ids.empty())
    return Status::InvalidArgument("--format words: this run's data names none of its tokens");
  std::string text;
  if (words) text = std::to_string(ids.size()) + " " + std::to_string(spec->dim) + "\n";
  constexpr size_t kChunk = 8192;
  std::vector<Key> keys;
  std::vector<float> vals;
  char buf[32];
  for (size_t b = 0; b < ids.size(); b += kChunk) {
    const size_t n = std::min(kChunk, ids.size() - b);
    keys.resize(n);
    vals.resize(n * spec->dim);
    for (size_t i = 0; i < n; ++i) keys[i] = MakeKey(spec->id, ids[b + i]);
    M6_RETURN_IF_ERROR(tables.Pull(spec->id, keys.data(), n, vals.data()));
    for (size_t i = 0; i < n; ++i) {
      text += words ? ds.token_names[ids[b + i]] : std::to_string(ids[b + i]);
      for (uint32_t d = 0; d < spec->dim; ++d) {
        std::snprintf(buf, sizeof(buf), " %.9g", vals[i * spec->dim + d]);
        text += buf;
      }
      text += "\n";
    }
  }
  M6_RETURN_IF_ERROR(WriteFileAtomic(o.out, text));
  *answer = {{"table", o.table},
             {"rows", ids.size()},
             {"dim", spec->dim},
             {"format", o.format},
             {"out", o.out}};
  return Status::OK();
}

}  // namespace

const json* EpochCalibration(const json& result, const json& manifest) {
  if (manifest.value("next_step", int64_t{-1}) != 0 || !manifest.contains("epoch") ||
      !result.contains("epochs") || !result["epochs"].is_array())
    return nullptr;
  const int epoch = manifest["epoch"].get<int>();
  for (const json& e : result["epochs"])
    if (e.value("epoch", -1) == epoch && e.contains("calibration")) return &e["calibration"];
  return nullptr;
}

StatusOr<std::unique_ptr<OpenedRun>> OpenRun(const std::string& run_dir,
                                             const std::string& checkpoint,
                                             const std::vector<std::string>& overrides,
                                             bool with_strategy, const std::string& domain,
                                             std::shared_ptr<const Dataset> data) {
  const std::string cfg_path = run_dir + "/config.yaml";
  if (!std::filesystem::exists(cfg_path))
    return Status::NotFound("'" + run_dir + "' is not a run directory (no config.yaml)");
  auto run = std::make_unique<OpenedRun>();
  M6_ASSIGN_OR_RETURN(run->cfg, LoadConfig(cfg_path, overrides));
  OfflineOptions which;
  which.run_dir = run_dir;
  which.checkpoint = checkpoint;
  which.domain = domain;
  M6_ASSIGN_OR_RETURN(run->checkpoint, ChooseCheckpoint(which));
  M6_ASSIGN_OR_RETURN(json manifest, ReadManifest(run->checkpoint));
  const JobConfig& cfg = run->cfg;
  LocalStoresOptions lo;
  lo.tables = cfg.tables;
  lo.ps = cfg.ps;
  const int servers = manifest.value("servers", cfg.cluster.servers);
  for (int s = 0; s < servers; ++s)
    lo.shard_dirs.push_back(run->checkpoint + "/server-" + std::to_string(s));
  if (cfg.ps.store == PsConfig::Store::kRocksDB)
    lo.read_only = true;  // the checkpoint stays as it is
  else
    lo.restore_from = run->checkpoint;
  M6_ASSIGN_OR_RETURN(run->stores, LocalStores::Open(lo));
  run->tables = MakeLocalTables(run->stores);
  ScoringContext& sc = run->sc;
  sc.cfg = &run->cfg;
  sc.tables = run->tables.get();
  if (!data) {
    M6_ASSIGN_OR_RETURN(std::string data_dir, PrepareData(cfg, run_dir));
    M6_ASSIGN_OR_RETURN(data, LoadJobData(cfg, data_dir));
  }
  run->base_data = data;
  sc.data = std::move(data);
  // A stream job's checkpoint: the users' histories as the stream had grown them.
  M6_ASSIGN_OR_RETURN(std::vector<StreamEvent> streamed, ReadStreamEvents(run->checkpoint));
  if (!streamed.empty()) {
    auto grown = std::make_shared<Dataset>(*sc.data);
    AppendInteractions(grown.get(), streamed.data(), streamed.size());
    sc.data = std::move(grown);
  }
  sc.checkpoint = run->checkpoint;
  sc.num_workers = manifest.value("workers", 1u);
  if (with_strategy && std::filesystem::exists(StrategyPath(run_dir))) {
    M6_ASSIGN_OR_RETURN(run->strategies, ReadStrategyBook(run_dir));
    sc.strategy = &run->strategies;
  }
  // The popularity calibration the job chose on validation (worker/evaluator.h) for the
  // checkpoint's epoch, served as that epoch's evaluation ranked: result.json's entry for the
  // epoch the checkpoint ends. A checkpoint taken within an epoch, or of an epoch the result
  // does not list (a job still running), has none and is served on its raw scores.
  const std::string result_path = run_dir + "/result.json";
  if (cfg.train.popularity_calibration && std::filesystem::exists(result_path)) {
    std::ifstream in(result_path);
    const json result = json::parse(in, nullptr, /*allow_exceptions=*/false);
    if (result.is_discarded()) return Status::InvalidArgument(result_path + ": not valid JSON");
    if (const json* chosen = EpochCalibration(result, manifest)) {
      auto cal = Calibration::FromJson(*sc.data, *chosen);
      if (!cal.ok()) return Status::InvalidArgument(result_path + ": " + cal.status().message());
      run->calibration = std::move(*cal);
      if (!run->calibration.empty()) sc.calibration = &run->calibration;
    }
  }
  return run;
}

namespace {

Status Offline(const OfflineOptions& o, json* answer) {
  if (o.mode == "strategy" && !o.fit) return EditStrategies(o, answer);
  M6_ASSIGN_OR_RETURN(auto run, OpenRun(o.run_dir, o.checkpoint, o.overrides,
                                        o.mode == "recommend" && o.use_strategy,
                                        o.mode == "recommend" ? o.domain : ""));
  const JobConfig& cfg = run->cfg;
  const std::string& ckpt = run->checkpoint;
  ScoringContext& sc = run->sc;
  if (o.mode == "export") return ExportTable(o, cfg, *run->tables, *sc.data, answer);
  StrategyBook& book = run->strategies;
  sc.explain = o.explain;
  if (o.mode == "recommend" && !o.new_items.empty()) {
    std::ifstream file(o.new_items);
    if (!file) return Status::NotFound("--new-items: cannot open '" + o.new_items + "'");
    json j = json::parse(file, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded())
      return Status::InvalidArgument("--new-items " + o.new_items + ": not JSON");
    Status added = AddNewItems(&sc, j);
    if (!added.ok())
      return Status::InvalidArgument("--new-items " + o.new_items + ": " + added.message());
  }
  if (o.mode == "recommend" && o.user < 0) {
    M6_ASSIGN_OR_RETURN(NewUser n, NewUserFromOptions(o));
    M6_ASSIGN_OR_RETURN(*answer, RecommendForNewUser(sc, n, o.k, o.domain));
  } else if (o.mode == "recommend") {
    M6_ASSIGN_OR_RETURN(*answer, RecommendForUser(sc, o.user, o.k, o.domain));
  } else if (o.mode == "strategy") {
    M6_ASSIGN_OR_RETURN(auto model, LoadScoringModel(sc));
    std::vector<uint32_t> users;
    for (uint32_t u = 0; u < sc.data->num_users; ++u)
      if (!sc.data->train[u].empty()) users.push_back(u);
    M6_RETURN_IF_ERROR(FitStrategies(*sc.data, cfg, *model, users, &book, sc.calibration));
    book.report["checkpoint"] = ckpt;
    for (const auto& a : o.strategy_sets) M6_RETURN_IF_ERROR(SetStrategyField(&book, a));
    M6_RETURN_IF_ERROR(WriteStrategyBook(o.run_dir, book));
    *answer = book.ToJson();
    std::fprintf(stderr, "%s", DescribeStrategies(book).c_str());
  } else {
    M6_ASSIGN_OR_RETURN(*answer, EvaluateModel(sc));
  }
  if (!sc.new_items.empty()) {
    (*answer)["new_items"] = sc.new_items.size();
    if (cfg.model.item_id_dropout == 0)
      (*answer)["warning"] =
          "the run was not trained for cold start (model.item_id_dropout 0): new items are "
          "scored with an untrained id row";
  }
  return Status::OK();
}

}  // namespace

int RunOffline(const OfflineOptions& o) {
  json answer;
  Status s = Offline(o, &answer);
  if (!s.ok()) {
    std::fprintf(stderr, "m6rec %s: %s\n", o.mode.c_str(), s.message().c_str());
    return 1;
  }
  if (o.mode == "eval") {
    Status w = WriteFileAtomic(o.run_dir + "/eval.json", answer.dump(2) + "\n");
    if (!w.ok()) LOG_WARN << w.message();
  }
  if (o.mode == "recommend" && o.explain)
    std::fprintf(stderr, "%s", ExplanationTable(answer).c_str());
  std::printf("%s\n", answer.dump().c_str());
  return 0;
}

}  // namespace m6rec
