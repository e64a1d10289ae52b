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

}  // namespace m6rec
