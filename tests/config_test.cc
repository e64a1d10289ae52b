#include "common/config.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "launch/local_cluster.h"
#include "test_util.h"

namespace m6rec {

namespace {
std::string Err(const std::string& yaml, const std::vector<std::string>& ov = {}) {
  auto c = ParseConfig(yaml, "job.yaml", ov);
  EXPECT_FALSE(c.ok()) << "expected an error for:\n" << yaml;
  return c.ok() ? "" : c.status().message();
}
const char kTables[] = "tables:\n  - {name: user, dim: 8}\n  - {name: item, dim: 8}\n";
}  // namespace

TEST(Config, BuiltInDefaultParses) {
  auto c = ParseConfig(DefaultConfigYaml(), "default");
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ(c->cluster.servers, 2);
  EXPECT_EQ(c->cluster.workers, 2);
  ASSERT_EQ(c->tables.size(), 4u);
  EXPECT_EQ(c->model.wide_table, "wide") << "the segment task's wide part";
  EXPECT_EQ(c->tables[1].name, "item");
  EXPECT_EQ(c->tables[1].id, 1u);
  EXPECT_EQ(c->train.job, JobKind::kM6) << "the quick start trains the whole model";
  EXPECT_TRUE(c->model.sequence && c->model.graph && c->model.content && c->model.text);
}

TEST(Config, ModelSectionIsCheckedFieldByField) {
  const std::string base = std::string(kTables) + "train: {job: m6}\n";
  auto ok = ParseConfig(base + "model: {rnn: lstm, fanout: 5, graph: false}\n", "job.yaml");
  ASSERT_TRUE(ok.ok()) << ok.status().message();
  EXPECT_EQ(ok->model.rnn, RnnKind::kLstm);
  EXPECT_EQ(ok->model.fanout, 5);
  EXPECT_FALSE(ok->model.graph);
  ok = ParseConfig(base + "model: {rnn: attention, seq_blocks: 3}\n", "job.yaml");
  ASSERT_TRUE(ok.ok()) << ok.status().message();
  EXPECT_EQ(ok->model.rnn, RnnKind::kAttention);
  EXPECT_EQ(ok->model.seq_blocks, 3);
  std::string e = Err(base + "model: {rnn: transformer}\n");
  EXPECT_NE(e.find("model.rnn"), std::string::npos) << e;
  EXPECT_NE(e.find("gru, lstm"), std::string::npos) << e;
  e = Err(base + "model: {graph: maybe}\n");
  EXPECT_NE(e.find("model.graph"), std::string::npos) << e;
  EXPECT_NE(e.find("true or false"), std::string::npos) << e;
  e = Err(base + "model: {user_id: false, sequence: false, content: false, graph: false}\n");
  EXPECT_NE(e.find("every user-tower part is off"), std::string::npos) << e;
  e = Err(base + "model: {tower_adapters: true}\n");
  EXPECT_NE(e.find("model.tower_adapters: the towers' adapters have model.adapter_rank's rank"),
            std::string::npos)
      << e;
  e = Err(base + "model: {layers: 2}\n");
  EXPECT_NE(e.find("model.layers: unknown field"), std::string::npos) << e;
  e = Err(std::string(kTables) + "train: {job: m6, collective: carrier-pigeon}\n");
  EXPECT_NE(e.find("train.collective"), std::string::npos) << e;
}

// train.cold_negative_weight: auto by default (0 for a domain with train_users < 1 under the
// popularity calibration, 1 otherwise; worker/m6_batch.cc), a weight in [0, 1000] when set.
TEST(Config, ColdNegativeWeightIsAutoOrAWeight) {
  const std::string base = std::string(kTables) + "train: {job: m6";
  auto c = ParseConfig(base + "}\n", "job.yaml");
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ(c->train.cold_negative_weight, TrainConfig::kAutoColdNegativeWeight);
  c = ParseConfig(base + ", cold_negative_weight: auto}\n", "job.yaml");
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ(c->train.cold_negative_weight, TrainConfig::kAutoColdNegativeWeight);
  c = ParseConfig(base + "}\n", "job.yaml", {"train.cold_negative_weight=0.3"});
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_FLOAT_EQ(c->train.cold_negative_weight, 0.3f);
  std::string e = Err(base + ", cold_negative_weight: -1}\n");
  EXPECT_NE(e.find("train.cold_negative_weight"), std::string::npos) << e;
  EXPECT_NE(e.find("out of range"), std::string::npos) << e;
  e = Err(base + ", cold_negative_weight: often}\n");
  EXPECT_NE(e.find("expected a number, got 'often' (or auto)"), std::string::npos) << e;
}

TEST(Config, StreamSectionNamesWhatAStreamNeeds) {
  const std::string base = std::string(kTables) + "train: {job: m6}\n";
  std::string e = Err(base + "stream: {source: replay}\n");
  EXPECT_NE(e.find("data.stream_split"), std::string::npos) << e;
  e = Err(base + "stream: {source: directory}\n");
  EXPECT_NE(e.find("stream.path: required"), std::string::npos) << e;
  e = Err(base + "stream: {source: river}\n");
  EXPECT_NE(e.find("replay, directory, feed"), std::string::npos) << e;
  e = Err(base + "stream: {source: feed, path: 'tcp://127.0.0.1:1', token: xyz}\n");
  EXPECT_NE(e.find("stream.token"), std::string::npos) << e;
  e = Err(base + "stream: {source: directory, path: /tmp, chunk: 0}\n");
  EXPECT_NE(e.find("stream.chunk"), std::string::npos) << e;
  e = Err(base + "data: {source: synth, stream_split: 0.5}\n");
  EXPECT_NE(e.find("data.stream_split"), std::string::npos) << e;
  e = Err(std::string(kTables) +
          "train: {job: m6, tasks: [{type: retrieval}, {name: r, type: rating}]}\n"
          "stream: {source: directory, path: /tmp}\n");
  EXPECT_NE(e.find("retrieval alone"), std::string::npos) << e;
}

TEST(Config, ReportPapersAreNamedRowsOfNumbers) {
  auto c =
      ParseConfig(std::string(kTables) +
                      "report:\n  papers:\n    - {name: S3-Rec, HR@10: 0.5506, NDCG@10: 0.3732}\n",
                  "job.yaml");
  ASSERT_TRUE(c.ok()) << c.status().message();
  ASSERT_EQ(c->report.papers.size(), 1u);
  EXPECT_EQ(c->report.papers[0].name, "S3-Rec");
  EXPECT_DOUBLE_EQ(c->report.papers[0].metrics.at("HR@10"), 0.5506);
  std::string e = Err(std::string(kTables) + "report:\n  papers:\n    - {HR@10: 0.5}\n");
  EXPECT_NE(e.find("report.papers[0]: needs a name"), std::string::npos) << e;
  e = Err(std::string(kTables) + "report:\n  papers:\n    - {name: X, HR@10: high}\n");
  EXPECT_NE(e.find("report.papers[0].HR@10: a number"), std::string::npos) << e;
  e = Err(std::string(kTables) + "report: {plots: 3}\n");
  EXPECT_NE(e.find("report.plots: unknown field"), std::string::npos) << e;
}

TEST(Config, ErrorsNameFileLineAndField) {
  std::string e = Err(std::string(kTables) + "cluster:\n  servers: two\n");
  EXPECT_NE(e.find("job.yaml:5"), std::string::npos) << e;
  EXPECT_NE(e.find("cluster.servers"), std::string::npos) << e;
  EXPECT_NE(e.find("'two'"), std::string::npos) << e;

  e = Err(std::string(kTables) + "cluster:\n  sevrers: 2\n");
  EXPECT_NE(e.find("cluster.sevrers"), std::string::npos) << e;
  EXPECT_NE(e.find("unknown field"), std::string::npos) << e;

  e = Err("tables:\n  - {name: user, dim: 0}\n");
  EXPECT_NE(e.find("tables[0].dim"), std::string::npos) << e;

  e = Err("tables:\n  - {name: user, dim: 4, optimizer: {type: rmsprop}}\n");
  EXPECT_NE(e.find("tables[0].optimizer.type"), std::string::npos) << e;
  EXPECT_NE(e.find("rmsprop"), std::string::npos) << e;

  e = Err("tables:\n  - {name: a, dim: 4}\n  - {name: a, dim: 4}\n");
  EXPECT_NE(e.find("duplicate table 'a'"), std::string::npos) << e;

  e = Err("cluster: [1, 2\n");
  EXPECT_NE(e.find("YAML syntax error"), std::string::npos) << e;

  e = Err("train: {job: mf}\n");
  EXPECT_NE(e.find("table 'user' is not declared"), std::string::npos) << e;
}

TEST(Config, EveryShippedConfigParses) {
  int n = 0;
  for (const char* sub : {"/configs", "/configs/baselines"})
    for (const auto& e : std::filesystem::directory_iterator(testing::SourceDir() + sub)) {
      if (e.path().extension() != ".yaml") continue;
      auto c = LoadConfig(e.path().string());
      EXPECT_TRUE(c.ok()) << e.path() << ": " << c.status().message();
      ++n;
    }
  EXPECT_GE(n, 6);
  // configs/adapt/*.yaml name new domains for configs/s3rec-backbone.yaml's backbone, or (ml100k-*)
  // new tasks for configs/ml100k-u1.yaml's.
  testing::TempDir dir;
  for (const auto& e :
       std::filesystem::directory_iterator(testing::SourceDir() + "/configs/adapt")) {
    if (e.path().extension() != ".yaml") continue;
    const bool ml = e.path().filename().string().rfind("ml100k", 0) == 0;
    Status s = WriteAdaptConfig(
        testing::SourceDir() + (ml ? "/configs/ml100k-u1.yaml" : "/configs/s3rec-backbone.yaml"),
        e.path().string(), {}, "/ck", dir / "adapted.yaml");
    EXPECT_TRUE(s.ok()) << e.path() << ": " << s.message();
    ++n;
  }
  EXPECT_GE(n, 9);
}

TEST(Config, DomainsAreAListOfDatasetsWithUniqueLabels) {
  auto c = ParseConfig(std::string(kTables) + R"(data:
  domains:
    - {path: /d/s3rec, format: s3rec, name: Beauty}
    - {path: /d/s3rec, format: s3rec, name: Toys_and_Games, weight: 0.5}
    - {path: /d/yelp/, format: tsv}
)",
                       "job.yaml");
  ASSERT_TRUE(c.ok()) << c.status().message();
  ASSERT_EQ(c->data.domains.size(), 3u);
  EXPECT_EQ(c->data.source, DataSource::kDir);
  EXPECT_EQ(c->data.domains[0].label, "Beauty") << "labelled by the dataset name";
  EXPECT_EQ(c->data.domains[1].weight, 0.5f);
  EXPECT_EQ(c->data.domains[2].label, "yelp") << "else by the path's last component";
  EXPECT_EQ(c->data.domains[2].format, DataFormat::kTsv);

