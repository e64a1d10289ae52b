// Datasets in the splits and evaluation protocols of the papers we compare with, read in place
// (never copied). One struct for all of them; the loader picks the format from the config:
//   synth / tsv   interactions.tsv (user item [domain] [ts]); leave-last-out per user (last item
//                 = test, second last = validation), sampled protocol (99 negatives)
//   lightgcn      train.txt / test.txt, one "user item item ..." line per user (NGCF/LightGCN
//                 Gowalla split); full-ranking protocol over all items, train items masked
//   s3rec         <name>.txt, one "user item item ..." sequence per line in time order (S3-Rec);
//                 test = last item, validation = second last, train = the rest; 99 negatives the
//                 user never touched (from <name>_sample.txt when it exists, else drawn from the
//                 seed); item attributes from <name>_item2attributes.json as content tokens
//   movielens     u.data (user item rating timestamp, tab-separated, 1-based ids), per-user time
//                 order, leave-last-out as above (our documented split); genres and release
//                 decade (and with data.title_words the titles' words) from u.item as item
//                 tokens, age band / gender / occupation from u.user as user tokens; a
//                 MovieLens-1M directory (users.dat, movies.dat, ratings.dat or the re-indexed
//                 ratings without times) the same way (LoadMovieLens)
// Side files read when present next to interactions.tsv (synth / tsv): social.tsv (user friend),
// item_tokens.tsv (item tok tok ...), item_categories.tsv (item category ...), item_image /
// item_audio as .npy (float32, one row per item) or as .tsv ("item f1 f2 ..." per line, every
// item once), user_profile.tsv (user attributes), domains.tsv (domain names).
// Every bad line is reported as "file:line: what" and nothing partial is returned.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "common/config.h"
#include "common/status.h"

