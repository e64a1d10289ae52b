// The M6 plug-in and its dense part. One of the two LibTorch translation units of the library
// (each costs ~20 s and ~1 GB to compile): everything that touches tensors for the M6 job is here.
#include "worker/m6_model.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>
#include <set>
#include <sstream>

#include "common/util.h"
#include "worker/collective.h"
#include "worker/m6_batch.h"
#include "worker/model.h"
#include "worker/sparse_tables.h"

namespace m6rec {

namespace {

using nlohmann::json;

torch::Tensor LongTensor(const std::vector<int64_t>& v, int64_t rows, int64_t cols) {
  if (v.empty()) return torch::zeros({rows, cols}, torch::kLong);
  return torch::from_blob(const_cast<int64_t*>(v.data()), {rows, cols}, torch::kLong).clone();
}
torch::Tensor FloatTensor(const std::vector<float>& v, int64_t rows, int64_t cols) {
  if (v.empty()) return torch::zeros({rows, cols}, torch::kFloat);
  return torch::from_blob(const_cast<float*>(v.data()), {rows, cols}, torch::kFloat).clone();
}

// The dotted names of every tensor in a saved module's archive (its parameters and buffers;
// submodules are nested archives).
void ArchiveTensorNames(torch::serialize::InputArchive& archive, const std::string& prefix,
                        std::vector<std::string>* out) {
  for (const std::string& key : archive.keys()) {
    torch::serialize::InputArchive sub;
    torch::Tensor t;
    if (archive.try_read(key, sub))
      ArchiveTensorNames(sub, prefix + key + ".", out);
    else if (archive.try_read(key, t))
      out->push_back(prefix + key);
  }
}

// Whether the collective takes device buffers (NCCL) rather than host memory.
bool DeviceBuffers(const Collective& c) { return c.capabilities().device_buffers; }

// The dense part: a module's parameters, replicated on every worker, and their Adam optimizer.
// In an adapted job (cfg.adapt, train: adapters) only the new domains' or tasks' part trains:
// the per-condition parameters' new rows (and, after a single-condition backbone, the gates'
// new condition columns) and the new tasks' heads. Every other parameter is frozen: without a
// gradient and outside the optimizer and the allreduce, or — for the frozen part of a trained
// tensor — put back after every step, so the backbone stays bit-identical however the
// optimizer treats a zero gradient.
class TorchDense final : public DenseModel {
 public:
  TorchDense(M6Model model, const ModelConfig& mc, const AdaptConfig& adapt,
             const ModelShape& shape)
      : model_(std::move(model)),
        all_(model_->parameters()),
        lr_(mc.dense_lr),
        weight_decay_(mc.dense_weight_decay) {
    for (const auto& p : all_) numel_ += p.numel();
    const bool adapters = !adapt.from.empty() && adapt.train == AdaptTrain::kAdapters;
    // The heads of the tasks an adapted job adds start fresh (the backbone has none of them).
    if (adapt.adds_tasks(size_t(shape.tasks))) first_new_head_ = adapt.frozen_tasks;
    if (!adapt.from.empty()) {
      // Where the backbone's condition rows are in this model: the user fusion's condition is
      // task x domains + domain, so backbone row t x D0 + d is row t x D + d here (new tasks
      // append rows; new domains interleave them); the item fusion's is the domain.
      const int64_t T0 = shape.backbone_tasks, D0 = shape.backbone_domains, D = shape.domains;
      for (int64_t t = 0; t < T0; ++t)
        for (int64_t d = 0; d < D0; ++d) user_rows_.push_back(t * D + d);
      for (int64_t d = 0; d < D0; ++d) item_rows_.push_back(d);
    }
    for (auto& np : model_->named_parameters()) {
      torch::Tensor p = np.value();
      const bool per_condition = FusionImpl::PerCondition(np.key());
      if (adapters && NewHead(np.key())) {
        params_.push_back(p);  // a new task's head trains whole
        continue;
      }
      if (adapters && !per_condition && !EndsWith(np.key(), ".gate.weight")) {
        p.requires_grad_(false);
        continue;
      }
      params_.push_back(p);
      if (!adapters) continue;
      // Per-condition tensors: the backbone's conditions' rows are frozen. The gates: frozen
      // until InitFromBackbone finds condition columns the backbone did not have.
      auto mask = torch::zeros_like(p, torch::kBool);
      if (per_condition)
        mask.index_fill_(0, BackboneRows(np.key(), p.device()), true);
      else
        mask.fill_(true);
      frozen_[np.key()] = {p, mask, {}};
    }
    // A model with every dense part switched off (pure id embeddings) has no dense parameters.
    if (!params_.empty())
      opt_ = std::make_unique<torch::optim::Adam>(
          params_, torch::optim::AdamOptions(mc.dense_lr).weight_decay(mc.dense_weight_decay));
  }

  // Every parameter (the allreduce and the optimizer see only the trained ones).
  int64_t numel() const override { return numel_; }
  // The parameters that move: all, or in an adapted job the new domains' part.
  int64_t trained_numel() const {
    int64_t n = 0;
    for (const auto& p : params_) n += p.numel();
    for (const auto& [name, f] : frozen_) n -= f.mask.sum().item<int64_t>();
    return n;
  }