  std::string e = Err(std::string(kTables) +
                      "data:\n  domains:\n    - {path: /a, name: X}\n    - {path: /b, name: X}\n");
  EXPECT_NE(e.find("a second domain labelled 'X'"), std::string::npos) << e;
  e = Err(std::string(kTables) + "data:\n  path: /a\n  domains:\n    - {path: /a}\n");
  EXPECT_NE(e.find("data.path: set per domain"), std::string::npos) << e;
  e = Err(std::string(kTables) + "data:\n  domains:\n    - {path: /a, format: csv}\n");
  EXPECT_NE(e.find("data.domains[0].format"), std::string::npos) << e;
  e = Err(std::string(kTables) + "data:\n  domains:\n    - {format: tsv}\n");
  EXPECT_NE(e.find("data.domains[0].path: required"), std::string::npos) << e;
  e = Err(std::string(kTables) + "data:\n  domains:\n    - {path: /a, weight: -1}\n");
  EXPECT_NE(e.find("data.domains[0].weight"), std::string::npos) << e;
  e = Err(std::string(kTables) + "data:\n  domains: []\n");
  EXPECT_NE(e.find("expected a non-empty list"), std::string::npos) << e;
}

TEST(Config, TasksAreAListAfterRetrievalWithUniqueNames) {
  const std::string base = std::string(kTables) + "train:\n  job: m6\n  tasks:\n";
  auto c = ParseConfig(base + R"(    - {type: retrieval, weight: 0}
    - {type: rating, weight: 2}
    - {type: like, like_threshold: 3.5}
    - {type: attribute, attribute: age, name: age_band}
)",
                       "job.yaml");
  ASSERT_TRUE(c.ok()) << c.status().message();
  const auto& t = c->train.tasks;
  ASSERT_EQ(t.size(), 4u);
  EXPECT_EQ(t[0].weight, 0.0f);
  EXPECT_EQ(t[1].name, "rating") << "named by the type";
  EXPECT_EQ(t[1].weight, 2.0f);
  EXPECT_EQ(t[2].like_threshold, 3.5f);
  EXPECT_EQ(t[3].name, "age_band");
  EXPECT_EQ(ParseConfig(kTables, "job.yaml")->train.tasks.size(), 1u) << "retrieval alone";

  std::string e = Err(base + "    - {type: rating}\n");
  EXPECT_NE(e.find("train.tasks[0].type: rating; the first task is retrieval"), std::string::npos)
      << e;
  e = Err(base + "    - {type: retrieval}\n    - {type: retrieval}\n");
  EXPECT_NE(e.find("train.tasks[1].type"), std::string::npos) << e;
  e = Err(base + "    - {type: retrieval}\n    - {type: attribute}\n");
  EXPECT_NE(e.find("train.tasks[1].attribute: required"), std::string::npos) << e;
  e = Err(base + "    - {type: retrieval}\n    - {type: like}\n    - {type: like}\n");
  EXPECT_NE(e.find("a second task named 'like'"), std::string::npos) << e;
  e = Err(base + "    - {type: retrieval, weight: 0}\n    - {type: like, weight: 0}\n");
  EXPECT_NE(e.find("every task has weight 0"), std::string::npos) << e;
  e = Err(base + "    - {type: retrieval}\n    - {type: click}\n");
  EXPECT_NE(e.find("train.tasks[1].type"), std::string::npos) << e;
  e = Err(std::string(kTables) +
          "train:\n  job: mf\n  tasks:\n    - {type: retrieval}\n    - {type: rating}\n");
  EXPECT_NE(e.find("need the m6 job"), std::string::npos) << e;
  e = Err(std::string(kTables) + "data: {source: dir, path: /a, format: s3rec, split: u1}\n");
  EXPECT_NE(e.find("data.split"), std::string::npos) << e;
  EXPECT_TRUE(ParseConfig(std::string(kTables) +
                              "data: {source: dir, path: /a, format: movielens, split: u1}\n",
                          "job.yaml")
                  .ok());
}

