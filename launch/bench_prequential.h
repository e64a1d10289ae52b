// `m6rec bench prequential`: one stream, three ways of keeping a model on it, measured
// test-then-train (docs/results.md "Streaming"). The job's dataset must hold back a stream
// (data.stream_split, stream.source: replay); every mode first trains train.epochs on the
// data before the stream, then meets the same events in the same chunks:
//   stream   the engine's streaming training: each chunk scored, then trained on
//   frozen   scored only; the model stays as the data before the stream made it
//   retrain  scored only, but every --retrain-every-s of stream time retrained from scratch on
//            everything so far (train.epochs), the classic periodic batch job
// Each mode runs in this process (memory tables, one worker, the same engine a cluster runs)
// and prints the prequential HR@10 / NDCG@10 over the whole stream and its two halves, and
// with --out the per-chunk curves as JSON.
#pragma once

#include <string>
#include <vector>

namespace m6rec {

struct PrequentialBenchOptions {
  std::string config_path;
  std::vector<std::string> overrides;
  std::vector<std::string> modes = {"stream", "frozen", "retrain"};
  double retrain_every_s = 14 * 86400.0;
  std::string out;  // per-chunk curves, JSON ("" = none)
  bool json = false;
};

int RunPrequentialBench(const PrequentialBenchOptions& o);

}  // namespace m6rec