  // The backbone's parameters from a checkpoint's dense directory, each read by name. Shapes
  // must match, except that per-condition tensors have more rows here (the backbone's go where
  // BackboneRows says; the new domains' and tasks' keep their initial values) and a
  // single-condition backbone's gates lack the condition input
  // (its columns start at zero; the backbone's domain gets a zero condition embedding, so its
  // fusion is exactly the backbone's, and the new domains train those columns). Per-condition
  // tensors the backbone lacks keep their initial values.
  Status InitFromBackbone(const std::string& dir) {
    const std::string path = dir + "/dense.pt";
    torch::serialize::InputArchive root;
    try {
      root.load_from(path);
    } catch (const c10::Error& e) {
      return Status::IOError("cannot read the backbone's dense model '" + path +
                             "': " + e.what_without_backtrace());
    }
    torch::NoGradGuard ng;
    std::vector<std::string> unconditioned;  // fusions whose gates had no condition input
    for (auto& np : model_->named_parameters()) {
      const std::string& name = np.key();
      std::vector<std::string> parts;
      std::stringstream ss(name);
      for (std::string part; std::getline(ss, part, '.');) parts.push_back(part);
      bool found = true;
      torch::serialize::InputArchive* at = &root;
      std::vector<torch::serialize::InputArchive> chain(parts.size());
      for (size_t i = 0; i + 1 < parts.size() && found; ++i) {
        found = at->try_read(parts[i], chain[i]);
        at = &chain[i];
      }
      torch::Tensor old;
      if (found) found = at->try_read(parts.back(), old);
      torch::Tensor p = np.value();
      if (!found) {
        if (FusionImpl::PerCondition(name) || NewHead(name)) continue;
        return Status::InvalidArgument("the backbone's dense model '" + path + "' has no '" + name +
                                       "' (was it trained with another model.*?)");
      }
      if (old.sizes() == p.sizes()) {
        p.copy_(old);
        continue;
      }
      const bool same_rank = old.dim() == p.dim() && p.dim() >= 1;
      const bool more_rows = same_rank && FusionImpl::PerCondition(name) &&
                             old.size(0) == int64_t(RowsOf(name).size()) &&
                             old.sizes().slice(1) == p.sizes().slice(1);
      const bool cond_columns = same_rank && p.dim() == 2 && EndsWith(name, ".gate.weight") &&
                                old.size(0) == p.size(0) &&
                                old.size(1) + FusionImpl::kConditionDim == p.size(1);
      if (more_rows) {
        p.index_copy_(0, BackboneRows(name, p.device()), old.to(p.device()));
      } else if (cond_columns) {
        p.narrow(1, 0, old.size(1)).copy_(old);
        p.narrow(1, old.size(1), FusionImpl::kConditionDim).zero_();
        auto f = frozen_.find(name);
        if (f != frozen_.end())
          f->second.mask.narrow(1, old.size(1), FusionImpl::kConditionDim).fill_(false);
        unconditioned.push_back(name.substr(0, name.size() - std::string("gate.weight").size()));
      } else {
        std::ostringstream o;
        o << "the backbone's '" << name << "' is " << old.sizes() << ", this model's " << p.sizes()
          << " (was it trained with another model.* or on data with other inputs?)";
        return Status::InvalidArgument(o.str());
      }
    }
    // Everything the backbone has must have a place here: a parameter this model lacks (its
    // tower adapters or fusion adapters switched off in the adapted config, say) would drop
    // the backbone's trained values silently and change the backbone's domains.
    std::vector<std::string> backbone_names;
    ArchiveTensorNames(root, "", &backbone_names);
    const auto params = model_->named_parameters();
    const auto buffers = model_->named_buffers();
    for (const std::string& name : backbone_names)
      if (!params.contains(name) && !buffers.contains(name))
        return Status::InvalidArgument(
            "the backbone's dense model '" + path + "' has '" + name +
            "', which this model lacks (was model.adapter_rank or model.tower_adapters changed "
            "from the backbone's?)");
    for (const std::string& prefix : unconditioned)
      for (auto& np : model_->named_parameters())
        if (np.key() == prefix + "cond_emb.weight")
          np.value().index_fill_(0, BackboneRows(np.key(), np.value().device()), 0.0);
    for (auto& [name, f] : frozen_) f.saved = torch::Tensor();  // taken again from these values
    return Status::OK();
  }

  Status Broadcast(Collective& coll) override {
    if (coll.size() == 1 || numel_ == 0) return Status::OK();
    torch::NoGradGuard ng;
    torch::Tensor buf = Flat(
        all_, [](const torch::Tensor& p) { return p.detach(); }, DeviceBuffers(coll));
    M6_RETURN_IF_ERROR(coll.Broadcast(buf.data_ptr<float>(), size_t(numel_), 0));
    Unflat(all_, buf.to(all_[0].device()),
           [](torch::Tensor& p, const torch::Tensor& v) { p.copy_(v); });
    return Status::OK();
  }

  Status AllReduceAndStep(Collective& coll) override {
    if (coll.size() > 1 && !params_.empty()) {
      torch::Tensor buf = Flat(
          params_,
          [](const torch::Tensor& p) {
            return p.grad().defined() ? p.grad() : torch::zeros_like(p);
          },
          DeviceBuffers(coll));
      M6_RETURN_IF_ERROR(coll.AllReduceSum(buf.data_ptr<float>(), size_t(buf.numel())));
      buf = (buf / double(coll.size())).to(params_[0].device());
      Unflat(params_, buf, [](torch::Tensor& p, const torch::Tensor& g) {
        if (p.grad().defined())
          p.mutable_grad().copy_(g);
        else
          p.mutable_grad() = g.clone();
      });
    }
    if (!opt_) return Status::OK();
    torch::NoGradGuard ng;
    for (auto& [name, f] : frozen_)
      if (!f.saved.defined()) f.saved = f.param.detach().clone();
    opt_->step();
    for (auto& [name, f] : frozen_) f.param.copy_(torch::where(f.mask, f.saved, f.param));
    return Status::OK();
  }

  void ZeroGrad() {
    if (opt_) opt_->zero_grad();
  }

  StatusOr<int64_t> FreezeBackbone() override {
    if (!frozen_.empty())
      return Status::InvalidArgument(
          "train.backbone_epochs: an adapted job trains only its own part already");
    std::vector<torch::Tensor> own;
    for (auto& np : model_->named_parameters()) {
      torch::Tensor p = np.value();
      if (OwnParameter(np.key())) {
        own.push_back(p);
        continue;
      }
      p.requires_grad_(false);
      p.mutable_grad() = torch::Tensor();
    }
    if (own.empty())
      return Status::InvalidArgument(
          "train.backbone_epochs: the model has no per-domain or per-task parameters to train "
          "once the backbone freezes (it needs several domains or tasks)");
    params_ = std::move(own);
    opt_ = std::make_unique<torch::optim::Adam>(
        params_, torch::optim::AdamOptions(lr_).weight_decay(weight_decay_));
    return trained_numel();
  }

  uint64_t Fingerprint() const override {
    uint64_t h = 1469598103934665603ull;  // FNV-1a over the parameters' bytes, in order
    for (const auto& p : all_) {
      auto c = p.detach().to(torch::kCPU).contiguous();
      const auto* bytes = static_cast<const unsigned char*>(c.data_ptr());
      for (size_t k = 0, n = size_t(c.numel()) * c.element_size(); k < n; ++k)
        h = (h ^ bytes[k]) * 1099511628211ull;
    }
    return h;
  }

  Status Save(const std::string& dir) const override {
    M6_RETURN_IF_ERROR(MakeDirs(dir));
    try {
      torch::save(model_, dir + "/dense.pt");
      if (opt_) torch::save(*opt_, dir + "/dense_optimizer.pt");
    } catch (const c10::Error& e) {
      return Status::IOError("saving the dense model under " + dir + ": " +
                             e.what_without_backtrace());
    }
    return Status::OK();
  }

  Status Load(const std::string& dir, bool with_optimizer) override {
    try {
      torch::load(model_, dir + "/dense.pt");
      if (opt_ && with_optimizer) torch::load(*opt_, dir + "/dense_optimizer.pt");
      for (auto& [name, f] : frozen_) f.saved = torch::Tensor();
    } catch (const c10::Error& e) {
      return Status::IOError("cannot load the dense checkpoint under '" + dir +
                             "': " + e.what_without_backtrace());
    }
    return Status::OK();
  }

  // The CPU generator dropout draws from (LibTorch's default one, seeded with the job's seed),
  // as hex.
  std::string RngState() const override {
    auto gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    torch::Tensor st = gen.get_state().contiguous();
    static const char kHex[] = "0123456789abcdef";
    std::string hex;
    const auto* b = static_cast<const unsigned char*>(st.data_ptr());
    for (int64_t i = 0; i < st.numel(); ++i) {
      hex += kHex[b[i] >> 4];
      hex += kHex[b[i] & 15];
    }
    return hex;
  }
  Status SetRngState(const std::string& s) override {
    auto gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    torch::Tensor cur = gen.get_state();
    if (size_t(cur.numel()) * 2 != s.size())
      return Status::Corruption("a checkpoint's dense RNG state has the wrong size");
    torch::Tensor st = torch::empty({cur.numel()}, torch::kUInt8);
    auto* b = static_cast<unsigned char*>(st.data_ptr());
    auto nibble = [](char c) { return c <= '9' ? c - '0' : c - 'a' + 10; };
    for (int64_t i = 0; i < cur.numel(); ++i)
      b[i] = static_cast<unsigned char>(nibble(s[2 * i]) << 4 | nibble(s[2 * i + 1]));
    gen.set_state(st);
    return Status::OK();
  }