TEST(Config, SelectByNamesATrainedTask) {
  const std::string base = std::string(kTables) +
                           "train:\n  job: m6\n  tasks:\n    - {type: retrieval}\n"
                           "    - {type: rating}\n    - {type: like, weight: 0}\n";
  EXPECT_EQ(ParseConfig(base, "job.yaml")->train.select_by, "auto") << "the default";
  auto c = ParseConfig(base + "  select_by: rating\n", "job.yaml");
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ(c->train.select_by, "rating");
  EXPECT_TRUE(
      ParseConfig(std::string(kTables) + "train: {select_by: retrieval}\n", "job.yaml").ok())
      << "retrieval is task 0's name even when no tasks are listed";
  std::string e = Err(base + "  select_by: like\n");
  EXPECT_NE(e.find("job.yaml:"), std::string::npos) << e;
  EXPECT_NE(e.find("train.select_by: 'like' is not a trained task (one of: auto, retrieval, "
                   "rating, like)"),
            std::string::npos)
      << e;
  e = Err(base + "  select_by: ratin\n");
  EXPECT_NE(e.find("'ratin' is not a trained task"), std::string::npos) << e;
  // train.domain_patience: evaluations without a better epoch before a domain stops; 0 = off.
  EXPECT_EQ(ParseConfig(base, "job.yaml")->train.domain_patience, 0) << "off by default";
  EXPECT_EQ(ParseConfig(base + "  domain_patience: 2\n", "job.yaml")->train.domain_patience, 2);
  e = Err(base + "  domain_patience: -1\n");
  EXPECT_NE(e.find("train.domain_patience"), std::string::npos) << e;
  // train.backbone_epochs: the epochs that train the shared part; 0 = all of them.
  EXPECT_EQ(ParseConfig(base, "job.yaml")->train.backbone_epochs, 0) << "off by default";
  EXPECT_EQ(ParseConfig(base + "  backbone_epochs: 1\n", "job.yaml")->train.backbone_epochs, 1);
  e = Err(base + "  backbone_epochs: -1\n");
  EXPECT_NE(e.find("train.backbone_epochs"), std::string::npos) << e;
  EXPECT_NE(e.find("out of range"), std::string::npos) << e;
}

