// The command line of the real m6rec binary: every subcommand answers --help with its own
// options, and bad input (an unknown option, a number out of range or not a number) exits 2
// with a message naming the option. Nothing here starts a job.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "test_util.h"

namespace m6rec {
namespace {

using testing::Binary;
using testing::RunCommand;

std::vector<std::string> Cmd(std::vector<std::string> args) {
  args.insert(args.begin(), Binary());
  return args;
}

std::string Joined(const std::vector<std::string>& args) {
  std::string s;
  for (const auto& a : args) s += (s.empty() ? "" : " ") + a;
  return s;
}

struct HelpCase {
  std::vector<std::string> command;
  std::vector<std::string> lists;  // options its help must show
  std::vector<std::string> lacks;  // options of other commands it must not show
};

TEST(Cli, EveryCommandAnswersHelpWithItsOwnOptions) {
  const std::vector<HelpCase> cases = {
      {{},
       {"local", "train", "scheduler", "server", "worker", "eval", "recommend", "strategy",
        "import", "export", "data", "bench"},
       {}},
      {{"local"}, {"--config", "--set", "--log-level", "--run-dir"}, {"--local", "--rank"}},
      {{"train"},
       {"--config", "--set", "--log-level", "--run-dir", "--local", "--stream"},
       {"--rank"}},
      {{"scheduler"},
       {"--config", "--set", "--log-level", "--port-file"},
       {"--rank", "--standalone"}},
      {{"server"},
       {"--config", "--scheduler", "--rank", "--data-dir", "--port-file", "--standalone"},
       {"--run-dir"}},
      {{"worker"},
       {"--config", "--scheduler", "--rank", "--data-dir", "--run-dir"},
       {"--standalone"}},
      {{"eval"}, {"--run-dir", "--set", "-k,--k"}, {"--user"}},
      {{"recommend"}, {"--run-dir", "--user", "-k,--k", "--no-strategy"}, {"--config", "--fit"}},
      {{"strategy"}, {"--run-dir", "--fit", "--change"}, {"--user", "--no-strategy"}},
      {{"import"},
       {"--config", "--set", "--table", "--from", "--out", "--format", "--vocab", "--missing"},
       {"--run-dir"}},
      {{"export"}, {"--run-dir", "--table", "--out", "--format", "--checkpoint"}, {"--config"}},
      {{"data"}, {"synth"}, {}},
      {{"data", "synth"}, {"--out", "--seed", "--config", "--set"}, {"--run-dir"}},
      {{"feed"}, {"--from", "--rate", "--token", "--port-file"}, {"--config"}},
      {{"bench"}, {"ps", "serve", "rows", "prequential", "freshness"}, {}},
      {{"bench", "prequential"}, {"--config", "--modes", "--retrain-every-s", "--out"}, {"--port"}},
      {{"bench", "freshness"}, {"--port", "--stream-dir", "--events"}, {"--config"}},
      {{"report"}, {"--out"}, {"--config"}},
      {{"bench", "rows"}, {"--ids", "--max-rows", "--store", "--json"}, {"--config"}},
      {{"bench", "serve"}, {"--port", "--concurrency", "--seconds", "--json"}, {"--config"}},
      {{"serve"}, {"--run-dir", "--port", "--port-file", "--max-k", "--host"}, {"--config"}},
      {{"bench", "ps"},
       {"--json", "--quick", "--seconds", "--depth", "--threads", "--tmp-dir", "--stores", "--dims",
        "--batches", "--servers", "--message-bytes"},
       {"--config"}},
  };
  for (const auto& c : cases) {
    for (const char* flag : {"--help", "-h"}) {
      std::vector<std::string> args = c.command;
      args.push_back(flag);
      auto r = RunCommand(Cmd(args), 30);
      const std::string what = "m6rec " + Joined(args);
      EXPECT_EQ(r.exit_code, 0) << what << " must print its help and exit 0:\n" << r.output;
      const std::string usage = "Usage: m6rec" + (c.command.empty() ? "" : " " + Joined(c.command));
      EXPECT_NE(r.output.find(usage), std::string::npos)
          << what << " must show its own usage line:\n"
          << r.output;
      for (const auto& o : c.lists)
        EXPECT_NE(r.output.find(o), std::string::npos) << what << " must list " << o << ":\n"
                                                       << r.output;
      for (const auto& o : c.lacks)
        EXPECT_EQ(r.output.find(o + " "), std::string::npos)
            << what << " must not list " << o << " (another command's option):\n"
            << r.output;
    }
  }
  auto help = RunCommand(Cmd({"help"}), 30);
  EXPECT_EQ(help.exit_code, 0) << help.output;
  EXPECT_NE(help.output.find("recommend"), std::string::npos)
      << "'m6rec help' lists the commands:\n"
      << help.output;
}

struct BadCase {
  std::vector<std::string> command;
  std::string names;  // what the message must contain
};

TEST(Cli, BadNumbersAndUnknownOptionsExit2NamingTheOption) {
  const std::vector<BadCase> cases = {
      {{"eval", "--run-dir", "x", "-k", "0"}, "--k: expected an integer >= 1, got '0'"},
      {{"recommend", "--run-dir", "x", "--user", "3", "--k", "two"},
       "--k: expected an integer >= 1"},
      {{"recommend", "--run-dir", "x", "--user", "-1"},
       "--user: expected an integer >= 0, got '-1'"},
      {{"recommend", "--run-dir", "x"}, "--user (or a new user's --history/--profile"},
      {{"recommend", "--run-dir", "x", "--user", "3", "--history", "4"}, "--user excludes"},
      {{"bench", "ps", "--seconds", "abc"}, "--seconds: expected a number > 0, got 'abc'"},
      {{"bench", "ps", "--seconds", "0"}, "--seconds: expected a number > 0"},
      {{"bench", "ps", "--depth", "0"}, "--depth: expected an integer >= 1"},
      {{"bench", "ps", "--threads", "1.5"}, "--threads: expected an integer >= 1, got '1.5'"},
      {{"bench", "ps", "--message-bytes", "-1"}, "--message-bytes: expected an integer >= 0"},
      {{"bench", "ps", "--dims", "16,0"}, "--dims: expected an integer >= 1, got '0'"},
      {{"bench", "ps", "--batches", "1000,x"}, "--batches: expected an integer >= 1, got 'x'"},
      {{"bench", "ps", "--servers", "1,,2"}, "--servers: expected an integer >= 1, got ''"},
      {{"bench", "ps", "--stores", "memory,disk"}, "--stores: disk not in"},
      {{"bench", "ps", "--help-me"}, "unknown option --help-me"},
      {{"worker", "--config", "job.yaml", "--scheduler", "127.0.0.1:1", "--rank", "-3"},
       "--rank: expected an integer >= 0, got '-3'"},
      {{"server", "--config", "job.yaml", "--rank", "x"},
       "--rank: expected an integer >= 0, got 'x'"},
      {{"scheduler", "--config", "job.yaml", "--rank", "0"}, "unknown option --rank"},
      {{"server"}, "--config is required"},
      {{"data", "synth", "--out", "d", "--seed", "x"},
       "--seed: expected an unsigned 64-bit integer, got 'x'"},
      {{"data", "synth", "--out", "d", "--seed", "-5"},
       "--seed: expected an unsigned 64-bit integer"},
      {{"data", "synth", "--seed", "5"}, "--out is required"},
      {{"local", "--bogus"}, "unknown option --bogus"},
      {{"train", "--run-dir", "r", "--log-level", "loud"}, "--log-level: unknown level 'loud'"},
      {{"local", "stray"}, "unexpected argument 'stray'"},
      {{"frobnicate"}, "unknown command 'frobnicate'"},
      {{"bench"}, "which one? (ps, serve, freshness, prequential, rows)"},
      {{"train", "--stream", "river:/x"}, "--stream 'river:/x': replay"},
      {{"bench", "prequential"}, "--config is required"},
  };
  for (const auto& c : cases) {
    auto r = RunCommand(Cmd(c.command), 30);
    const std::string what = "m6rec " + Joined(c.command);
    EXPECT_EQ(r.exit_code, 2) << what << " must be refused with exit code 2:\n" << r.output;
    EXPECT_NE(r.output.find(c.names), std::string::npos)
        << what << " must say '" << c.names << "':\n"
        << r.output;
  }
  auto none = RunCommand(Cmd({}), 30);
  EXPECT_EQ(none.exit_code, 2) << "m6rec with no command prints the usage and exits 2:\n"
                               << none.output;
}

TEST(Cli, ShortAndLongKAreBothAccepted) {
  // Past the command line, the missing run directory is the (exit 1) error.
  for (const char* k : {"-k", "--k"}) {
    auto r =
        RunCommand(Cmd({"recommend", "--run-dir", "/nonexistent-run", "--user", "1", k, "5"}), 30);
    EXPECT_EQ(r.exit_code, 1) << "recommend " << k << " 5 must parse:\n" << r.output;
    EXPECT_NE(r.output.find("not a run directory"), std::string::npos) << r.output;
  }
}

}  // namespace
}  // namespace m6rec