 private:
  // The parameters' f(p) concatenated into one flat buffer (on the host unless `device`).
  template <typename F>
  static torch::Tensor Flat(const std::vector<torch::Tensor>& ps, F&& f, bool device) {
    std::vector<torch::Tensor> parts;
    for (const auto& p : ps) parts.push_back(f(p).reshape({-1}));
    torch::Tensor buf = torch::cat(parts);
    return device ? buf.contiguous() : buf.to(torch::kCPU).contiguous();
  }
  template <typename F>
  static void Unflat(std::vector<torch::Tensor>& ps, const torch::Tensor& buf, F&& f) {
    torch::NoGradGuard ng;
    int64_t off = 0;
    for (auto& p : ps) {
      f(p, buf.slice(0, off, off + p.numel()).view_as(p));
      off += p.numel();
    }
  }

  // The frozen part (mask true) of a trained parameter.
  struct FrozenPart {
    torch::Tensor param, mask;
    torch::Tensor saved;  // its values, taken before the first step after init/load
  };
  static bool EndsWith(const std::string& s, const std::string& suffix) {
    return s.size() >= suffix.size() &&
           s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
  }
  // Where the backbone's rows of a per-condition parameter are, in backbone order (adapted
  // jobs; empty otherwise): the user side's (user_fusion, user_seq_adapter) are indexed by the
  // user condition, the item side's by the domain.
  const std::vector<int64_t>& RowsOf(const std::string& name) const {
    return name.rfind("user_", 0) == 0 ? user_rows_ : item_rows_;
  }
  torch::Tensor BackboneRows(const std::string& name, const torch::Device& device) const {
    return torch::tensor(RowsOf(name), torch::TensorOptions(torch::kLong).device(device));
  }
  // Whether a parameter is the head of a task the backbone did not have ("head<t>.*").
  bool NewHead(const std::string& name) const {
    if (name.rfind("head", 0) != 0) return false;
    return std::atoi(name.c_str() + 4) >= first_new_head_;
  }

  M6Model model_;
  std::vector<torch::Tensor> all_;     // every parameter (broadcast, fingerprint, checkpoint)
  std::vector<torch::Tensor> params_;  // the trained ones (allreduce, optimizer)
  std::map<std::string, FrozenPart> frozen_;    // by parameter name (adapted jobs)
  std::vector<int64_t> user_rows_, item_rows_;  // see BackboneRows
  int64_t first_new_head_ = INT64_MAX;          // adapted jobs: heads of tasks from here on are new
  double lr_, weight_decay_;
  std::unique_ptr<torch::optim::Adam> opt_;
  int64_t numel_ = 0;
};

class M6Plugin final : public ModelPlugin {
 public:
  M6Plugin(const PluginContext& ctx, torch::Device dev)
      : cfg_(*ctx.cfg), tables_(*ctx.tables), in_(*ctx.data, *ctx.cfg), dev_(dev) {
    // New domains through adapters on a shared vocabulary: the backbone's token rows the new
    // domains also name (a genre, a word) are read, never pushed, so the backbone stays as it
    // was (full fine-tuning trains them).
    const Dataset& ds = *ctx.data;
    if (!cfg_.adapt.from.empty() && cfg_.adapt.train == AdaptTrain::kAdapters &&
        !cfg_.adapt.adds_tasks(cfg_.train.tasks.size()) && cfg_.adapt.frozen_domains > 0 &&
        size_t(cfg_.adapt.frozen_domains) <= ds.tokens_after_spec.size())
      backbone_tokens_ = ds.tokens_after_spec[size_t(cfg_.adapt.frozen_domains) - 1];
    // The same seed on every worker: the replicas start equal (and rank 0's copy is broadcast).
    torch::manual_seed(cfg_.seed);
    model_ = M6Model(cfg_.model, in_.shape);
    if (!cfg_.adapt.from.empty() && cfg_.adapt.item_fusion == AdaptItemFusion::kPlain) {
      // The new domains' items through the fusion's starting map (config.h AdaptConfig).
      std::vector<int64_t> fresh;
      for (int64_t d = in_.shape.backbone_domains; d < in_.shape.domains; ++d) fresh.push_back(d);
      model_->item_fusion->SetPlainConditions(fresh);
    }
    model_->to(dev_);
    dense_ = std::make_unique<TorchDense>(model_, cfg_.model, cfg_.adapt, in_.shape);
  }

  const char* name() const override { return "m6"; }
  DenseModel* dense() override { return dense_.get(); }

  StatusOr<std::unique_ptr<TrainBatch>> MakeBatch(const Sample* s, size_t n,
                                                  std::mt19937_64& rng) override {
    return std::unique_ptr<TrainBatch>(BuildTrainBatch(in_, cfg_, s, n, rng));
  }
  StatusOr<StepResult> Step(TrainBatch& batch) override;

  Status BeginScoring() override {
    model_->eval();
    // The per-domain gates reported after an evaluation are means over its requests.
    model_->user_fusion->ResetConditionGates();
    model_->item_fusion->ResetConditionGates();
    return Status::OK();
  }
  void EndScoring() override {
    all_items_ = torch::Tensor();
    model_->train();
  }
  Status Explain(const UserQuery& query, const std::vector<uint32_t>& items, json* out) override;
  // The queries' eval batch with `items` scored (idx: their 1-based rows) and the rows pulled
  // (lists: Tensors reads the rows from them, so they live as long as the batch's tensors).
  struct EvalInputs {
    std::unique_ptr<BatchBuilder> b;
    std::vector<int64_t> idx;
    std::vector<KeyList> lists;
  };
  Status PrepareEval(const std::vector<UserQuery>& queries, const std::vector<uint32_t>& items,
                     EvalInputs* e);
  Status ScoreCandidates(const std::vector<UserQuery>& queries,
                         const std::vector<std::vector<uint32_t>>& cands,
                         std::vector<std::vector<float>>* scores) override;
  Status ScoreAllItems(const std::vector<UserQuery>& queries, std::vector<float>* scores) override;
  Status ScoreTask(const std::vector<UserQuery>& queries, const std::vector<uint32_t>& items,
                   std::vector<std::vector<float>>* out) override;

  json EpochReport() const override;
  json Describe() const override {
    return {{"user_sources", model_->user_sources()},
            {"item_sources", model_->item_sources()},
            {"dense_params", dense_->numel()},
            {"trained_dense_params", dense_->trained_numel()}};
  }
  Status InitFromBackbone(const std::string& checkpoint) override {
    return dense_->InitFromBackbone(checkpoint + "/dense");
  }
  Status OnInteractions(const StreamEvent* ev, size_t n) override {
    in_.Grow(ev, n);
    return Status::OK();
  }

