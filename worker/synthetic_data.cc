#include "worker/synthetic_data.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>

#include "common/util.h"

namespace m6rec {

Status WriteNpy(const std::string& path, const std::vector<float>& data, size_t rows, size_t cols) {
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" +
                       std::to_string(rows) + ", " + std::to_string(cols) + "), }";
  size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header.push_back('\n');
  std::ofstream out(path, std::ios::binary);
  if (!out) return Status::IOError("cannot write '" + path + "'");
  out.write("\x93NUMPY\x01\x00", 8);
  uint16_t hl = static_cast<uint16_t>(header.size());
  out.write(reinterpret_cast<const char*>(&hl), 2);
  out << header;
  out.write(reinterpret_cast<const char*>(data.data()), data.size() * sizeof(float));
  if (!out) return Status::IOError("cannot write '" + path + "'");
  return Status::OK();
}

Status WriteSynthetic(const SynthConfig& c, uint64_t seed, const std::string& dir) {
  M6_RETURN_IF_ERROR(MakeDirs(dir));
  std::mt19937_64 rng(seed);
  const int K = c.clusters;
  std::vector<int> user_cluster(c.users), item_cluster(c.items), item_domain(c.items);
  std::uniform_int_distribution<int> pick_cluster(0, K - 1);
  for (auto& x : user_cluster) x = pick_cluster(rng);
  // Domains: each user lives in one (contiguous blocks of users), each item belongs to one
  // (contiguous blocks of items); interest clusters, tokens and friendships span domains.
  const int D = std::max(1, std::min({c.domains, c.users, c.items}));
  auto user_domain = [&](int u) { return int(int64_t(u) * D / c.users); };
  for (int i = 0; i < c.items; ++i) {
    item_cluster[i] = pick_cluster(rng);
    item_domain[i] = int(int64_t(i) * D / c.items);
  }
  std::vector<int> domain_begin(D + 1, c.items);
  for (int i = c.items - 1; i >= 0; --i) domain_begin[item_domain[i]] = i;
  std::vector<std::vector<std::vector<int>>> items_of(D, std::vector<std::vector<int>>(K));
  for (int i = 0; i < c.items; ++i) items_of[item_domain[i]][item_cluster[i]].push_back(i);
  for (int d = 0; d < D; ++d)
    for (auto& v : items_of[d])
      if (v.empty())
        v.push_back(D == 1 ? static_cast<int>(rng() % c.items)
                           : domain_begin[d] +
                                 static_cast<int>(rng() % (domain_begin[d + 1] - domain_begin[d])));

  // Popularity inside a cluster follows a Zipf-like law: rank r drawn with weight 1/(r+1)^0.8.
  std::vector<std::vector<std::discrete_distribution<size_t>>> zipf(
      D, std::vector<std::discrete_distribution<size_t>>(K));
  for (int d = 0; d < D; ++d)
    for (int k = 0; k < K; ++k) {
      std::vector<double> w(items_of[d][k].size());
      for (size_t r = 0; r < w.size(); ++r) w[r] = 1.0 / std::pow(r + 1.0, 0.8);
      zipf[d][k] = std::discrete_distribution<size_t>(w.begin(), w.end());
    }
  // Explicit feedback from its own generator (the rest of the data does not depend on it): an
  // item of the user's current interest is rated ~4.3, any other ~2, with noise, on 1..5.
  std::mt19937_64 rating_rng(seed ^ 0x5a71);
  std::normal_distribution<double> rating_noise(0.0, 0.8);
  auto rating = [&](bool interest) {
    const double r = (interest ? 4.3 : 2.0) + rating_noise(rating_rng);
    return std::clamp(static_cast<int>(std::lround(r)), 1, 5);
  };

  std::ofstream inter(dir + "/interactions.tsv");
  inter << "# user\titem\tdomain\ttimestamp\trating (synthetic, seed " << seed << ")\n";
  std::uniform_real_distribution<double> unif(0, 1);
  std::uniform_int_distribution<int> any_item(0, c.items - 1);
  for (int u = 0; u < c.users; ++u) {
    // A user's interest drifts to a second cluster over time: sequences carry order information.
    int k1 = user_cluster[u], k2 = (k1 + 1 + static_cast<int>(rng() % (K > 1 ? K - 1 : 1))) % K;
    int n = c.interactions_per_user / 2 + static_cast<int>(rng() % (c.interactions_per_user + 1));
    n = std::max(n, 3);
    for (int t = 0; t < n; ++t) {
      double drift = static_cast<double>(t) / n;
      const int d = user_domain(u);
      int item;
      double r = unif(rng);
      if (r < 0.1) {
        item = D == 1 ? any_item(rng)
                      : domain_begin[d] +
                            static_cast<int>(rng() % (domain_begin[d + 1] - domain_begin[d]));
      } else {
        int k = unif(rng) < 0.75 - 0.5 * drift ? k1 : k2;
        item = items_of[d][k][zipf[d][k](rng)];
      }
      const bool interest = item_cluster[item] == k1 || item_cluster[item] == k2;
      inter << u << '\t' << item << '\t' << item_domain[item] << '\t' << (1000000 + u * 1000 + t)
            << '\t' << rating(interest) << '\n';
    }
  }
  if (!inter) return Status::IOError("cannot write " + dir + "/interactions.tsv");

  std::ofstream social(dir + "/social.tsv");
  social << "# user\tfriend\n";
  std::vector<std::vector<int>> users_of(K);
  for (int u = 0; u < c.users; ++u) users_of[user_cluster[u]].push_back(u);
  for (int u = 0; u < c.users; ++u)
    for (int f = 0; f < c.friends_per_user; ++f) {
      const auto& pool = unif(rng) < 0.8 ? users_of[user_cluster[u]] : users_of[pick_cluster(rng)];
      if (pool.empty()) continue;
      int v = pool[rng() % pool.size()];
      if (v != u) social << u << '\t' << v << '\n';
    }

  // Each item's category: its interest cluster (what request intents are read from).
  std::ofstream categories(dir + "/item_categories.tsv");
  categories << "# item\tcategory\n";
  for (int i = 0; i < c.items; ++i) categories << i << '\t' << item_cluster[i] << '\n';
  if (!categories) return Status::IOError("cannot write synthetic data under " + dir);

  std::ofstream tokens(dir + "/item_tokens.tsv");
  tokens << "# item\ttokens...\n";
  const int per_cluster_vocab = std::max(1, c.tokens / (2 * K));
  for (int i = 0; i < c.items; ++i) {
    tokens << i;
    for (int t = 0; t < c.tokens_per_item; ++t) {
      int tok = unif(rng) < 0.6 ? item_cluster[i] * per_cluster_vocab +
                                      static_cast<int>(rng() % per_cluster_vocab)
                                : static_cast<int>(rng() % c.tokens);
      tokens << '\t' << tok % c.tokens;
    }
    tokens << '\n';
  }

  std::normal_distribution<float> noise(0.0f, 1.0f);
  auto features = [&](int d, const std::string& name) -> Status {
    if (d == 0) return Status::OK();
    std::vector<float> centroid(size_t(K) * d), m(size_t(c.items) * d);
    for (auto& x : centroid) x = noise(rng);
    for (int i = 0; i < c.items; ++i)
      for (int j = 0; j < d; ++j)
        m[size_t(i) * d + j] = centroid[size_t(item_cluster[i]) * d + j] + 0.7f * noise(rng);
    return WriteNpy(dir + "/" + name, m, c.items, d);
  };
  M6_RETURN_IF_ERROR(features(c.image_dim, "item_image.npy"));
  M6_RETURN_IF_ERROR(features(c.audio_dim, "item_audio.npy"));

  // A profile attribute that follows the user's interests (what the attribute task predicts),
  // and the domains' names.
  static const char* kSegments[] = {"student", "parent", "professional", "senior"};
  std::ofstream profile(dir + "/user_profile.tsv");
  profile << "# user segment\n";
  for (int u = 0; u < c.users; ++u) profile << u << '\t' << kSegments[user_cluster[u] % 4] << '\n';
  static const char* kDomains[] = {"shopping", "video", "music", "news",
                                   "travel",   "food",  "games", "books"};
  std::ofstream domains(dir + "/domains.tsv");
  domains << "# domain\tname\n";
  for (int d = 0; d < D; ++d)
    domains << d << '\t' << (d < 8 ? std::string(kDomains[d]) : "domain" + std::to_string(d))
            << '\n';
  if (!profile || !domains) return Status::IOError("cannot write synthetic data under " + dir);

  std::ofstream meta(dir + "/meta.json");
  meta << "{\"users\": " << c.users << ", \"items\": " << c.items << ", \"domains\": " << c.domains
       << ", \"clusters\": " << K << ", \"seed\": " << seed << "}\n";
  if (!meta || !social || !tokens)
    return Status::IOError("cannot write synthetic data under " + dir);
  return Status::OK();
}

}  // namespace m6rec
