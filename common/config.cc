#include "common/config.h"

#include <yaml-cpp/yaml.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <type_traits>

#include "common/util.h"

namespace m6rec {

const char* OptimizerName(OptimizerSpec::Kind k) {
  switch (k) {
    case OptimizerSpec::Kind::kSgd:
      return "sgd";
    case OptimizerSpec::Kind::kAdagrad:
      return "adagrad";
    case OptimizerSpec::Kind::kAdam:
      return "adam";
  }
  return "?";
}

const TableSpec* JobConfig::FindTable(const std::string& n) const {
  for (const auto& t : tables)
    if (t.name == n) return &t;
  return nullptr;
}

namespace {

// Reads typed fields out of YAML maps; every error names source, line and field path.
class Reader {
 public:
  explicit Reader(std::string source) : source_(std::move(source)) {}

  std::string Where(const YAML::Node& n, const std::string& path) const {
    std::ostringstream os;
    os << source_;
    if (n && n.Mark().line >= 0) os << ":" << n.Mark().line + 1;
    os << ": " << path;
    return os.str();
  }

  Status CheckMap(const YAML::Node& n, const std::string& path,
                  std::initializer_list<const char*> allowed) const {
    if (!n || n.IsNull()) return Status::OK();
    if (!n.IsMap()) return Status::InvalidArgument(Where(n, path) + ": expected a map");
    std::set<std::string> ok(allowed.begin(), allowed.end());
    for (const auto& kv : n) {
      std::string k = kv.first.as<std::string>();
      if (!ok.count(k)) {
        std::string names;
        for (const auto& a : allowed) names += std::string(names.empty() ? "" : ", ") + a;
        return Status::InvalidArgument(Where(kv.first, path.empty() ? k : path + "." + k) +
                                       ": unknown field (known: " + names + ")");
      }
    }
    return Status::OK();
  }

  template <typename T>
  Status Get(const YAML::Node& parent, const std::string& path, const char* key, T* out,
             const char* type_name) const {
    if (!parent || !parent.IsMap()) return Status::OK();
    YAML::Node n = parent[key];
    std::string p = path.empty() ? key : path + "." + key;
    if (!n) return Status::OK();
    if (!n.IsScalar()) return Status::InvalidArgument(Where(n, p) + ": expected " + type_name);
    try {
      *out = n.as<T>();
    } catch (const YAML::Exception&) {
      return Status::InvalidArgument(Where(n, p) + ": expected " + type_name + ", got '" +
                                     n.Scalar() + "'");
    }
    return Status::OK();
  }
  Status Int(const YAML::Node& p, const std::string& path, const char* k, int* out) const {
    return Get(p, path, k, out, "an integer");
  }
  Status U64(const YAML::Node& p, const std::string& path, const char* k, uint64_t* out) const {
    return Get(p, path, k, out, "a non-negative integer");
  }
  Status U32(const YAML::Node& p, const std::string& path, const char* k, uint32_t* out) const {
    return Get(p, path, k, out, "a non-negative integer");
  }
  Status Float(const YAML::Node& p, const std::string& path, const char* k, float* out) const {
    return Get(p, path, k, out, "a number");
  }
  Status Str(const YAML::Node& p, const std::string& path, const char* k, std::string* out) const {
    return Get(p, path, k, out, "a string");
  }
  // Reads a number and checks it lies in [lo, hi] (the field's line named on either failure).
  template <typename T>
  Status NumberIn(const YAML::Node& p, const std::string& path, const char* k, T* out, double lo,
                  double hi) const {
    M6_RETURN_IF_ERROR(
        Get(p, path, k, out, std::is_integral<T>::value ? "an integer" : "a number"));
    return Range(p, path, k, static_cast<double>(*out), lo, hi);
  }
  Status Bool(const YAML::Node& p, const std::string& path, const char* k, bool* out) const {
    return Get(p, path, k, out, "true or false");
  }
  // Reads an enumerated field (absent: *out keeps its default); an unknown spelling is an
  // error naming the field, its line and the allowed values.
  template <typename E>
  Status Enum(const YAML::Node& p, const std::string& path, const char* k, E* out) const {
    std::string v = EnumName(*out);
    M6_RETURN_IF_ERROR(Str(p, path, k, &v));
    if (ParseEnum(v, out)) return Status::OK();
    return Status::InvalidArgument(Where(p ? p[k] : p, path + "." + k) + ": unknown value '" + v +
                                   "' (" + EnumChoices<E>() + ")");
  }

  Status Range(const YAML::Node& parent, const std::string& path, const char* key, double v,
               double lo, double hi) const {
    if (v < lo || v > hi) {
      std::ostringstream os;
      os << Where(parent ? parent[key] : parent, path.empty() ? key : path + "." + key) << ": " << v
         << " is out of range [" << lo << ", " << hi << "]";
      return Status::InvalidArgument(os.str());
    }
    return Status::OK();
  }

 private:
  std::string source_;
};

// Expands ${NAME} and ${NAME:-default} from the environment.
std::string ExpandEnv(const std::string& in) {
  std::string out;
  for (size_t i = 0; i < in.size();) {
    size_t open = in.find("${", i);
    if (open == std::string::npos) {
      out += in.substr(i);
      break;
    }
    size_t close = in.find('}', open);
    if (close == std::string::npos) {
      out += in.substr(i);
      break;
    }
    out += in.substr(i, open - i);
    std::string var = in.substr(open + 2, close - open - 2), def;
    size_t dash = var.find(":-");
    if (dash != std::string::npos) {
      def = var.substr(dash + 2);
      var = var.substr(0, dash);
    }
    const char* v = std::getenv(var.c_str());
    out += (v && *v) ? std::string(v) : def;
    i = close + 1;
  }
  return out;
}

Status ApplyOverride(YAML::Node root, const std::string& ov) {
  size_t eq = ov.find('=');
  if (eq == std::string::npos || eq == 0)
    return Status::InvalidArgument("override '" + ov + "': expected path=value");
  std::string path = ov.substr(0, eq), value = ov.substr(eq + 1);
  std::vector<std::string> parts;
  std::stringstream ss(path);
  for (std::string p; std::getline(ss, p, '.');) parts.push_back(p);
  YAML::Node cur = root;
  for (size_t i = 0; i < parts.size(); ++i) {
    const std::string& part = parts[i];
    bool last = i + 1 == parts.size();
    YAML::Node next;
    if (cur.IsSequence()) {
      char* end = nullptr;
      unsigned long idx = std::strtoul(part.c_str(), &end, 10);
      if (*end != '\0' || idx >= cur.size())
        return Status::InvalidArgument("override '" + ov + "': '" + part +
                                       "' is not an index of the list");
      if (last) {
        cur[idx] = YAML::Load(value);
        return Status::OK();
      }
      next = cur[idx];
    } else {
      if (cur.IsScalar())
        return Status::InvalidArgument("override '" + ov + "': cannot descend into a scalar at '" +
                                       part + "'");
      if (last) {
        cur[part] = YAML::Load(value);
        return Status::OK();
      }
      if (!cur[part]) cur[part] = YAML::Node(YAML::NodeType::Map);
      next = cur[part];
    }
    cur.reset(next);
  }
  return Status::OK();
}

StatusOr<YAML::Node> LoadTree(const std::string& text, const std::string& source,
                              const std::vector<std::string>& overrides) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::ParserException& e) {
    return Status::InvalidArgument(source + ":" + std::to_string(e.mark.line + 1) +
                                   ": YAML syntax error: " + e.msg);
  }
  if (root.IsNull()) root = YAML::Node(YAML::NodeType::Map);
  if (!root.IsMap()) return Status::InvalidArgument(source + ": top level must be a map");
  for (const auto& ov : overrides) M6_RETURN_IF_ERROR(ApplyOverride(root, ov));
  return root;
}

Status ParseInit(const Reader& r, const YAML::Node& n, const std::string& path,
                 InitializerSpec* out) {
  if (!n || n.IsNull()) return Status::OK();
  M6_RETURN_IF_ERROR(r.CheckMap(n, path, {"type", "value", "low", "high", "mean", "std", "from"}));
  std::string type = "normal";
  M6_RETURN_IF_ERROR(r.Str(n, path, "type", &type));
  if (type == "zeros")
    out->kind = InitializerSpec::Kind::kZeros;
  else if (type == "constant")
    out->kind = InitializerSpec::Kind::kConstant;
  else if (type == "uniform")
    out->kind = InitializerSpec::Kind::kUniform;
  else if (type == "normal")
    out->kind = InitializerSpec::Kind::kNormal;
  else
    return Status::InvalidArgument(r.Where(n["type"], path + ".type") + ": unknown initializer '" +
                                   type + "' (zeros, constant, uniform, normal)");
  M6_RETURN_IF_ERROR(r.Float(n, path, "value", &out->value));
  M6_RETURN_IF_ERROR(r.Float(n, path, "low", &out->low));
  M6_RETURN_IF_ERROR(r.Float(n, path, "high", &out->high));
  M6_RETURN_IF_ERROR(r.Float(n, path, "mean", &out->mean));
  M6_RETURN_IF_ERROR(r.Float(n, path, "std", &out->stddev));
  M6_RETURN_IF_ERROR(r.Str(n, path, "from", &out->from));
  out->from = ExpandEnv(out->from);
  if (out->kind == InitializerSpec::Kind::kUniform && !(out->low < out->high))
    return Status::InvalidArgument(r.Where(n, path) + ": uniform needs low < high");
  if (out->kind == InitializerSpec::Kind::kNormal)
    M6_RETURN_IF_ERROR(r.Range(n, path, "std", out->stddev, 0, 1e6));
  return Status::OK();
}