namespace m6rec {

// One interaction as a stream delivers it: who, what, when (0: the source has no time).
struct StreamEvent {
  uint32_t user = 0, item = 0;
  int64_t ts = 0;
};

struct Dataset {
  enum class Protocol { kSampled, kFullRanking };
  std::string name;
  Protocol protocol = Protocol::kSampled;
  uint32_t num_users = 0;
  uint32_t num_items = 0;                    // ids are 0..num_items-1 (some may be unused)
  uint32_t first_item = 0;                   // smallest valid item id (1 for 1-based formats)
  std::vector<std::vector<uint32_t>> train;  // per user, in time order when known
  // full ranking
  std::vector<std::vector<uint32_t>> test_sets;  // per user
  // sampled
  std::vector<int64_t> test_item, valid_item;          // per user, -1 = none
  std::vector<std::vector<uint32_t>> fixed_negatives;  // per user (empty = draw them)
  int sampled_negatives = 99;
  bool ordered = true;  // every train list is in time order (sequence towers read them causally;
                        // per domain: Ordered)
  // content and side information (any may be empty)
  std::vector<std::vector<uint32_t>> item_tokens;  // per item: text / attribute token ids
  std::vector<std::vector<uint32_t>> user_tokens;  // per user: profile token ids (same id space)
  uint32_t num_tokens = 0;                         // 1 + the largest token id (0 = no tokens)
  // Per token id, its name where the data has one ("" or past the end: unnamed): the vocabulary
  // `m6rec import` maps word vectors through (MovieLens: genres, decades, title words).
  std::vector<std::string> token_names;
  // Per item, its content categories (MovieLens genres; empty: its tokens are its categories):
  // what request intents are read from (worker/strategy.h).
  std::vector<std::vector<uint32_t>> item_categories;
  const std::vector<uint32_t>& Categories(uint32_t item) const;
  std::vector<std::vector<uint32_t>> social;  // per user: friends (user-user graph)
  std::vector<float> item_image, item_audio;  // [num_items x dim] feature matrices
  uint32_t image_dim = 0, audio_dim = 0;
  // Explicit feedback (rating data only; empty otherwise). Per user, the rating of each training
  // item (parallel to train), and the rated pairs the rating and like tasks are validated and
  // tested on: leave-last-out's validation and test items, or a published split's test file.
  std::vector<std::vector<float>> train_ratings;
  std::vector<std::vector<std::pair<uint32_t, float>>> rated_valid, rated_test;
  bool has_ratings() const { return !train_ratings.empty(); }
  // User attributes an attribute task predicts (MovieLens gender, age, occupation): the class
  // names, each user's class (-1: unknown), and the profile tokens that carry it in user_tokens
  // (removed when the attribute is predicted, or the task would read its answer).
  struct UserAttribute {
    std::string name;
    std::vector<std::string> classes;
    std::vector<int32_t> label;    // per user
    std::vector<uint32_t> tokens;  // the profile tokens that carry it
    // Per class, the profile token a user of that class has (what a new user's profile is read
    // as; -1: none, empty: the attribute is no model input).
    std::vector<int64_t> class_tokens;
  };
  std::vector<UserAttribute> user_attributes;
  const UserAttribute* FindAttribute(const std::string& name) const;
  // Which split user u's attribute labels are in, from the seed alone: 0 training (80%),
  // 1 validation (10%), 2 test (10%). The same for every attribute and every worker.
  static int AttributeSplit(uint32_t u, uint64_t seed);
  std::vector<uint32_t> item_popularity;  // train counts (of the trained users)
  uint64_t train_interactions = 0;
  // Per user, whether its interactions are trained on (empty: every user's). A domain's
  // train_users share picks them (SelectTrainedUsers); the others keep their lists as the
  // context they are evaluated with, but feed no sample, popularity count or item graph.
  std::vector<uint8_t> trained;
  bool Trained(uint32_t u) const { return trained.empty() || trained[u]; }
  bool partial_training() const { return !trained.empty(); }
  // Item cold start (MakeColdItems): per item, whether it was made cold (every training
  // interaction removed); empty without a cold split. Evaluation reports the users whose
  // target is cold and those whose target is warm apart.
  std::vector<uint8_t> cold;
  // User cold start (MakeColdUsers): per user, whether its history was cut to a few
  // interactions; empty without a user cold split.
  std::vector<uint8_t> cold_user;
  // Per user, the interactions it touched that its training list does not hold: those taken
  // from it (a cold split's, the validation ratings of HoldOutValidationRatings) and a published
  // split's test ratings (u1.test, ML-1M's 10%; TouchedByRatedTest). They are never its sampled
  // negative and are masked in full ranking, as the training items are.
  std::vector<std::vector<uint32_t>> held_out;
  bool cold_split() const { return !cold.empty(); }
  bool cold_user_split() const { return !cold_user.empty(); }
  bool IsCold(uint32_t i) const { return i < cold.size() && cold[i]; }
  bool IsColdUser(uint32_t u) const { return u < cold_user.size() && cold_user[u]; }
  // Domains: every dataset is one; a multi-domain job merges several (MergeDomains), each in
  // its own contiguous range of user and item ids. A user belongs to one domain; its negatives
  // and its full-ranking candidates are its domain's items.
  struct Domain {
    std::string name;
    uint32_t user_begin = 0, user_end = 0;  // [begin, end)
    uint32_t item_begin = 0, item_end = 0;  // valid item ids [begin, end)
    float weight = 1.0f;                    // training samples per epoch, relative to its size
    uint32_t item_offset = 0;  // merged item id = item_offset + the id in the domain's dataset
    float train_users = 1.0f;  // the share of its users trained on (DomainSpec::train_users)
    bool evaluate = true;      // evaluated and reported
    uint32_t spec = 0;         // the data.domains entry it came from (one entry may hold several)
    bool ordered = true;       // its users' lists are in time order (its dataset's `ordered`)
  };
  std::vector<Domain> domains;
  // data.stream_split: the latest interactions, held back from the training lists in time
  // order, for a stream job to replay (ReplaySource).
  std::vector<StreamEvent> stream_events;

  // Whether domain d's lists are in time order: one unordered dataset (ML-1M without
  // timestamps) does not make the others' histories unordered.
  bool Ordered(uint32_t d) const { return d < domains.size() ? domains[d].ordered : ordered; }
  // The domain of user u / item i (0 when the dataset has a single one).
  uint32_t UserDomain(uint32_t u) const;
  uint32_t ItemDomain(uint32_t i) const;
  // The valid items user u is ranked among: its domain's (all of them without domains).
  std::pair<uint32_t, uint32_t> CandidateItems(uint32_t u) const;
  bool multi_domain() const { return domains.size() > 1; }
  // How many domains the first n data.domains entries hold (an adapted job's backbone domains).
  uint32_t DomainsOfSpecs(uint32_t n) const;
  // The vocabulary's size once data.domains entry k was merged (MergeDomains): the tokens of
  // the first k+1 entries are the ids below tokens_after_spec[k] (with a shared vocabulary a
  // later entry's named tokens may be among them).
  std::vector<uint32_t> tokens_after_spec;

  // Per item, the training users that touched it (the item side of the interaction graph).
  std::vector<std::vector<uint32_t>> ItemUsers() const;

