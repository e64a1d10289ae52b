// `m6rec bench serve`: a closed-loop load generator against a running `m6rec serve`. For each
// concurrency C, C clients (threads, one keep-alive connection each) send requests back to back
// for --seconds: GET /recommend for users drawn uniformly (seeded) from the served run's, and,
// as what the machine and the HTTP path can do without the model, GET /health the same way.
// Prints requests/s and p50/p90/p99 latency per case (a table, or JSON with --json); a non-200
// answer counts as an error.
#pragma once

#include <string>
#include <vector>

namespace m6rec {

struct ServeBenchOptions {
  std::string host = "127.0.0.1";
  int port = 0;
  std::vector<int> concurrency{1, 4, 16};
  double seconds = 5;
  int k = 10;
  bool json = false;
  uint64_t seed = 1;
};

int RunServeBench(const ServeBenchOptions& o);

// `m6rec bench freshness`: how long an interaction takes from entering a stream job's source to
// showing in what `m6rec serve --follow` answers. Next to a running `m6rec train --stream
// dir:DIR` and a serve following its run: for each of --events rounds, a random user's top
// recommended item becomes an interaction written into DIR (a .tmp file renamed: atomic), and
// the user's recommendations are polled until that item is among the user's seen items (it
// leaves the list, and "seen" grows). Prints p50/p99/max of those delays.
struct FreshnessBenchOptions {
  std::string host = "127.0.0.1";
  int port = 0;
  std::string stream_dir;
  int events = 20;
  double timeout_s = 30;  // per event: longer is an error (the stream or the serve is stuck)
  int poll_ms = 10;
  uint64_t seed = 1;
  bool json = false;
};

int RunFreshnessBench(const FreshnessBenchOptions& o);

}  // namespace m6rec
