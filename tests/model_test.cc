// The model's layers: shapes for every ablation, gradients against finite differences (double
// precision, small sizes), and the losses against hand-computed values.
#include "worker/model.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <functional>

namespace m6rec {

namespace {

ModelShape Shape() {
  ModelShape s;
  s.dim = 6;
  s.image_dim = 5;
  s.audio_dim = 3;
  s.tokens = true;
  s.social = true;
  return s;
}

ModelConfig SmallConfig() {
  ModelConfig c;
  c.seq_len = 4;
  c.fanout = 3;
  c.content_tokens = 5;
  c.hidden = 7;
  c.dropout = 0.0f;
  return c;
}

// A batch of B=3 users over Ki=5 items, Ku=4 user rows, Kt=6 tokens; row 1 has no history,
// no neighbours and no tokens at all (every mask zero).
ModelBatch MakeBatch(torch::Dtype dt, bool grad) {
  torch::manual_seed(3);
  auto o = torch::TensorOptions().dtype(dt);
  auto L = [](std::vector<int64_t> v, int64_t r, int64_t c) {
    return torch::tensor(v, torch::kLong).view({r, c});
  };
  auto F = [&](std::vector<float> v, int64_t r, int64_t c) {
    return torch::tensor(v).to(dt).view({r, c});
  };
  ModelBatch b;
  b.user_rows = torch::randn({4, 6}, o).requires_grad_(grad);
  b.item_rows = torch::randn({5, 6}, o).requires_grad_(grad);
  b.token_rows = torch::randn({6, 6}, o).requires_grad_(grad);
  b.item_tok = L({1, 2, 0, 3, 0, 0, 4, 5, 6, 0, 0, 0, 2, 2, 1}, 5, 3);
  b.item_tok_mask = F({1, 1, 0, 1, 0, 0, 1, 1, 1, 0, 0, 0, 1, 1, 1}, 5, 3);
  b.item_image = torch::randn({5, 5}, o);
  b.item_audio = torch::randn({5, 3}, o);
  b.users = torch::tensor(std::vector<int64_t>{1, 2, 3}, torch::kLong);
  b.hist = L({0, 1, 2, 3, 0, 0, 0, 0, 0, 0, 5, 4}, 3, 4);
  b.hist_mask = F({0, 1, 1, 1, 0, 0, 0, 0, 0, 0, 1, 1}, 3, 4);
  b.utok = L({1, 3, 0, 0, 0, 0, 0, 0, 0, 0, 6, 5, 4, 2, 1}, 3, 5);
  b.utok_mask = F({1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1}, 3, 5);
  b.nbr = L({4, 5, 0, 0, 0, 0, 1, 2, 3}, 3, 3);
  b.nbr_mask = F({1, 1, 0, 0, 0, 0, 1, 1, 1}, 3, 3);
  b.friends = L({4, 0, 0, 0, 0, 0, 1, 2, 0}, 3, 3);
  b.friends_mask = F({1, 0, 0, 0, 0, 0, 1, 1, 0}, 3, 3);
  // Item graph: items 1 and 3 (0-based 0, 2) are scored with sampled users; the rest are not.
  b.item_nbr = L({2, 4, 0, 0, 1, 0, 0, 0, 0, 0}, 5, 2);
  b.item_nbr_mask = F({1, 1, 0, 0, 1, 0, 0, 0, 0, 0}, 5, 2);
  return b;
}

torch::Tensor Loss(M6Model& m, const ModelBatch& b) {
  auto iv = m->ItemVectors(b);
  auto uv = m->UserVectors(b, iv);
  iv = m->ScoredItemVectors(b, iv);
  auto pos = iv.index_select(0, torch::tensor(std::vector<int64_t>{0, 2, 4}, torch::kLong));
  auto neg = iv.index_select(0, torch::tensor(std::vector<int64_t>{1, 3}, torch::kLong));
  auto valid = torch::ones({3, 2}, iv.options());
  return RankingLoss(LossKind::kSoftmax, (uv * pos).sum(1), uv.matmul(neg.t()), valid, 0.5, 0, 0);
}

// Compares the gradients of `module`'s parameters (those `want` selects; about `per_param`
// entries of each) with central finite differences of `loss_of` (double precision); returns
// how many entries were checked. The gradients must be those of loss_of() at the current values.
int CheckFiniteDifferences(torch::nn::Module& module, const std::function<torch::Tensor()>& loss_of,
                           const std::function<bool(const std::string&)>& want, int64_t per_param,
                           const std::string& what) {
  int checked = 0;
  for (const auto& np : module.named_parameters()) {
    if (!want(np.key())) continue;
    auto t = np.value();
    EXPECT_TRUE(t.grad().defined()) << what << " " << np.key();
    if (!t.grad().defined()) continue;
    auto flat = t.data().view({-1});
    auto g = t.grad().view({-1});
    for (int64_t k = 0; k < flat.numel(); k += std::max<int64_t>(1, flat.numel() / per_param)) {
      torch::NoGradGuard ng;
      const double orig = flat[k].item<double>(), eps = 1e-6;
      flat[k] = orig + eps;
      const double up = loss_of().item<double>();
      flat[k] = orig - eps;
      const double down = loss_of().item<double>();
      flat[k] = orig;
      const double fd = (up - down) / (2 * eps);
      EXPECT_NEAR(g[k].item<double>(), fd, 1e-6 + 1e-4 * std::abs(fd))
          << what << " " << np.key() << "[" << k << "]";
      ++checked;
    }
  }
  return checked;
}
}  // namespace

TEST(Model, ShapesForEveryAblation) {
  struct Case {
    const char* name;
    std::function<void(ModelConfig&)> off;
    std::vector<std::string> users, items;
  };
  const std::vector<std::string> all_u{"id", "sequence", "content", "graph"},
      all_i{"id", "text", "image", "audio"};
  std::vector<Case> cases{
      {"full", [](ModelConfig&) {}, all_u, all_i},
      {"no sequence",
       [](ModelConfig& c) { c.sequence = false; },
       {"id", "content", "graph"},
       all_i},
      {"no graph", [](ModelConfig& c) { c.graph = false; }, {"id", "sequence", "content"}, all_i},
      {"no content", [](ModelConfig& c) { c.content = false; }, {"id", "sequence", "graph"}, all_i},
      {"no multimodal", [](ModelConfig& c) { c.text = c.image = c.audio = false; }, all_u, {"id"}},
      {"lstm, no attention",
       [](ModelConfig& c) {
         c.rnn = RnnKind::kLstm;
         c.attention = false;
       },
       all_u, all_i},
      {"self-attention encoder", [](ModelConfig& c) { c.rnn = RnnKind::kAttention; }, all_u, all_i},
      {"concat fusion", [](ModelConfig& c) { c.fusion = FusionKind::kConcat; }, all_u, all_i},
      {"mean fusion", [](ModelConfig& c) { c.fusion = FusionKind::kMean; }, all_u, all_i},
  };
  for (const auto& tc : cases) {
    ModelConfig c = SmallConfig();
    tc.off(c);
    M6Model m(c, Shape());
    EXPECT_EQ(m->user_sources(), tc.users) << tc.name;
    EXPECT_EQ(m->item_sources(), tc.items) << tc.name;
    ModelBatch b = MakeBatch(torch::kFloat, false);
    auto iv = m->ItemVectors(b);
    auto uv = m->UserVectors(b, iv);
    EXPECT_EQ(iv.sizes(), (std::vector<int64_t>{5, 6})) << tc.name;
    EXPECT_EQ(uv.sizes(), (std::vector<int64_t>{3, 6})) << tc.name;
    EXPECT_TRUE(torch::isfinite(uv).all().item<bool>())
        << tc.name << ": the all-padding row must stay finite";
    if (c.fusion == FusionKind::kGate) {
      ASSERT_TRUE(m->user_fusion->last_gates.defined());
      EXPECT_EQ(m->user_fusion->last_gates.size(0), int64_t(tc.users.size()));
    }
  }
}

TEST(Model, TheDataDecidesWhichSourcesExist) {
  ModelShape s = Shape();
  s.tokens = false;
  s.image_dim = 0;
  s.social = false;
  M6Model m(SmallConfig(), s);
  EXPECT_EQ(m->item_sources(), (std::vector<std::string>{"id", "audio"}));
  EXPECT_EQ(m->user_sources(), (std::vector<std::string>{"id", "sequence", "graph"}));
}

TEST(Model, GradientsMatchFiniteDifferences) {
  for (const std::string rnn :
       {"gru", "lstm", "attention", "gru+item_graph", "gru+rated", "gru+item_graph+rated"}) {
    ModelConfig c = SmallConfig();
    ASSERT_TRUE(ParseEnum(rnn.substr(0, rnn.find('+')), &c.rnn));
    c.item_graph = rnn.find("item_graph") != std::string::npos;
    c.rating_messages = rnn.find("rated") != std::string::npos;
    torch::manual_seed(11);
    M6Model m(c, Shape());
    m->to(torch::kDouble);
    m->eval();
    ModelBatch b = MakeBatch(torch::kDouble, true);
    if (c.rating_messages) {
      b.nbr_level = torch::tensor(std::vector<int64_t>{1, 3, 0, 0, 0, 0, 5, 1, 9}).view({3, 3});
      if (c.item_graph)
        b.item_nbr_level =
            torch::tensor(std::vector<int64_t>{2, 5, 0, 0, 4, 0, 0, 0, 0, 0}).view({5, 2});
      torch::NoGradGuard ng;  // off the zero start, so the scale's gradient is not the shift's
      for (auto& p : m->named_parameters())
        if (p.key().find("rating_") != std::string::npos) p.value().normal_(0, 0.3);
    }
    auto loss = Loss(m, b);
    loss.backward();
    // Leaves: sparse rows (what is pushed to the servers) and every dense parameter.
    std::vector<std::pair<std::string, torch::Tensor>> leaves{
        {"user_rows", b.user_rows}, {"item_rows", b.item_rows}, {"token_rows", b.token_rows}};
    for (const auto& p : m->named_parameters()) leaves.emplace_back(p.key(), p.value());
    const double eps = 1e-6;
    for (auto& [name, t] : leaves) {
      ASSERT_TRUE(t.grad().defined()) << rnn << " " << name << " got no gradient";
      auto flat = t.data().view({-1});
      auto g = t.grad().view({-1});
      // A few entries of each (all of the small ones).
      for (int64_t k = 0; k < flat.numel(); k += std::max<int64_t>(1, flat.numel() / 5)) {
        torch::NoGradGuard ng;
        const double orig = flat[k].item<double>();
        flat[k] = orig + eps;
        const double up = Loss(m, b).item<double>();
        flat[k] = orig - eps;
        const double down = Loss(m, b).item<double>();
        flat[k] = orig;
        const double fd = (up - down) / (2 * eps);
        EXPECT_NEAR(g[k].item<double>(), fd, 1e-6 + 1e-4 * std::abs(fd))
            << rnn << " " << name << "[" << k << "]";
      }
    }
  }
}

TEST(Model, ItemGraphAveragesScoredItemsWithTheirUsers) {
  ModelConfig c = SmallConfig();
  c.item_graph = true;
  M6Model m(c, Shape());
  m->eval();
  ModelBatch b = MakeBatch(torch::kFloat, false);
  torch::NoGradGuard ng;
  auto iv = m->ItemVectors(b);
  auto sv = m->ScoredItemVectors(b, iv);
  ASSERT_EQ(sv.sizes(), iv.sizes());
  // At the start the item graph's map is the identity: (tower + mean of the sampled users) / 2.
  auto users = b.user_rows;
  EXPECT_TRUE(torch::allclose(sv[0], 0.5 * (iv[0] + 0.5 * (users[1] + users[3])), 1e-5, 1e-6));
  EXPECT_TRUE(torch::allclose(sv[2], 0.5 * (iv[2] + users[0]), 1e-5, 1e-6));
  // Items without sampled users (not scored, or cold) keep their tower vector exactly.
  for (int k : {1, 3, 4}) EXPECT_TRUE(torch::equal(sv[k], iv[k])) << k;
  // Off: the tower vectors, untouched.
  M6Model plain(SmallConfig(), Shape());
  auto piv = plain->ItemVectors(b);
  EXPECT_TRUE(torch::equal(plain->ScoredItemVectors(b, piv), piv));
}

// model.rating_messages with item_graph: each user a scored item reads is bent by the rating it
// gave the item, with the item side's own parameters; zero at the start, and a level's shift moves
// only the items one of whose sampled users gave that rating.
TEST(Model, ItemGraphRatingMessagesMoveOnlyTheirLevelsItems) {
  ModelConfig c = SmallConfig();
  c.item_graph = true;
  c.rating_messages = true;
  torch::manual_seed(5);
  M6Model m(c, Shape());
  m->eval();
  ModelBatch b = MakeBatch(torch::kFloat, false);
  torch::NoGradGuard ng;
  auto iv = m->ItemVectors(b);
  const auto plain = m->ScoredItemVectors(b, iv);
  // item 0 reads users 1 (rated 5) and 3 (rated 2), item 2 user 0 (rated 2).
  b.item_nbr_level = torch::tensor(std::vector<int64_t>{5, 2, 0, 0, 2, 0, 0, 0, 0, 0}).view({5, 2});
  EXPECT_TRUE(torch::allclose(m->ScoredItemVectors(b, iv), plain)) << "zero at the start";
  torch::Tensor shift, user_shift;
  for (auto& p : m->named_parameters()) {
    if (p.key() == "item_rating_shift") shift = p.value();
    if (p.key() == "rating_shift") user_shift = p.value();
  }
  ASSERT_TRUE(shift.defined() && user_shift.defined());
  user_shift.fill_(1.0);  // the user graph's levels: no part of the item side
  EXPECT_TRUE(torch::allclose(m->ScoredItemVectors(b, iv), plain));
  shift[4].fill_(0.5);  // level 5: item 0's first user only
  auto moved = m->ScoredItemVectors(b, iv);
  EXPECT_FALSE(torch::allclose(moved[0], plain[0], 1e-4, 1e-5));
  for (int k : {1, 2, 3, 4}) EXPECT_TRUE(torch::allclose(moved[k], plain[k], 1e-5, 1e-6)) << k;
  shift[1].fill_(0.5);  // level 2: items 0 and 2
  moved = m->ScoredItemVectors(b, iv);
  EXPECT_FALSE(torch::allclose(moved[2], plain[2], 1e-4, 1e-5));
  for (int k : {1, 3, 4}) EXPECT_TRUE(torch::equal(moved[k], iv[k])) << "no sampled users: " << k;
}

// The item graph's rater aggregate is computed as weighted bags per rating level; it must be the
// gathered formula's value and gradients (rows, the levels' scale and shift), padding included.
TEST(Model, RatedNeighbourSumIsTheGatheredSumWithoutGatheringIt) {
  torch::manual_seed(11);
  const int64_t m = 30, n = 7, k = 12, d = 5, levels = 5;
  auto rows = torch::randn({m, d}).requires_grad_(true);
  auto scale = (0.3 * torch::randn({levels, d})).requires_grad_(true);
  auto shift = (0.3 * torch::randn({levels, d})).requires_grad_(true);
  auto idx = torch::randint(1, m, {n, k}, torch::kLong);
  auto level = torch::randint(0, levels + 1, {n, k}, torch::kLong);
  auto weights = torch::rand({n, k}) * (torch::rand({n, k}) > 0.3).to(torch::kFloat);
  idx.masked_fill_(weights == 0, 0);  // padding: the pad row, weight 0
  weights[3].zero_();                 // an item without raters
  auto padded = [](const torch::Tensor& t) {
    return torch::cat({torch::zeros({1, t.size(1)}), t}, 0);
  };
  auto gathered = [&](const torch::Tensor& sc, const torch::Tensor& sh) {
    auto x = padded(rows).index_select(0, idx.reshape({-1})).view({n, k, d});
    if (sc.defined()) {
      auto l = level.reshape({-1});
      x = x * (1 + padded(sc).index_select(0, l).view({n, k, d})) +
          padded(sh).index_select(0, l).view({n, k, d});
    }
    return (x * weights.unsqueeze(-1)).sum(1);
  };
  // Plain weighted sum (no levels).
  auto bag = RatedNeighbourSum(padded(rows), idx, weights, {}, {}, {});
  auto ref = gathered({}, {});
  ASSERT_EQ(bag.sizes(), ref.sizes());
  EXPECT_TRUE(torch::allclose(bag, ref, 1e-5, 1e-6));
  EXPECT_TRUE(torch::equal(bag[3], torch::zeros({d})));
  // With levels: values and every gradient.
  const auto probe = torch::randn({n, d});
  auto grads = [&](const torch::Tensor& out) {
    return torch::autograd::grad({(out * probe).sum()}, {rows, scale, shift});
  };
  auto rated = RatedNeighbourSum(padded(rows), idx, weights, level, scale, shift);
  auto rated_ref = gathered(scale, shift);
  EXPECT_TRUE(torch::allclose(rated, rated_ref, 1e-5, 1e-5));
  auto g = grads(rated), gr = grads(rated_ref);
  for (size_t i = 0; i < g.size(); ++i)
    EXPECT_TRUE(torch::allclose(g[i], gr[i], 1e-5, 1e-5)) << "gradient " << i;
  EXPECT_GT(g[0].abs().sum().item<double>(), 0.0);
  // No neighbour slots at all (a zero fanout): zeros, not an error.
  auto none = RatedNeighbourSum(padded(rows), torch::zeros({n, 0}, torch::kLong),
                                torch::zeros({n, 0}), {}, {}, {});
  EXPECT_TRUE(torch::equal(none, torch::zeros({n, d})));
}

TEST(Model, SymmetricWeightingSumsTheWeightedNeighbours) {
  // graph_weighting symmetric: the weights carry LightGCN's normalisation, the model sums.
  ModelConfig c = SmallConfig();
  c.item_graph = true;
  c.graph_weighting = GraphWeighting::kSymmetric;
  M6Model m(c, Shape());
  m->eval();
  ModelBatch b = MakeBatch(torch::kFloat, false);
  torch::NoGradGuard ng;
  b.item_nbr_mask = b.item_nbr_mask * 0.3;  // e.g. sqrt(pool)/n/sqrt(d_j) for every neighbour
  auto iv = m->ItemVectors(b);
  auto sv = m->ScoredItemVectors(b, iv);
  auto users = b.user_rows;
  // Item 0 has users 1 and 3: a mean would give 0.5 (u1 + u3); the sum gives 0.3 (u1 + u3).
  EXPECT_TRUE(torch::allclose(sv[0], 0.5 * (iv[0] + 0.3 * (users[1] + users[3])), 1e-5, 1e-6));
  EXPECT_TRUE(torch::allclose(sv[2], 0.5 * (iv[2] + 0.3 * users[0]), 1e-5, 1e-6));
  for (int k : {1, 3, 4}) EXPECT_TRUE(torch::equal(sv[k], iv[k])) << k;
}

TEST(Model, PaddingRowsGetNoGradientAndChangeNothing) {
  M6Model m(SmallConfig(), Shape());
  m->eval();
  ModelBatch b = MakeBatch(torch::kFloat, true);
  auto uv = m->UserVectors(b, m->ItemVectors(b));
  // Row 1 sees nothing but its id row: changing rows it does not reference leaves it unchanged.
  ModelBatch b2 = MakeBatch(torch::kFloat, false);
  {
    torch::NoGradGuard ng;
    b2.token_rows.add_(1.0);
    b2.user_rows[0].add_(1.0);  // friend of row 0 only
    b2.user_rows[2].add_(1.0);  // row 2's own id, and a friend of row 2
  }
  auto uv2 = m->UserVectors(b2, m->ItemVectors(b2));
  EXPECT_TRUE(torch::allclose(uv[1], uv2[1])) << "row 1 must depend only on its own id row";
  EXPECT_FALSE(torch::allclose(uv[0], uv2[0]));
}

TEST(Model, SelfAttentionEncoderIgnoresPaddingAndReadsOrder) {
  torch::manual_seed(4);
  SelfAttentionEncoder enc(6, 4, 2, 0.0);
  enc->eval();
  auto seq = torch::randn({2, 4, 6}).requires_grad_(true);
  auto mask = torch::tensor(std::vector<float>{0, 1, 1, 1, 0, 0, 0, 0}).view({2, 4});
  auto out = enc(seq, mask);
  EXPECT_EQ(out.sizes(), (std::vector<int64_t>{2, 4, 6}));
  EXPECT_TRUE(torch::isfinite(out).all().item<bool>()) << "an empty history stays finite";
  EXPECT_EQ(out[1].abs().sum().item<float>(), 0.0f) << "an empty history encodes to zeros";
  out.select(1, 3).sum().backward();
  EXPECT_EQ(seq.grad()[0][0].abs().sum().item<float>(), 0.0f) << "a padding slot gets no gradient";
  EXPECT_GT(seq.grad()[0][1].abs().sum().item<float>(), 0.0f);
  // The padding slot's content changes nothing; the order of the real items does.
  torch::NoGradGuard ng;
  auto other = seq.detach().clone();
  other[0][0] += 5.0;
  EXPECT_TRUE(torch::allclose(enc(other, mask)[0], out[0].detach(), 1e-5, 1e-6));
  auto swapped = seq.detach().clone();
  swapped[0][1].copy_(seq[0][2]);
  swapped[0][2].copy_(seq[0][1]);
  EXPECT_FALSE(torch::allclose(enc(swapped, mask)[0][3], out[0][3].detach(), 1e-4, 1e-5))
      << "positions make the encoder order-aware";
}

TEST(Model, DomainConditionedFusionStartsNeutralAndLearnsPerDomain) {
  // Conditioned on 3 domains, the fusion starts exactly as the unconditioned one (the FiLM
  // head is the identity and the gates ignore the condition), and its gradients match finite
  // differences through the condition embedding, the gates and the head.
  torch::manual_seed(5);
  Fusion plain(3, 4, 8, FusionKind::kGate, 0.0);
  torch::manual_seed(5);
  Fusion cond(3, 4, 8, FusionKind::kGate, 0.0, 3);
  cond->to(torch::kDouble);
  plain->to(torch::kDouble);
  auto xs = torch::randn({6, 3, 4}, torch::kDouble);
  auto domain = torch::tensor(std::vector<int64_t>{0, 1, 2, 2, 1, 0}, torch::kLong);
  auto y = cond->forward(xs, domain);
  EXPECT_EQ(y.sizes(), (std::vector<int64_t>{6, 4}));
  EXPECT_TRUE(torch::allclose(y, plain->forward(xs), 1e-9, 1e-12));
  ASSERT_TRUE(cond->ConditionGates().defined());
  EXPECT_EQ(cond->ConditionGates().sizes(), (std::vector<int64_t>{3, 3}));
  EXPECT_TRUE(torch::allclose(cond->ConditionGates()[1],
                              torch::full({3}, 1.0 / (1.0 + std::exp(-3.0)), torch::kDouble)))
      << "domain 1's rows start with open gates";
  // Move away from the neutral start so that every part has a gradient.
  {
    torch::NoGradGuard ng;
    for (auto& p : cond->parameters()) p.add_(0.3 * torch::randn_like(p));
  }
  auto target = torch::randn({6, 4}, torch::kDouble);
  auto loss_of = [&]() { return (cond->forward(xs, domain) - target).pow(2).sum(); };
  for (auto& p : cond->parameters()) p.mutable_grad() = torch::Tensor();
  loss_of().backward();
  const int checked = CheckFiniteDifferences(
      *cond, loss_of, [](const std::string&) { return true; }, 4, "conditioned fusion");
  EXPECT_GT(checked, 20);
  // Each domain now fuses differently: the same sources give different vectors per domain.
  auto same = xs.index_select(0, torch::tensor(std::vector<int64_t>{0, 0, 0}, torch::kLong));
  auto per_domain = cond->forward(same, torch::tensor(std::vector<int64_t>{0, 1, 2}, torch::kLong));
  EXPECT_FALSE(torch::allclose(per_domain[0], per_domain[1]));
  EXPECT_FALSE(torch::allclose(per_domain[1], per_domain[2]));
  // The model wires the condition through both towers when the data has domains.
  ModelShape s = Shape();
  s.domains = 2;
  M6Model m(SmallConfig(), s);
  ModelBatch b = MakeBatch(torch::kFloat, false);
  b.user_condition = torch::tensor(std::vector<int64_t>{0, 1, 1}, torch::kLong);
  b.item_domain = torch::tensor(std::vector<int64_t>{0, 0, 1, 1, 0}, torch::kLong);
  auto iv = m->ItemVectors(b);
  EXPECT_EQ(m->UserVectors(b, iv).sizes(), (std::vector<int64_t>{3, 6}));
  EXPECT_TRUE(m->user_fusion->ConditionGates().defined());
  EXPECT_TRUE(m->item_fusion->ConditionGates().defined());
}

// Per-domain low-rank adapters (what `m6rec adapt` trains): silent at the start (the fusion
// is exactly the one without them), gradients that match finite differences, and a domain's
// adapter changes that domain's rows only.
TEST(Model, FusionAdaptersStartSilentAndMoveOnlyTheirDomain) {
  for (FusionKind mode : {FusionKind::kGate, FusionKind::kConcat}) {
    torch::manual_seed(7);
    Fusion plain(3, 4, 8, mode, 0.0, 3);
    torch::manual_seed(7);
    Fusion adapted(3, 4, 8, mode, 0.0, 3, /*adapter_rank=*/2);
    plain->to(torch::kDouble);
    adapted->to(torch::kDouble);
    auto xs = torch::randn({6, 3, 4}, torch::kDouble);
    auto domain = torch::tensor(std::vector<int64_t>{0, 1, 2, 2, 1, 0}, torch::kLong);
    EXPECT_TRUE(torch::equal(adapted->forward(xs, domain), plain->forward(xs, domain)))
        << EnumName(mode) << ": adapters start silent";
    std::vector<std::string> per_condition;
    for (const auto& np : adapted->named_parameters())
      if (FusionImpl::PerCondition(np.key())) {
        per_condition.push_back(np.key());
        EXPECT_EQ(np.value().size(0), 3) << np.key() << ": one row per condition";
      }
    EXPECT_EQ(per_condition.size(), mode == FusionKind::kGate ? 5u : 3u)
        << "cond_emb, film, adapter_gate, adapter_down, adapter_up (concat: no gates)";
    EXPECT_FALSE(FusionImpl::PerCondition("user_fusion.gate.weight"));
    EXPECT_TRUE(FusionImpl::PerCondition("user_fusion.adapter_up"));
    EXPECT_FALSE(FusionImpl::PerCondition("user_fusion.not_adapter_up"));

    // Domain 2's adapters moved: rows of domains 0 and 1 are unchanged, domain 2's are not.
    const auto before = adapted->forward(xs, domain);
    {
      torch::NoGradGuard ng;
      for (auto& np : adapted->named_parameters())
        if (np.key().find("adapter") != std::string::npos) np.value()[2].add_(0.5);
    }
    const auto after = adapted->forward(xs, domain);
    for (int64_t r : {0, 1, 4, 5}) EXPECT_TRUE(torch::equal(after[r], before[r])) << "row " << r;
    for (int64_t r : {2, 3}) EXPECT_FALSE(torch::allclose(after[r], before[r])) << "row " << r;

    // Gradients of the adapters against finite differences.
    auto target = torch::randn({6, 4}, torch::kDouble);
    auto loss_of = [&]() { return (adapted->forward(xs, domain) - target).pow(2).sum(); };
    for (auto& p : adapted->parameters()) p.mutable_grad() = torch::Tensor();
    loss_of().backward();
    const int checked = CheckFiniteDifferences(
        *adapted, loss_of,
        [](const std::string& name) { return name.find("adapter") != std::string::npos; }, 7,
        EnumName(mode));
    EXPECT_GT(checked, 10);
  }
}

// adapt.item_fusion: plain. A condition marked plain reads its rows through the fusion's
// starting map (open gates, the reductions's average, no residual MLP) bent by its own
// adapters and FiLM head, whatever the shared maps have learned: exactly what a fusion with
// untrained shared maps and the same per-condition parameters computes. The other conditions'
// rows are bit-identical to the unmarked fusion's, and the plain rows send no gradient to the
// shared maps; the per-condition gradients match finite differences.
TEST(Model, PlainConditionsReadTheStartingMapAndTheOthersTheLearnedOne) {
  for (FusionKind mode : {FusionKind::kGate, FusionKind::kConcat}) {
    torch::manual_seed(11);
    Fusion trained(3, 4, 8, mode, 0.0, 3, /*adapter_rank=*/2);
    torch::manual_seed(11);
    Fusion untrained(3, 4, 8, mode, 0.0, 3, /*adapter_rank=*/2);
    trained->to(torch::kDouble);
    untrained->to(torch::kDouble);
    {
      // A "trained" backbone: every tensor moved; the per-condition ones equal in both.
      torch::NoGradGuard ng;
      for (auto& np : trained->named_parameters()) {
        np.value().add_(torch::randn_like(np.value()) * 0.3);
        if (FusionImpl::PerCondition(np.key()))
          for (auto& up : untrained->named_parameters())
            if (up.key() == np.key()) up.value().copy_(np.value());
      }
    }
    auto xs = torch::randn({6, 3, 4}, torch::kDouble);
    auto domain = torch::tensor(std::vector<int64_t>{0, 1, 2, 2, 1, 0}, torch::kLong);
    const auto learned = trained->forward(xs, domain);
    const auto start = untrained->forward(xs, domain);
    trained->SetPlainConditions({2});
    const auto out = trained->forward(xs, domain);
    for (int64_t r : {0, 1, 4, 5})
      EXPECT_TRUE(torch::equal(out[r], learned[r])) << EnumName(mode) << " row " << r;
    for (int64_t r : {2, 3}) {
      // (1e-6: the starting averaging map was built in float before the cast to double)
      EXPECT_TRUE(torch::allclose(out[r], start[r], 1e-6, 1e-6)) << EnumName(mode) << " row " << r;
      EXPECT_FALSE(torch::allclose(out[r], learned[r])) << EnumName(mode) << " row " << r;
    }

    // The plain rows' loss reaches condition 2's own parameters only.
    auto target = torch::randn({2, 4}, torch::kDouble);
    const auto rows = torch::tensor(std::vector<int64_t>{2, 3}, torch::kLong);
    auto loss_of = [&]() {
      return (trained->forward(xs, domain).index_select(0, rows) - target).pow(2).sum();
    };
    for (auto& p : trained->parameters()) p.mutable_grad() = torch::Tensor();
    loss_of().backward();
    for (const auto& np : trained->named_parameters()) {
      const auto& g = np.value().grad();
      if (!FusionImpl::PerCondition(np.key())) {
        EXPECT_TRUE(!g.defined() || g.abs().max().item<double>() == 0.0)
            << EnumName(mode) << ": " << np.key() << " is shared, the plain rows do not train it";
      } else if (np.key().find("cond_emb") == std::string::npos) {
        ASSERT_TRUE(g.defined()) << np.key();
        EXPECT_EQ(g.narrow(0, 0, 2).abs().max().item<double>(), 0.0) << np.key();
        EXPECT_GT(g[2].abs().max().item<double>(), 0.0) << EnumName(mode) << ": " << np.key();
      }
    }
    const int checked = CheckFiniteDifferences(
        *trained, loss_of, [](const std::string& name) { return FusionImpl::PerCondition(name); },
        7, std::string(EnumName(mode)) + " plain");
    EXPECT_GT(checked, 10);
  }
}

// The towers' adapters (model.tower_adapters): per-condition corrections of the sequence
// read-out (user condition) and the text projection (item domain). They start silent (the
// model is exactly the one without them), are per-condition parameters on the right side, move
// only their own condition's rows, and their gradients match finite differences.
TEST(Model, TowerAdaptersStartSilentAndMoveOnlyTheirCondition) {
  ModelShape s = Shape();
  s.domains = 2;
  ModelConfig c = SmallConfig();
  c.adapter_rank = 2;
  torch::manual_seed(5);
  M6Model plain(c, s);
  c.tower_adapters = true;
  torch::manual_seed(5);
  M6Model tower(c, s);
  plain->to(torch::kDouble);
  tower->to(torch::kDouble);
  {  // the shared parameters alike (the adapters' random D shifts the generator)
    torch::NoGradGuard ng;
    auto from = plain->named_parameters();
    for (auto& np : tower->named_parameters())
      if (from.contains(np.key())) np.value().copy_(from[np.key()]);
  }
  std::vector<std::string> towers;
  for (const auto& np : tower->named_parameters())
    if (np.key().find("_adapter.") != std::string::npos) {
      towers.push_back(np.key());
      EXPECT_TRUE(FusionImpl::PerCondition(np.key())) << np.key();
      const bool user = np.key().rfind("user_", 0) == 0;
      EXPECT_EQ(np.value().size(0), user ? s.user_conditions() : s.domains) << np.key();
    }
  EXPECT_EQ(towers, (std::vector<std::string>{
                        "item_text_adapter.adapter_down", "item_text_adapter.adapter_up",
                        "user_seq_adapter.adapter_down", "user_seq_adapter.adapter_up"}));
  ModelBatch b = MakeBatch(torch::kDouble, false);
  b.user_condition = torch::tensor(std::vector<int64_t>{0, 1, 1}, torch::kLong);
  b.item_domain = torch::tensor(std::vector<int64_t>{0, 0, 1, 1, 0}, torch::kLong);
  auto vectors = [&](M6Model& m) {
    auto iv = m->ItemVectors(b);
    return std::pair{iv, m->UserVectors(b, iv)};
  };
  auto [iv0, uv0] = vectors(plain);
  auto [iv1, uv1] = vectors(tower);
  EXPECT_TRUE(torch::equal(iv0, iv1)) << "the text adapter starts silent";
  EXPECT_TRUE(torch::equal(uv0, uv1)) << "the sequence adapter starts silent";

  // Domain 1's text adapter moved: only domain 1's items move. Then (the text adapter put
  // back) condition 1's sequence adapter: only condition 1's users move.
  {
    torch::NoGradGuard ng;
    for (auto& np : tower->named_parameters())
      if (np.key().rfind("item_text_adapter.", 0) == 0) np.value()[1].add_(0.5);
  }
  auto [iv2, uv2] = vectors(tower);
  // (Item 3 is of domain 1 but has no tokens: its text is zero, and so is the correction.)
  for (int64_t r : {0, 1, 3, 4}) EXPECT_TRUE(torch::equal(iv2[r], iv0[r])) << "item " << r;
  EXPECT_FALSE(torch::allclose(iv2[2], iv0[2])) << "item 2, domain 1, with tokens";
  {
    torch::NoGradGuard ng;
    for (auto& np : tower->named_parameters())
      if (np.key().rfind("item_text_adapter.", 0) == 0) np.value()[1].sub_(0.5);
    for (auto& np : tower->named_parameters())
      if (np.key().rfind("user_seq_adapter.", 0) == 0) np.value()[1].add_(0.5);
  }
  auto [iv3, uv3] = vectors(tower);
  EXPECT_TRUE(torch::allclose(iv3, iv0));
  EXPECT_TRUE(torch::allclose(uv3[0], uv0[0])) << "condition 0's user is unchanged";
  EXPECT_FALSE(torch::allclose(uv3[2], uv0[2])) << "condition 1's user with a history moves";

  // Gradients of both adapters against finite differences.
  for (auto& p : tower->parameters()) p.mutable_grad() = torch::Tensor();
  auto target = torch::randn({3, 6}, torch::kDouble);
  auto loss_of = [&]() {
    auto [iv, uv] = vectors(tower);
    return (uv - target).pow(2).sum() + iv.pow(2).sum();
  };
  loss_of().backward();
  const int checked = CheckFiniteDifferences(
      *tower, loss_of,
      [](const std::string& name) { return name.find("_adapter.") != std::string::npos; }, 6,
      "tower adapters");
  EXPECT_GT(checked, 12);
}

// Tasks: the user fusion has a condition per (domain, task), every non-retrieval task a head
// of its own shape (a pair head starting at the plain dot product plus, for rating, the mean
// rating), source scales reach the fusion, and the heads' and the task-conditioned fusion's
// gradients match finite differences.
TEST(Model, TaskHeadsAndTaskConditionedFusion) {
  ModelShape s = Shape();
  s.domains = 2;
  s.tasks = 4;
  s.task_kinds = {TaskKind::kRetrieval, TaskKind::kRating, TaskKind::kLike, TaskKind::kAttribute};
  s.task_outputs = {0, 1, 1, 3};
  s.rating_mean = 3.5;
  torch::manual_seed(5);
  M6Model m(SmallConfig(), s);
  int64_t cond_rows = 0;
  for (const auto& np : m->named_parameters())
    if (np.key() == "user_fusion.cond_emb.weight") cond_rows = np.value().size(0);
  EXPECT_EQ(cond_rows, 8) << "2 domains x 4 tasks";
  ModelBatch b = MakeBatch(torch::kFloat, false);
  // task x domains + domain: (task 0, domain 1), (task 3, domain 0), (task 3, domain 1).
  b.user_condition = torch::tensor(std::vector<int64_t>{1, 6, 7}, torch::kLong);
  b.item_domain = torch::tensor(std::vector<int64_t>{0, 0, 1, 1, 0}, torch::kLong);
  auto iv = m->ItemVectors(b);
  auto uv = m->UserVectors(b, iv);
  auto items = iv.index_select(0, torch::tensor(std::vector<int64_t>{0, 2, 4}, torch::kLong));
  EXPECT_EQ(m->PairHead(1, uv, items).sizes(), (std::vector<int64_t>{3}));
  EXPECT_EQ(m->UserHead(3, uv).sizes(), (std::vector<int64_t>{3, 3}));
  EXPECT_TRUE(torch::allclose(m->PairHead(1, uv, items), (uv * items).sum(1) + 3.5, 1e-5, 1e-5));
  EXPECT_TRUE(torch::allclose(m->PairHead(2, uv, items), (uv * items).sum(1), 1e-5, 1e-5));
  // The same sources for another task fuse differently (its own condition).
  ModelBatch other = b;
  other.user_condition = torch::tensor(std::vector<int64_t>{3, 6, 7}, torch::kLong);
  for (const auto& np : m->named_parameters())
    if (np.key() == "user_fusion.film.weight") {
      torch::NoGradGuard ng;
      np.value().normal_(0, 0.5);
    }
  EXPECT_FALSE(torch::allclose(m->UserVectors(b, iv)[0], m->UserVectors(other, iv)[0]));
  // A strategy's source scale: 1 changes nothing, 0 on every source leaves the fusion's bias.
  ModelBatch scaled = b;
  scaled.user_source_scale = torch::ones({3, int64_t(m->user_sources().size())});
  EXPECT_TRUE(torch::allclose(m->UserVectors(scaled, iv), m->UserVectors(b, iv)));
  scaled.user_source_scale = torch::zeros({3, int64_t(m->user_sources().size())});
  EXPECT_FALSE(torch::allclose(m->UserVectors(scaled, iv), m->UserVectors(b, iv)));

  // Gradients, in double precision: rating (squared error), like (BCE) and attribute (CE).
  m->to(torch::kDouble);
  ModelBatch bd = MakeBatch(torch::kDouble, false);
  bd.user_condition = b.user_condition;
  bd.item_domain = b.item_domain;
  auto loss_of = [&]() {
    auto ivd = m->ItemVectors(bd);
    auto u = m->UserVectors(bd, ivd);
    auto it = ivd.index_select(0, torch::tensor(std::vector<int64_t>{0, 2, 4}, torch::kLong));
    auto y = torch::tensor(std::vector<double>{4, 1, 5}, torch::kDouble);
    auto like = torch::tensor(std::vector<double>{1, 0, 1}, torch::kDouble);
    namespace F = torch::nn::functional;
    return (m->PairHead(1, u, it) - y).pow(2).sum() +
           F::binary_cross_entropy_with_logits(m->PairHead(2, u, it), like) +
           F::cross_entropy(m->UserHead(3, u), torch::tensor(std::vector<int64_t>{2, 0, 1}));
  };
  m->zero_grad();
  loss_of().backward();
  const int checked = CheckFiniteDifferences(
      *m, loss_of,
      [](const std::string& n) {
        return n.rfind("head", 0) == 0 || n.rfind("user_fusion.", 0) == 0;
      },
      3, "task heads");
  EXPECT_GT(checked, 20);
}

// An attribute row's bag (the whole list it chose) replaces its sampled neighbours in the graph
// source; rows without a bag keep theirs.
TEST(Model, AttributeRowsReadTheirWholeBagInTheGraphSource) {
  torch::manual_seed(5);
  M6Model m(SmallConfig(), Shape());
  m->eval();
  torch::NoGradGuard ng;
  ModelBatch b = MakeBatch(torch::kFloat, false);
  auto iv = m->ItemVectors(b);
  auto plain = m->UserVectors(b, iv);
  ModelBatch bag = b;
  bag.bag_rows = torch::tensor(std::vector<int64_t>{2});
  bag.bag = torch::tensor(std::vector<int64_t>{1, 2, 4, 5}).view({1, 4});
  bag.bag_mask = torch::ones({1, 4});
  auto with_bag = m->UserVectors(bag, iv);
  // The same user with those four items as its sampled neighbours.
  ModelBatch wide = b;
  wide.nbr = torch::tensor(std::vector<int64_t>{4, 5, 0, 0, 0, 0, 0, 0, 1, 2, 4, 5}).view({3, 4});
  wide.nbr_mask =
      torch::tensor(std::vector<float>{1, 1, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1}).view({3, 4});
  auto expect = m->UserVectors(wide, iv);
  EXPECT_TRUE(torch::allclose(with_bag.narrow(0, 0, 2), plain.narrow(0, 0, 2)));
  EXPECT_TRUE(torch::allclose(with_bag[2], expect[2], 1e-5, 1e-6));
  EXPECT_FALSE(torch::allclose(with_bag[2], plain[2], 1e-4, 1e-5));
}

// The wide part (model.wide_table): an attribute row's logits add the sum of its bag's wide
// rows / sqrt(bag size), in its task's own columns; rows without a bag add nothing, and the
// gradient reaches only the trained task's columns of the bag's rows.
TEST(Model, WideRowsAddALogisticRegressionOnTheBagToAnAttributeHead) {
  ModelShape s = Shape();
  s.tasks = 3;
  s.task_kinds = {TaskKind::kRetrieval, TaskKind::kAttribute, TaskKind::kAttribute};
  s.task_outputs = {0, 3, 2};
  s.wide_offset = {-1, 0, 3};
  s.wide_columns = 5;
  torch::manual_seed(5);
  M6Model m(SmallConfig(), s);
  ModelBatch b = MakeBatch(torch::kFloat, false);
  b.bag_rows = torch::tensor(std::vector<int64_t>{2, 0});
  b.bag = torch::tensor(std::vector<int64_t>{1, 2, 4, 1, 0, 0}).view({2, 3});
  b.bag_mask = torch::tensor(std::vector<float>{1, 1, 1, 1, 0, 0}).view({2, 3});
  const auto rows = torch::randn({4, 5});
  b.wide_rows = rows.clone().requires_grad_(true);
  b.wide_bag = torch::tensor(std::vector<int64_t>{1, 2, 3, 4, 0, 0}).view({2, 3});
  b.wide_mask = b.bag_mask.clone();
  const auto wide = m->WideLogits(b);
  ASSERT_EQ(wide.sizes(), (std::vector<int64_t>{3, 5}));
  EXPECT_TRUE(torch::allclose(wide[2], (rows[0] + rows[1] + rows[2]) / std::sqrt(3.0)));
  EXPECT_TRUE(torch::allclose(wide[0], rows[3]));
  EXPECT_EQ(wide[1].abs().sum().item<float>(), 0.0f) << "a row without a bag";
  auto uv = m->UserVectors(b, m->ItemVectors(b));
  EXPECT_TRUE(torch::allclose(m->UserHead(1, uv, wide) - m->UserHead(1, uv), wide.narrow(1, 0, 3),
                              1e-5, 1e-6));
  EXPECT_TRUE(torch::allclose(m->UserHead(2, uv, wide) - m->UserHead(2, uv), wide.narrow(1, 3, 2),
                              1e-5, 1e-6));
  namespace F = torch::nn::functional;
  F::cross_entropy(m->UserHead(2, uv, wide), torch::tensor(std::vector<int64_t>{1, 0, 0}))
      .backward();
  const auto g = b.wide_rows.grad();
  ASSERT_TRUE(g.defined());
  EXPECT_EQ(g.narrow(1, 0, 3).abs().sum().item<float>(), 0.0f) << "task 1's columns";
  for (int64_t r = 0; r < 4; ++r) EXPECT_GT(g[r].narrow(0, 3, 2).abs().sum().item<float>(), 0.0f);
  // Without wide rows the heads are the deep part alone.
  ModelBatch plain = MakeBatch(torch::kFloat, false);
  EXPECT_FALSE(m->WideLogits(plain).defined());
}

// ModelBatch::rows_stop (attribute rows with model.attribute_rows false): the rows it names
// read every sparse row as before but send none of them a gradient, only the user tower's dense
// part; the other rows train the rows as always.
TEST(Model, StoppedRowsReadTheSparseRowsButTrainOnlyTheDensePart) {
  torch::manual_seed(5);
  M6Model m(SmallConfig(), Shape());
  struct Grads {
    torch::Tensor out;
    double rows = 0, dense = 0;
  };
  auto run = [&](bool stop, int64_t row) {
    ModelBatch b = MakeBatch(torch::kFloat, true);
    if (stop) b.rows_stop = torch::tensor(std::vector<int64_t>{0, 0, 1}).to(torch::kBool);
    m->zero_grad();
    auto uv = m->UserVectors(b, m->ItemVectors(b));
    uv[row].sum().backward();
    Grads g{uv.detach()};
    for (const auto& t : {b.user_rows, b.item_rows, b.token_rows})
      if (t.grad().defined()) g.rows += t.grad().abs().sum().item<double>();
    for (const auto& np : m->user_fusion->named_parameters())
      if (np.value().grad().defined()) g.dense += np.value().grad().abs().sum().item<double>();
    return g;
  };
  // Row 2 reads its id row, a history, tokens, neighbours and friends.
  const Grads plain = run(false, 2), stopped = run(true, 2), other = run(true, 0);
  EXPECT_TRUE(torch::equal(plain.out, stopped.out)) << "the forward pass is unchanged";
  EXPECT_GT(plain.rows, 0.0);
  EXPECT_EQ(stopped.rows, 0.0) << "no sparse row moves for a stopped row";
  EXPECT_GT(stopped.dense, 0.0) << "the dense part still trains on it";
  EXPECT_GT(other.rows, 0.0) << "a row not named trains the rows it reads";
}

// model.rating_messages: each neighbour's vector is bent by its rating level before the graph's
// mean; all-zero at the start (the plain messages), unrated neighbours never change, and a
// level's parameters move only the rows whose neighbours have that level.
TEST(Model, RatingMessagesStartPlainAndMoveOnlyTheirLevelsRows) {
  ModelConfig c = SmallConfig();
  c.rating_messages = true;
  torch::manual_seed(5);
  M6Model m(c, Shape());
  m->eval();
  ModelBatch b = MakeBatch(torch::kFloat, false);
  auto iv = m->ItemVectors(b);
  const auto plain = m->UserVectors(b, iv).detach();
  b.nbr_level = torch::tensor(std::vector<int64_t>{4, 4, 0, 0, 0, 0, 2, 0, 2}).view({3, 3});
  EXPECT_TRUE(torch::allclose(m->UserVectors(b, iv), plain)) << "zero at the start";
  torch::Tensor scale, shift;
  for (auto& p : m->named_parameters()) {
    if (p.key() == "rating_scale") scale = p.value();
    if (p.key() == "rating_shift") shift = p.value();
  }
  ASSERT_TRUE(scale.defined() && shift.defined());
  ASSERT_EQ(scale.sizes(), (std::vector<int64_t>{kRatingLevels, 6}));
  auto uv = m->UserVectors(b, iv);
  uv.select(0, 0).sum().backward();
  const auto g = shift.grad();
  ASSERT_TRUE(g.defined());
  EXPECT_GT(g[3].abs().sum().item<float>(), 0.0f) << "level 4: row 0's neighbours";
  EXPECT_EQ(g.narrow(0, 0, 3).abs().sum().item<float>(), 0.0f) << "levels row 0 never reads";
  EXPECT_EQ(g.narrow(0, 4, kRatingLevels - 4).abs().sum().item<float>(), 0.0f);
  {
    torch::NoGradGuard ng;
    shift[1].fill_(0.5);  // level 2: row 2's first and third neighbours
    const auto moved = m->UserVectors(b, iv);
    EXPECT_TRUE(torch::allclose(moved.narrow(0, 0, 2), plain.narrow(0, 0, 2), 1e-5, 1e-6))
        << "rows without a level-2 neighbour";
    EXPECT_FALSE(torch::allclose(moved[2], plain[2], 1e-4, 1e-5));
    // Unrated (level 0) everywhere: the plain messages whatever the levels' parameters.
    b.nbr_level.zero_();
    EXPECT_TRUE(torch::allclose(m->UserVectors(b, iv), plain, 1e-5, 1e-6));
  }
}

TEST(Model, FusionStartsAsTheMeanOfItsSources) {
  // Open gates (sigmoid(3)), averaging reduction, silent MLP: the model starts where an id model
  // with behaviour aggregation is.
  for (FusionKind mode : {FusionKind::kGate, FusionKind::kConcat, FusionKind::kMean}) {
    Fusion f(3, 4, 8, mode, 0.0);
    auto xs = torch::randn({5, 3, 4});
    const double g = mode == FusionKind::kGate ? 1.0 / (1.0 + std::exp(-3.0)) : 1.0;
    EXPECT_TRUE(torch::allclose(f->forward(xs), g * xs.mean(1), 1e-5, 1e-6)) << EnumName(mode);
  }
  // An item tower of the id row alone returns the id rows.
  ModelConfig c = SmallConfig();
  c.text = c.image = c.audio = false;
  M6Model m(c, Shape());
  ModelBatch b = MakeBatch(torch::kFloat, false);
  const double g = 1.0 / (1.0 + std::exp(-3.0));
  EXPECT_TRUE(torch::allclose(m->ItemVectors(b), g * b.item_rows, 1e-5, 1e-6));
}

// What explanations read (ModelPlugin::Explain): on a hand-made model whose user gates favour
// the sequence (bias +6) over every other source (-6), each row's gates name the sequence, and
// the history attention is a distribution over each row's real history slots only.
TEST(Model, ExplanationsReadEachRowsGatesAndHistoryAttention) {
  M6Model m(SmallConfig(), Shape());
  const auto& srcs = m->user_sources();
  const auto seq = std::find(srcs.begin(), srcs.end(), "sequence") - srcs.begin();
  ASSERT_LT(size_t(seq), srcs.size());
  {
    torch::NoGradGuard ng;
    for (auto& np : m->named_parameters())
      if (np.key() == "user_fusion.gate.bias") {
        np.value().fill_(-6.0);
        np.value()[seq] = 6.0;
      }
  }
  const ModelBatch b = MakeBatch(torch::kFloat, false);
  m->UserVectors(b, m->ItemVectors(b));
  const torch::Tensor g = m->user_fusion->last_row_gates;
  ASSERT_TRUE(g.defined());
  ASSERT_EQ(g.size(0), 3);
  ASSERT_EQ(g.size(1), int64_t(srcs.size()));
  for (int64_t r = 0; r < 3; ++r) {
    EXPECT_EQ(g[r].argmax().item<int64_t>(), seq) << "row " << r;
    EXPECT_GT(g[r][seq].item<float>(), 0.99f);
  }
  EXPECT_EQ(m->item_fusion->last_row_gates.size(0), 5) << "one row per item";
  const torch::Tensor a = m->last_history_attention;
  ASSERT_TRUE(a.defined());
  EXPECT_NEAR(a[0].sum().item<float>(), 1.0f, 1e-5);
  EXPECT_EQ(a[0][0].item<float>(), 0.0f) << "a padding slot gets no attention";
  EXPECT_EQ(a[1].sum().item<float>(), 0.0f) << "no history, no attention";
  EXPECT_NEAR(a[2].sum().item<float>(), 1.0f, 1e-5);
}

TEST(Model, LossesMatchHandComputedValues) {
  auto pos = torch::tensor({1.0, 0.0}, torch::kDouble);
  auto neg = torch::tensor({0.0, 2.0, 1.0, 1.0}, torch::kDouble).view({2, 2});
  auto valid = torch::tensor({1.0, 0.0, 1.0, 1.0}, torch::kDouble).view({2, 2});
  auto sp = [](double x) { return std::log1p(std::exp(x)); };
  // bpr over the 3 valid pairs: softplus(0-1), softplus(1-0), softplus(1-0)
  EXPECT_NEAR(RankingLoss(LossKind::kBpr, pos, neg, valid, 1, 0, 0).item<double>(),
              (sp(-1) + 2 * sp(1)) / 3, 1e-12);
  // softmax at tau 1: row 0 {1 | 0}, row 1 {0 | 1, 1}
  const double s0 = -std::log(std::exp(1) / (std::exp(1) + 1)),
               s1 = -std::log(1 / (1 + 2 * std::exp(1)));
  EXPECT_NEAR(RankingLoss(LossKind::kSoftmax, pos, neg, valid, 1, 0, 0).item<double>(),
              (s0 + s1) / 2, 1e-12);
  // bce: mean softplus(-pos) + mean over valid softplus(neg)
  EXPECT_NEAR(RankingLoss(LossKind::kBce, pos, neg, valid, 1, 0, 0).item<double>(),
              (sp(-1) + sp(0)) / 2 + (sp(0) + 2 * sp(1)) / 3, 1e-12);
  // ccl with margin 0.5, weight 2: mean(1 - pos) + 2 * mean over valid relu(neg - 0.5)
  EXPECT_NEAR(RankingLoss(LossKind::kCcl, pos, neg, valid, 1, 0.5, 2).item<double>(),
              0.5 + 2 * (0 + 0.5 + 0.5) / 3, 1e-12);
}

TEST(Model, AttentionPoolAndMaskedMeanIgnorePadding) {
  auto x = torch::tensor({1.0, 2.0, 3.0, 4.0, 100.0, 100.0}, torch::kDouble).view({1, 3, 2});
  auto mask = torch::tensor({1.0, 1.0, 0.0}, torch::kDouble).view({1, 3});
  EXPECT_TRUE(
      torch::allclose(MaskedMean(x, mask), torch::tensor({2.0, 3.0}, torch::kDouble).view({1, 2})));
  auto q = torch::zeros({2}, torch::kDouble);  // equal scores: the mean of the valid entries
  EXPECT_TRUE(torch::allclose(AttentionPool(x, q, mask),
                              torch::tensor({2.0, 3.0}, torch::kDouble).view({1, 2})));
  auto none = torch::zeros({1, 3}, torch::kDouble);
  EXPECT_TRUE(torch::allclose(AttentionPool(x, q, none), torch::zeros({1, 2}, torch::kDouble)));
  EXPECT_TRUE(torch::allclose(MaskedMean(x, none), torch::zeros({1, 2}, torch::kDouble)));
  // Weights below 1 (graph_weighting: degree): a weighted mean, (0.5*[1,2] + 0.25*[3,4]) / 0.75.
  auto w = torch::tensor({0.5, 0.25, 0.0}, torch::kDouble).view({1, 3});
  EXPECT_TRUE(torch::allclose(MaskedMean(x, w),
                              torch::tensor({5.0 / 3, 8.0 / 3}, torch::kDouble).view({1, 2})));
}

}  // namespace m6rec