Status ParseOptimizer(const Reader& r, const YAML::Node& n, const std::string& path,
                      OptimizerSpec* out) {
  if (!n) return Status::OK();
  M6_RETURN_IF_ERROR(r.CheckMap(
      n, path, {"type", "lr", "weight_decay", "eps", "beta1", "beta2", "initial_accumulator"}));
  std::string type = OptimizerName(out->kind);
  M6_RETURN_IF_ERROR(r.Str(n, path, "type", &type));
  if (type == "sgd")
    out->kind = OptimizerSpec::Kind::kSgd;
  else if (type == "adagrad")
    out->kind = OptimizerSpec::Kind::kAdagrad;
  else if (type == "adam")
    out->kind = OptimizerSpec::Kind::kAdam;
  else
    return Status::InvalidArgument(r.Where(n["type"], path + ".type") + ": unknown optimizer '" +
                                   type + "' (sgd, adagrad, adam)");
  M6_RETURN_IF_ERROR(r.Float(n, path, "lr", &out->lr));
  M6_RETURN_IF_ERROR(r.Float(n, path, "weight_decay", &out->weight_decay));
  M6_RETURN_IF_ERROR(r.Float(n, path, "eps", &out->eps));
  M6_RETURN_IF_ERROR(r.Float(n, path, "beta1", &out->beta1));
  M6_RETURN_IF_ERROR(r.Float(n, path, "beta2", &out->beta2));
  M6_RETURN_IF_ERROR(r.Float(n, path, "initial_accumulator", &out->initial_accumulator));
  M6_RETURN_IF_ERROR(r.Range(n, path, "lr", out->lr, 0, 1e6));
  M6_RETURN_IF_ERROR(r.Range(n, path, "weight_decay", out->weight_decay, 0, 1e6));
  M6_RETURN_IF_ERROR(r.Range(n, path, "beta1", out->beta1, 0, 0.999999));
  M6_RETURN_IF_ERROR(r.Range(n, path, "beta2", out->beta2, 0, 0.999999));
  M6_RETURN_IF_ERROR(r.Range(n, path, "eps", out->eps, 0, 1));
  return Status::OK();
}

Status ParseModel(const Reader& r, const YAML::Node& m, JobConfig* cfg) {
  ModelConfig& mc = cfg->model;
  const std::string p = "model";
  M6_RETURN_IF_ERROR(r.CheckMap(m, p,
                                {"user_id",
                                 "sequence",
                                 "rnn",
                                 "seq_blocks",
                                 "seq_len",
                                 "attention",
                                 "content",
                                 "content_tokens",
                                 "graph",
                                 "social",
                                 "fanout",
                                 "item_graph",
                                 "item_fanout",
                                 "eval_fanout",
                                 "graph_weighting",
                                 "item_id",
                                 "text",
                                 "image",
                                 "audio",
                                 "fusion",
                                 "hidden",
                                 "dropout",
                                 "dense_lr",
                                 "dense_weight_decay",
                                 "token_table",
                                 "device",
                                 "adapter_rank",
                                 "item_id_dropout",
                                 "feature_pca",
                                 "wide_table",
                                 "rating_messages",
                                 "tower_adapters",
                                 "attribute_rows",
                                 "rating_neighbours"}));
  for (auto [k, v] : {std::pair{"user_id", &mc.user_id},
                      {"sequence", &mc.sequence},
                      {"attention", &mc.attention},
                      {"content", &mc.content},
                      {"graph", &mc.graph},
                      {"social", &mc.social},
                      {"item_graph", &mc.item_graph},
                      {"rating_messages", &mc.rating_messages},
                      {"attribute_rows", &mc.attribute_rows},
                      {"item_id", &mc.item_id},
                      {"text", &mc.text},
                      {"image", &mc.image},
                      {"audio", &mc.audio},
                      {"tower_adapters", &mc.tower_adapters}})
    M6_RETURN_IF_ERROR(r.Bool(m, p, k, v));
  M6_RETURN_IF_ERROR(r.Enum(m, p, "rnn", &mc.rnn));
  M6_RETURN_IF_ERROR(r.Enum(m, p, "fusion", &mc.fusion));
  M6_RETURN_IF_ERROR(r.Enum(m, p, "graph_weighting", &mc.graph_weighting));
  M6_RETURN_IF_ERROR(r.Enum(m, p, "device", &mc.device));
  M6_RETURN_IF_ERROR(r.Str(m, p, "token_table", &mc.token_table));
  M6_RETURN_IF_ERROR(r.Str(m, p, "wide_table", &mc.wide_table));
  M6_RETURN_IF_ERROR(r.NumberIn(m, p, "seq_len", &mc.seq_len, 1, 10000));
  M6_RETURN_IF_ERROR(r.NumberIn(m, p, "seq_blocks", &mc.seq_blocks, 1, 16));
  M6_RETURN_IF_ERROR(r.NumberIn(m, p, "content_tokens", &mc.content_tokens, 1, 10000));
  M6_RETURN_IF_ERROR(r.NumberIn(m, p, "fanout", &mc.fanout, 1, 10000));
  M6_RETURN_IF_ERROR(r.NumberIn(m, p, "item_fanout", &mc.item_fanout, 1, 10000));
  M6_RETURN_IF_ERROR(r.NumberIn(m, p, "eval_fanout", &mc.eval_fanout, 0, 10000));
  M6_RETURN_IF_ERROR(r.NumberIn(m, p, "rating_neighbours", &mc.rating_neighbours, 0, 100000));
  M6_RETURN_IF_ERROR(r.NumberIn(m, p, "hidden", &mc.hidden, 1, 1 << 16));
  M6_RETURN_IF_ERROR(r.NumberIn(m, p, "dropout", &mc.dropout, 0, 0.95));
  M6_RETURN_IF_ERROR(r.NumberIn(m, p, "dense_lr", &mc.dense_lr, 0, 10));
  M6_RETURN_IF_ERROR(r.NumberIn(m, p, "dense_weight_decay", &mc.dense_weight_decay, 0, 10));
  M6_RETURN_IF_ERROR(r.NumberIn(m, p, "adapter_rank", &mc.adapter_rank, 0, 1024));
  M6_RETURN_IF_ERROR(r.NumberIn(m, p, "item_id_dropout", &mc.item_id_dropout, 0, 1));
  M6_RETURN_IF_ERROR(r.NumberIn(m, p, "feature_pca", &mc.feature_pca, 0, 1 << 16));
  if (mc.item_id_dropout > 0 && !mc.text && !mc.image && !mc.audio)
    return Status::InvalidArgument(r.Where(m["item_id_dropout"], "model.item_id_dropout") +
                                   ": an item without its id row needs content (text, image or "
                                   "audio)");
  if (!mc.user_id && !mc.sequence && !mc.content && !mc.graph)
    return Status::InvalidArgument(
        r.Where(m, p) + ": every user-tower part is off (user_id, sequence, content, graph)");
  if (!mc.item_id && !mc.text && !mc.image && !mc.audio)
    return Status::InvalidArgument(r.Where(m, p) +
                                   ": every item-tower part is off (item_id, text, image, audio)");
  return Status::OK();
}

Status ParseCluster(const Reader& r, const YAML::Node& root, JobConfig* cfg) {
  YAML::Node c = root["cluster"];
  ClusterConfig& cl = cfg->cluster;
  M6_RETURN_IF_ERROR(
      r.CheckMap(c, "cluster",
                 {"servers", "workers", "host", "scheduler_port", "http_port",
                  "heartbeat_interval_ms", "heartbeat_timeout_ms", "connect_timeout_ms",
                  "request_timeout_ms", "placement", "interface"}));
  M6_RETURN_IF_ERROR(r.Enum(c, "cluster", "placement", &cl.placement));
  M6_RETURN_IF_ERROR(r.Str(c, "cluster", "interface", &cl.interface));
  M6_RETURN_IF_ERROR(r.Int(c, "cluster", "servers", &cl.servers));
  M6_RETURN_IF_ERROR(r.Int(c, "cluster", "workers", &cl.workers));
  M6_RETURN_IF_ERROR(r.Str(c, "cluster", "host", &cl.host));
  M6_RETURN_IF_ERROR(r.Int(c, "cluster", "scheduler_port", &cl.scheduler_port));
  M6_RETURN_IF_ERROR(r.Int(c, "cluster", "http_port", &cl.http_port));
  M6_RETURN_IF_ERROR(r.Int(c, "cluster", "heartbeat_interval_ms", &cl.heartbeat_interval_ms));
  M6_RETURN_IF_ERROR(r.Int(c, "cluster", "heartbeat_timeout_ms", &cl.heartbeat_timeout_ms));
  M6_RETURN_IF_ERROR(r.Int(c, "cluster", "connect_timeout_ms", &cl.connect_timeout_ms));
  M6_RETURN_IF_ERROR(r.Int(c, "cluster", "request_timeout_ms", &cl.request_timeout_ms));
  M6_RETURN_IF_ERROR(r.Range(c, "cluster", "servers", cl.servers, 1, 4096));
  M6_RETURN_IF_ERROR(r.Range(c, "cluster", "workers", cl.workers, 1, 65536));
  M6_RETURN_IF_ERROR(r.Range(c, "cluster", "scheduler_port", cl.scheduler_port, 0, 65535));
  M6_RETURN_IF_ERROR(r.Range(c, "cluster", "http_port", cl.http_port, -1, 65535));
  M6_RETURN_IF_ERROR(
      r.Range(c, "cluster", "heartbeat_interval_ms", cl.heartbeat_interval_ms, 10, 3600000));
  M6_RETURN_IF_ERROR(r.Range(c, "cluster", "heartbeat_timeout_ms", cl.heartbeat_timeout_ms,
                             2.0 * cl.heartbeat_interval_ms, 86400000));
  M6_RETURN_IF_ERROR(
      r.Range(c, "cluster", "connect_timeout_ms", cl.connect_timeout_ms, 1, 86400000));
  M6_RETURN_IF_ERROR(
      r.Range(c, "cluster", "request_timeout_ms", cl.request_timeout_ms, 1, 86400000));

  return Status::OK();
}

