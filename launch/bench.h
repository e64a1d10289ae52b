// `m6rec bench ps`: pull/push throughput of the parameter servers over real ZeroMQ TCP
// sockets on 127.0.0.1 (servers run in-process, on their own threads), next to what the machine
// can do in the same run: memcpy bandwidth and raw ZeroMQ loopback bandwidth for the same
// message sizes. Prints a table, or with --json one JSON array on stdout.
#pragma once

#include <string>
#include <vector>

namespace m6rec {

struct PsBenchOptions {
  bool json = false;
  bool quick = false;              // set by the caller: dim 64, batch 10k, 1 server unless given
  double seconds = 0.5;            // measuring time per case and op
  int depth = 1;                   // requests in flight per client (1 = synchronous)
  int threads = 1;                 // request threads per server
  size_t message_bytes = 1 << 20;  // PsClientOptions::target_message_bytes (0 = no split)
  std::vector<int> dims{16, 64, 256};
  std::vector<int> batches{1000, 10000, 100000};
  std::vector<int> servers{1, 2};
  std::vector<std::string> stores{"memory", "rocksdb-hot", "rocksdb-cold"};
  std::string tmp_dir = "/tmp";
};

int RunPsBench(const PsBenchOptions& opts);

}  // namespace m6rec
