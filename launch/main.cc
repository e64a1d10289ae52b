// m6rec: one binary, one role per process. This file only parses the command line (CLI11) and
// wires the component libraries (common, ps, scheduler, worker, launch).
//
// Every subcommand is one Add* function: it creates the CLI11 subcommand, binds each option
// straight to a field of the options struct the command runs with (RoleOptions,
// LocalClusterOptions, OfflineOptions, PsBenchOptions, ...), and registers what runs once the
// command line parsed. Adding an option is one `c->add_option(...)` line in its Add* function
// (plus the field it fills); adding a subcommand is one more Add* function called from main().
// Parse errors (unknown option, bad value, missing required option) exit 2 naming the option;
// `--help` / `-h` on any subcommand prints that subcommand's options and exits 0.
#include <malloc.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/config.h"
#include "common/logging.h"
#include "common/transport.h"
#include "common/util.h"
#include "launch/bench.h"
#include "launch/bench_prequential.h"
#include "launch/bench_rows.h"
#include "launch/bench_serve.h"
#include "launch/cluster_launch.h"
#include "launch/feed.h"
#include "launch/import.h"
#include "launch/local_cluster.h"
#include "launch/offline.h"
#include "launch/report.h"
#include "launch/roles.h"
#include "launch/run_dir.h"
#include "launch/serve.h"
#include "worker/synthetic_data.h"

using namespace m6rec;

namespace {

// ---------------------------------------------------------------------------------------------
// Validators. CLI11's own ranges print their bounds as doubles (1.79e308); these say what they
// want and what they got, and CLI11 puts the option's name in front.

// A whole integer in [min, max] (not "12abc", not "1.5").
CLI::Validator Integer(long long min, long long max = INT_MAX) {
  std::string want = "an integer >= " + std::to_string(min);
  if (max != INT_MAX && max != LLONG_MAX)
    want = "an integer in [" + std::to_string(min) + ", " + std::to_string(max) + "]";
  return CLI::Validator(
      [min, max, want](std::string& v) -> std::string {
        errno = 0;
        char* end = nullptr;
        long long x = std::strtoll(v.c_str(), &end, 10);
        if (v.empty() || *end != '\0' || errno == ERANGE || x < min || x > max)
          return "expected " + want + ", got '" + v + "'";
        return "";
      },
      min == 0   ? "NONNEGATIVE"
      : min == 1 ? "POSITIVE"
                 : ">=" + std::to_string(min));
}

// A number > 0 (seconds).
CLI::Validator PositiveReal() {
  return CLI::Validator(
      [](std::string& v) -> std::string {
        char* end = nullptr;
        double x = std::strtod(v.c_str(), &end);
        if (v.empty() || *end != '\0' || !std::isfinite(x) || x <= 0)
          return "expected a number > 0, got '" + v + "'";
        return "";
      },
      "POSITIVE");
}

// An unsigned 64-bit integer, digits only (strtoull alone takes "-5" and "x").
CLI::Validator Unsigned64() {
  return CLI::Validator(
      [](std::string& v) -> std::string {
        errno = 0;
        char* end = nullptr;
        if (!v.empty() && v.find_first_not_of("0123456789") == std::string::npos) {
          std::strtoull(v.c_str(), &end, 10);
          if (errno != ERANGE) return "";
        }
        return "expected an unsigned 64-bit integer, got '" + v + "'";
      },
      "");
}

CLI::Validator LogLevelName() {
  return CLI::Validator(
      [](std::string& v) -> std::string {
        LogLevel l;
        return ParseLogLevel(v, &l) ? "" : "unknown level '" + v + "' (debug, info, warn, error)";
      },
      "");
}

// ---------------------------------------------------------------------------------------------
// Options several subcommands share, bound to the caller's fields.

void AddConfigOptions(CLI::App* c, std::string* config, std::vector<std::string>* overrides,
                      bool required, const std::string& config_help) {
  auto* opt = c->add_option("--config", *config, config_help)->type_name("FILE");
  if (required) opt->required();
  c->add_option("--set", *overrides,
                "override a config field, e.g. --set cluster.workers=4 (repeatable)")
      ->type_name("PATH=VALUE")
      ->allow_extra_args(false);
}

void AddLogLevel(CLI::App* c, std::string* level) {
  c->add_option("--log-level", *level, "debug | info | warn | error")
      ->type_name("LEVEL")
      ->check(LogLevelName())
      ->capture_default_str();
}

// A comma-separated list ("16,64,256") into `out`, every element checked by `check` (an empty
// element too: CLI11's own delimiter would drop it).
template <typename T>
CLI::Option* AddList(CLI::App* c, const std::string& name, std::vector<T>* out,
                     const std::string& help, CLI::Validator check) {
  auto split = [](const std::string& s) {
    std::vector<std::string> parts;
    for (size_t b = 0;;) {
      size_t e = s.find(',', b);
      parts.push_back(s.substr(b, e == std::string::npos ? e : e - b));
      if (e == std::string::npos) return parts;
      b = e + 1;
    }
  };
  std::string shown;
  for (const T& x : *out) shown += (shown.empty() ? "" : ",") + CLI::detail::to_string(x);
  CLI::Validator each(
      [check, split](std::string& s) -> std::string {
        for (std::string part : split(s)) {
          std::string err = check(part);
          if (!err.empty()) return err;
        }
        return "";
      },
      check.get_description());
  return c
      ->add_option_function<std::string>(
          name,
          [out, split](const std::string& s) {
            out->clear();
            for (const std::string& part : split(s)) {
              T v{};
              CLI::detail::lexical_cast(part, v);  // validated above
              out->push_back(v);
            }
          },
          help)
      ->type_name("LIST")
      ->default_str(shown)
      ->check(each);
}

void ApplyLogLevel(const std::string& level) {
  LogLevel l = LogLevel::kInfo;
  ParseLogLevel(level, &l);  // validated while parsing
  SetLogLevel(l);
}

int Die(const std::string& command, const Status& s, int code = 2) {
  std::fprintf(stderr, "m6rec %s: %s\n", command.c_str(), s.message().c_str());
  return code;
}

// ---------------------------------------------------------------------------------------------
// The subcommands. Each Add* function registers one; `Commands` remembers what each runs.

using RunFn = std::function<int()>;

class Commands {
 public:
  // `run` runs when the command line chose subcommand `c`.
  void Runs(CLI::App* c, RunFn run) { runs_.emplace_back(c, std::move(run)); }
  // The command the parse chose, or nullptr when it chose none (plain `m6rec`).
  const RunFn* Chosen() const {
    for (const auto& [app, run] : runs_)
      if (app->parsed()) return &run;
    return nullptr;
  }