TEST(Config, WideTableIsADeclaredTableThatAnAttributeTaskReads) {
  const std::string tables = std::string(kTables) + "  - {name: wide, dim: 9}\n";
  const std::string tasks =
      "train:\n  job: m6\n  tasks:\n    - {type: retrieval}\n"
      "    - {type: attribute, attribute: age}\n";
  auto c = ParseConfig(tables + tasks + "model: {wide_table: wide}\n", "job.yaml");
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ(c->model.wide_table, "wide");
  EXPECT_TRUE(ParseConfig(kTables, "job.yaml")->model.wide_table.empty()) << "off by default";
  std::string e = Err(tables + tasks + "model: {wide_table: logreg}\n");
  EXPECT_NE(e.find("job.yaml:"), std::string::npos) << e;
  EXPECT_NE(e.find("model.wide_table: table 'logreg' is not declared"), std::string::npos) << e;
  e = Err(tables + tasks + "model: {wide_table: wide, graph: false}\n");
  EXPECT_NE(e.find("model.graph is false"), std::string::npos) << e;
  e = Err(tables + "train: {job: m6}\nmodel: {wide_table: wide}\n");
  EXPECT_NE(e.find("no attribute task"), std::string::npos) << e;
}

TEST(Config, AttributeRowsTrainTheSparseRowsUnlessSwitchedOff) {
  EXPECT_TRUE(ParseConfig(kTables, "job.yaml")->model.attribute_rows) << "on by default";
  auto c = ParseConfig(std::string(kTables) + "model: {attribute_rows: false}\n", "job.yaml");
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_FALSE(c->model.attribute_rows);
  const std::string e = Err(std::string(kTables) + "model: {attribute_rows: sometimes}\n");
  EXPECT_NE(e.find("model.attribute_rows"), std::string::npos) << e;
}

TEST(Config, RatingNeighboursReadTwentyItemsUnlessSet) {
  EXPECT_EQ(ParseConfig(kTables, "job.yaml")->model.rating_neighbours, 20) << "the default";
  auto c = ParseConfig(std::string(kTables) + "model: {rating_neighbours: 0}\n", "job.yaml");
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ(c->model.rating_neighbours, 0) << "0 switches the neighbourhood model off";
  const std::string e = Err(std::string(kTables) + "model: {rating_neighbours: -3}\n");
  EXPECT_NE(e.find("model.rating_neighbours"), std::string::npos) << e;
}