 private:
  // The model's input from a built batch and its pulled rows (urows/irows/trows stay alive).
  ModelBatch Tensors(const BatchBuilder& b, std::vector<KeyList>& lists, bool grad) const;
  // Pulls an evaluation batch's rows.
  Status PullEval(const BatchBuilder& b, std::vector<KeyList>* lists);
  // The queries' source scales as mb->user_source_scale (left undefined when none has any).
  Status SetSourceScale(const std::vector<UserQuery>& queries, ModelBatch* mb) const;
  // Every item's scoring vector, in chunks (computed once per BeginScoring).
  Status ComputeAllItems();

  const JobConfig& cfg_;
  SparseTables& tables_;
  M6Inputs in_;
  torch::Device dev_;
  M6Model model_{nullptr};
  std::unique_ptr<TorchDense> dense_;
  torch::Tensor all_items_;
  uint32_t backbone_tokens_ = 0;  // token ids below it are a frozen backbone's (not pushed)
};

ModelBatch M6Plugin::Tensors(const BatchBuilder& b, std::vector<KeyList>& lists, bool grad) const {
  const ModelConfig& mc = cfg_.model;
  const int64_t d = in_.shape.dim, B = int64_t(b.users.size()), Ki = int64_t(b.item_ids.size());
  auto leaf = [&](std::vector<float>& v, size_t n, bool want_grad) {
    torch::Tensor t =
        n == 0 ? torch::zeros({0, d}) : torch::from_blob(v.data(), {int64_t(n), d}, torch::kFloat);
    t = t.to(dev_);
    if (want_grad) t = t.detach().requires_grad_(true);
    return t;
  };
  ModelBatch mb;
  mb.user_rows = leaf(lists[M6TrainBatch::kUsers].rows, b.user_ids.size(), grad);
  mb.item_rows = mc.item_id ? leaf(lists[M6TrainBatch::kItems].rows, b.item_ids.size(), grad)
                            : torch::zeros({Ki, d}).to(dev_);
  mb.token_rows =
      leaf(lists[M6TrainBatch::kTokens].rows, b.token_ids.size(), grad && !b.token_ids.empty());
  if (mc.item_id && mc.item_id_dropout > 0) {
    // Cold start: an item without training interactions never reads its (untrained) id row;
    // in training, a share of the others leave theirs out too (drawn from LibTorch's
    // generator, seeded with the job's seed and checkpointed like dropout's).
    std::vector<float> keep(size_t(Ki), 1.0f);
    for (int64_t k = 0; k < Ki; ++k)
      if (in_.ds.item_popularity[b.item_ids[size_t(k)]] == 0) keep[size_t(k)] = 0.0f;
    torch::Tensor t = FloatTensor(keep, Ki, 1).view({Ki});
    if (grad) t = t * torch::bernoulli(torch::full({Ki}, 1.0 - double(mc.item_id_dropout)));
    mb.item_id_keep = t.to(dev_);
  }
  const int64_t tt = in_.item_tokens;
  mb.item_tok = LongTensor(b.item_tok, Ki, tt).to(dev_);
  mb.item_tok_mask = FloatTensor(b.item_tok_mask, Ki, tt).to(dev_);
  auto features = [&](const std::vector<float>& m, uint32_t dim) {
    std::vector<float> f(size_t(Ki) * dim);
    for (int64_t k = 0; k < Ki; ++k)
      std::memcpy(&f[size_t(k) * dim], &m[size_t(b.item_ids[k]) * dim], dim * sizeof(float));
    return FloatTensor(f, Ki, dim).to(dev_);
  };
  if (in_.shape.image_dim > 0) mb.item_image = features(in_.ds.item_image, in_.ds.image_dim);
  if (in_.shape.audio_dim > 0) mb.item_audio = features(in_.ds.item_audio, in_.ds.audio_dim);
  mb.users = LongTensor(b.users, B, 1).view({B}).to(dev_);
  mb.hist = LongTensor(b.hist, B, mc.seq_len).to(dev_);
  mb.hist_mask = FloatTensor(b.hist_mask, B, mc.seq_len).to(dev_);
  mb.utok = LongTensor(b.utok, B, mc.content_tokens).to(dev_);
  mb.utok_mask = FloatTensor(b.utok_mask, B, mc.content_tokens).to(dev_);
  mb.nbr = LongTensor(b.nbr, B, b.fanout()).to(dev_);
  mb.nbr_mask = FloatTensor(b.nbr_mask, B, b.fanout()).to(dev_);
  if (mc.rating_messages) mb.nbr_level = LongTensor(b.nbr_level, B, b.fanout()).to(dev_);
  // Only the rows with a bag gather one (a few attribute rows among a batch's 512).
  size_t W = 0;
  std::vector<int64_t> rows;
  for (size_t r = 0; r < b.bag.size(); ++r)
    if (!b.bag[r].empty()) {
      rows.push_back(int64_t(r));
      W = std::max(W, b.bag[r].size());
    }
  if (!rows.empty()) {
    const int64_t A = int64_t(rows.size());
    std::vector<int64_t> idx(size_t(A) * W, 0);
    std::vector<float> w(size_t(A) * W, 0.0f);
    std::vector<int64_t> level(mc.rating_messages ? size_t(A) * W : 0, 0);
    for (size_t k = 0; k < rows.size(); ++k) {
      const size_t r = size_t(rows[k]);
      std::copy(b.bag[r].begin(), b.bag[r].end(), idx.begin() + k * W);
      std::copy(b.bag_weight[r].begin(), b.bag_weight[r].end(), w.begin() + k * W);
      if (mc.rating_messages)
        std::copy(b.bag_level[r].begin(), b.bag_level[r].end(), level.begin() + k * W);
    }
    mb.bag_rows = LongTensor(rows, A, 1).view({A}).to(dev_);
    mb.bag = LongTensor(idx, A, int64_t(W)).to(dev_);
    mb.bag_mask = FloatTensor(w, A, int64_t(W)).to(dev_);
    if (mc.rating_messages) mb.bag_level = LongTensor(level, A, int64_t(W)).to(dev_);
    KeyList& wl = lists[M6TrainBatch::kWide];
    if (!b.wide_ids.empty()) {
      std::vector<int64_t> widx(size_t(A) * W, 0);
      std::vector<float> wm(size_t(A) * W, 0.0f);
      for (size_t k = 0; k < rows.size(); ++k) {
        const auto& wb = b.wide_bag[size_t(rows[k])];
        std::copy(wb.begin(), wb.end(), widx.begin() + k * W);
        std::fill(wm.begin() + k * W, wm.begin() + k * W + wb.size(), 1.0f);
      }
      mb.wide_rows = torch::from_blob(wl.rows.data(), {int64_t(b.wide_ids.size()), int64_t(wl.dim)},
                                      torch::kFloat)
                         .to(dev_);
      if (grad) mb.wide_rows = mb.wide_rows.detach().requires_grad_(true);
      mb.wide_bag = LongTensor(widx, A, int64_t(W)).to(dev_);
      mb.wide_mask = FloatTensor(wm, A, int64_t(W)).to(dev_);
    }
  }
  mb.friends = LongTensor(b.friends, B, b.fanout()).to(dev_);
  mb.friends_mask = FloatTensor(b.friends_mask, B, b.fanout()).to(dev_);
  if (in_.shape.user_conditions() > 1)
    mb.user_condition = LongTensor(b.row_condition, B, 1).view({B}).to(dev_);
  if (in_.shape.domains > 1) {
    std::vector<int64_t> idom(b.item_ids.size());
    for (size_t k = 0; k < idom.size(); ++k) idom[k] = in_.ds.ItemDomain(b.item_ids[k]);
    mb.item_domain = LongTensor(idom, Ki, 1).view({Ki}).to(dev_);
  }
  if (mc.item_graph) {
    const int64_t F = b.item_fanout();
    std::vector<int64_t> idx(size_t(Ki) * F, 0);
    std::vector<float> mask(size_t(Ki) * F, 0.0f);
    const auto& nbr = b.item_neighbours();
    const auto& w = b.item_neighbour_weights();
    for (int64_t k = 0; k < Ki; ++k)
      for (size_t j = 0; j < nbr[k].size() && j < size_t(F); ++j) {
        idx[k * F + j] = nbr[k][j];
        mask[k * F + j] = w[k][j];
      }
    mb.item_nbr = LongTensor(idx, Ki, F).to(dev_);
    mb.item_nbr_mask = FloatTensor(mask, Ki, F).to(dev_);
    if (mc.rating_messages) {
      std::vector<int64_t> level(size_t(Ki) * F, 0);
      const auto& lv = b.item_neighbour_levels();
      for (int64_t k = 0; k < Ki; ++k)
        for (size_t j = 0; j < lv[k].size() && j < size_t(F); ++j) level[k * F + j] = lv[k][j];
      mb.item_nbr_level = LongTensor(level, Ki, F).to(dev_);
    }
  }
  return mb;
}

StatusOr<StepResult> M6Plugin::Step(TrainBatch& batch) {
  auto& cur = static_cast<M6TrainBatch&>(batch);
  const TrainConfig& tc = cfg_.train;
  model_->train();
  ModelBatch mb = Tensors(*cur.b, cur.lists, true);
  const int64_t nb = int64_t(cur.pos.size()), M = int64_t(cur.neg.size());
  // model.attribute_rows false: the attribute rows train no shared row, only the dense part.
  if (!cfg_.model.attribute_rows &&
      std::find(in_.shape.task_kinds.begin(), in_.shape.task_kinds.end(), TaskKind::kAttribute) !=
          in_.shape.task_kinds.end()) {
    auto stop = torch::zeros({nb}, torch::kBool);
    auto a = stop.accessor<bool, 1>();
    for (int64_t r = 0; r < nb; ++r)
      a[r] = in_.shape.task_kinds[cur.row_task[size_t(r)]] == TaskKind::kAttribute;
    mb.rows_stop = stop.to(dev_);
  }
  auto iv = model_->ItemVectors(mb);
  auto uv = model_->UserVectors(mb, iv);
  auto ivp = WithPadRow(model_->ScoredItemVectors(mb, iv));
  const auto wide = model_->WideLogits(mb);
  // The rows of every task (retrieval's are all of them in a job without other tasks).
  std::vector<std::vector<int64_t>> rows(size_t(in_.shape.tasks));
  for (int64_t r = 0; r < nb; ++r) rows[cur.row_task[size_t(r)]].push_back(r);
  auto pick = [&](const torch::Tensor& x, const std::vector<int64_t>& idx) {
    return x.index_select(0, LongTensor(idx, int64_t(idx.size()), 1).view({-1}).to(dev_));
  };
  torch::Tensor loss;
  if (!rows[0].empty()) {
    const std::vector<int64_t>& R = rows[0];
    const int64_t nr = int64_t(R.size());
    std::vector<int64_t> pos(nr);
    for (int64_t k = 0; k < nr; ++k) pos[k] = cur.pos[size_t(R[k])];
    auto ur = nr == nb ? uv : pick(uv, R);
    auto posv = pick(ivp, pos);
    auto negv = ivp.index_select(0, LongTensor(cur.neg, M, 1).view({-1}).to(dev_));
    if (tc.loss == LossKind::kCcl) {
      const auto unit = torch::nn::functional::NormalizeFuncOptions().dim(1);
      ur = torch::nn::functional::normalize(ur, unit);
      posv = torch::nn::functional::normalize(posv, unit);
      negv = torch::nn::functional::normalize(negv, unit);
    }
    auto s_pos = (ur * posv).sum(1);
    auto s_neg = ur.matmul(negv.t());
    // A negative equal to the row's own positive is no negative, nor is one of another domain.
    const bool domains = !cur.pos_domain.empty();
    auto item = [&](int64_t k) { return cur.pos_items[size_t(R[k])]; };
    auto dom = [&](int64_t k) { return cur.pos_domain[size_t(R[k])]; };
    std::vector<float> valid(size_t(nr) * M);
    for (int64_t r = 0; r < nr; ++r)
      for (int64_t j = 0; j < M; ++j)
        valid[r * M + j] = cur.neg_items[j] != item(r) && (!domains || cur.neg_domain[j] == dom(r));
    torch::Tensor vt = FloatTensor(valid, nr, M).to(dev_);
    if (tc.in_batch_negatives) {
      std::vector<float> vib(size_t(nr) * nr);
      for (int64_t r = 0; r < nr; ++r)
        for (int64_t c = 0; c < nr; ++c)
          vib[r * nr + c] = item(c) != item(r) && (!domains || dom(c) == dom(r));
      s_neg = torch::cat({s_neg, ur.matmul(posv.t())}, 1);
      vt = torch::cat({vt, FloatTensor(vib, nr, nr).to(dev_)}, 1);
    }
    loss = RankingLoss(tc.loss, s_pos, s_neg, vt, tc.temperature, tc.margin, tc.neg_weight);
    if (nr != nb) loss = loss * (double(nr) / double(nb));
  }
  // Every other task's rows: its head and loss, summed per row, over all rows of the batch.
  for (size_t t = 1; t < rows.size(); ++t) {
    const std::vector<int64_t>& R = rows[t];
    if (R.empty()) continue;
    const int64_t nr = int64_t(R.size());
    std::vector<float> y(nr);
    std::vector<int64_t> pos(nr);
    for (int64_t k = 0; k < nr; ++k) {
      y[k] = cur.target[size_t(R[k])];
      pos[k] = cur.pos[size_t(R[k])];
    }
    auto target = FloatTensor(y, nr, 1).view({nr}).to(dev_);
    auto ut = pick(uv, R);
    torch::Tensor l;
    namespace F = torch::nn::functional;
    switch (in_.shape.task_kinds[t]) {
      case TaskKind::kRating:
        l = (model_->PairHead(int64_t(t), ut, pick(ivp, pos)) - target).pow(2).sum();
        break;
      case TaskKind::kLike:
        l = F::binary_cross_entropy_with_logits(
            model_->PairHead(int64_t(t), ut, pick(ivp, pos)), target,
            F::BinaryCrossEntropyWithLogitsFuncOptions().reduction(torch::kSum));
        break;
      case TaskKind::kAttribute: {
        // The deep head and the wide part (a logistic regression on the bag) each learn as if
        // alone; the evaluator blends them with a weight chosen on validation. Trained on one
        // joint loss the wide rows (a free weight per item and class) fit the training users
        // first and starve the deep head, which generalises from the items' shared vectors
        // (docs/architecture.md, "The attributes' wide part").
        const auto sum = F::CrossEntropyFuncOptions().reduction(torch::kSum);
        const auto y = target.to(torch::kLong);
        const auto deep = model_->UserHead(int64_t(t), ut);
        l = F::cross_entropy(deep, y, sum);
        if (wide.defined())
          l = l + F::cross_entropy(model_->WideColumns(int64_t(t), pick(wide, R)), y, sum);
      } break;
      case TaskKind::kRetrieval:
        return Status::Internal("a second retrieval task");
    }
    l = l / double(nb);
    loss = loss.defined() ? loss + l : l;
  }
  dense_->ZeroGrad();
  loss.backward();
  // The rows' gradients, row i for key i of each list (already summed per unique key).
  auto grads = [](const torch::Tensor& rows, KeyList* l) {
    l->grads.clear();
    if (l->keys.empty() || !rows.grad().defined()) return;
    auto g = rows.grad().to(torch::kCPU).contiguous();
    l->grads.assign(g.data_ptr<float>(), g.data_ptr<float>() + g.numel());
  };
  // New tasks on an unchanged backbone: every row is the backbone's, none moves.
  const bool rows_frozen =
      cfg_.adapt.adds_tasks(cfg_.train.tasks.size()) && cfg_.adapt.train == AdaptTrain::kAdapters;
  if (!rows_frozen) {
    grads(mb.user_rows, &cur.lists[M6TrainBatch::kUsers]);
    if (cfg_.model.item_id) grads(mb.item_rows, &cur.lists[M6TrainBatch::kItems]);
    KeyList& tl = cur.lists[M6TrainBatch::kTokens];
    grads(mb.token_rows, &tl);
    if (backbone_tokens_ > 0 && !tl.grads.empty()) {  // keep the new rows' gradients only
      size_t kept = 0;
      for (size_t k = 0; k < tl.keys.size(); ++k) {
        if (KeyId(tl.keys[k]) < backbone_tokens_) continue;
        tl.keys[kept] = tl.keys[k];
        std::copy_n(tl.grads.begin() + k * tl.dim, tl.dim, tl.grads.begin() + kept * tl.dim);
        ++kept;
      }
      tl.keys.resize(kept);
      tl.grads.resize(kept * tl.dim);
    }
    if (mb.wide_rows.defined()) grads(mb.wide_rows, &cur.lists[M6TrainBatch::kWide]);
  }
  return StepResult{loss.item<double>() * nb, uint64_t(nb)};
}

Status M6Plugin::SetSourceScale(const std::vector<UserQuery>& queries, ModelBatch* mb) const {
  bool any = false;
  for (const auto& q : queries) any = any || !q.source_scale.empty();
  if (!any) return Status::OK();
  const auto& srcs = model_->user_sources();
  const int64_t S = int64_t(srcs.size());
  std::vector<float> scale(queries.size() * srcs.size(), 1.0f);
  for (size_t r = 0; r < queries.size(); ++r)
    for (const auto& [name, v] : queries[r].source_scale) {
      auto it = std::find(srcs.begin(), srcs.end(), name);
      if (it == srcs.end()) {
        std::string have;
        for (const auto& s : srcs) have += (have.empty() ? "" : ", ") + s;
        return Status::InvalidArgument("a strategy scales the user source '" + name +
                                       "'; this model's user sources are " + have);
      }
      scale[r * srcs.size() + size_t(it - srcs.begin())] = v;
    }
  mb->user_source_scale = FloatTensor(scale, int64_t(queries.size()), S).to(dev_);
  return Status::OK();
}

Status M6Plugin::PullEval(const BatchBuilder& b, std::vector<KeyList>* lists) {
  FillKeyLists(b, cfg_, lists);
  for (auto& l : *lists) {
    l.rows.resize(l.keys.size() * l.dim);
    if (!l.keys.empty())
      M6_RETURN_IF_ERROR(tables_.Pull(l.table, l.keys.data(), l.keys.size(), l.rows.data()));
  }
  return Status::OK();
}

Status M6Plugin::ScoreCandidates(const std::vector<UserQuery>& queries,
                                 const std::vector<std::vector<uint32_t>>& cands,
                                 std::vector<std::vector<float>>* scores) {
  auto b = BuildEvalBatch(in_, queries);
  // Lists may differ in length (a small domain has fewer items a user never touched than the
  // protocol's negatives): padded with the zero row, trimmed again below.
  int64_t n = 0;
  for (const auto& c : cands) n = std::max<int64_t>(n, int64_t(c.size()));
  std::vector<int64_t> cidx;
  for (const auto& c : cands) {
    for (uint32_t i : c) cidx.push_back(b->Scored(i));
    cidx.resize(cidx.size() + size_t(n) - c.size(), 0);
  }
  std::vector<KeyList> lists;
  M6_RETURN_IF_ERROR(PullEval(*b, &lists));
  torch::NoGradGuard ng;
  ModelBatch mb = Tensors(*b, lists, false);
  M6_RETURN_IF_ERROR(SetSourceScale(queries, &mb));
  auto iv = model_->ItemVectors(mb);
  auto uv = model_->UserVectors(mb, iv);
  auto civ = WithPadRow(model_->ScoredItemVectors(mb, iv))
                 .index_select(0, LongTensor(cidx, int64_t(cidx.size()), 1).view({-1}).to(dev_));
  auto s = (uv.unsqueeze(1) * civ.view({int64_t(queries.size()), n, -1}))
               .sum(-1)
               .to(torch::kCPU)
               .contiguous();
  const float* sp = s.data_ptr<float>();
  for (size_t c = 0; c < queries.size(); ++c)
    scores->emplace_back(sp + c * n, sp + c * n + cands[c].size());
  return Status::OK();
}

Status M6Plugin::PrepareEval(const std::vector<UserQuery>& queries,
                             const std::vector<uint32_t>& items, EvalInputs* e) {
  e->b = BuildEvalBatch(in_, queries);
  for (uint32_t i : items) e->idx.push_back(e->b->Scored(i));
  return PullEval(*e->b, &e->lists);
}

Status M6Plugin::Explain(const UserQuery& query, const std::vector<uint32_t>& items, json* out) {
  EvalInputs e;
  M6_RETURN_IF_ERROR(PrepareEval({query}, items, &e));
  const auto& b = e.b;
  const auto& idx = e.idx;
  torch::NoGradGuard ng;
  ModelBatch mb = Tensors(*b, e.lists, false);
  M6_RETURN_IF_ERROR(SetSourceScale({query}, &mb));
  auto iv = model_->ItemVectors(mb);
  const torch::Tensor item_gates = model_->item_fusion->last_row_gates;
  auto uv = model_->UserVectors(mb, iv);
  const torch::Tensor user_gates = model_->user_fusion->last_row_gates;
  const torch::Tensor attention = model_->last_history_attention;
  const auto piv = WithPadRow(iv).to(torch::kCPU);
  const auto siv = WithPadRow(model_->ScoredItemVectors(mb, iv)).to(torch::kCPU);
  const auto u = uv.to(torch::kCPU)[0];
  auto gates = [](const torch::Tensor& g, int64_t row, const std::vector<std::string>& names) {
    json j = json::object();
    if (!g.defined()) return j;
    auto r = g.to(torch::kCPU)[row];
    for (size_t s = 0; s < names.size(); ++s) j[names[s]] = r[int64_t(s)].item<double>();
    return j;
  };
  // Top entries of (item id, value) pairs, largest value first.
  auto top = [](std::vector<std::pair<uint32_t, double>> v, size_t n) {
    std::stable_sort(v.begin(), v.end(), [](auto& a, auto& c) { return a.second > c.second; });
    json j = json::array();
    for (size_t k = 0; k < v.size() && k < n; ++k)
      j.push_back({{"item", v[k].first}, {"weight", v[k].second}});
    return j;
  };
  const int64_t L = in_.mc.seq_len, F = b->fanout();
  // The sequence's attention over the history (shared by every item).
  std::vector<std::pair<uint32_t, double>> attended;
  if (attention.defined())
    for (int64_t k = 0; k < L; ++k)
      if (b->hist_mask[size_t(k)] > 0)
        attended.push_back({b->item_ids[size_t(b->hist[size_t(k)] - 1)],
                            attention.to(torch::kCPU)[0][k].item<double>()});
  const json user_weights = gates(user_gates, 0, model_->user_sources());
  std::set<uint32_t> user_tokens;
  for (size_t k = 0; k < size_t(in_.mc.content_tokens); ++k)
    if (b->utok_mask[k] > 0) user_tokens.insert(b->token_ids[size_t(b->utok[k] - 1)]);
  *out = json::array();
  for (size_t c = 0; c < items.size(); ++c) {
    const auto target = siv[idx[c]];
    json e = {{"item", items[c]},
              {"score", (u * target).sum().item<double>()},
              {"user_sources", user_weights},
              {"item_sources", gates(item_gates, idx[c] - 1, model_->item_sources())},
              {"history_attention", top(attended, 3)}};
    // Graph neighbours: how much each sampled neighbour's vector agrees with the item's.
    std::vector<std::pair<uint32_t, double>> nbrs;
    for (int64_t k = 0; k < F; ++k)
      if (b->nbr_mask[size_t(k)] > 0) {
        const int64_t n = b->nbr[size_t(k)];
        nbrs.push_back({b->item_ids[size_t(n - 1)], (piv[n] * target).sum().item<double>()});
      }
    e["graph_neighbours"] = top(nbrs, 3);
    std::set<uint32_t> shared;
    if (items[c] < in_.ds.item_tokens.size())
      for (uint32_t t : in_.ds.item_tokens[items[c]])
        if (user_tokens.count(t)) shared.insert(t);
    e["shared_tokens"] = shared;
    out->push_back(e);
  }
  return Status::OK();
}

Status M6Plugin::ScoreTask(const std::vector<UserQuery>& queries,
                           const std::vector<uint32_t>& items,
                           std::vector<std::vector<float>>* out) {
  out->clear();
  if (queries.empty()) return Status::OK();
  const uint32_t t = queries[0].task;
  for (const auto& q : queries)
    if (q.task != t) return Status::Internal("ScoreTask: queries of several tasks");
  if (t == 0 || t >= uint32_t(in_.shape.tasks))
    return Status::InvalidArgument("ScoreTask: task " + std::to_string(t) + " has no head");
  const bool pair = in_.shape.task_kinds[t] != TaskKind::kAttribute;
  if (pair != !items.empty() || (pair && items.size() != queries.size()))
    return Status::Internal("ScoreTask: one item per query for a pair task, none otherwise");
  EvalInputs e;
  M6_RETURN_IF_ERROR(PrepareEval(queries, items, &e));
  const auto& idx = e.idx;
  torch::NoGradGuard ng;
  ModelBatch mb = Tensors(*e.b, e.lists, false);
  auto iv = model_->ItemVectors(mb);
  auto uv = model_->UserVectors(mb, iv);
  torch::Tensor o;
  if (pair) {
    auto v = WithPadRow(model_->ScoredItemVectors(mb, iv))
                 .index_select(0, LongTensor(idx, int64_t(idx.size()), 1).view({-1}).to(dev_));
    o = model_->PairHead(t, uv, v).unsqueeze(1);
    const auto& sh = in_.shape;
    if (sh.task_kinds[t] == TaskKind::kRating && sh.rating_max > sh.rating_min)
      o = o.clamp(sh.rating_min, sh.rating_max);
  } else {
    o = model_->UserHead(t, uv);
    // The wide part's logits after the deep head's: the evaluator blends them.
    const auto wide = model_->WideColumns(t, model_->WideLogits(mb));
    if (wide.defined()) o = torch::cat({o, wide}, 1);
  }
  o = o.to(torch::kCPU).contiguous();
  const int64_t w = o.size(1);
  const float* p = o.data_ptr<float>();
  for (size_t q = 0; q < queries.size(); ++q) out->emplace_back(p + q * w, p + (q + 1) * w);
  return Status::OK();
}

Status M6Plugin::ComputeAllItems() {
  std::vector<torch::Tensor> parts;
  // ~160k neighbour slots per chunk (8192 items at 20 neighbours) bound the gathered rows.
  const uint32_t chunk = cfg_.model.item_graph
                             ? std::max<uint32_t>(256, 163840 / uint32_t(in_.eval_item_fanout))
                             : 8192;
  for (uint32_t start = 0; start < in_.ds.num_items; start += chunk) {
    auto b = BuildEvalBatch(in_, {});
    for (uint32_t i = start; i < std::min(in_.ds.num_items, start + chunk); ++i) b->Scored(i);
    std::vector<KeyList> lists;
    M6_RETURN_IF_ERROR(PullEval(*b, &lists));
    torch::NoGradGuard ng;
    ModelBatch mb = Tensors(*b, lists, false);
    parts.push_back(model_->ScoredItemVectors(mb, model_->ItemVectors(mb)));
  }
  all_items_ = torch::cat(parts, 0);
  return Status::OK();
}

Status M6Plugin::ScoreAllItems(const std::vector<UserQuery>& queries, std::vector<float>* scores) {
  if (!all_items_.defined()) M6_RETURN_IF_ERROR(ComputeAllItems());
  auto b = BuildEvalBatch(in_, queries);
  std::vector<KeyList> lists;
  M6_RETURN_IF_ERROR(PullEval(*b, &lists));
  torch::NoGradGuard ng;
  ModelBatch mb = Tensors(*b, lists, false);
  M6_RETURN_IF_ERROR(SetSourceScale(queries, &mb));
  auto uv = model_->UserVectors(mb, model_->ItemVectors(mb));
  // One user (a served request): a matrix-vector product reads the item matrix once; gemm
  // would first repack all of it (most of a request's time over Gowalla's 41k items).
  auto s = (uv.size(0) == 1 ? torch::mv(all_items_, uv[0]).unsqueeze(0) : uv.matmul(all_items_.t()))
               .to(torch::kCPU)
               .contiguous();
  scores->assign(s.data_ptr<float>(), s.data_ptr<float>() + s.numel());
  return Status::OK();
}

json M6Plugin::EpochReport() const {
  json gates = json::object();
  for (auto [name, f, srcs] :
       {std::make_tuple("user", model_->user_fusion, &model_->user_sources()),
        std::make_tuple("item", model_->item_fusion, &model_->item_sources())}) {
    if (!f->last_gates.defined()) continue;
    auto g = f->last_gates.to(torch::kCPU);
    for (size_t k = 0; k < srcs->size(); ++k)
      gates[name][(*srcs)[k]] = g[int64_t(k)].item<double>();
    // Per domain, over the last evaluation's requests (and every item vector it computed).
    auto cg = f->ConditionGates();
    if (!cg.defined()) continue;
    cg = cg.to(torch::kCPU);
    // The user fusion's conditions are task x domains + domain: a domain's gates are its
    // retrieval requests' (task 0), a task's the mean over the domains it was evaluated in.
    const bool user = f.ptr() == model_->user_fusion.ptr();
    const int64_t T = user ? in_.shape.tasks : 1, D = in_.shape.domains;
    for (size_t d = 0; in_.ds.multi_domain() && d < in_.ds.domains.size(); ++d)
      for (size_t k = 0; k < srcs->size() && int64_t(d) < cg.size(0); ++k) {
        const double v = cg[int64_t(d)][int64_t(k)].item<double>();
        if (std::isfinite(v) && in_.ds.domains[d].evaluate)
          gates["domains"][in_.ds.domains[d].name][name][(*srcs)[k]] = v;
      }
    for (int64_t t = 0; T > 1 && t < T; ++t)
      for (size_t k = 0; k < srcs->size(); ++k) {
        double sum = 0;
        int n = 0;
        for (int64_t c = t * D; c < (t + 1) * D && c < cg.size(0); ++c) {
          const double v = cg[c][int64_t(k)].item<double>();
          if (std::isfinite(v)) sum += v, ++n;
        }
        if (n > 0) gates["tasks"][cfg_.train.tasks[size_t(t)].name][name][(*srcs)[k]] = sum / n;
      }
  }
  return {{"gates", gates}};
}

// LibTorch reports misuse (shapes, devices, memory) by exception: one clear error, not an abort.
class GuardedM6Plugin final : public ModelPlugin {
 public:
  explicit GuardedM6Plugin(std::unique_ptr<M6Plugin> p) : p_(std::move(p)) {}
  const char* name() const override { return p_->name(); }
  DenseModel* dense() override { return p_->dense(); }
  StatusOr<std::unique_ptr<TrainBatch>> MakeBatch(const Sample* s, size_t n,
                                                  std::mt19937_64& rng) override {
    return Guard([&]() { return p_->MakeBatch(s, n, rng); });
  }
  StatusOr<StepResult> Step(TrainBatch& b) override {
    return Guard([&]() { return p_->Step(b); });
  }
  Status BeginScoring() override { return p_->BeginScoring(); }
  void EndScoring() override { p_->EndScoring(); }
  Status ScoreCandidates(const std::vector<UserQuery>& q,
                         const std::vector<std::vector<uint32_t>>& c,
                         std::vector<std::vector<float>>* s) override {
    return Guard([&]() { return p_->ScoreCandidates(q, c, s); });
  }
  Status ScoreAllItems(const std::vector<UserQuery>& q, std::vector<float>* s) override {
    return Guard([&]() { return p_->ScoreAllItems(q, s); });
  }
  Status ScoreTask(const std::vector<UserQuery>& q, const std::vector<uint32_t>& i,
                   std::vector<std::vector<float>>* o) override {
    return Guard([&]() { return p_->ScoreTask(q, i, o); });
  }
  Status Explain(const UserQuery& q, const std::vector<uint32_t>& i, json* o) override {
    return Guard([&]() { return p_->Explain(q, i, o); });
  }
  json EpochReport() const override { return p_->EpochReport(); }
  json Describe() const override { return p_->Describe(); }
  Status InitFromBackbone(const std::string& c) override {
    return Guard([&]() { return p_->InitFromBackbone(c); });
  }
  Status OnInteractions(const StreamEvent* ev, size_t n) override {
    return Guard([&]() { return p_->OnInteractions(ev, n); });
  }