 private:
  std::vector<std::pair<CLI::App*, RunFn>> runs_;
};

// scheduler | server | worker: one role of a job, addresses passed explicitly (the local
// launcher spawns these; see README "Running the roles by hand").
struct RoleArgs {
  std::string role;
  std::string config;
  std::vector<std::string> overrides;
  std::string log_level = "info";
  std::string scheduler;  // HOST:PORT
  RoleOptions o;
};

int RunRole(RoleArgs& a) {
  ApplyLogLevel(a.log_level);
  auto cfg = LoadConfig(a.config, a.overrides);
  if (!cfg.ok()) return Die(a.role, cfg.status());
  RoleOptions& o = a.o;
  o.cfg = *cfg;
  const char* tok = std::getenv("M6REC_TOKEN");
  if (!tok || !ParseToken(tok, &o.token))
    return Die(a.role,
               Status::InvalidArgument("no job token: set M6REC_TOKEN to the job's 16-hex-digit "
                                       "token (the local launcher does this)"));
  if (a.role == "scheduler") {
    o.scheduler_host = o.cfg.cluster.host;
    return RunSchedulerRole(o);
  }
  if (!o.standalone) {
    if (a.scheduler.empty())
      return Die(a.role, Status::InvalidArgument("--scheduler HOST:PORT is required"));
    Status st = ParseHostPort(a.scheduler, &o.scheduler_host, &o.scheduler_port);
    if (!st.ok()) return Die(a.role, st.WithContext("--scheduler"));
  }
  return a.role == "server" ? RunServerRole(o) : RunWorkerRole(o);
}

void AddRole(CLI::App* root, Commands* cmds, const std::string& role, const std::string& about) {
  auto a = std::make_shared<RoleArgs>();
  a->role = role;
  CLI::App* c = root->add_subcommand(role, about);
  AddConfigOptions(c, &a->config, &a->overrides, /*required=*/true, "job configuration (YAML)");
  AddLogLevel(c, &a->log_level);
  if (role != "scheduler") {
    c->add_option("--scheduler", a->scheduler, "where the scheduler listens")
        ->type_name("HOST:PORT");
    c->add_option("--rank", a->o.rank, "requested rank within the role (default: any)")
        ->check(Integer(0));
    c->add_option(
         "--data-dir", a->o.data_dir,
         role == "server" ? "RocksDB directory" : "dataset directory (default: the job's data)")
        ->type_name("DIR");
  }
  if (role != "server")
    c->add_option("--run-dir", a->o.run_dir,
                  role == "worker" ? "where summaries are written"
                                   : "write the job's timeline (timeline.json) there at the end")
        ->type_name("DIR");
  if (role != "worker")
    c->add_option("--port-file", a->o.port_file,
                  role == "scheduler" ? "write the bound port there"
                                      : "with --standalone: write the bound port there")
        ->type_name("FILE");
  if (role == "server")
    c->add_flag("--standalone", a->o.standalone, "no scheduler: serve every slot until SIGTERM");
  if (role != "scheduler")
    c->add_option("--resume-from", a->o.resume_from,
                  role == "server" ? "start from the rows of this checkpoint's server-<rank>"
                                   : "continue from this checkpoint (model, data cursor, RNG)")
        ->type_name("CHECKPOINT");
  c->footer("The job token comes from the environment: M6REC_TOKEN=<16 hex digits>.");
  cmds->Runs(c, [a] { return RunRole(*a); });
}

// local | train: a whole job. `train` under mpirun or srun runs this process's rank of the job
// (its role from the rank); otherwise, and with --local, the local simulated cluster.
struct JobArgs {
  LocalClusterOptions o;
  bool local = false;  // train --local
  std::string stream;  // train --stream SOURCE
};

// --stream SOURCE as the stream section's fields: replay | dir:PATH | feed:ENDPOINT.
bool StreamOverrides(const std::string& spec, std::vector<std::string>* overrides) {
  const size_t colon = spec.find(':');
  const std::string kind = spec.substr(0, colon);
  const std::string rest = colon == std::string::npos ? "" : spec.substr(colon + 1);
  if (kind == "replay" && rest.empty()) {
    overrides->push_back("stream.source=replay");
    return true;
  }
  if ((kind == "dir" || kind == "feed") && !rest.empty()) {
    overrides->push_back(std::string("stream.source=") + (kind == "dir" ? "directory" : "feed"));
    overrides->push_back("stream.path=" + rest);
    return true;
  }
  return false;
}

int RunJob(JobArgs a, bool train, int* argc, char*** argv) {
  ApplyLogLevel(a.o.log_level);
  if (!a.stream.empty() && !StreamOverrides(a.stream, &a.o.overrides)) {
    std::fprintf(stderr,
                 "train: --stream '%s': replay (data.stream_split's held-back interactions), "
                 "dir:PATH (files arriving in a directory) or feed:tcp://HOST:PORT (m6rec "
                 "feed)\n",
                 a.stream.c_str());
    return 2;
  }
  const LaunchEnv env = DetectLaunch();
  if (train && !a.local && env.kind == LaunchEnv::Kind::kMpi && env.size > 1)
    return RunMpiJob(a.o, argc, argv);
  if (train && !a.local && env.kind == LaunchEnv::Kind::kSlurm && env.size > 1)
    return RunSlurmJob(a.o);
  return RunLocalCluster(a.o);
}

void AddJob(CLI::App* root, Commands* cmds, const std::string& name, const std::string& about,
            int* argc, char*** argv) {
  auto a = std::make_shared<JobArgs>();
  const bool train = name == "train";
  CLI::App* c = root->add_subcommand(name, about);
  AddConfigOptions(c, &a->o.config_path, &a->o.overrides, /*required=*/false,
                   "job configuration (YAML; default: the built-in configs/default.yaml)");
  AddLogLevel(c, &a->o.log_level);
  c->add_option("--run-dir", a->o.run_dir,
                "where the run writes everything (default: runs/<job>-<time>)")
      ->type_name("DIR");
  if (train) {
    c->add_flag("--local", a->local, "the local simulated cluster even under mpirun or srun");
    c->add_option("--stream", a->stream,
                  "after train.epochs, keep training on interactions as they arrive: replay "
                  "(data.stream_split's held-back part), dir:PATH or feed:tcp://HOST:PORT "
                  "(the config's stream section sets the rest)")
        ->type_name("SOURCE");
    c->add_option("--resume", a->o.resume_dir,
                  "continue the run in DIR from its newest complete checkpoint (its own config; "
                  "--set still applies)")
        ->type_name("DIR")
        ->excludes("--config")
        ->excludes("--run-dir");
  }
  cmds->Runs(c, [a, train, argc, argv] { return RunJob(*a, train, argc, argv); });
}

// adapt: a new domain on a trained backbone, training a small part (WriteAdaptConfig).
struct AdaptArgs {
  LocalClusterOptions o;
  std::string write_config;
};

int RunAdapt(const AdaptArgs& a) {
  ApplyLogLevel(a.o.log_level);
  const LaunchEnv env = DetectLaunch();
  if ((env.kind == LaunchEnv::Kind::kMpi || env.kind == LaunchEnv::Kind::kSlurm) && env.size > 1) {
    std::fprintf(stderr,
                 "adapt: under mpirun/srun every rank would start its own local cluster; write "
                 "the adapted job once with 'm6rec adapt ... --write-config FILE', then launch "
                 "'m6rec train --config FILE'\n");
    return 2;
  }
  if (!a.write_config.empty()) {
    // The configuration alone: `m6rec train --config FILE` runs it (under mpirun or srun too).
    auto ckpt = BackboneCheckpoint(a.o.adapt_from);
    Status s = ckpt.ok() ? WriteAdaptConfig(a.o.adapt_from + "/config.yaml", a.o.config_path,
                                            a.o.overrides, *ckpt, a.write_config)
                         : ckpt.status();
    if (!s.ok()) {
      std::fprintf(stderr, "adapt: %s\n", s.message().c_str());
      return 2;
    }
    std::printf("wrote %s (m6rec train --config %s runs it)\n", a.write_config.c_str(),
                a.write_config.c_str());
    return 0;
  }
  return RunLocalCluster(a.o);
}

void AddAdapt(CLI::App* root, Commands* cmds) {
  auto a = std::make_shared<AdaptArgs>();
  CLI::App* c = root->add_subcommand(
      "adapt",
      "add new domains to a trained m6 backbone, training only their condition embedding, "
      "heads, fusion adapters and sparse rows (adapt.train: all fine-tunes everything)");
  c->add_option("--from", a->o.adapt_from, "the backbone's run directory (its best checkpoint)")
      ->type_name("DIR")
      ->required();
  AddConfigOptions(c, &a->o.config_path, &a->o.overrides, /*required=*/true,
                   "the new domain(s): data.domains (or data.path/format/name), and any job, "
                   "train, checkpoint, cluster.workers, adapt.train fields (YAML)");
  AddLogLevel(c, &a->o.log_level);
  c->add_option("--run-dir", a->o.run_dir,
                "where the run writes everything (default: runs/<backbone>-adapt-<time>)")
      ->type_name("DIR");
  c->add_option("--write-config", a->write_config,
                "only write the adapted job's configuration to FILE (for mpirun / srun)")
      ->type_name("FILE");
  cmds->Runs(c, [a] { return RunAdapt(*a); });
}

// eval | recommend | strategy: serve a finished run from its checkpoint.
struct OfflineArgs {
  OfflineOptions o;
  std::string log_level = "info";
};

void AddOffline(CLI::App* root, Commands* cmds, const std::string& mode, const std::string& about) {
  auto a = std::make_shared<OfflineArgs>();
  a->o.mode = mode;
  CLI::App* c = root->add_subcommand(mode, about);
  c->add_option("--run-dir", a->o.run_dir, "a finished run")->type_name("DIR")->required();
  c->add_option("--checkpoint", a->o.checkpoint,
                "serve this checkpoint (default: the best epoch's, else the newest)")
      ->type_name("DIR");
  c->add_option("--set", a->o.overrides, "override a field of the run's config.yaml (repeatable)")
      ->type_name("PATH=VALUE")
      ->allow_extra_args(false);
  AddLogLevel(c, &a->log_level);
  if (mode == "recommend") {
    auto* user =
        c->add_option("--user", a->o.user,
                      "the user to recommend for (with --domain: its id in that domain's dataset)")
            ->check(Integer(0, INT64_MAX));
    c->add_option("--domain", a->o.domain,
                  "a multi-domain run: the domain the user belongs to (served from the "
                  "checkpoint of that domain's own best epoch)")
        ->type_name("NAME");
    // A user the run has never seen (cold start), instead of --user.
    auto* h =
        c->add_option("--history", a->o.history, "a new user: the items it touched, oldest first")
            ->type_name("ID,ID,...");
    auto* p = c->add_option("--profile", a->o.profile,
                            "a new user: its profile attributes (e.g. gender=F,occupation=writer)")
                  ->type_name("NAME=VALUE,...");
    auto* f = c->add_option("--friends", a->o.friends, "a new user: its friends' user ids")
                  ->type_name("ID,ID,...");
    auto* j = c->add_option("--user-json", a->o.user_json,
                            "a new user as JSON {history, profile, friends} ('-': stdin)")
                  ->type_name("FILE");
    for (auto* o : {h, p, f, j}) user->excludes(o);
    j->excludes(h)->excludes(p)->excludes(f);
    c->parse_complete_callback([user, h, p, f, j] {
      if (user->count() + h->count() + p->count() + f->count() + j->count() == 0)
        throw CLI::RequiredError(
            "--user (or a new user's --history/--profile/--friends/--user-json)");
    });
  }
  if (mode == "eval")
    c->add_option("-k,--k", a->o.k,
                  "top-K (used by recommend; eval takes its cut-offs from the run's config)")
        ->check(Integer(1));
  if (mode == "recommend") {
    c->add_option("-k,--k", a->o.k, "how many items (default: the intent's strategy's, else 10)")
        ->check(Integer(1));
    c->add_option("--new-items", a->o.new_items,
                  "also rank items the run never saw, from their content: a JSON list of "
                  "{name, tokens, image, audio}")
        ->type_name("FILE");
    c->add_flag("!--no-strategy", a->o.use_strategy,
                "ignore the run's strategy.json (no intent inference)");
    c->add_flag("--explain", a->o.explain,
                "say why each item: the sources' weights in the fusion, the history items "
                "attended to, the graph neighbours, the shared tokens (JSON \"why\"; a table "
                "on stderr)");
  }
  if (mode == "export") {
    c->add_option("--table", a->o.table, "the table")->type_name("NAME")->required();
    c->add_option("--out", a->o.out, "the vectors file to write")->type_name("FILE")->required();
    c->add_option("--format", a->o.format,
                  "words: the named rows, 'word v1 ...' with a 'count dim' header (the token "
                  "table of data that names its tokens); ids: every row, 'id v1 ...'")
        ->type_name("FORMAT")
        ->check(CLI::IsMember({"words", "ids"}))
        ->capture_default_str();
  }
  if (mode == "strategy") {
    c->add_flag("--fit", a->o.fit,
                "fit the intent classifier and each intent's strategy on the trained model "
                "(validation requests), measure them on the test requests, write strategy.json");
    c->add_option("--change", a->o.strategy_sets,
                  "change a strategy field: INTENT.FIELD=VALUE, INTENT continue|explore|global, "
                  "FIELD k|min_score|category_weight|sources.NAME (repeatable)")
        ->type_name("INTENT.FIELD=VALUE")
        ->allow_extra_args(false);
  }
  cmds->Runs(c, [a] {
    ApplyLogLevel(a->log_level);
    return RunOffline(a->o);
  });
}

// serve: a finished run over HTTP (launch/serve.h).
void AddServe(CLI::App* root, Commands* cmds) {
  auto a = std::make_shared<ServeOptions>();
  auto level = std::make_shared<std::string>("info");
  CLI::App* c =
      root->add_subcommand("serve",
                           "serve a finished run's recommendations over HTTP/JSON (GET /health, "
                           "GET|POST /recommend)");
  c->add_option("--run-dir", a->run_dir, "a finished run")->type_name("DIR")->required();
  c->add_option("--checkpoint", a->checkpoint,
                "serve this checkpoint (default: the best epoch's, else the newest)")
      ->type_name("DIR");
  c->add_option("--set", a->overrides, "override a field of the run's config.yaml (repeatable)")
      ->type_name("PATH=VALUE")
      ->allow_extra_args(false);
  c->add_option("--host", a->host, "address to listen on")->capture_default_str();
  c->add_option("--port", a->port, "port (0: any free one, printed and written to --port-file)")
      ->check(CLI::Range(0, 65535))
      ->capture_default_str();
  c->add_option("--port-file", a->port_file, "write the port here once listening")
      ->type_name("FILE");
  c->add_flag("!--no-strategy", a->use_strategy, "ignore the run's strategy.json");
  c->add_option("--follow", a->follow_s,
                "every SECONDS switch to the run's newest checkpoint (a job still training), "
                "loaded beside the one being served")
      ->type_name("SECONDS")
      ->check(PositiveReal());
  c->add_option("--max-k", a->max_k, "the largest k a request may ask for")
      ->check(Integer(1))
      ->capture_default_str();
  AddLogLevel(c, level.get());
  cmds->Runs(c, [a, level] {
    ApplyLogLevel(*level);
    return RunServe(*a);
  });
}

// feed: a ZeroMQ feed of interactions for streaming jobs (launch/feed.h).
void AddFeed(CLI::App* root, Commands* cmds) {
  auto a = std::make_shared<FeedOptions>();
  auto level = std::make_shared<std::string>("info");
  CLI::App* c = root->add_subcommand(
      "feed", "feed interactions from a file to streaming jobs over ZeroMQ, at a given rate");
  c->add_option("--from", a->from, "'user item [timestamp]' lines")->type_name("FILE")->required();
  c->add_option("--rate", a->rate, "events released per second (0: all at once)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  c->add_option("--token", a->token, "the consuming job's token")->type_name("HEX16")->required();
  c->add_option("--host", a->host, "address to bind")->capture_default_str();
  c->add_option("--port", a->port, "port (0: any free one)")
      ->check(CLI::Range(0, 65535))
      ->capture_default_str();
  c->add_option("--port-file", a->port_file, "write the port here once bound")->type_name("FILE");
  AddLogLevel(c, level.get());
  cmds->Runs(c, [a, level] {
    ApplyLogLevel(*level);
    return RunFeed(*a);
  });
}

// import: pretrained vectors into a table's initial rows (launch/import.h).
void AddImport(CLI::App* root, Commands* cmds) {
  auto a = std::make_shared<ImportOptions>();
  auto level = std::make_shared<std::string>("warn");
  CLI::App* c = root->add_subcommand(
      "import",
      "pretrained vectors (word2vec/GloVe/fastText text, id-keyed text, .npy) into the initial "
      "rows of a table: writes a rows file that the table's init.from names");
  AddConfigOptions(c, &a->config, &a->overrides, /*required=*/true,
                   "the job configuration whose table receives the vectors (YAML)");
  c->add_option("--table", a->table, "the table (its name under tables)")
      ->type_name("NAME")
      ->required();
  c->add_option("--from", a->from, "the vectors")->type_name("FILE")->required();
  c->add_option("--out", a->out, "the rows file to write (then: init: {from: FILE})")
      ->type_name("FILE")
      ->required();
  c->add_option("--format", a->format,
                "words: 'word v1 v2 ...' text, optional 'count dim' header (word2vec, GloVe, "
                "fastText); ids: 'id v1 v2 ...'; npy: float32 [rows x dim], row = id "
                "(default: npy for *.npy, else words)")
      ->type_name("FORMAT")
      ->check(CLI::IsMember({"words", "ids", "npy"}));
  c->add_option("--vocab", a->vocab,
                "words: map words to row ids through this file ('word' per line = id by line "
                "number from 0, or 'word id'); default: the dataset's token names")
      ->type_name("FILE");
  auto missing = std::make_shared<std::string>("keep");
  c->add_option("--missing", *missing,
                "a vocabulary word without a vector: keep its initial row, or fail")
      ->type_name("keep|error")
      ->check(CLI::IsMember({"keep", "error"}))
      ->capture_default_str();
  AddLogLevel(c, level.get());
  cmds->Runs(c, [a, level, missing] {
    ApplyLogLevel(*level);
    a->missing_is_error = *missing == "error";
    return RunImport(*a);
  });
}

// data synth: the synthetic dataset on its own.
struct SynthArgs {
  std::string out, config;
  std::vector<std::string> overrides;
  std::string log_level = "info";
  std::optional<uint64_t> seed;  // default: the config's seed
};

int RunSynth(const SynthArgs& a) {
  ApplyLogLevel(a.log_level);
  auto cfg = a.config.empty() ? ParseConfig(DefaultConfigYaml(), "<built-in default>", a.overrides)
                              : LoadConfig(a.config, a.overrides);
  if (!cfg.ok()) return Die("data synth", cfg.status());
  Status s = WriteSynthetic(cfg->data.synth, a.seed.value_or(cfg->seed), a.out);
  if (!s.ok()) return Die("data synth", s, 1);
  std::printf("wrote synthetic data (%d users, %d items, %d domains) to %s\n",
              cfg->data.synth.users, cfg->data.synth.items, cfg->data.synth.domains, a.out.c_str());
  return 0;
}

void AddData(CLI::App* root, Commands* cmds) {
  CLI::App* data = root->add_subcommand(
      "data", "data tools: 'data synth --out DIR' writes the synthetic dataset");
  data->require_subcommand(1);
  auto a = std::make_shared<SynthArgs>();
  CLI::App* c = data->add_subcommand(
      "synth", "write the synthetic dataset (data.synth of the configuration)");
  c->add_option("--out", a->out, "output directory")->type_name("DIR")->required();
  AddConfigOptions(c, &a->config, &a->overrides, /*required=*/false,
                   "configuration whose data.synth is used (default: the built-in one)");
  AddLogLevel(c, &a->log_level);
  c->add_option("--seed", a->seed, "random seed (default: the configuration's seed)")
      ->type_name("UINT64")
      ->check(Unsigned64());
  cmds->Runs(c, [a] { return RunSynth(*a); });
}

// bench ps: the parameter-server data plane.
struct BenchArgs {
  PsBenchOptions o;
  std::string log_level = "warn";
};

// report: a run's report.html rebuilt, or several runs on one page (launch/report.h).
void AddReport(CLI::App* root, Commands* cmds) {
  struct ReportArgs {
    std::vector<std::string> dirs;
    std::string out, charts;
    int width = 1100;
  };
  auto a = std::make_shared<ReportArgs>();
  CLI::App* c = root->add_subcommand(
      "report", "rebuild a run's report.html (charts, results, config), or compare several runs");
  c->add_option("run_dirs", a->dirs, "run directories")
      ->type_name("RUN_DIR...")
      ->check(CLI::ExistingDirectory)
      ->required();
  c->add_option("--out", a->out,
                "the page to write (default: RUN_DIR/report.html for one run; required for "
                "several)")
      ->type_name("FILE");
  c->add_option("--charts", a->charts,
                "also write every chart as a PNG into DIR (for docs/; needs Chromium)")
      ->type_name("DIR");
  c->add_option("--chart-width", a->width, "the charts' page width in CSS pixels (2x scale)")
      ->check(CLI::Range(400, 4000))
      ->capture_default_str();
  cmds->Runs(c, [a] {
    if (a->dirs.size() > 1 && a->out.empty()) {
      std::fprintf(stderr, "report: several runs go to one page: give --out FILE\n");
      return 2;
    }
    const std::string out = a->out.empty() ? a->dirs[0] + "/report.html" : a->out;
    auto page = BuildReport(a->dirs);
    Status s = page.ok() ? WriteFileAtomic(out, *page) : page.status();
    if (!s.ok()) {
      std::fprintf(stderr, "report: %s\n", s.message().c_str());
      return 1;
    }
    std::printf("wrote %s\n", out.c_str());
    if (a->charts.empty()) return 0;
    auto files = ExportCharts(out, a->charts, a->width);
    if (!files.ok()) {
      std::fprintf(stderr, "report --charts: %s\n", files.status().message().c_str());
      return 1;
    }
    for (const auto& f : *files) std::printf("wrote %s\n", f.c_str());
    return 0;
  });
}

void AddBench(CLI::App* root, Commands* cmds) {
  CLI::App* bench =
      root->add_subcommand("bench",
                           "benchmarks: 'bench ps' the parameter-server data plane, "
                           "'bench serve' a running m6rec serve, 'bench rows' row caps, "
                           "'bench prequential' streaming against frozen and retrained models");
  bench->require_subcommand(1);
  auto a = std::make_shared<BenchArgs>();
  PsBenchOptions& o = a->o;
  CLI::App* c = bench->add_subcommand("ps",
                                      "pull/push throughput of the parameter servers over ZeroMQ "
                                      "on 127.0.0.1, beside memcpy and raw ZeroMQ");
  c->add_flag("--json", o.json, "one JSON array on stdout instead of a table");
  c->add_flag(
      "--quick", o.quick,
      "only dim 64, batch 10000, 1 server (explicit --dims/--batches/--servers still apply)");
  c->add_option("--seconds", o.seconds, "measuring time per case and op")
      ->check(PositiveReal())
      ->capture_default_str();
  c->add_option("--depth", o.depth, "requests in flight per client (1 = synchronous)")
      ->check(Integer(1))
      ->capture_default_str();
  c->add_option("--threads", o.threads, "request threads per server")
      ->check(Integer(1))
      ->capture_default_str();
  c->add_option("--message-bytes", o.message_bytes,
                "split requests into messages of about this size (0 = no split)")
      ->check(Integer(0, LLONG_MAX))
      ->capture_default_str();
  c->add_option("--tmp-dir", o.tmp_dir, "where the RocksDB stores live")
      ->type_name("DIR")
      ->capture_default_str();
  AddList(c, "--stores", &o.stores, "stores to measure",
          CLI::IsMember({"memory", "rocksdb-hot", "rocksdb-cold"}));
  AddList(c, "--dims", &o.dims, "embedding dims", Integer(1));
  AddList(c, "--batches", &o.batches, "keys per request", Integer(1));
  AddList(c, "--servers", &o.servers, "server counts", Integer(1));
  AddLogLevel(c, &a->log_level);
  cmds->Runs(c, [a, c] {
    PsBenchOptions& o = a->o;
    if (o.quick) {  // the aim case; explicit lists still override
      if (!c->count("--dims")) o.dims = {64};
      if (!c->count("--batches")) o.batches = {10000};
      if (!c->count("--servers")) o.servers = {1};
    }
    ApplyLogLevel(a->log_level);
    return RunPsBench(o);
  });

  auto sb = std::make_shared<ServeBenchOptions>();
  CLI::App* s = bench->add_subcommand(
      "serve",
      "closed-loop load on a running 'm6rec serve': requests/s and p50/p90/p99 latency of "
      "GET /recommend (random users) beside GET /health, per concurrency");
  s->add_option("--host", sb->host, "the server's address")->capture_default_str();
  s->add_option("--port", sb->port, "the server's port")->check(CLI::Range(1, 65535))->required();
  AddList(s, "--concurrency", &sb->concurrency, "clients (closed loop, one connection each)",
          Integer(1));
  s->add_option("--seconds", sb->seconds, "measuring time per case")
      ->check(PositiveReal())
      ->capture_default_str();
  s->add_option("-k,--k", sb->k, "items per request")->check(Integer(1))->capture_default_str();
  s->add_option("--seed", sb->seed, "users drawn from this seed")->capture_default_str();
  s->add_flag("--json", sb->json, "one JSON array on stdout instead of a table");
  cmds->Runs(s, [sb] { return RunServeBench(*sb); });

  auto fb = std::make_shared<FreshnessBenchOptions>();
  CLI::App* f = bench->add_subcommand(
      "freshness",
      "time from an interaction entering a stream job's directory to a following 'm6rec serve' "
      "answering with it: p50/p99");
  f->add_option("--host", fb->host, "the server's address")->capture_default_str();
  f->add_option("--port", fb->port, "the server's port")->check(CLI::Range(1, 65535))->required();
  f->add_option("--stream-dir", fb->stream_dir, "the directory the stream job reads (dir:DIR)")
      ->type_name("DIR")
      ->check(CLI::ExistingDirectory)
      ->required();
  f->add_option("--events", fb->events, "interactions to time")
      ->check(Integer(1))
      ->capture_default_str();
  f->add_option("--timeout-s", fb->timeout_s, "longest wait for one interaction")
      ->check(PositiveReal())
      ->capture_default_str();
  f->add_option("--seed", fb->seed, "users drawn from this seed")->capture_default_str();
  f->add_flag("--json", fb->json, "JSON on stdout instead of a line");
  cmds->Runs(f, [fb] { return RunFreshnessBench(*fb); });

  auto pb = std::make_shared<PrequentialBenchOptions>();
  CLI::App* p = bench->add_subcommand(
      "prequential",
      "a held-back stream scored test-then-train three ways: streaming training, a frozen "
      "model, periodic retraining from scratch (in this process)");
  AddConfigOptions(p, &pb->config_path, &pb->overrides, /*required=*/true,
                   "a job with data.stream_split and stream.source: replay");
  AddList(p, "--modes", &pb->modes, "modes to run", CLI::IsMember({"stream", "frozen", "retrain"}));
  p->add_option("--retrain-every-s", pb->retrain_every_s,
                "retrain mode: seconds of stream time between retrainings")
      ->check(PositiveReal())
      ->capture_default_str();
  p->add_option("--out", pb->out, "write every mode's per-chunk curve here (JSON)")
      ->type_name("FILE");
  p->add_flag("--json", pb->json, "one JSON array on stdout instead of a table");
  auto plevel = std::make_shared<std::string>("info");
  AddLogLevel(p, plevel.get());
  cmds->Runs(p, [pb, plevel] {
    ApplyLogLevel(*plevel);
    return RunPrequentialBench(*pb);
  });

  auto rb = std::make_shared<RowsBenchOptions>();
  CLI::App* r = bench->add_subcommand(
      "rows",
      "a stream of distinct ids through a row-capped table (and the same uncapped): rows held, "
      "resident memory and disk as it goes");
  r->add_option("--ids", rb->ids, "distinct ids in the stream")->capture_default_str();
  r->add_option("--max-rows", rb->max_rows, "the table's row cap")->capture_default_str();
  r->add_option("--dim", rb->dim, "row width")->check(Integer(1))->capture_default_str();
  r->add_option("--batch", rb->batch, "ids per push")->check(Integer(1))->capture_default_str();
  r->add_option("--store", rb->store, "rocksdb | memory")
      ->check(CLI::IsMember({"rocksdb", "memory"}))
      ->capture_default_str();
  r->add_option("--tmp-dir", rb->tmp_dir, "where the RocksDB directories go")
      ->type_name("DIR")
      ->capture_default_str();
  r->add_flag("!--no-uncapped", rb->uncapped, "skip the uncapped reference stream");
  r->add_flag("--json", rb->json, "one JSON array on stdout instead of a table");
  cmds->Runs(r, [rb] { return RunRowsBench(*rb); });
}

// ---------------------------------------------------------------------------------------------
// Parse errors: exit 2 with the option named, and where to look.

std::string CommandPath(const CLI::App* app, const CLI::App** leaf) {
  std::string path = app->get_name();
  for (*leaf = app; !(*leaf)->get_subcommands().empty();) {
    *leaf = (*leaf)->get_subcommands().front();
    path += " " + (*leaf)->get_name();
  }
  return path;
}

int ParseFailure(const CLI::App& root, const CLI::ParseError& e) {
  const CLI::App* leaf = nullptr;
  const std::string path = CommandPath(&root, &leaf);
  std::string what = e.what();
  // (An error's get_name() is not its type in CLI11 2.1: ExtrasError carries the app's name.)
  if (dynamic_cast<const CLI::ExtrasError*>(&e) && !leaf->remaining().empty()) {
    // CLI11 says "The following argument was not expected"; say which kind, naming the first.
    const std::vector<std::string> extras = leaf->remaining();
    auto is_option = [](const std::string& x) { return x.size() > 1 && x[0] == '-'; };
    auto option = std::find_if(extras.begin(), extras.end(), is_option);
    auto word = std::find_if_not(extras.begin(), extras.end(), is_option);
    if (leaf == &root && word != extras.end())
      what = "unknown command '" + *word + "'";
    else if (option != extras.end())
      what = "unknown option " + option->substr(0, option->find('='));
    else
      what = "unexpected argument '" + extras.front() + "'";
  } else if (dynamic_cast<const CLI::RequiredError*>(&e) &&
             leaf->get_require_subcommand_min() > 0 && leaf->get_subcommands().empty()) {
    std::string names;
    for (const CLI::App* sub : leaf->get_subcommands([](const CLI::App*) { return true; }))
      names += (names.empty() ? "" : ", ") + sub->get_name();
    what = "which one? (" + names + ")";
  }
  std::fprintf(stderr, "%s: %s\nRun '%s --help' for its options.\n", path.c_str(), what.c_str(),
               path.c_str());
  return 2;
}

const char kFooter[] =
    R"(Run 'm6rec COMMAND --help' for a command's options. The roles (scheduler, server, worker) take
the job token from the environment: M6REC_TOKEN=<16 hex digits>; the launchers set it.

examples:
  m6rec local                                    # built-in default job
  m6rec train --local --config configs/default.yaml --set train.epochs=2
  m6rec recommend --run-dir runs/x --user 7 -k 10
  m6rec strategy --run-dir runs/x --fit          # infer intents, one strategy per intent
  m6rec bench ps --quick)";

}  // namespace