  // Sampled protocol: how many negatives each target is ranked against.
  int NegativesPerTarget() const;
  // "full ranking" or "sampled, N negatives".
  std::string ProtocolName() const;
  std::string Describe() const;
};

// `data_dir` is where synthetic data was generated (for source synth). With data.domains, every
// domain's dataset is loaded and merged (MergeDomains).
StatusOr<Dataset> LoadDataset(const DataConfig& cfg, const std::string& data_dir);
// The MovieLens-100K directory `dir` (split: "" or u1..u5/ua/ub, DataConfig::split), or a
// MovieLens-1M one (split "" or "90/10"; without ratings.dat's times its lists are unordered).
// stream_split > 0 (u.data only): that share of the ratings, the latest by timestamp, goes to
// stream_events and the rest is all training data (no validation or test targets).
StatusOr<Dataset> LoadMovieLens(const std::string& dir, const std::string& split = "",
                                bool title_words = false, double stream_split = 0);

// Appends streamed interactions to the users' training lists, in order: popularity and
// interaction counts follow, and a user or item id past the dataset's grows it (a new user has
// no profile and no targets; a new item no content, zero feature rows). Single-domain datasets.
void AppendInteractions(Dataset* ds, const StreamEvent* ev, size_t n);

// Applies the domains' train_users shares (drawn from `seed` per user): fills `trained` and
// recounts item_popularity and train_interactions over the trained users. No-op when every
// domain trains all of its users.
void SelectTrainedUsers(Dataset* ds, uint64_t seed);

// Item cold start: makes `share` of the valid items cold, each drawn from `seed` alone (the
// same items on every worker and every run), by removing every interaction with them from the
// training lists (and their ratings); validation and test targets stay, so the users whose
// target is cold test the model on items it never trained on. Recounts the popularity.
void MakeColdItems(Dataset* ds, double share, uint64_t seed);
// User cold start: `share` of the users with more than `keep` training interactions (drawn from
// `seed` alone) keep only their last `keep` (the ones before their validation and test items:
// a user the model knows a few interactions of); with profile false they also lose their
// profile tokens. Recounts the popularity.
void MakeColdUsers(Dataset* ds, double share, int keep, bool profile, uint64_t seed);

// Validation ratings (data.valid_ratings): moves `share` of every user's rated training pairs,
// picked by a fixed hash of (user, item) — the data's, not the job's, so every run validates on
// the same pairs — out of the training lists into rated_valid (beside leave-last-out's one
// validation item), where the rating and like tasks are validated; a user keeps at least one
// training item. Datasets without ratings are left alone. Recounts the popularity.
void HoldOutValidationRatings(Dataset* ds, double share);

// Reduces every item feature matrix (image, audio) wider than k to its top k principal
// components (worker/pca.h), the same on every worker; returns one line per reduced matrix
// with the share of the variance kept ("" when none was reduced).
std::string ReduceItemFeatures(Dataset* ds, int k);

// Checks that the data has what cfg.train.tasks read (ratings, the attributes) and removes the
// predicted attributes' tokens from the users' profiles.
Status PrepareTasks(const std::vector<TaskSpec>& tasks, Dataset* ds);

// One dataset from several: users, items and tokens of domain k are offset past those of
// domains 0..k-1, so ids never collide (the PS tables see one id space); every list, feature
// row and fixed negative moves with its ids. A part that is itself several domains (a domain
// column) keeps them, each taking the part's spec's weight, train_users and evaluate. The parts
// must share an evaluation protocol and their image/audio dimensions (or have none).
// shared_vocabulary: a named token takes the id an earlier part gave the same name (only
// unnamed and new names are appended), so domains that describe items in the same words share
// those rows.
StatusOr<Dataset> MergeDomains(std::vector<Dataset> parts, const std::vector<DomainSpec>& specs,
                               bool shared_vocabulary = false);

// Reads "user item item ..." lines (one user per line, user ids need not be dense or sorted).
// Returns per-user lists indexed by user id; num_users = max id + 1.
StatusOr<std::vector<std::vector<uint32_t>>> ReadUserLists(const std::string& path);

// A published split tests ratings from its own file (rated_test beyond the leave-last-out test
// item): its users touched those items, so they join held_out (never a sampled negative).
void TouchedByRatedTest(Dataset* d);

// The negatives of user u under the sampled protocol: the fixed ones when the dataset ships
// them, else `n` items the user never touched, drawn from (seed, u) alone.
std::vector<uint32_t> SampledNegatives(const Dataset& d, uint32_t u, uint64_t seed);

// A float32 .npy matrix (C order, '<f4', 2-D); errors name the file and what is wrong.
struct NpyMatrix {
  std::vector<float> data;
  size_t rows = 0, cols = 0;
};
StatusOr<NpyMatrix> ReadNpy(const std::string& path);

}  // namespace m6rec