Status ParsePs(const Reader& r, const YAML::Node& root, JobConfig* cfg) {
  const ClusterConfig& cl = cfg->cluster;
  YAML::Node p = root["ps"];
  PsConfig& ps = cfg->ps;
  M6_RETURN_IF_ERROR(r.CheckMap(p, "ps",
                                {"store", "durability", "hot_rows", "num_slots", "threads",
                                 "max_message_bytes", "max_keys_per_request"}));
  std::string store = ps.store == PsConfig::Store::kMemory ? "memory" : "rocksdb";
  M6_RETURN_IF_ERROR(r.Str(p, "ps", "store", &store));
  if (store == "memory")
    ps.store = PsConfig::Store::kMemory;
  else if (store == "rocksdb")
    ps.store = PsConfig::Store::kRocksDB;
  else
    return Status::InvalidArgument(r.Where(p["store"], "ps.store") + ": unknown store '" + store +
                                   "' (memory, rocksdb)");
  std::string dur = "wal";
  M6_RETURN_IF_ERROR(r.Str(p, "ps", "durability", &dur));
  if (dur == "none")
    ps.durability = PsConfig::Durability::kNone;
  else if (dur == "wal")
    ps.durability = PsConfig::Durability::kWal;
  else if (dur == "fsync")
    ps.durability = PsConfig::Durability::kFsync;
  else
    return Status::InvalidArgument(r.Where(p["durability"], "ps.durability") +
                                   ": unknown durability '" + dur + "' (none, wal, fsync)");
  M6_RETURN_IF_ERROR(r.U64(p, "ps", "hot_rows", &ps.hot_rows));
  M6_RETURN_IF_ERROR(r.U32(p, "ps", "num_slots", &ps.num_slots));
  M6_RETURN_IF_ERROR(r.Int(p, "ps", "threads", &ps.threads));
  M6_RETURN_IF_ERROR(r.U64(p, "ps", "max_message_bytes", &ps.max_message_bytes));
  M6_RETURN_IF_ERROR(r.U64(p, "ps", "max_keys_per_request", &ps.max_keys_per_request));
  M6_RETURN_IF_ERROR(r.Range(p, "ps", "num_slots", ps.num_slots, 1, 1 << 24));
  M6_RETURN_IF_ERROR(r.Range(p, "ps", "threads", ps.threads, 1, 256));
  M6_RETURN_IF_ERROR(r.Range(p, "ps", "max_message_bytes", ps.max_message_bytes, 1024, 1ull << 40));
  if (ps.num_slots < static_cast<uint32_t>(cl.servers))
    return Status::InvalidArgument(r.Where(p["num_slots"], "ps.num_slots") +
                                   ": fewer slots than servers");

  return Status::OK();
}

Status ParseTables(const Reader& r, const YAML::Node& root, JobConfig* cfg) {
  YAML::Node tables = root["tables"];
  if (tables && !tables.IsSequence())
    return Status::InvalidArgument(r.Where(tables, "tables") + ": expected a list");
  std::set<std::string> names;
  if (tables) {
    if (tables.size() > kMaxTables)
      return Status::InvalidArgument(r.Where(tables, "tables") + ": at most 256 tables");
    for (size_t i = 0; i < tables.size(); ++i) {
      YAML::Node t = tables[i];
      std::string path = "tables[" + std::to_string(i) + "]";
      M6_RETURN_IF_ERROR(r.CheckMap(t, path,
                                    {"name", "dim", "seed", "init", "optimizer", "trainable",
                                     "admit_after", "ttl_s", "max_rows"}));
      TableSpec spec;
      spec.id = static_cast<TableId>(i);
      M6_RETURN_IF_ERROR(r.Str(t, path, "name", &spec.name));
      if (spec.name.empty())
        return Status::InvalidArgument(r.Where(t, path + ".name") + ": every table needs a name");
      if (!names.insert(spec.name).second)
        return Status::InvalidArgument(r.Where(t["name"], path + ".name") + ": duplicate table '" +
                                       spec.name + "'");
      M6_RETURN_IF_ERROR(r.U32(t, path, "dim", &spec.dim));
      if (!t["dim"]) return Status::InvalidArgument(r.Where(t, path + ".dim") + ": required");
      M6_RETURN_IF_ERROR(r.Range(t, path, "dim", spec.dim, 1, 65536));
      spec.seed = Mix64(cfg->seed ^ HashId(spec.name));
      M6_RETURN_IF_ERROR(r.U64(t, path, "seed", &spec.seed));
      M6_RETURN_IF_ERROR(ParseInit(r, t["init"], path + ".init", &spec.init));
      M6_RETURN_IF_ERROR(ParseOptimizer(r, t["optimizer"], path + ".optimizer", &spec.optimizer));
      M6_RETURN_IF_ERROR(r.Bool(t, path, "trainable", &spec.trainable));
      M6_RETURN_IF_ERROR(r.NumberIn(t, path, "admit_after", &spec.admit_after, 1, 1 << 16));
      M6_RETURN_IF_ERROR(r.NumberIn(t, path, "ttl_s", &spec.ttl_s, 0, 1e9));
      M6_RETURN_IF_ERROR(r.U64(t, path, "max_rows", &spec.max_rows));
      cfg->tables.push_back(spec);
    }
  }

  return Status::OK();
}

// A MovieLens split's name ("" = none).
Status CheckSplit(const Reader& r, const YAML::Node& n, const std::string& field,
                  const std::string& split) {
  static const std::set<std::string> kSplits = {"u1", "u2", "u3", "u4", "u5", "ua", "ub", "90/10"};
  if (split.empty() || kSplits.count(split)) return Status::OK();
  return Status::InvalidArgument(r.Where(n, field) + ": '" + split +
                                 "' (a MovieLens split: ML-100K's u1..u5, ua, ub, or ML-1M's "
                                 "90/10)");
}

// data.domains: a list of {label, path, format, name, weight}; the single-dataset fields and
// the list exclude each other.
Status ParseDomains(const Reader& r, const YAML::Node& d, DataConfig* data) {
  if (!d || !d.IsMap() || !d["domains"]) return Status::OK();
  YAML::Node list = d["domains"];
  if (!list.IsSequence() || list.size() == 0)
    return Status::InvalidArgument(r.Where(list, "data.domains") +
                                   ": expected a non-empty list of datasets");
  for (const char* k : {"source", "path", "format", "name", "split", "title_words"})
    if (d[k])
      return Status::InvalidArgument(r.Where(d[k], std::string("data.") + k) +
                                     ": set per domain when data.domains is given");
  data->source = DataSource::kDir;
  std::set<std::string> labels;
  for (size_t i = 0; i < list.size(); ++i) {
    YAML::Node n = list[i];
    const std::string p = "data.domains[" + std::to_string(i) + "]";
    if (!n.IsMap()) return Status::InvalidArgument(r.Where(n, p) + ": expected a map");
    M6_RETURN_IF_ERROR(r.CheckMap(n, p,
                                  {"label", "path", "format", "name", "weight", "train_users",
                                   "evaluate", "split", "title_words"}));
    DomainSpec spec;
    M6_RETURN_IF_ERROR(r.Str(n, p, "label", &spec.label));
    M6_RETURN_IF_ERROR(r.Str(n, p, "path", &spec.path));
    M6_RETURN_IF_ERROR(r.Enum(n, p, "format", &spec.format));
    M6_RETURN_IF_ERROR(r.Str(n, p, "name", &spec.name));
    M6_RETURN_IF_ERROR(r.NumberIn(n, p, "weight", &spec.weight, 0.0, 100.0));
    M6_RETURN_IF_ERROR(r.NumberIn(n, p, "train_users", &spec.train_users, 1e-6, 1.0));
    M6_RETURN_IF_ERROR(r.Bool(n, p, "evaluate", &spec.evaluate));
    M6_RETURN_IF_ERROR(r.Str(n, p, "split", &spec.split));
    M6_RETURN_IF_ERROR(r.Bool(n, p, "title_words", &spec.title_words));
    if ((spec.title_words || !spec.split.empty()) && spec.format != DataFormat::kMovieLens)
      return Status::InvalidArgument(r.Where(n, p) +
                                     ": split and title_words need format: movielens");
    if (!spec.split.empty())
      M6_RETURN_IF_ERROR(CheckSplit(r, n["split"], p + ".split", spec.split));
    spec.path = ExpandEnv(spec.path);
    if (spec.path.empty()) return Status::InvalidArgument(r.Where(n, p + ".path") + ": required");
    if (spec.label.empty()) {
      spec.label = spec.name;
      if (spec.label.empty()) {
        std::string trimmed = spec.path;
        while (trimmed.size() > 1 && trimmed.back() == '/') trimmed.pop_back();
        spec.label = trimmed.substr(trimmed.find_last_of('/') + 1);
      }
    }
    if (spec.label.find('/') != std::string::npos || spec.label.empty())
      return Status::InvalidArgument(r.Where(n, p + ".label") + ": '" + spec.label +
                                     "' is not a usable label (non-empty, no '/')");
    if (!labels.insert(spec.label).second)
      return Status::InvalidArgument(r.Where(n, p) + ": a second domain labelled '" + spec.label +
                                     "' (set label to tell them apart)");
    data->domains.push_back(spec);
  }
  bool evaluated = false;
  for (const auto& spec : data->domains) evaluated = evaluated || spec.evaluate;
  if (!evaluated)
    return Status::InvalidArgument(r.Where(list, "data.domains") +
                                   ": every domain has evaluate: false (nothing to report)");
  return Status::OK();
}