int main(int argc, char** argv) {
  // Message buffers of a few MB are allocated and freed on different threads every request.
  // Left to glibc's defaults they are mmap'ed and munmap'ed each time (page faults, TLB
  // shootdowns): 10x slower data plane on the benchmark. Keep buffers up to 256 MiB in the heap.
  // M6REC_MMAP_THRESHOLD (bytes) overrides; 0 restores glibc's behaviour.
  long mmap_threshold = 256L << 20;
  if (const char* t = std::getenv("M6REC_MMAP_THRESHOLD")) {
    char* end = nullptr;
    errno = 0;
    const long v = std::strtol(t, &end, 10);
    if (*t == '\0' || *end != '\0' || errno != 0 || v < 0 || v > (1L << 30)) {
      std::fprintf(stderr, "m6rec: M6REC_MMAP_THRESHOLD: expected bytes in [0, 2^30], got '%s'\n",
                   t);
      return 2;
    }
    mmap_threshold = v;
  }
  if (mmap_threshold > 0) {
    mallopt(M_MMAP_THRESHOLD, static_cast<int>(mmap_threshold));
    mallopt(M_TRIM_THRESHOLD, static_cast<int>(std::min(2 * mmap_threshold, 1L << 30)));
  }

  CLI::App app{"m6rec - distributed training of M6-Rec style recommenders", "m6rec"};
  // An option given twice: the last one wins (--set accumulates).
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  Commands cmds;
  AddJob(&app, &cmds, "local",
         "run a job on the local simulated cluster (every role a process on 127.0.0.1)", &argc,
         &argv);
  AddJob(&app, &cmds, "train",
         "train a job: one rank of it under mpirun/srun, else (or --local) the local cluster",
         &argc, &argv);
  AddAdapt(&app, &cmds);
  AddRole(&app, &cmds, "scheduler",
          "run the scheduler role (control plane, rendezvous, failures, HTTP status)");
  AddRole(&app, &cmds, "server",
          "run a parameter server role (sparse tables in RocksDB or memory)");
  AddRole(&app, &cmds, "worker", "run a worker role (data, model, PS client)");
  AddOffline(&app, &cmds, "eval", "evaluate a finished m6 run from its checkpoint");
  AddOffline(&app, &cmds, "strategy",
             "print, change or fit (--fit) a finished run's per-intent serving strategies");
  AddOffline(&app, &cmds, "recommend",
             "top-K items for a user from a run's checkpoint (seen items excluded)");
  AddOffline(&app, &cmds, "export",
             "write a table's rows from a run's checkpoint as vectors (word2vec text with the "
             "dataset's token names, or 'id v1 v2 ...')");
  AddServe(&app, &cmds);
  AddReport(&app, &cmds);
  AddFeed(&app, &cmds);
  AddImport(&app, &cmds);
  AddData(&app, &cmds);
  AddBench(&app, &cmds);
  CLI::App* help = app.add_subcommand("help", "this text");
  cmds.Runs(help, [&app] {
    std::fputs(app.get_formatter()->make_help(&app, "m6rec", CLI::AppFormatMode::Normal).c_str(),
               stdout);
    return 0;
  });
  app.footer(kFooter);  // after the subcommands, which would inherit it

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);  // the chosen subcommand's help on stdout, exit 0
  } catch (const CLI::ParseError& e) {
    return ParseFailure(app, e);
  }
  const RunFn* run = cmds.Chosen();
  if (!run) {
    std::fputs(app.help().c_str(), stderr);
    return 2;
  }
  return (*run)();
}
