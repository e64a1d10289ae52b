// The job configuration: one YAML file, parsed once into plain structs that are passed down to
// every component (never read from globals, so several roles can run in one test process).
// Every error names the file, the field's path and its line ("cfg.yaml:12: tables[1].dim: ...");
// unknown fields are errors, so a typo never silently falls back to a default.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "common/keys.h"
#include "common/status.h"

namespace m6rec {

// ---- Enumerated fields -------------------------------------------------------------------
// Every field with a fixed set of values is parsed once into an enum. EnumSpelling<E> lists
// (value, YAML spelling) pairs; EnumName, ParseEnum and EnumChoices work for any of them.
enum class JobKind { kMf, kM6 };
enum class LossKind { kBpr, kCcl, kSoftmax, kBce };
enum class RnnKind { kGru, kLstm, kAttention };
enum class FusionKind { kGate, kConcat, kMean };
enum class GraphWeighting { kMean, kDegree, kSymmetric };
enum class DeviceKind { kCpu, kCuda };
enum class CollectiveKind { kAuto, kSingle, kZmq, kMpi, kNccl };
enum class SamplerKind { kUniform, kPopularity };
enum class Placement { kSequential, kServerPerNode };
enum class DataSource { kSynth, kDir };
enum class DataFormat { kTsv, kLightGcn, kS3Rec, kMovieLens };
enum class Role { kScheduler, kServer, kWorker };  // a process's role in a cluster
enum class AdaptTrain { kAdapters, kAll };         // what an adapted job trains
enum class AdaptItemFusion { kBackbone, kPlain };  // how a new domain's items are fused
enum class TaskKind { kRetrieval, kLike, kRating, kAttribute };  // train.tasks[].type
enum class StreamKind { kNone, kReplay, kDirectory, kFeed };     // stream.source

template <typename E>
struct EnumSpelling;
#define M6REC_SPELL(E, ...)                                               \
  template <>                                                             \
  struct EnumSpelling<E> {                                                \
    static constexpr std::pair<E, const char*> kValues[] = {__VA_ARGS__}; \
  }
M6REC_SPELL(JobKind, {JobKind::kMf, "mf"}, {JobKind::kM6, "m6"});
M6REC_SPELL(LossKind, {LossKind::kBpr, "bpr"}, {LossKind::kCcl, "ccl"},
            {LossKind::kSoftmax, "softmax"}, {LossKind::kBce, "bce"});
M6REC_SPELL(RnnKind, {RnnKind::kGru, "gru"}, {RnnKind::kLstm, "lstm"},
            {RnnKind::kAttention, "attention"});
M6REC_SPELL(FusionKind, {FusionKind::kGate, "gate"}, {FusionKind::kConcat, "concat"},
            {FusionKind::kMean, "mean"});
M6REC_SPELL(GraphWeighting, {GraphWeighting::kMean, "mean"}, {GraphWeighting::kDegree, "degree"},
            {GraphWeighting::kSymmetric, "symmetric"});
M6REC_SPELL(DeviceKind, {DeviceKind::kCpu, "cpu"}, {DeviceKind::kCuda, "cuda"});
M6REC_SPELL(CollectiveKind, {CollectiveKind::kAuto, "auto"}, {CollectiveKind::kSingle, "single"},
            {CollectiveKind::kZmq, "zmq"}, {CollectiveKind::kMpi, "mpi"},
            {CollectiveKind::kNccl, "nccl"});
M6REC_SPELL(SamplerKind, {SamplerKind::kUniform, "uniform"},
            {SamplerKind::kPopularity, "popularity"});
M6REC_SPELL(Placement, {Placement::kSequential, "sequential"},
            {Placement::kServerPerNode, "server_per_node"});
M6REC_SPELL(DataSource, {DataSource::kSynth, "synth"}, {DataSource::kDir, "dir"});
M6REC_SPELL(DataFormat, {DataFormat::kTsv, "tsv"}, {DataFormat::kLightGcn, "lightgcn"},
            {DataFormat::kS3Rec, "s3rec"}, {DataFormat::kMovieLens, "movielens"});
M6REC_SPELL(Role, {Role::kScheduler, "scheduler"}, {Role::kServer, "server"},
            {Role::kWorker, "worker"});
M6REC_SPELL(AdaptTrain, {AdaptTrain::kAdapters, "adapters"}, {AdaptTrain::kAll, "all"});
M6REC_SPELL(AdaptItemFusion, {AdaptItemFusion::kBackbone, "backbone"},
            {AdaptItemFusion::kPlain, "plain"});
M6REC_SPELL(StreamKind, {StreamKind::kNone, "none"}, {StreamKind::kReplay, "replay"},
            {StreamKind::kDirectory, "directory"}, {StreamKind::kFeed, "feed"});
M6REC_SPELL(TaskKind, {TaskKind::kRetrieval, "retrieval"}, {TaskKind::kLike, "like"},
            {TaskKind::kRating, "rating"}, {TaskKind::kAttribute, "attribute"});
#undef M6REC_SPELL

template <typename E>
const char* EnumName(E v) {
  for (const auto& [e, name] : EnumSpelling<E>::kValues)
    if (e == v) return name;
  return "?";
}
template <typename E>
bool ParseEnum(const std::string& text, E* out) {
  for (const auto& [e, name] : EnumSpelling<E>::kValues)
    if (text == name) {
      *out = e;
      return true;
    }
  return false;
}
// "a, b, c": the allowed spellings, for error messages.
template <typename E>
std::string EnumChoices() {
  std::string s;
  for (const auto& [e, name] : EnumSpelling<E>::kValues)
    s += (s.empty() ? "" : ", ") + std::string(name);
  return s;
}

struct InitializerSpec {
  enum class Kind { kZeros, kConstant, kUniform, kNormal };
  Kind kind = Kind::kNormal;
  float value = 0.0f;    // constant
  float low = -0.05f;    // uniform
  float high = 0.05f;    // uniform
  float mean = 0.0f;     // normal
  float stddev = 0.01f;  // normal
  // Rows imported from a file made by `m6rec import` (common/rows_file.h): a fresh job's servers
  // write these rows (weights as given, fresh optimizer state) before serving; every other row
  // keeps the distribution above. "" = none. A job that starts from a checkpoint or a backbone
  // takes its rows from there instead.
  std::string from;
};

struct OptimizerSpec {
  enum class Kind { kSgd, kAdagrad, kAdam };
  Kind kind = Kind::kAdagrad;
  float lr = 0.05f;
  float weight_decay = 0.0f;
  float eps = 1e-8f;
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float initial_accumulator = 0.0f;  // Adagrad
};

const char* OptimizerName(OptimizerSpec::Kind k);

struct TableSpec {
  std::string name;
  TableId id = 0;  // position in the config's table list
  uint32_t dim = 0;
  uint64_t seed = 0;  // row initialisation seed: derived from job seed and table name unless set
  InitializerSpec init;
  OptimizerSpec optimizer;
  // false: the rows never change (workers push nothing; a server refuses a push): e.g. imported
  // pretrained word vectors kept as they are.
  bool trainable = true;
  // Row lifecycle for tables of open-ended ids (streams; ps/row_lifecycle.h). admit_after N:
  // a key gets a row only once it has been pushed N times (before, its gradients are dropped
  // and it reads as its initial value). ttl_s T: a row not updated for T seconds is deleted.
  // max_rows M: the table holds at most M rows (each of S servers at most ceil(M/S)); beyond,
  // the least recently updated rows are deleted. 1 / 0 / 0: none of it.
  uint32_t admit_after = 1;
  double ttl_s = 0;
  uint64_t max_rows = 0;
  bool lifecycle() const { return admit_after > 1 || ttl_s > 0 || max_rows > 0; }
};

struct ClusterConfig {
  int servers = 1;
  int workers = 1;
  std::string host = "127.0.0.1";  // address this process binds and advertises; "auto" = this
                                   // host's address on `interface` (or its first non-loopback one)
  std::string interface;           // with host: auto, e.g. "eth0" ("" = first non-loopback IPv4)
  // Cluster launches (mpirun/srun): which global ranks are servers. "sequential": rank 0 is the
  // scheduler, ranks 1..servers the servers, the rest workers. "server_per_node": one server on
  // every node (the node's lowest rank other than 0), so cluster.servers = the number of nodes.
  Placement placement = Placement::kSequential;
  int scheduler_port = 0;  // 0 = pick a free port
  int http_port = 0;       // scheduler status endpoint; 0 = pick, -1 = off
  int heartbeat_interval_ms = 500;
  int heartbeat_timeout_ms = 10000;
  int connect_timeout_ms = 30000;  // rendezvous: how long to keep retrying the scheduler
  int request_timeout_ms = 60000;  // data plane: a PS request unanswered this long fails
};

struct PsConfig {
  enum class Store { kMemory, kRocksDB };
  enum class Durability { kNone, kWal, kFsync };
  Store store = Store::kRocksDB;
  Durability durability = Durability::kWal;
  uint64_t hot_rows = 1 << 20;  // rows kept in the in-memory tier in front of RocksDB
  uint32_t num_slots = 4096;
  int threads = 2;  // request-handling threads per server
  uint64_t max_message_bytes = 1ull << 30;
  uint64_t max_keys_per_request = 1 << 22;
};

struct SynthConfig {
  int users = 2000;
  int items = 1000;
  int domains = 1;   // > 1: users and items in that many domains (contiguous id blocks)
  int clusters = 8;  // latent interest groups
  int interactions_per_user = 30;
  int friends_per_user = 5;
  int tokens = 500;  // text vocabulary
  int tokens_per_item = 8;
  int image_dim = 32;
  int audio_dim = 16;
};

// One domain of a multi-domain job: a dataset in its own id space (users, items and tokens are
// offset into one space when the job loads; see MergeDomains in worker/dataset.h).
struct DomainSpec {
  std::string label;  // its name in results (default: `name`, else the path's last component)
  std::string path;   // the dataset's directory (${VAR} expands)
  DataFormat format = DataFormat::kTsv;
  std::string name;     // s3rec: the dataset inside the directory
  float weight = 1.0f;  // its training samples per epoch, relative to its size (0.5: half)
  // The share of its users whose interactions are trained on (chosen from the job seed; the
  // others are still evaluated, their histories read as context): a small-data experiment.
  float train_users = 1.0f;
  bool evaluate = true;  // evaluated and reported (false: an adapted job's backbone domains)
  // movielens: as DataConfig::split and DataConfig::title_words, for this domain.
  std::string split;
  bool title_words = false;
};

struct DataConfig {
  DataSource source = DataSource::kSynth;  // synth: generated in the run directory from `synth`
  std::string path;  // dir: the dataset's directory (${VAR} and ${VAR:-x} expand)
  DataFormat format =
      DataFormat::kTsv;  // dir: tsv | lightgcn | s3rec | movielens (worker/dataset.h)
  std::string name;      // s3rec: the dataset inside the directory (Beauty, LastFM, ...)
  // movielens: a published split of the ratings ("u1".."u5", "ua", "ub" of ML-100K): training
  // reads <split>.base, the rating and like tasks are tested on <split>.test ("" = u.data,
  // leave-last-out for every task). ML-1M (a directory with users.dat): "90/10" holds 10% of
  // the ratings out for rating and like (GC-MC's protocol; "" = leave-last-out).
  std::string split;
  // movielens: the words of each movie's title (lowercased, year and stop words dropped) as
  // item tokens too, named in the dataset's token vocabulary (what `m6rec import` maps word
  // vectors through).
  bool title_words = false;
  SynthConfig synth;
  // Several datasets on one backbone (then source/path/format/name are not set): every domain
  // is loaded, merged into one id space, trained in mixed batches and evaluated on its own.
  std::vector<DomainSpec> domains;
  // data.vocabulary: per_domain (false: every domain's tokens are its own rows) or shared
  // (true: tokens with the same name in several domains — a genre, a word of a title — are one
  // row, so what one domain learnt about a word reaches the items of another; unnamed tokens,
  // such as S3-Rec's numbered attributes, stay their domain's own).
  bool shared_vocabulary = false;
  // Item cold start (docs/architecture.md "Cold start"): this share of the items is made cold
  // (every training interaction with them removed; drawn from cold_seed), and test users are
  // also reported by whether their target is cold or warm (result.json test.cold_start).
  float cold_items = 0.0f;
  uint64_t cold_seed = 1;
  // User cold start: this share of the users (drawn from cold_seed) keeps only its last
  // cold_user_interactions training interactions, and its profile only with cold_user_profile;
  // they are reported apart (test.cold_start.cold_users / warm_users).
  float cold_users = 0.0f;
  int cold_user_interactions = 3;
  bool cold_user_profile = true;
  // movielens: this share of the interactions, the latest by timestamp, is held back from the
  // dataset as a stream (Dataset::stream_events) that a stream job replays (stream.source:
  // replay); the rest is all training data (no validation or test targets: a stream job is
  // evaluated prequentially). 0 = none.
  float stream_split = 0.0f;
  // Data with ratings: this share of every user's training ratings (a fixed hash of user and
  // item) leaves the training lists to validate the rating and like tasks on, beside the one
  // leave-last-out validation item per user — a validation set large enough to choose epochs
  // and settings by (one rating per user has a standard error of ~0.01 RMSE on MovieLens-1M).
  // 0 = only the validation item.
  float valid_ratings = 0.0f;
};

// The M6-Rec model (train.job: m6): every part can be switched off for ablations.
struct ModelConfig {
  // user tower
  bool user_id = true;          // the user's own id row
  bool sequence = true;         // RNN over the last seq_len items (item-tower vectors)
  RnnKind rnn = RnnKind::kGru;  // the sequence encoder: gru | lstm | attention (self-attention)
  int seq_blocks = 2;           // attention: self-attention blocks
  int seq_len = 20;
  bool attention = true;    // attention pooling over the RNN outputs (else: last output)
  bool content = true;      // attention over the user's content tokens (profile + recent items')
  int content_tokens = 32;  // most tokens a user's content holds
  bool graph = true;        // GraphSAGE over the user-item graph (sampled items)
  bool social = true;       // ... and the user-user graph (sampled friends), when the data has it
  int fanout = 10;          // neighbours sampled per node
  bool item_graph = false;  // the item side: a scored item's vector adds its sampled users' mean
  int item_fanout = 20;     // users sampled per scored item
  int eval_fanout = 0;      // neighbours per node at evaluation (0: the training fanouts)
  // How the graph aggregates neighbours: "mean" (equally) | "degree" (a mean weighted 1/sqrt of
  // each neighbour's degree: popular items and very active users speak less) | "symmetric"
  // (LightGCN's sum weighted 1/sqrt(own degree · neighbour's degree), estimated from the sample).
  GraphWeighting graph_weighting = GraphWeighting::kMean;
  // Rating-valued messages (GC-MC): on data with ratings, each item the user graph reads is
  // transformed by its rating's level — x * (1 + s_r) + t_r, s and t learned per level (round
  // rating, 1..kRatingLevels; starting at zero: the plain messages) — so the graph source tells
  // what the user loved from what it disliked. With item_graph the item side does the same with
  // its own s and t: each user a scored item reads is bent by the rating it gave the item. An
  // unrated neighbour (a request's extra items, a streamed event) passes as it is.
  bool rating_messages = false;
  // Whether an attribute task's rows train the sparse rows they read (items, tokens, friends)
  // or read them with the gradient stopped, training only the dense part and the wide rows: a
  // few thousand labelled users at a high task weight otherwise reshape rows every task shares
  // to carry the training users' labels (docs/architecture.md, "Attributes are predicted from
  // behaviour").
  bool attribute_rows = true;
  // A rating task's wide part: an item-based neighbourhood model of the training ratings
  // (worker/neighbourhood.h) that reads this many of the user's most similar rated items; its
  // prediction is blended with the deep one at a weight chosen on the validation ratings (0:
  // none, the deep prediction alone).
  int rating_neighbours = 20;
  // item tower
  bool item_id = true;
  // Cold start: the share of the items of a training batch whose id row is left out of the
  // item tower (DropoutNet-style), so the content sources learn to stand alone; with it > 0,
  // items without a training interaction are always scored without their (untrained) id row.
  float item_id_dropout = 0.0f;
  bool text = true;   // item tokens, pooled
  bool image = true;  // projection of the item image vector, when the data has one
  bool audio = true;  // projection of the item audio vector, when the data has one
  // Reduction before the fusion: each item feature matrix (image, audio) wider than this is
  // reduced to its top principal components at load time (the explained variance is logged);
  // 0: off (the tower's learned projection alone reads every dimension).
  int feature_pca = 0;
  // fusion
  FusionKind fusion =
      FusionKind::kGate;  // gate (gates + reduction + MLP) | concat (no gates) | mean
  int hidden = 128;
  float dropout = 0.1f;
  // dense optimizer (Adam), identical on every worker after the allreduce
  float dense_lr = 1e-3f;
  float dense_weight_decay = 0.0f;
  // Per-domain low-rank adapters in both fusions (rank r; 0 = none): a domain's own correction
  // of the reduction (B_d A_d, B_d zero at the start) and of the gates. What `m6rec adapt`
  // trains for a new domain while the backbone stays frozen.
  int adapter_rank = 0;
  // With adapter_rank > 0, the same per-domain low-rank corrections of the towers' projections
  // too: the sequence encoder's read-out (per user condition) and the item text projection (per
  // item domain), so a new domain can also bend how its sequences and its attributes are read.
  bool tower_adapters = false;
  std::string token_table = "token";
  // Wide part of the attribute heads (Wide & Deep): a table of per-item class weights, keyed by
  // item id, of dim >= the attribute tasks' classes together (task after task); an attribute
  // row's logits add the sum of its bag's rows / sqrt(bag size), a logistic regression on the
  // user's items beside the deep head. Empty: none. Needs model.graph (the bag is the graph's).
  std::string wide_table;
  DeviceKind device = DeviceKind::kCpu;  // cpu | cuda (dense layers; needs a CUDA LibTorch build)
};

// A task trained on the shared backbone (train.tasks; docs/architecture.md "Tasks"). Every task
// has its own rows of the user fusion's condition embedding, FiLM head and adapters (condition =
// task x domains + domain) and a small head; the towers are shared.
//   retrieval  next-item ranking with the configured loss (always task 0: the backbone's task)
//   like       BCE on rated pairs, label = rating >= like_threshold (data with ratings)
//   rating     squared error of the predicted rating (data with ratings)
//   attribute  cross-entropy over the classes of a user attribute (MovieLens gender, age,
//              occupation), on the users of the attribute's training split
struct TaskSpec {
  std::string name;  // in results (default: the type, or the attribute's name)
  TaskKind type = TaskKind::kRetrieval;
  float weight = 1.0f;          // training samples per epoch, relative to the task's source
  float like_threshold = 4.0f;  // like: ratings >= this are likes
  std::string attribute;        // attribute: which user attribute
};

struct TrainConfig {
  JobKind job = JobKind::kMf;  // mf | m6
  int epochs = 3;
  int batch_size = 512;
  int negatives = 4;               // negatives per batch, shared by every positive of the batch
  LossKind loss = LossKind::kBpr;  // bpr | ccl (cosine contrastive, SimpleX) | softmax | bce (m6)
  float margin = 0.8f;             // ccl: negatives' cosine below this cost nothing
  float neg_weight = 1.0f;         // ccl: weight of the negative term
  float temperature = 0.1f;        // softmax
  int eval_every = 1;              // epochs between evaluations
  int history = 0;  // behaviour aggregation: last L items join the user vector (0 = off)
  float history_user_weight = 0.5f;  // g in g * e_user + (1 - g) * mean(history items)
  int log_every = 20;
  int eval_negatives = 99;
  int max_steps = 0;  // 0 = no limit; otherwise stop after this many steps per worker
  std::string user_table = "user";
  std::string item_table = "item";
  // m6 job
  SamplerKind negative_sampler = SamplerKind::kUniform;  // uniform | popularity (counts^0.75)
  bool in_batch_negatives = true;  // the batch's other positives also count as negatives
  // A never-trained item's weight as a sampled negative against a trained item's 1 (1: uniform
  // over every item; 0: only items with training interactions, as a cold split and
  // model.item_id_dropout always draw; above 1: more of them). An item that is only ever a
  // negative learns to score low: right for the catalogue's dead items, wrong for the items a
  // train_users share below 1 leaves to the context users. kAutoColdNegativeWeight ("auto", the
  // default): 0 for a domain that trains a share of its users (data.domains.N.train_users < 1)
  // where the evaluation ranks with the popularity calibration (which puts the never-trained
  // items in their place from validation), 1 elsewhere.
  float cold_negative_weight = kAutoColdNegativeWeight;
  static constexpr float kAutoColdNegativeWeight = -1.0f;
  // Sampled protocol: rank on scores plus an offset per training-count bucket of the item, per
  // domain, chosen on validation (worker/evaluator.h Calibration; off for cold splits).
  bool popularity_calibration = true;
  int staleness = 1;  // 1: the next batch's pull overlaps this step; 0: strict
  CollectiveKind collective = CollectiveKind::kAuto;  // auto | single | zmq | mpi | nccl
  // The tasks (tasks[0] is retrieval; absent: retrieval alone).
  std::vector<TaskSpec> tasks = std::vector<TaskSpec>(1);  // retrieval alone
  // Which evaluated epoch is kept as the best (worker/job_summary.h SelectionRule): "auto", every
  // trained task's validation metric (the mean share of each one's best lift over chance; the
  // task's own metric when one task trains), or a task's name: that task's metric alone.
  std::string select_by = "auto";
  // A multi-domain job: a domain whose own validation metric (DomainSelectionRules) has not
  // improved for this many evaluations stops training (its samples leave the mix; it is still
  // evaluated and served from its best epoch's checkpoint); the job ends once every evaluated
  // domain has. 0 = every domain trains every epoch.
  int domain_patience = 0;
  // A job with several domains or tasks: the epochs that train the whole model. After them the
  // dense part every domain and task shares freezes, and each trains only its own part — its
  // condition rows, FiLM heads, adapters (model.adapter_rank) and task heads under a fresh
  // Adam, and its sparse rows: a jointly trained backbone with per-domain tuning, as M6-Rec serves
  // many domains. Later joint passes pull the shared part toward the other domains and cost a
  // domain its own later gains (docs/results.md, "Four domains on one backbone").
  // 0 = every epoch trains everything.
  int backbone_epochs = 0;
};

// Periodic checkpoints (a consistent cut of the servers' rows and the workers' dense model,
// optimizer, data cursor and RNG) under run_dir/checkpoints/, and the best evaluated epoch's.
struct CheckpointConfig {
  int every_epochs = 1;  // a checkpoint at the end of every N-th epoch (0 = none)
  int every_steps = 0;   // and every N steps within epochs (0 = none)
  int keep = 2;          // periodic checkpoints kept (older ones are deleted)
  bool best = true;      // keep the best evaluated epoch's model (what eval/recommend read)
};

// A job that adapts a trained backbone to new domains or new tasks (`m6rec adapt`,
// docs/architecture.md "Adapting to a new domain"): its first `frozen_domains` domains and
// `frozen_tasks` tasks are the backbone's, its servers start from the backbone checkpoint's
// rows and its dense model from the backbone's. It adds either domains (which train the
// backbone's tasks) or tasks (on the backbone's data), not both. frozen_domains counts
// data.domains entries (an entry may hold several domains: Dataset::DomainsOfSpecs).
struct AdaptConfig {
  std::string from;        // the backbone's checkpoint directory ("" = not an adapted job)
  int frozen_domains = 0;  // the backbone's domains (the first ones of data.domains)
  int frozen_tasks = 1;    // the backbone's tasks (the first ones of train.tasks)
  // adapters: only the new domains' (tasks') condition embedding, FiLM head and fusion
  // adapters, their heads and new sparse rows train (the backbone is bit-identical after);
  // all: full fine-tuning.
  AdaptTrain train = AdaptTrain::kAdapters;
  // How the new domains' items are fused from their sources (id row, text, ...): backbone:
  // by the backbone's learned gates, reduction and residual MLP; plain: by the fusion's
  // starting map, the plain mean of the (open-gated) sources, bent only by the domain's own
  // adapters and FiLM head. The backbone's mixing is fitted to its own domains' rows; a new
  // domain reads its new rows better through the plain map: validation chose it on every
  // held-out domain measured, at 10% and at 100% of its users (docs/results.md, "A new
  // domain's items through the plain mean"), so `m6rec adapt` writes plain unless new.yaml
  // says backbone. A configuration without the field reads backbone: how runs adapted before
  // the field existed were trained.
  AdaptItemFusion item_fusion = AdaptItemFusion::kBackbone;
  bool adds_tasks(size_t tasks) const { return !from.empty() && size_t(frozen_tasks) < tasks; }
};

// Streaming training (`m6rec train --stream`, docs/architecture.md "Streaming"): after
// train.epochs over the dataset, the job takes interactions as they arrive, chunk by chunk:
// each chunk is first scored (prequential HR@10 / NDCG@10 of the item each user chose, against
// sampled negatives), then appended to the users' histories and trained on.
struct StreamConfig {
  StreamKind source = StreamKind::kNone;  // none | replay | directory | feed
  std::string path;     // directory: the directory; feed: its endpoint (tcp://host:port)
  std::string token;    // feed: the feed's token (16 hex digits; "" = the job's token)
  int chunk = 1000;     // events per chunk, at most
  int wait_ms = 500;    // how long a chunk waits to fill before it trains on what has come
  bool update = true;   // train on each chunk (false: the model stays as it is, scored only)
  int passes = 1;       // passes over a chunk's samples
  float replay = 1.0f;  // earlier samples of the chunk's users mixed in, per new sample
  // A baseline for prequential comparisons: every this many seconds of stream time (event
  // timestamps) the model is retrained from scratch on everything so far (train.epochs), and
  // stays frozen in between. In-process jobs only (`m6rec bench prequential`). 0 = never.
  double retrain_every_s = 0;
  int snapshot_every = 0;  // chunks between snapshots (0: none)
  int max_chunks = 0;      // stop after this many chunks (0: at the source's end)
  int idle_stop_ms = 0;    // stop when nothing has arrived for this long (0: wait forever)
  int negatives = 99;      // prequential: sampled negatives per event
  // Dynamic strategy adjustment (worker/strategy.h OnlineStrategy): every intent's serving
  // strategy is chosen anew after each chunk from how every strategy of the grid ranked the
  // chunk's events; strategy.json follows at each snapshot. Costs one scoring pass per
  // user-source scale set (9 with sequence and id/graph sources).
  bool online_strategy = false;
  float strategy_decay = 0.9f;  // per chunk, the weight of what earlier chunks said
  bool enabled() const { return source != StreamKind::kNone; }
};

// What a run's report shows beside its own numbers: the published rows the job compares with
// (report.papers: [{name: "S3-Rec (CIKM 2020)", HR@10: 0.5506, NDCG@10: 0.3732}, ...]).
struct ReportConfig {
  struct Paper {
    std::string name;
    std::map<std::string, double> metrics;  // metric name (as the results name it) -> value
  };
  std::vector<Paper> papers;
};

struct JobConfig {
  std::string name = "m6rec";
  uint64_t seed = 42;
  std::string source;  // file it came from (for messages)
  ClusterConfig cluster;
  PsConfig ps;
  std::vector<TableSpec> tables;
  DataConfig data;
  TrainConfig train;
  ModelConfig model;
  CheckpointConfig checkpoint;
  AdaptConfig adapt;
  StreamConfig stream;
  ReportConfig report;

