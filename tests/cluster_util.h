// Shared by the multi-process integration tests: small job configurations, running a whole
// local job and reading its result, the pids of a running job, a long job to kill or stop.
// Every helper bounds its own waiting time.
#pragma once

#include <sys/types.h>

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "test_util.h"

namespace m6rec {
namespace testing {

// A 2-server, 2-worker job on small synthetic data: the id-embedding model / the whole M6 model.
std::string MfConfig(int epochs);
std::string M6Config(int epochs);

// One HTTP/1.1 request to 127.0.0.1:port on a fresh connection (Boost.Beast, bounded by a 30 s
// deadline): method, target and body, or `raw` bytes sent as they are instead. status 0: no
// answer (connection refused or dropped).
struct HttpReply {
  int status = 0;
  std::string body;
};
HttpReply Http(int port, const std::string& method, const std::string& target,
               const std::string& body = "", const std::string& raw = "");

// The full path of `program` on PATH, or "".
std::string OnPath(const std::string& program);

// The JSON in `path` (a test failure, and a discarded value, when it cannot be read).
nlohmann::json ReadJson(const std::string& path);
// The JSON values of a JSON-lines file such as metrics.jsonl, one per line (a test failure for
// a file that cannot be read or a line that is not JSON).
std::vector<nlohmann::json> ReadJsonLines(const std::string& path);

// Runs `m6rec local` on `yaml` into dir/run_name with extra --set overrides; returns its
// result.json ({} and a test failure when the job fails or writes no test metrics).
nlohmann::json RunLocalJob(TempDir& dir, const std::string& run_name, const std::string& yaml,
                           const std::vector<std::string>& sets, int timeout_s);

// The pids of a local job's processes (from run_dir/pids.json; not the launcher's).
std::vector<pid_t> PidsOf(const std::string& run_dir);

// Waits (up to timeout_s) until run_dir has a complete checkpoint for which pred(manifest) holds.
bool WaitForCheckpoint(const std::string& run_dir, double timeout_s,
                       bool (*pred)(const nlohmann::json& manifest) = nullptr);

// A local cluster training a long MF job in the background (a checkpoint every 10 steps), with
// the pids of its processes once training has started, so a test can kill, stop or interrupt
// one of them.
struct LongJob {
  LongJob(const TempDir& dir, const std::vector<std::string>& extra = {});
  pid_t Pid(const std::string& name) const;
  std::unique_ptr<Background> launcher;
  bool started = false;
  std::vector<pid_t> pids;
  nlohmann::json by_name;
};

}  // namespace testing
}  // namespace m6rec