Status ParseData(const Reader& r, const YAML::Node& root, JobConfig* cfg) {
  YAML::Node d = root["data"];
  M6_RETURN_IF_ERROR(
      r.CheckMap(d, "data",
                 {"source", "path", "format", "name", "split", "title_words", "synth", "domains",
                  "cold_items", "cold_seed", "cold_users", "cold_user_interactions",
                  "cold_user_profile", "stream_split", "valid_ratings", "vocabulary"}));
  DataConfig& dc = cfg->data;
  M6_RETURN_IF_ERROR(r.NumberIn(d, "data", "stream_split", &dc.stream_split, 0, 0.99));
  M6_RETURN_IF_ERROR(r.NumberIn(d, "data", "valid_ratings", &dc.valid_ratings, 0, 0.5));
  M6_RETURN_IF_ERROR(r.Bool(d, "data", "title_words", &dc.title_words));
  M6_RETURN_IF_ERROR(r.NumberIn(d, "data", "cold_items", &dc.cold_items, 0, 0.9));
  M6_RETURN_IF_ERROR(r.U64(d, "data", "cold_seed", &dc.cold_seed));
  M6_RETURN_IF_ERROR(r.NumberIn(d, "data", "cold_users", &dc.cold_users, 0, 0.9));
  M6_RETURN_IF_ERROR(
      r.NumberIn(d, "data", "cold_user_interactions", &dc.cold_user_interactions, 0, 1e6));
  M6_RETURN_IF_ERROR(r.Bool(d, "data", "cold_user_profile", &dc.cold_user_profile));
  M6_RETURN_IF_ERROR(ParseDomains(r, d, &cfg->data));
  std::string vocabulary = "per_domain";
  M6_RETURN_IF_ERROR(r.Str(d, "data", "vocabulary", &vocabulary));
  if (vocabulary != "per_domain" && vocabulary != "shared")
    return Status::InvalidArgument(r.Where(d["vocabulary"], "data.vocabulary") + ": '" +
                                   vocabulary + "' (per_domain or shared)");
  dc.shared_vocabulary = vocabulary == "shared";
  M6_RETURN_IF_ERROR(r.Str(d, "data", "split", &cfg->data.split));
  M6_RETURN_IF_ERROR(r.Enum(d, "data", "source", &cfg->data.source));
  M6_RETURN_IF_ERROR(r.Str(d, "data", "path", &cfg->data.path));
  M6_RETURN_IF_ERROR(r.Enum(d, "data", "format", &cfg->data.format));
  M6_RETURN_IF_ERROR(r.Str(d, "data", "name", &cfg->data.name));
  cfg->data.path = ExpandEnv(cfg->data.path);
  if (dc.title_words && (dc.source != DataSource::kDir || dc.format != DataFormat::kMovieLens))
    return Status::InvalidArgument(r.Where(d["title_words"], "data.title_words") +
                                   ": only the movielens format has titles");
  if (dc.stream_split > 0 &&
      (dc.source != DataSource::kDir || dc.format != DataFormat::kMovieLens || !dc.split.empty()))
    return Status::InvalidArgument(r.Where(d["stream_split"], "data.stream_split") +
                                   ": only the movielens format (u.data, no data.split) has the "
                                   "timestamps a stream is cut by");
  if (cfg->data.source == DataSource::kDir && cfg->data.path.empty() && cfg->data.domains.empty())
    return Status::InvalidArgument(r.Where(d, "data.path") + ": required when data.source is dir");
  if (!cfg->data.split.empty() && cfg->data.format != DataFormat::kMovieLens)
    return Status::InvalidArgument(r.Where(d["split"], "data.split") +
                                   ": a MovieLens split needs data.format movielens");
  if (!cfg->data.split.empty())
    M6_RETURN_IF_ERROR(CheckSplit(r, d["split"], "data.split", cfg->data.split));
  YAML::Node s = d && d.IsMap() ? d["synth"] : YAML::Node(YAML::NodeType::Undefined);
  SynthConfig& sy = cfg->data.synth;
  M6_RETURN_IF_ERROR(
      r.CheckMap(s, "data.synth",
                 {"users", "items", "domains", "clusters", "interactions_per_user",
                  "friends_per_user", "tokens", "tokens_per_item", "image_dim", "audio_dim"}));
  const std::string sp = "data.synth";
  M6_RETURN_IF_ERROR(r.Int(s, sp, "users", &sy.users));
  M6_RETURN_IF_ERROR(r.Int(s, sp, "items", &sy.items));
  M6_RETURN_IF_ERROR(r.Int(s, sp, "domains", &sy.domains));
  M6_RETURN_IF_ERROR(r.Int(s, sp, "clusters", &sy.clusters));
  M6_RETURN_IF_ERROR(r.Int(s, sp, "interactions_per_user", &sy.interactions_per_user));
  M6_RETURN_IF_ERROR(r.Int(s, sp, "friends_per_user", &sy.friends_per_user));
  M6_RETURN_IF_ERROR(r.Int(s, sp, "tokens", &sy.tokens));
  M6_RETURN_IF_ERROR(r.Int(s, sp, "tokens_per_item", &sy.tokens_per_item));
  M6_RETURN_IF_ERROR(r.Int(s, sp, "image_dim", &sy.image_dim));
  M6_RETURN_IF_ERROR(r.Int(s, sp, "audio_dim", &sy.audio_dim));
  M6_RETURN_IF_ERROR(r.Range(s, sp, "users", sy.users, 2, 1e9));
  M6_RETURN_IF_ERROR(r.Range(s, sp, "items", sy.items, 2, 1e9));
  M6_RETURN_IF_ERROR(r.Range(s, sp, "domains", sy.domains, 1, 64));
  M6_RETURN_IF_ERROR(r.Range(s, sp, "clusters", sy.clusters, 1, 1e6));
  M6_RETURN_IF_ERROR(r.Range(s, sp, "interactions_per_user", sy.interactions_per_user, 3, 1e6));
  M6_RETURN_IF_ERROR(r.Range(s, sp, "friends_per_user", sy.friends_per_user, 0, 1e4));
  M6_RETURN_IF_ERROR(r.Range(s, sp, "tokens", sy.tokens, 1, 1e9));
  M6_RETURN_IF_ERROR(r.Range(s, sp, "tokens_per_item", sy.tokens_per_item, 0, 1e4));
  M6_RETURN_IF_ERROR(r.Range(s, sp, "image_dim", sy.image_dim, 0, 1e5));
  M6_RETURN_IF_ERROR(r.Range(s, sp, "audio_dim", sy.audio_dim, 0, 1e5));

  return Status::OK();
}

// train.tasks: a list of {type, name, weight, like_threshold, attribute}; the first is retrieval.
Status ParseTasks(const Reader& r, const YAML::Node& t, TrainConfig* tr) {
  if (!t || !t.IsMap() || !t["tasks"]) return Status::OK();
  YAML::Node list = t["tasks"];
  if (!list.IsSequence() || list.size() == 0)
    return Status::InvalidArgument(r.Where(list, "train.tasks") +
                                   ": expected a non-empty list of tasks");
  tr->tasks.clear();
  std::set<std::string> names;
  for (size_t i = 0; i < list.size(); ++i) {
    YAML::Node n = list[i];
    const std::string p = "train.tasks[" + std::to_string(i) + "]";
    if (!n.IsMap()) return Status::InvalidArgument(r.Where(n, p) + ": expected a map");
    M6_RETURN_IF_ERROR(r.CheckMap(n, p, {"type", "name", "weight", "like_threshold", "attribute"}));
    if (!n["type"]) return Status::InvalidArgument(r.Where(n, p + ".type") + ": required");
    TaskSpec task;
    M6_RETURN_IF_ERROR(r.Enum(n, p, "type", &task.type));
    M6_RETURN_IF_ERROR(r.Str(n, p, "name", &task.name));
    M6_RETURN_IF_ERROR(r.NumberIn(n, p, "weight", &task.weight, 0.0, 1000.0));
    M6_RETURN_IF_ERROR(r.NumberIn(n, p, "like_threshold", &task.like_threshold, -1e9, 1e9));
    M6_RETURN_IF_ERROR(r.Str(n, p, "attribute", &task.attribute));
    if ((i == 0) != (task.type == TaskKind::kRetrieval))
      return Status::InvalidArgument(
          r.Where(n["type"], p + ".type") + ": " + EnumName(task.type) +
          (i == 0 ? "; the first task is retrieval (the backbone's; weight 0 to not train it)"
                  : "; retrieval is the first task and only that one"));
    if (task.type == TaskKind::kAttribute && task.attribute.empty())
      return Status::InvalidArgument(r.Where(n, p + ".attribute") +
                                     ": required for an attribute task (e.g. gender)");
    if (task.type != TaskKind::kAttribute && !task.attribute.empty())
      return Status::InvalidArgument(r.Where(n["attribute"], p + ".attribute") +
                                     ": only an attribute task predicts an attribute");
    if (task.name.empty())
      task.name = task.type == TaskKind::kAttribute ? task.attribute : EnumName(task.type);
    if (task.name.find_first_of("/:#") != std::string::npos)
      return Status::InvalidArgument(r.Where(n, p + ".name") + ": '" + task.name +
                                     "' is not a usable name (no '/', ':' or '#')");
    if (!names.insert(task.name).second)
      return Status::InvalidArgument(r.Where(n, p) + ": a second task named '" + task.name +
                                     "' (set name to tell them apart)");
    tr->tasks.push_back(task);
  }
  bool trained = false;
  for (const auto& task : tr->tasks) trained = trained || task.weight > 0;
  if (!trained)
    return Status::InvalidArgument(r.Where(list, "train.tasks") +
                                   ": every task has weight 0 (nothing to train)");
  if (tr->tasks.size() > 1 && tr->job != JobKind::kM6)
    return Status::InvalidArgument(r.Where(list, "train.tasks") +
                                   ": tasks other than retrieval need the m6 job");
  return Status::OK();
}