 private:
  template <typename F>
  static auto Guard(F&& f) -> decltype(f()) {
    try {
      return f();
    } catch (const c10::Error& e) {
      return Status::Internal(std::string("LibTorch: ") + e.what_without_backtrace());
    } catch (const std::exception& e) {
      return Status::Internal(e.what());
    }
  }
  std::unique_ptr<M6Plugin> p_;
};

}  // namespace

namespace {
void ReadArchive(torch::serialize::InputArchive& a, const std::string& prefix,
                 std::map<std::string, DenseTensor>* out) {
  for (const std::string& key : a.keys()) {
    torch::Tensor t;
    if (a.try_read(key, t)) {
      t = t.detach().to(torch::kCPU, torch::kFloat).contiguous();
      DenseTensor& d = (*out)[prefix + key];
      d.shape = t.sizes().vec();
      d.values.assign(t.data_ptr<float>(), t.data_ptr<float>() + t.numel());
      continue;
    }
    torch::serialize::InputArchive child;
    if (a.try_read(key, child)) ReadArchive(child, prefix + key + ".", out);
  }
}
}  // namespace

bool OwnParameter(const std::string& name) {
  return FusionImpl::PerCondition(name) || name.rfind("head", 0) == 0;
}

StatusOr<std::map<std::string, DenseTensor>> ReadDenseParameters(const std::string& dense_dir) {
  const std::string path = dense_dir + "/dense.pt";
  std::map<std::string, DenseTensor> out;
  try {
    torch::serialize::InputArchive a;
    a.load_from(path);
    ReadArchive(a, "", &out);
  } catch (const c10::Error& e) {
    return Status::IOError("cannot read '" + path + "': " + e.what_without_backtrace());
  }
  return out;
}

StatusOr<std::unique_ptr<ModelPlugin>> MakeM6Plugin(const PluginContext& ctx) {
  const JobConfig& cfg = *ctx.cfg;
  const Dataset& ds = *ctx.data;
  const bool tokens = ds.num_tokens > 0 && (cfg.model.text || cfg.model.content);
  if (tokens && !cfg.FindTable(cfg.model.token_table))
    return Status::InvalidArgument(
        "the data has tokens but no table '" + cfg.model.token_table +
        "' is declared (add it under tables, or set model.text and model.content to false)");
  if (const TableSpec* wt = cfg.FindTable(cfg.model.wide_table)) {
    size_t columns = 0;
    for (const TaskSpec& t : cfg.train.tasks)
      if (const auto* a = t.type == TaskKind::kAttribute ? ds.FindAttribute(t.attribute) : nullptr)
        columns += a->classes.size();
    if (size_t(wt->dim) < columns)
      return Status::InvalidArgument("model.wide_table: table '" + wt->name + "' has dim " +
                                     std::to_string(wt->dim) + "; the attribute tasks' " +
                                     std::to_string(columns) + " classes need a column each");
  }
  if (cfg.model.rating_messages && !ds.has_ratings())
    return Status::InvalidArgument(
        "model.rating_messages: the data has no ratings to weigh the graph's messages by (" +
        cfg.data.path + ")");
  torch::Device dev(torch::kCPU);
  if (cfg.model.device == DeviceKind::kCuda) {
    if (!torch::cuda::is_available())
      return Status::Unavailable(
          "model.device is cuda, but this LibTorch sees no CUDA device (build against a CUDA "
          "LibTorch on a GPU machine)");
    dev = torch::Device(torch::kCUDA, 0);
  }
  try {
    auto p = std::make_unique<M6Plugin>(ctx, dev);
    return std::unique_ptr<ModelPlugin>(new GuardedM6Plugin(std::move(p)));
  } catch (const c10::Error& e) {
    return Status::Internal(std::string("LibTorch: ") + e.what_without_backtrace());
  }
}

}  // namespace m6rec