TEST(Config, RatingMessagesNeedTheGraph) {
  auto c = ParseConfig(std::string(kTables) + "model: {rating_messages: true}\n", "job.yaml");
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_TRUE(c->model.rating_messages);
  EXPECT_FALSE(ParseConfig(kTables, "job.yaml")->model.rating_messages) << "off by default";
  const std::string e =
      Err(std::string(kTables) + "model: {rating_messages: true, graph: false}\n");
  EXPECT_NE(e.find("job.yaml:"), std::string::npos) << e;
  EXPECT_NE(e.find("model.rating_messages"), std::string::npos) << e;
  EXPECT_NE(e.find("model.graph and model.item_graph are false"), std::string::npos) << e;
  EXPECT_TRUE(ParseConfig(std::string(kTables) +
                              "model: {rating_messages: true, graph: false, item_graph: true}\n",
                          "job.yaml")
                  .ok())
      << "the item graph's messages alone";
}

TEST(Config, OverridesApplyAndAreChecked) {
  auto c =
      ParseConfig(kTables, "x.yaml", {"cluster.workers=5", "tables.1.dim=16", "ps.store=memory"});
  ASSERT_FALSE(c.ok()) << "dims differ now, so the mf job must refuse";
  c = ParseConfig(kTables, "x.yaml",
                  {"cluster.workers=5", "tables.1.dim=16", "tables.0.dim=16", "ps.store=memory"});
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ(c->cluster.workers, 5);
  EXPECT_EQ(c->tables[1].dim, 16u);
  EXPECT_EQ(c->ps.store, PsConfig::Store::kMemory);
  std::string e = Err(kTables, {"tables.7.dim=3"});
  EXPECT_NE(e.find("not an index"), std::string::npos) << e;
  e = Err(kTables, {"nonsense"});
  EXPECT_NE(e.find("path=value"), std::string::npos) << e;
}

TEST(Config, EffectiveConfigRoundTrips) {
  testing::TempDir dir;
  std::string src = testing::WriteFile(dir / "in.yaml", std::string(kTables) + "job: {seed: 7}\n");
  ASSERT_TRUE(WriteEffectiveConfig(src, {"cluster.servers=3"}, dir / "out.yaml").ok());
  auto c = LoadConfig(dir / "out.yaml");
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ(c->cluster.servers, 3);
  EXPECT_EQ(c->seed, 7u);
  auto orig = LoadConfig(src);
  ASSERT_TRUE(orig.ok());
  EXPECT_EQ(c->tables[0].seed, orig->tables[0].seed) << "row seeds must survive the rewrite";
  EXPECT_FALSE(LoadConfig(dir / "missing.yaml").ok());
}

// `m6rec adapt`'s configuration: the backbone's, its domains first (not trained, not evaluated),
// then the new ones; train fields from the new file; model and tables stay the backbone's.
// A new task instead of a new domain: the backbone's tasks first (weight 0), the new ones
// appended, the data the backbone's; both at once is refused.
TEST(Config, AdaptedJobCanAddTasksToTheBackbonesData) {
  testing::TempDir dir;
  const std::string backbone =
      testing::WriteFile(dir / "backbone.yaml",
                         "tables:\n  - {name: user, dim: 8}\n  - {name: item, dim: 8}\n"
                         "data: {source: dir, path: /d/ml-100k, format: movielens}\n"
                         "train: {job: m6, epochs: 4}\n");
  const std::string added = testing::WriteFile(
      dir / "new.yaml", "train:\n  epochs: 2\n  tasks: [{type: rating}, {type: like}]\n");
  ASSERT_TRUE(WriteAdaptConfig(backbone, added, {}, "/ck", dir / "out.yaml").ok());
  auto c = LoadConfig(dir / "out.yaml");
  ASSERT_TRUE(c.ok()) << c.status().message();
  ASSERT_EQ(c->train.tasks.size(), 3u);
  EXPECT_EQ(c->train.tasks[0].type, TaskKind::kRetrieval);
  EXPECT_EQ(c->train.tasks[0].weight, 0.0f) << "the backbone's task is not trained";
  EXPECT_EQ(c->train.tasks[2].type, TaskKind::kLike);
  EXPECT_EQ(c->adapt.frozen_tasks, 1);
  EXPECT_EQ(c->adapt.frozen_domains, 0);
  EXPECT_EQ(c->data.path, "/d/ml-100k");
  EXPECT_EQ(c->train.epochs, 2);
  const std::string both = testing::WriteFile(
      dir / "both.yaml", "data: {path: /d/x}\ntrain: {tasks: [{type: rating}]}\n");
  Status s = WriteAdaptConfig(backbone, both, {}, "/ck", dir / "bad.yaml");
  EXPECT_NE(s.message().find("adds tasks (train.tasks) or domains (data), not both"),
            std::string::npos)
      << s.message();
  // adapt.item_fusion: plain is about new domains' items; a job that adds tasks has none.
  s = WriteAdaptConfig(backbone,
                       testing::WriteFile(dir / "plain.yaml",
                                          "train: {tasks: [{type: rating}]}\n"
                                          "adapt: {item_fusion: plain}\n"),
                       {}, "/ck", dir / "plain-out.yaml");
  EXPECT_NE(s.message().find("adapt.item_fusion: plain fuses a new domain's items"),
            std::string::npos)
      << s.message();

  // A new domain on a multi-task backbone: the backbone's tasks stay, with their weights (the
  // new domain trains them, through its own condition rows).
  const std::string multi = testing::WriteFile(
      dir / "multi.yaml",
      "tables:\n  - {name: user, dim: 8}\n  - {name: item, dim: 8}\n"
      "data: {source: dir, path: /d/ml-100k, format: movielens}\n"
      "train: {job: m6, tasks: [{type: retrieval}, {type: rating, weight: 0.5}]}\n");
  const std::string domain =
      testing::WriteFile(dir / "domain.yaml", "data: {path: /d/other, format: movielens}\n");
  ASSERT_TRUE(WriteAdaptConfig(multi, domain, {}, "/ck", dir / "domain-out.yaml").ok());
  c = LoadConfig(dir / "domain-out.yaml");
  ASSERT_TRUE(c.ok()) << c.status().message();
  ASSERT_EQ(c->data.domains.size(), 2u);
  EXPECT_EQ(c->data.domains[0].weight, 0.0f);
  EXPECT_EQ(c->data.domains[1].path, "/d/other");
  EXPECT_EQ(c->adapt.frozen_domains, 1);
  EXPECT_EQ(c->adapt.frozen_tasks, 2) << "no task is new";
  ASSERT_EQ(c->train.tasks.size(), 2u);
  EXPECT_EQ(c->train.tasks[1].weight, 0.5f);

  // How the backbone's own domains were scheduled does not carry over to the adapted job
  // (its domains are not evaluated: a domain_patience would be refused), unless new.yaml says.
  const std::string scheduled = testing::WriteFile(
      dir / "scheduled.yaml",
      "tables:\n  - {name: user, dim: 8}\n  - {name: item, dim: 8}\n"
      "data: {domains: [{path: /d/a, format: movielens}, {path: /d/b, format: movielens}]}\n"
      "train: {job: m6, domain_patience: 1, backbone_epochs: 1}\n");
  ASSERT_TRUE(WriteAdaptConfig(scheduled, domain, {}, "/ck", dir / "sched-out.yaml").ok());
  c = LoadConfig(dir / "sched-out.yaml");
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ(c->train.domain_patience, 0);
  EXPECT_EQ(c->train.backbone_epochs, 0);
  ASSERT_TRUE(WriteAdaptConfig(scheduled, domain, {"train.domain_patience=2"}, "/ck",
                               dir / "sched-kept.yaml")
                  .ok());
  EXPECT_EQ(LoadConfig(dir / "sched-kept.yaml")->train.domain_patience, 2);
}