Status ParseTrain(const Reader& r, const YAML::Node& root, JobConfig* cfg) {
  YAML::Node t = root["train"];
  TrainConfig& tr = cfg->train;
  M6_RETURN_IF_ERROR(r.CheckMap(t, "train",
                                {"job",
                                 "epochs",
                                 "batch_size",
                                 "negatives",
                                 "log_every",
                                 "eval_negatives",
                                 "max_steps",
                                 "user_table",
                                 "item_table",
                                 "loss",
                                 "margin",
                                 "neg_weight",
                                 "temperature",
                                 "eval_every",
                                 "history",
                                 "history_user_weight",
                                 "negative_sampler",
                                 "in_batch_negatives",
                                 "cold_negative_weight",
                                 "popularity_calibration",
                                 "staleness",
                                 "collective",
                                 "tasks",
                                 "select_by",
                                 "domain_patience",
                                 "backbone_epochs"}));
  M6_RETURN_IF_ERROR(r.Enum(t, "train", "negative_sampler", &tr.negative_sampler));
  M6_RETURN_IF_ERROR(r.Bool(t, "train", "in_batch_negatives", &tr.in_batch_negatives));
  // A weight in [0, 1000], or auto (TrainConfig::kAutoColdNegativeWeight, the default).
  const bool cold_set = t && t.IsMap() && t["cold_negative_weight"];
  if (cold_set && t["cold_negative_weight"].IsScalar() &&
      t["cold_negative_weight"].Scalar() == "auto") {
    tr.cold_negative_weight = TrainConfig::kAutoColdNegativeWeight;
  } else if (cold_set) {
    Status w = r.Float(t, "train", "cold_negative_weight", &tr.cold_negative_weight);
    if (!w.ok()) return Status::InvalidArgument(w.message() + " (or auto)");
    M6_RETURN_IF_ERROR(
        r.Range(t, "train", "cold_negative_weight", tr.cold_negative_weight, 0, 1000));
  }
  M6_RETURN_IF_ERROR(r.Bool(t, "train", "popularity_calibration", &tr.popularity_calibration));
  M6_RETURN_IF_ERROR(r.NumberIn(t, "train", "staleness", &tr.staleness, 0, 1));
  M6_RETURN_IF_ERROR(r.Enum(t, "train", "collective", &tr.collective));
  M6_RETURN_IF_ERROR(r.Int(t, "train", "history", &tr.history));
  M6_RETURN_IF_ERROR(r.Float(t, "train", "history_user_weight", &tr.history_user_weight));
  M6_RETURN_IF_ERROR(r.Range(t, "train", "history", tr.history, 0, 10000));
  M6_RETURN_IF_ERROR(r.Range(t, "train", "history_user_weight", tr.history_user_weight, 0, 1));

  M6_RETURN_IF_ERROR(r.Float(t, "train", "margin", &tr.margin));
  M6_RETURN_IF_ERROR(r.Float(t, "train", "neg_weight", &tr.neg_weight));
  M6_RETURN_IF_ERROR(r.Float(t, "train", "temperature", &tr.temperature));
  M6_RETURN_IF_ERROR(r.Int(t, "train", "eval_every", &tr.eval_every));
  M6_RETURN_IF_ERROR(r.Enum(t, "train", "job", &tr.job));
  M6_RETURN_IF_ERROR(r.Enum(t, "train", "loss", &tr.loss));
  if (tr.loss == LossKind::kBce && tr.job == JobKind::kMf)
    return Status::InvalidArgument(r.Where(t["loss"], "train.loss") +
                                   ": bce is a loss of the m6 job");
  M6_RETURN_IF_ERROR(r.Range(t, "train", "margin", tr.margin, -1, 1));
  M6_RETURN_IF_ERROR(r.Range(t, "train", "neg_weight", tr.neg_weight, 0, 1e6));
  M6_RETURN_IF_ERROR(r.Range(t, "train", "temperature", tr.temperature, 1e-4, 1e4));
  M6_RETURN_IF_ERROR(r.Range(t, "train", "eval_every", tr.eval_every, 1, 1e6));
  M6_RETURN_IF_ERROR(r.Int(t, "train", "domain_patience", &tr.domain_patience));
  M6_RETURN_IF_ERROR(r.Range(t, "train", "domain_patience", tr.domain_patience, 0, 1e6));
  M6_RETURN_IF_ERROR(r.Int(t, "train", "backbone_epochs", &tr.backbone_epochs));
  M6_RETURN_IF_ERROR(r.Range(t, "train", "backbone_epochs", tr.backbone_epochs, 0, 1e6));
  M6_RETURN_IF_ERROR(r.Int(t, "train", "epochs", &tr.epochs));
  M6_RETURN_IF_ERROR(r.Int(t, "train", "batch_size", &tr.batch_size));
  M6_RETURN_IF_ERROR(r.Int(t, "train", "negatives", &tr.negatives));
  M6_RETURN_IF_ERROR(r.Int(t, "train", "log_every", &tr.log_every));
  M6_RETURN_IF_ERROR(r.Int(t, "train", "eval_negatives", &tr.eval_negatives));
  M6_RETURN_IF_ERROR(r.Int(t, "train", "max_steps", &tr.max_steps));
  M6_RETURN_IF_ERROR(r.Str(t, "train", "user_table", &tr.user_table));
  M6_RETURN_IF_ERROR(r.Str(t, "train", "item_table", &tr.item_table));
  M6_RETURN_IF_ERROR(r.Range(t, "train", "epochs", tr.epochs, 1, 1e6));
  M6_RETURN_IF_ERROR(r.Range(t, "train", "batch_size", tr.batch_size, 1, 1e7));
  M6_RETURN_IF_ERROR(r.Range(t, "train", "negatives", tr.negatives, 1, 1e5));
  M6_RETURN_IF_ERROR(r.Range(t, "train", "log_every", tr.log_every, 1, 1e9));
  M6_RETURN_IF_ERROR(r.Range(t, "train", "eval_negatives", tr.eval_negatives, 1, 1e6));
  M6_RETURN_IF_ERROR(r.Range(t, "train", "max_steps", tr.max_steps, 0, 1e12));
  M6_RETURN_IF_ERROR(ParseTasks(r, t, &tr));
  M6_RETURN_IF_ERROR(r.Str(t, "train", "select_by", &tr.select_by));
  if (tr.select_by != "auto") {
    std::string names = "auto";
    bool found = false;
    for (size_t i = 0; i < tr.tasks.size(); ++i) {
      const std::string name = i == 0 && tr.tasks[i].name.empty() ? "retrieval" : tr.tasks[i].name;
      names += ", " + name;
      found = found || (name == tr.select_by && tr.tasks[i].weight > 0);
    }
    if (!found)
      return Status::InvalidArgument(r.Where(t["select_by"], "train.select_by") + ": '" +
                                     tr.select_by + "' is not a trained task (one of: " + names +
                                     ")");
  }
  return Status::OK();
}

Status ParseCheckpoint(const Reader& r, const YAML::Node& root, JobConfig* cfg) {
  YAML::Node n = root["checkpoint"];
  CheckpointConfig& ck = cfg->checkpoint;
  const std::string p = "checkpoint";
  M6_RETURN_IF_ERROR(r.CheckMap(n, p, {"every_epochs", "every_steps", "keep", "best"}));
  M6_RETURN_IF_ERROR(r.NumberIn(n, p, "every_epochs", &ck.every_epochs, 0, 1e6));
  M6_RETURN_IF_ERROR(r.NumberIn(n, p, "every_steps", &ck.every_steps, 0, 1e12));
  M6_RETURN_IF_ERROR(r.NumberIn(n, p, "keep", &ck.keep, 1, 1e6));
  return r.Bool(n, p, "best", &ck.best);
}