  // Finds a table by name; nullptr when absent.
  const TableSpec* FindTable(const std::string& name) const;
};

// Parses YAML text. `source` names it in messages. `overrides` are "a.b.c=value" strings applied
// to the YAML tree before it is read (list items by index: "tables.0.dim=8").
StatusOr<JobConfig> ParseConfig(const std::string& text, const std::string& source,
                                const std::vector<std::string>& overrides = {});
StatusOr<JobConfig> LoadConfig(const std::string& path,
                               const std::vector<std::string>& overrides = {});

// Loads `path`, applies overrides and writes the effective YAML to `out_path` (what the local
// launcher hands every process, so all roles read exactly the same configuration).
Status WriteEffectiveConfig(const std::string& path, const std::vector<std::string>& overrides,
                            const std::string& out_path);

// The configuration of an adapted job (`m6rec adapt`): the backbone run's configuration
// (`backbone_config`, its config.yaml) with its domains kept first (weight 0, not evaluated),
// then the domains of `new_config` (with `overrides` applied to it first: indices count its own
// domains), whose job/cluster/ps/train/checkpoint fields override the backbone's. The model and
// tables are the backbone's: new_config may set only model.adapter_rank, dropout, dense_lr,
// dense_weight_decay and device, and of a table (by name) only the init and optimizer rates of
// the rows the job creates; cluster.servers stays the backbone's (its rows are sharded over
// them); the backbone's train.domain_patience and backbone_epochs (how its own domains were
// scheduled) do not carry over. `checkpoint` is the backbone checkpoint to start from. Writes the
// validated YAML to out_path.
Status WriteAdaptConfig(const std::string& backbone_config, const std::string& new_config,
                        const std::vector<std::string>& overrides, const std::string& checkpoint,
                        const std::string& out_path);

}  // namespace m6rec