TEST(Config, AdaptedJobKeepsTheBackboneAndAppendsTheNewDomains) {
  testing::TempDir dir;
  const std::string tables = "tables:\n  - {name: user, dim: 8}\n  - {name: item, dim: 8}\n";
  const std::string backbone =
      testing::WriteFile(dir / "backbone.yaml", tables + R"(job: {name: bb, seed: 3}
cluster: {servers: 2, workers: 2}
data:
  domains:
    - {path: /d/s3rec, format: s3rec, name: Beauty}
    - {path: /d/s3rec, format: s3rec, name: Yelp}
model: {hidden: 32, dropout: 0.3}
train: {job: m6, epochs: 4, batch_size: 64, loss: softmax}
)");
  const std::string added = testing::WriteFile(dir / "new.yaml", R"(data:
  domains:
    - {path: /d/s3rec, format: s3rec, name: Toys_and_Games, label: Toys}
train: {epochs: 2}
model: {adapter_rank: 4, tower_adapters: true}
)");
  ASSERT_TRUE(WriteAdaptConfig(backbone, added, {"data.domains.0.train_users=0.1"},
                               "/runs/bb/checkpoints/step-9", dir / "out.yaml")
                  .ok());
  auto c = LoadConfig(dir / "out.yaml");
  ASSERT_TRUE(c.ok()) << c.status().message();
  ASSERT_EQ(c->data.domains.size(), 3u);
  for (int d : {0, 1}) {
    EXPECT_EQ(c->data.domains[d].weight, 0.0f) << "backbone domains are not trained";
    EXPECT_FALSE(c->data.domains[d].evaluate);
  }
  EXPECT_EQ(c->data.domains[2].label, "Toys");
  EXPECT_EQ(c->data.domains[2].weight, 1.0f);
  EXPECT_FLOAT_EQ(c->data.domains[2].train_users, 0.1f) << "overrides index the new file's list";
  EXPECT_TRUE(c->data.domains[2].evaluate);
  EXPECT_EQ(c->adapt.from, "/runs/bb/checkpoints/step-9");
  EXPECT_EQ(c->adapt.frozen_domains, 2);
  EXPECT_EQ(c->adapt.train, AdaptTrain::kAdapters);
  EXPECT_EQ(c->train.epochs, 2) << "the new file's train fields win";
  EXPECT_EQ(c->train.batch_size, 64) << "the others stay the backbone's";
  EXPECT_EQ(c->model.hidden, 32);
  EXPECT_EQ(c->model.adapter_rank, 4);
  EXPECT_TRUE(c->model.tower_adapters) << "a new domain may add adapters to the towers";
  EXPECT_EQ(c->cluster.servers, 2);
  EXPECT_EQ(c->name, "bb-adapt");

  // What would change the backbone is refused, naming the field.
  auto err = [&](const std::string& yaml) {
    const std::string f = testing::WriteFile(dir / "bad.yaml", yaml);
    Status s = WriteAdaptConfig(backbone, f, {}, "/ck", dir / "bad-out.yaml");
    EXPECT_FALSE(s.ok()) << yaml;
    return s.message();
  };
  const std::string toys = "data: {path: /d/s3rec, format: s3rec, name: Toys_and_Games}\n";
  std::string e = err(toys + "model: {hidden: 64}\n");
  EXPECT_NE(e.find("model.hidden: unknown field"), std::string::npos) << e;
  // Of a table only the new rows' init and optimizer rates, by the backbone's table name.
  e = err(toys + "tables:\n  - {name: item, dim: 16}\n");
  EXPECT_NE(e.find("tables.0.dim: unknown field"), std::string::npos) << e;
  e = err(toys + "tables:\n  - {name: token, optimizer: {lr: 0.1}}\n");
  EXPECT_NE(e.find("has no table 'token' (it has user, item)"), std::string::npos) << e;
  e = err(toys + "tables:\n  - {name: item, optimizer: {type: adam}}\n");
  EXPECT_NE(e.find("tables.0.optimizer.type: unknown field"), std::string::npos) << e;
  e = err(toys + "tables:\n  - {name: item, init: {from: /rows.bin}}\n");
  EXPECT_NE(e.find("tables.0.init.from: unknown field"), std::string::npos) << e;
  const std::string rates = testing::WriteFile(
      dir / "rates.yaml", toys +
                              "tables:\n  - {name: item, init: {type: normal, std: 0.01},"
                              " optimizer: {lr: 0.02}}\n");
  Status st = WriteAdaptConfig(backbone, rates, {"tables.0.optimizer.weight_decay=0.001"}, "/ck",
                               dir / "rates-out.yaml");
  ASSERT_TRUE(st.ok()) << st.message();
  c = LoadConfig(dir / "rates-out.yaml");
  ASSERT_TRUE(c.ok()) << c.status().message();
  ASSERT_EQ(c->tables.size(), 2u);
  EXPECT_EQ(c->tables[1].dim, 8u) << "the backbone's shape";
  EXPECT_FLOAT_EQ(c->tables[1].init.stddev, 0.01f);
  EXPECT_FLOAT_EQ(c->tables[1].optimizer.lr, 0.02f);
  EXPECT_FLOAT_EQ(c->tables[1].optimizer.weight_decay, 0.001f) << "--set reaches the list";
  EXPECT_EQ(c->tables[1].optimizer.kind, c->tables[0].optimizer.kind) << "the backbone's type";
  EXPECT_FLOAT_EQ(c->tables[0].optimizer.lr, OptimizerSpec().lr) << "other tables untouched";
  e = err(toys + "cluster: {servers: 3}\n");
  EXPECT_NE(e.find("sharded over its 2 server(s)"), std::string::npos) << e;
  e = err("data: {path: /d/s3rec, format: s3rec, name: Beauty}\n");
  EXPECT_NE(e.find("a second domain labelled 'Beauty'"), std::string::npos) << e;
  e = err("train: {epochs: 1}\n");
  EXPECT_NE(e.find("data: the new domain(s)"), std::string::npos) << e;
  // A single-dataset new file works too; adapt.train: all fine-tunes everything.
  const std::string f = testing::WriteFile(dir / "all.yaml", toys + "adapt: {train: all}\n");
  ASSERT_TRUE(WriteAdaptConfig(backbone, f, {}, "/ck", dir / "all-out.yaml").ok());
  c = LoadConfig(dir / "all-out.yaml");
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ(c->adapt.train, AdaptTrain::kAll);
  EXPECT_EQ(c->data.domains.back().label, "Toys_and_Games");
  EXPECT_EQ(c->model.adapter_rank, 8) << "the default rank";
  EXPECT_EQ(c->adapt.item_fusion, AdaptItemFusion::kPlain) << "m6rec adapt writes plain";
  // adapt.item_fusion: backbone in new.yaml carries into the written configuration; a
  // configuration without the field (a run adapted before it existed) reads backbone; a
  // misspelling is refused.
  ASSERT_TRUE(WriteAdaptConfig(backbone,
                               testing::WriteFile(dir / "learned.yaml",
                                                  toys + "adapt: {item_fusion: backbone}\n"),
                               {}, "/ck", dir / "learned-out.yaml")
                  .ok());
  c = LoadConfig(dir / "learned-out.yaml");
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ(c->adapt.item_fusion, AdaptItemFusion::kBackbone);
  EXPECT_EQ(c->adapt.train, AdaptTrain::kAdapters);
  EXPECT_EQ(JobConfig().adapt.item_fusion, AdaptItemFusion::kBackbone);
  st = WriteAdaptConfig(
      backbone, testing::WriteFile(dir / "typo.yaml", toys + "adapt: {item_fusion: mean}\n"), {},
      "/ck", dir / "typo-out.yaml");
  EXPECT_NE(st.message().find("adapt.item_fusion"), std::string::npos) << st.message();
  // A backbone trained with tower adapters keeps them: its domains' rows are in them.
  const std::string towers = testing::WriteFile(
      dir / "towers.yaml", tables + R"(data: {path: /d/s3rec, format: s3rec, name: Beauty}
model: {adapter_rank: 4, tower_adapters: true}
train: {job: m6}
)");
  st = WriteAdaptConfig(towers, testing::WriteFile(dir / "off.yaml", toys + R"(model:
  tower_adapters: false
)"),
                        {}, "/ck", dir / "off-out.yaml");
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("model.tower_adapters: the backbone has tower adapters"),
            std::string::npos)
      << st.message();
  // A hand-written adapt section must leave a new domain.
  e = Err(tables + R"(data:
  domains: [{path: /a}, {path: /b}]
train: {job: m6}
adapt: {from: /ck, frozen_domains: 2}
)");
  EXPECT_NE(e.find("adapt.frozen_domains: 2 backbone domain(s) of 2"), std::string::npos) << e;
}