// stream: {source, path, token, chunk, ...} (StreamConfig).
Status ParseStream(const Reader& r, const YAML::Node& root, JobConfig* cfg) {
  YAML::Node n = root["stream"];
  StreamConfig& s = cfg->stream;
  const std::string p = "stream";
  M6_RETURN_IF_ERROR(
      r.CheckMap(n, p,
                 {"source", "path", "token", "chunk", "wait_ms", "update", "passes", "replay",
                  "retrain_every_s", "snapshot_every", "max_chunks", "idle_stop_ms", "negatives",
                  "online_strategy", "strategy_decay"}));
  M6_RETURN_IF_ERROR(r.Enum(n, p, "source", &s.source));
  M6_RETURN_IF_ERROR(r.Str(n, p, "path", &s.path));
  M6_RETURN_IF_ERROR(r.Str(n, p, "token", &s.token));
  M6_RETURN_IF_ERROR(r.NumberIn(n, p, "chunk", &s.chunk, 1, 1e8));
  M6_RETURN_IF_ERROR(r.NumberIn(n, p, "wait_ms", &s.wait_ms, 0, 1e8));
  M6_RETURN_IF_ERROR(r.Bool(n, p, "update", &s.update));
  M6_RETURN_IF_ERROR(r.NumberIn(n, p, "passes", &s.passes, 1, 1000));
  M6_RETURN_IF_ERROR(r.NumberIn(n, p, "replay", &s.replay, 0, 1000));
  M6_RETURN_IF_ERROR(r.NumberIn(n, p, "retrain_every_s", &s.retrain_every_s, 0, 1e12));
  M6_RETURN_IF_ERROR(r.NumberIn(n, p, "snapshot_every", &s.snapshot_every, 0, 1e9));
  M6_RETURN_IF_ERROR(r.NumberIn(n, p, "max_chunks", &s.max_chunks, 0, 1e12));
  M6_RETURN_IF_ERROR(r.NumberIn(n, p, "idle_stop_ms", &s.idle_stop_ms, 0, 1e9));
  M6_RETURN_IF_ERROR(r.NumberIn(n, p, "negatives", &s.negatives, 1, 1e6));
  M6_RETURN_IF_ERROR(r.Bool(n, p, "online_strategy", &s.online_strategy));
  M6_RETURN_IF_ERROR(r.NumberIn(n, p, "strategy_decay", &s.strategy_decay, 0, 1));
  s.path = ExpandEnv(s.path);
  if (!s.enabled()) return Status::OK();
  if ((s.source == StreamKind::kDirectory || s.source == StreamKind::kFeed) && s.path.empty())
    return Status::InvalidArgument(r.Where(n, "stream.path") + ": required for a " +
                                   EnumName(s.source) + " stream");
  if (s.source == StreamKind::kReplay && cfg->data.stream_split <= 0)
    return Status::InvalidArgument(r.Where(n["source"], "stream.source") +
                                   ": a replay stream replays data.stream_split's held-back "
                                   "interactions; set data.stream_split");
  uint64_t token = 0;
  if (!s.token.empty() && !ParseToken(s.token, &token))
    return Status::InvalidArgument(r.Where(n["token"], "stream.token") +
                                   ": the feed's token, 16 hex digits (m6rec feed --token)");
  if (!cfg->data.domains.empty())
    return Status::InvalidArgument(r.Where(n, "stream") +
                                   ": a stream job trains one dataset (data.domains is set)");
  for (size_t t = 0; t < cfg->train.tasks.size(); ++t)
    if (cfg->train.tasks[t].type != TaskKind::kRetrieval)
      return Status::InvalidArgument(r.Where(root["train"], "train.tasks") +
                                     ": a stream job trains retrieval alone (events carry no "
                                     "ratings or attributes)");
  if (!cfg->adapt.from.empty())
    return Status::InvalidArgument(r.Where(n, "stream") + ": an adapted job cannot stream");
  return Status::OK();
}

// report: {papers: [{name, <metric>: number, ...}, ...]}.
Status ParseReport(const Reader& r, const YAML::Node& root, JobConfig* cfg) {
  YAML::Node n = root["report"];
  M6_RETURN_IF_ERROR(r.CheckMap(n, "report", {"papers"}));
  if (!n || !n["papers"]) return Status::OK();
  const YAML::Node list = n["papers"];
  if (!list.IsSequence())
    return Status::InvalidArgument(r.Where(list, "report.papers") +
                                   ": a list of {name: ..., <metric>: <number>, ...}");
  for (size_t i = 0; i < list.size(); ++i) {
    const std::string p = "report.papers[" + std::to_string(i) + "]";
    const YAML::Node e = list[i];
    if (!e.IsMap() || !e["name"] || !e["name"].IsScalar())
      return Status::InvalidArgument(r.Where(e, p) + ": needs a name and metric values");
    ReportConfig::Paper paper;
    paper.name = e["name"].as<std::string>();
    for (const auto& kv : e) {
      const std::string key = kv.first.as<std::string>();
      if (key == "name") continue;
      try {
        paper.metrics[key] = kv.second.as<double>();
      } catch (const YAML::Exception&) {
        return Status::InvalidArgument(r.Where(kv.second, p + "." + key) + ": a number");
      }
    }
    cfg->report.papers.push_back(std::move(paper));
  }
  return Status::OK();
}

// adapt: {from, frozen_domains, train} (written by `m6rec adapt`, see WriteAdaptConfig).
Status ParseAdapt(const Reader& r, const YAML::Node& root, JobConfig* cfg) {
  YAML::Node n = root["adapt"];
  AdaptConfig& a = cfg->adapt;
  const std::string p = "adapt";
  M6_RETURN_IF_ERROR(
      r.CheckMap(n, p, {"from", "frozen_domains", "frozen_tasks", "train", "item_fusion"}));
  M6_RETURN_IF_ERROR(r.Str(n, p, "from", &a.from));
  M6_RETURN_IF_ERROR(r.Enum(n, p, "train", &a.train));
  M6_RETURN_IF_ERROR(r.Enum(n, p, "item_fusion", &a.item_fusion));
  M6_RETURN_IF_ERROR(r.Int(n, p, "frozen_domains", &a.frozen_domains));
  M6_RETURN_IF_ERROR(r.Int(n, p, "frozen_tasks", &a.frozen_tasks));
  if (!n) return Status::OK();
  if (a.from.empty())
    return Status::InvalidArgument(r.Where(n, p) +
                                   ": adapt.from (the backbone checkpoint) is required; "
                                   "`m6rec adapt` writes this section");
  a.from = ExpandEnv(a.from);
  if (cfg->train.job != JobKind::kM6)
    return Status::InvalidArgument(r.Where(n, p) + ": adapting needs the m6 job");
  const int domains = int(cfg->data.domains.size());
  const int tasks = int(cfg->train.tasks.size());
  if (a.frozen_tasks < 1 || a.frozen_tasks > tasks)
    return Status::InvalidArgument(r.Where(n["frozen_tasks"], "adapt.frozen_tasks") + ": " +
                                   std::to_string(a.frozen_tasks) + " backbone task(s) of " +
                                   std::to_string(tasks) + " in train.tasks");
  if (a.adds_tasks(size_t(tasks))) {
    if (a.item_fusion == AdaptItemFusion::kPlain)
      return Status::InvalidArgument(
          r.Where(n["item_fusion"], "adapt.item_fusion") +
          ": plain fuses a new domain's items; this job adds tasks, every domain is the "
          "backbone's");
    // New tasks on the backbone's data: every domain is the backbone's.
    if (a.frozen_domains != domains)
      return Status::InvalidArgument(r.Where(n["frozen_domains"], "adapt.frozen_domains") + ": " +
                                     std::to_string(a.frozen_domains) + " of " +
                                     std::to_string(domains) +
                                     " domain(s); an adapted job adds tasks or domains, not both");
    // Training only adapters promises an unchanged backbone: its tasks must not train.
    for (int t = 0; a.train == AdaptTrain::kAdapters && t < a.frozen_tasks; ++t)
      if (cfg->train.tasks[size_t(t)].weight != 0.0f)
        return Status::InvalidArgument(
            r.Where(root["train"], "train.tasks[" + std::to_string(t) + "].weight") +
            ": a backbone task of an adapted job (adapt.train: adapters) has weight 0");
    return Status::OK();
  }
  if (a.frozen_domains < 1 || a.frozen_domains >= domains)
    return Status::InvalidArgument(
        r.Where(n["frozen_domains"], "adapt.frozen_domains") + ": " +
        std::to_string(a.frozen_domains) + " backbone domain(s) of " + std::to_string(domains) +
        " in data.domains; an adapted job keeps the backbone's first and adds at least one");
  // Training only adapters promises an unchanged backbone: its domains must not train.
  for (int d = 0; a.train == AdaptTrain::kAdapters && d < a.frozen_domains; ++d)
    if (cfg->data.domains[size_t(d)].weight != 0.0f)
      return Status::InvalidArgument(
          r.Where(root["data"], "data.domains[" + std::to_string(d) + "].weight") +
          ": a backbone domain of an adapted job (adapt.train: adapters) has weight 0");
  return Status::OK();
}

// The tables the job reads exist and fit together.
Status CheckJobTables(const Reader& r, const YAML::Node& root, const JobConfig& c) {
  const TrainConfig& tr = c.train;
  const YAML::Node t = root["train"];
  const JobConfig* cfg = &c;
  for (const std::string* n : {&tr.user_table, &tr.item_table}) {
    if (!cfg->FindTable(*n))
      return Status::InvalidArgument(r.Where(t, "train") + ": table '" + *n +
                                     "' is not declared under tables");
  }
  if (cfg->FindTable(tr.user_table)->dim != cfg->FindTable(tr.item_table)->dim)
    return Status::InvalidArgument(r.Where(t, "train") + ": the " + EnumName(tr.job) +
                                   " job needs user and item tables of equal dim");
  const TableSpec* tok = cfg->FindTable(cfg->model.token_table);
  if (tr.job == JobKind::kM6 && tok && tok->dim != cfg->FindTable(tr.item_table)->dim)
    return Status::InvalidArgument(r.Where(root["model"], "model.token_table") + ": table '" +
                                   tok->name + "' must have the item table's dim");
  if (const std::string& w = cfg->model.wide_table; !w.empty()) {
    const std::string where = r.Where(root["model"]["wide_table"], "model.wide_table");
    if (tr.job != JobKind::kM6 || !cfg->FindTable(w))
      return Status::InvalidArgument(where + ": table '" + w +
                                     "' is not declared under tables (or train.job is not m6)");
    if (!cfg->model.graph)
      return Status::InvalidArgument(where +
                                     ": the wide part reads the graph's bag of items; "
                                     "model.graph is false");
    bool attribute = false;
    for (const TaskSpec& t : tr.tasks) attribute = attribute || t.type == TaskKind::kAttribute;
    if (!attribute)
      return Status::InvalidArgument(where + ": no attribute task in train.tasks reads it");
  }
  if (cfg->model.rating_messages && !cfg->model.graph && !cfg->model.item_graph)
    return Status::InvalidArgument(
        r.Where(root["model"]["rating_messages"], "model.rating_messages") +
        ": rating-valued messages are the graphs'; model.graph and model.item_graph are false");
  if (cfg->model.tower_adapters && cfg->model.adapter_rank == 0)
    return Status::InvalidArgument(
        r.Where(root["model"]["tower_adapters"], "model.tower_adapters") +
        ": the towers' adapters have model.adapter_rank's rank, which is 0 (m6rec adapt sets 8)");
  return Status::OK();
}

Status ParseTree(const YAML::Node& root, const std::string& source, JobConfig* cfg) {
  Reader r(source);
  cfg->source = source;
  M6_RETURN_IF_ERROR(r.CheckMap(root, "",
                                {"job", "cluster", "ps", "tables", "data", "train", "model",
                                 "checkpoint", "adapt", "stream", "report"}));

  YAML::Node job = root["job"];
  M6_RETURN_IF_ERROR(r.CheckMap(job, "job", {"name", "seed"}));
  M6_RETURN_IF_ERROR(r.Str(job, "job", "name", &cfg->name));
  M6_RETURN_IF_ERROR(r.U64(job, "job", "seed", &cfg->seed));
  M6_RETURN_IF_ERROR(ParseCluster(r, root, cfg));
  M6_RETURN_IF_ERROR(ParsePs(r, root, cfg));
  M6_RETURN_IF_ERROR(ParseTables(r, root, cfg));
  M6_RETURN_IF_ERROR(ParseData(r, root, cfg));
  M6_RETURN_IF_ERROR(ParseTrain(r, root, cfg));
  M6_RETURN_IF_ERROR(ParseCheckpoint(r, root, cfg));
  M6_RETURN_IF_ERROR(ParseModel(r, root["model"], cfg));
  M6_RETURN_IF_ERROR(ParseAdapt(r, root, cfg));
  M6_RETURN_IF_ERROR(ParseStream(r, root, cfg));
  M6_RETURN_IF_ERROR(ParseReport(r, root, cfg));
  return CheckJobTables(r, root, *cfg);
}

StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::NotFound("cannot open config file '" + path + "'");
  std::ostringstream os;
  os << in.rdbuf();
  return os.str();
}

}  // namespace

StatusOr<JobConfig> ParseConfig(const std::string& text, const std::string& source,
                                const std::vector<std::string>& overrides) {
  M6_ASSIGN_OR_RETURN(YAML::Node root, LoadTree(text, source, overrides));
  JobConfig cfg;
  try {
    M6_RETURN_IF_ERROR(ParseTree(root, source, &cfg));
  } catch (const YAML::Exception& e) {
    return Status::InvalidArgument(source + ": " + e.what());
  }
  return cfg;
}

StatusOr<JobConfig> LoadConfig(const std::string& path, const std::vector<std::string>& overrides) {
  M6_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  return ParseConfig(text, path, overrides);
}

Status WriteEffectiveConfig(const std::string& path, const std::vector<std::string>& overrides,
                            const std::string& out_path) {
  M6_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  M6_ASSIGN_OR_RETURN(YAML::Node root, LoadTree(text, path, overrides));
  // Validate before writing, so every process sees the same, already checked, file.
  JobConfig cfg;
  M6_RETURN_IF_ERROR(ParseTree(root, path, &cfg));
  YAML::Emitter em;
  em << root;
  std::ofstream out(out_path);
  out << "# effective configuration: " << path;
  for (const auto& o : overrides) out << " --set " << o;
  out << "\n" << em.c_str() << "\n";
  if (!out) return Status::IOError("cannot write '" + out_path + "'");
  return Status::OK();
}

}  // namespace m6rec