// data.vocabulary and a MovieLens domain's split and title words; an adapted job keeps them, so
// its backbone domains' token ids are the backbone's.
TEST(Config, SharedVocabularyAndMovieLensDomainsCarryIntoAnAdaptedJob) {
  testing::TempDir dir;
  const std::string head = std::string(kTables) + "train: {job: m6}\n";
  auto c = ParseConfig(head + R"(data:
  vocabulary: shared
  domains:
    - {path: /d/ml-1m, format: movielens, title_words: true, split: 90/10}
    - {path: /d/s3rec, format: s3rec, name: Beauty}
)",
                       "job.yaml");
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_TRUE(c->data.shared_vocabulary);
  EXPECT_TRUE(c->data.domains[0].title_words);
  EXPECT_EQ(c->data.domains[0].split, "90/10");
  EXPECT_FALSE(c->data.domains[1].title_words);
  auto plain = ParseConfig(head + "data: {domains: [{path: /a}]}\n", "job.yaml");
  ASSERT_TRUE(plain.ok()) << plain.status().message();
  EXPECT_FALSE(plain->data.shared_vocabulary) << "per_domain by default";
  std::string e = Err(head + "data: {vocabulary: common, domains: [{path: /a}]}\n");
  EXPECT_NE(e.find("data.vocabulary: 'common' (per_domain or shared)"), std::string::npos) << e;
  e = Err(head + "data: {domains: [{path: /a, format: s3rec, name: B, title_words: true}]}\n");
  EXPECT_NE(e.find("data.domains[0]"), std::string::npos) << e;
  EXPECT_NE(e.find("need format: movielens"), std::string::npos) << e;
  e = Err(head + "data: {domains: [{path: /a, format: movielens, split: u9}]}\n");
  EXPECT_NE(e.find("data.domains[0].split: 'u9'"), std::string::npos) << e;
  e = Err(head + "data: {title_words: true, domains: [{path: /a, format: movielens}]}\n");
  EXPECT_NE(e.find("data.title_words: set per domain"), std::string::npos) << e;

  // A single-dataset MovieLens backbone: its split and title words become its domain's.
  const std::string backbone = testing::WriteFile(dir / "bb.yaml", head + R"(job: {name: bb}
data: {source: dir, format: movielens, path: /d/ml-1m, title_words: true, vocabulary: shared}
)");
  const std::string added =
      testing::WriteFile(dir / "new.yaml",
                         "data: {domains: [{path: /d/ml-100k, format: movielens, "
                         "title_words: true, label: ml100k}]}\n");
  ASSERT_TRUE(WriteAdaptConfig(backbone, added, {}, "/ck", dir / "out.yaml").ok());
  c = LoadConfig(dir / "out.yaml");
  ASSERT_TRUE(c.ok()) << c.status().message();
  ASSERT_EQ(c->data.domains.size(), 2u);
  EXPECT_TRUE(c->data.shared_vocabulary) << "the backbone's vocabulary";
  EXPECT_TRUE(c->data.domains[0].title_words) << "the backbone's token ids";
  EXPECT_EQ(c->data.domains[0].path, "/d/ml-1m");
  EXPECT_TRUE(c->data.domains[1].title_words);
  // The new file cannot change the vocabulary the backbone's ids were made with.
  const std::string bad = testing::WriteFile(
      dir / "bad.yaml", "data: {vocabulary: per_domain, path: /d/ml-100k, format: movielens}\n");
  Status st = WriteAdaptConfig(backbone, bad, {}, "/ck", dir / "bad-out.yaml");
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("data.vocabulary: unknown field"), std::string::npos) << st.message();
}

}  // namespace m6rec