namespace m6rec {

namespace {

// An adapted job's `tables`: the rows it creates (the new domain's users, items and tokens) may
// start and learn differently from the backbone's; everything that places or shapes rows stays
// the backbone's. Each entry names a backbone table and sets its `init` (not `from`: an adapted
// job's rows come from the backbone) and its optimizer's rates (not its type: the backbone's
// rows keep their optimizer state). Merged field by field into the backbone's entry.
Status MergeAdaptTables(const Reader& r, const YAML::Node& tables,
                        const std::string& backbone_config, YAML::Node* out) {
  if (!tables) return Status::OK();
  if (!tables.IsSequence())
    return Status::InvalidArgument(r.Where(tables, "tables") + ": expected a list");
  YAML::Node have = (*out)["tables"];
  for (size_t i = 0; i < tables.size(); ++i) {
    const YAML::Node t = tables[i];
    const std::string path = "tables." + std::to_string(i);
    M6_RETURN_IF_ERROR(r.CheckMap(t, path, {"name", "init", "optimizer"}));
    if (!t || !t.IsMap() || !t["name"])
      return Status::InvalidArgument(r.Where(t, path) + ": needs the name of a backbone table");
    const std::string name = t["name"].as<std::string>();
    size_t found = size_t(-1), count = have && have.IsSequence() ? have.size() : 0;
    std::string names;
    for (size_t j = 0; j < count; ++j) {
      const std::string n = have[j]["name"] ? have[j]["name"].as<std::string>() : "";
      names += (names.empty() ? "" : ", ") + n;
      if (n == name) found = j;
    }
    if (found == size_t(-1))
      return Status::InvalidArgument(r.Where(t["name"], path + ".name") + ": the backbone (" +
                                     backbone_config + ") has no table '" + name + "' (it has " +
                                     names + ")");
    M6_RETURN_IF_ERROR(
        r.CheckMap(t["init"], path + ".init", {"type", "value", "low", "high", "mean", "std"}));
    M6_RETURN_IF_ERROR(
        r.CheckMap(t["optimizer"], path + ".optimizer",
                   {"lr", "weight_decay", "eps", "beta1", "beta2", "initial_accumulator"}));
    // A new init replaces the backbone's distribution; optimizer fields merge one by one.
    YAML::Node target = have[found];
    if (t["init"]) target["init"] = YAML::Clone(t["init"]);
    if (t["optimizer"]) {
      if (!target["optimizer"] || !target["optimizer"].IsMap())
        target["optimizer"] = YAML::Node(YAML::NodeType::Map);
      for (const auto& kv : t["optimizer"])
        target["optimizer"][kv.first.as<std::string>()] = YAML::Clone(kv.second);
    }
  }
  return Status::OK();
}

// The backbone's configuration with new.yaml's job/cluster/ps/train/checkpoint/model fields
// (new tasks excepted: AdaptTasks appends them), refusing what would change the backbone.
Status MergeAdaptSections(const Reader& r, const YAML::Node& add, const JobConfig& backbone,
                          const std::string& backbone_config, YAML::Node* out) {
  M6_RETURN_IF_ERROR(MergeAdaptTables(r, add["tables"], backbone_config, out));
  M6_RETURN_IF_ERROR(r.CheckMap(
      add, "",
      {"job", "cluster", "ps", "tables", "data", "train", "checkpoint", "model", "adapt"}));
  M6_RETURN_IF_ERROR(r.CheckMap(
      add["model"], "model",
      {"adapter_rank", "tower_adapters", "dropout", "dense_lr", "dense_weight_decay", "device"}));
  // A field new.yaml may not change: the backbone's rows are placed by it.
  auto keep = [&](const char* sec, const char* field, int64_t have, const std::string& why) {
    if (!add[sec] || !add[sec][field]) return Status::OK();
    const YAML::Node n = add[sec][field];
    if (n.as<std::string>() != std::to_string(have))
      return Status::InvalidArgument(r.Where(n, std::string(sec) + "." + field) + ": " + why);
    return Status::OK();
  };
  const std::string servers = std::to_string(backbone.cluster.servers);
  M6_RETURN_IF_ERROR(keep("cluster", "servers", backbone.cluster.servers,
                          "the backbone's rows are sharded over its " + servers +
                              " server(s); an adapted job keeps them"));
  M6_RETURN_IF_ERROR(keep("ps", "num_slots", backbone.ps.num_slots,
                          "the backbone's rows are placed by its " +
                              std::to_string(backbone.ps.num_slots) +
                              " slots; an adapted job keeps them"));
  if (backbone.model.adapter_rank > 0)
    M6_RETURN_IF_ERROR(
        keep("model", "adapter_rank", backbone.model.adapter_rank,
             "the backbone's adapters have rank " + std::to_string(backbone.model.adapter_rank)));
  if (backbone.model.adapter_rank > 0 && backbone.model.tower_adapters && add["model"] &&
      add["model"]["tower_adapters"] && !add["model"]["tower_adapters"].as<bool>(true))
    return Status::InvalidArgument(r.Where(add["model"]["tower_adapters"], "model.tower_adapters") +
                                   ": the backbone has tower adapters; an adapted job keeps them");
  for (const char* sec : {"job", "cluster", "ps", "train", "checkpoint", "model"}) {
    const YAML::Node n = add[sec];
    if (n && !n.IsMap()) return Status::InvalidArgument(r.Where(n, sec) + ": expected a map");
    if (!(*out)[sec] || !(*out)[sec].IsMap()) (*out)[sec] = YAML::Node(YAML::NodeType::Map);
    if (!n) continue;
    for (const auto& kv : n)
      if (kv.first.as<std::string>() != "tasks")
        (*out)[sec][kv.first.as<std::string>()] = YAML::Clone(kv.second);
  }
  // How the backbone's own domains were scheduled is not the adapted job's: it trains only its
  // new part, with its own domains evaluated (unless new.yaml says otherwise).
  for (const char* field : {"domain_patience", "backbone_epochs"})
    if (!(add["train"] && add["train"][field])) (*out)["train"].remove(field);
  if (!add["job"] || !add["job"]["name"]) (*out)["job"]["name"] = backbone.name + "-adapt";
  if (!(add["model"] && add["model"]["adapter_rank"]) && backbone.model.adapter_rank == 0)
    (*out)["model"]["adapter_rank"] = 8;  // the default rank (an explicit 0: FiLM heads only)
  return Status::OK();
}

// New tasks on the backbone's data: its tasks first (weight 0, not trained), then the new
// ones. Returns how many are the backbone's.
StatusOr<int> AdaptTasks(const Reader& r, const YAML::Node& add, const YAML::Node& old_root,
                         YAML::Node* out) {
  const YAML::Node new_tasks = add["train"]["tasks"];
  if (add["data"])
    return Status::InvalidArgument(r.Where(add["data"], "data") +
                                   ": an adapted job adds tasks (train.tasks) or domains "
                                   "(data), not both");
  if (!new_tasks.IsSequence() || new_tasks.size() == 0)
    return Status::InvalidArgument(r.Where(new_tasks, "train.tasks") +
                                   ": the new task(s), a non-empty list");
  YAML::Node tasks(YAML::NodeType::Sequence);
  const YAML::Node ot = old_root["train"] ? old_root["train"]["tasks"] : YAML::Node();
  if (ot && ot.IsSequence()) {
    for (const auto& t : ot) tasks.push_back(YAML::Clone(t));
  } else {
    YAML::Node t(YAML::NodeType::Map);
    t["type"] = "retrieval";
    tasks.push_back(t);
  }
  const int frozen = int(tasks.size());
  for (auto t : tasks) t["weight"] = 0;
  for (const auto& t : new_tasks) tasks.push_back(YAML::Clone(t));
  (*out)["train"]["tasks"] = tasks;
  return frozen;
}

// New domains: the backbone's data first (weight 0, not evaluated), then new.yaml's. Returns
// how many data.domains entries are the backbone's.
StatusOr<int> AdaptDomains(const Reader& r, const YAML::Node& add, const YAML::Node& old_root,
                           const JobConfig& backbone, const std::string& backbone_config,
                           YAML::Node* out) {
  YAML::Node domains(YAML::NodeType::Sequence);
  const YAML::Node od = old_root["data"];
  if (!backbone.data.domains.empty()) {
    for (const auto& n : od["domains"]) domains.push_back(YAML::Clone(n));
  } else if (backbone.data.source == DataSource::kSynth) {
    // The synthetic data a backbone generated lives in its run directory.
    const std::string run =
        std::filesystem::absolute(std::filesystem::path(backbone_config).parent_path())
            .lexically_normal()
            .string();
    YAML::Node n(YAML::NodeType::Map);
    n["path"] = run + "/data";
    n["format"] = "tsv";
    n["label"] = backbone.name;
    domains.push_back(n);
  } else {
    YAML::Node n(YAML::NodeType::Map);
    for (const char* k : {"path", "format", "name", "split", "title_words"})
      if (od[k]) n[k] = YAML::Clone(od[k]);
    domains.push_back(n);
  }
  const int frozen = int(domains.size());
  for (auto n : domains) {
    n["weight"] = 0;
    n["evaluate"] = false;
  }
  const YAML::Node nd = add["data"];
  if (!nd || !nd.IsMap())
    return Status::InvalidArgument(r.Where(nd, "data") +
                                   ": the new domain(s): data.domains, or data.path/format/name");
  M6_RETURN_IF_ERROR(r.CheckMap(nd, "data", {"path", "format", "name", "domains"}));
  if (nd["domains"]) {
    if (!nd["domains"].IsSequence())
      return Status::InvalidArgument(r.Where(nd["domains"], "data.domains") +
                                     ": expected a list of datasets");
    for (const auto& n : nd["domains"]) domains.push_back(YAML::Clone(n));
  } else {
    YAML::Node n(YAML::NodeType::Map);
    for (const char* k : {"path", "format", "name"})
      if (nd[k]) n[k] = YAML::Clone(nd[k]);
    domains.push_back(n);
  }
  (*out)["data"] = YAML::Node(YAML::NodeType::Map);
  // The vocabulary decides the backbone's token ids: the adapted job keeps it.
  if (od["vocabulary"]) (*out)["data"]["vocabulary"] = YAML::Clone(od["vocabulary"]);
  (*out)["data"]["domains"] = domains;
  return frozen;
}

}  // namespace

Status WriteAdaptConfig(const std::string& backbone_config, const std::string& new_config,
                        const std::vector<std::string>& overrides, const std::string& checkpoint,
                        const std::string& out_path) {
  M6_ASSIGN_OR_RETURN(std::string old_text, ReadFile(backbone_config));
  M6_ASSIGN_OR_RETURN(std::string new_text, ReadFile(new_config));
  M6_ASSIGN_OR_RETURN(YAML::Node old_root, LoadTree(old_text, backbone_config, {}));
  M6_ASSIGN_OR_RETURN(YAML::Node add, LoadTree(new_text, new_config, overrides));
  const Reader r(new_config);
  YAML::Node out;
  bool adds_tasks = false;
  int frozen = 0;
  try {
    JobConfig backbone;
    M6_RETURN_IF_ERROR(ParseTree(old_root, backbone_config, &backbone));
    if (backbone.train.job != JobKind::kM6)
      return Status::InvalidArgument(backbone_config + ": the backbone is a " +
                                     EnumName(backbone.train.job) +
                                     " job; adapting needs an m6 backbone");
    out = YAML::Clone(old_root);
    M6_RETURN_IF_ERROR(MergeAdaptSections(r, add, backbone, backbone_config, &out));
    const YAML::Node na = add["adapt"];
    M6_RETURN_IF_ERROR(r.CheckMap(na, "adapt", {"train", "item_fusion"}));
    adds_tasks = add["train"] && add["train"]["tasks"];
    YAML::Node adapt(YAML::NodeType::Map);
    adapt["from"] = checkpoint;
    if (adds_tasks) {
      M6_ASSIGN_OR_RETURN(frozen, AdaptTasks(r, add, old_root, &out));
      adapt["frozen_domains"] = int(backbone.data.domains.size());
      adapt["frozen_tasks"] = frozen;
    } else {
      M6_ASSIGN_OR_RETURN(frozen, AdaptDomains(r, add, old_root, backbone, backbone_config, &out));
      adapt["frozen_domains"] = frozen;
      adapt["frozen_tasks"] = int(std::max<size_t>(1, backbone.train.tasks.size()));
    }
    adapt["train"] = na && na["train"] ? na["train"].as<std::string>() : std::string("adapters");
    // New domains read their items through the plain map unless new.yaml says otherwise: the
    // validation of every held-out domain measured chose it (config.h AdaptConfig). Written
    // out, so that a run adapted before this default keeps reading as it was trained.
    if (na && na["item_fusion"])
      adapt["item_fusion"] = na["item_fusion"].as<std::string>();
    else if (!adds_tasks)
      adapt["item_fusion"] = std::string("plain");
    out["adapt"] = adapt;
    // Checked as the job will read it; an error names the new configuration's fields.
    JobConfig cfg;
    M6_RETURN_IF_ERROR(
        ParseTree(out, new_config + " (adapted from " + backbone_config + ")", &cfg));
  } catch (const YAML::Exception& e) {
    return Status::InvalidArgument(new_config + ": " + e.what());
  }
  YAML::Emitter em;
  em << out;
  std::ofstream f(out_path);
  f << "# effective configuration: " << new_config;
  for (const auto& o : overrides) f << " --set " << o;
  f << ", adapted from " << backbone_config << " (" << frozen << " backbone "
    << (adds_tasks ? "task(s))\n" : "domain(s))\n") << em.c_str() << "\n";
  if (!f) return Status::IOError("cannot write '" + out_path + "'");
  return Status::OK();
}

}  // namespace m6rec
