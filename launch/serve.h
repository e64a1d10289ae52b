// `m6rec serve`: a finished run's recommendations over HTTP/JSON (Boost.Beast), from one process
// holding the run's model in scoring mode (worker Recommender: item vectors computed once).
//   GET  /health                 {"status": "ok", "run_dir", "checkpoint", "users", "items",
//                                 "requests", "errors"}
//   GET  /recommend?user=U&k=K[&domain=D][&explain=1]
//   POST /recommend  {"user": U | "history": [...], "profile": {...}, "friends": [...],
//                     "k": K, "domain": D, "explain": true}
// answers as `m6rec recommend` prints (seen items excluded; the run's strategies applied when it
// has strategy.json). A bad request (not JSON, an unknown field, a user out of range or unknown
// without history, k outside 1..max_k) is a 400 with {"error": "..."}; an unknown path a 404, a
// wrong method a 405; a failure inside the model a 500. None stops the server. Requests are
// answered one at a time on one thread (the model is not reentrant); keep-alive connections.
// SIGINT/SIGTERM stop it cleanly. With --follow it serves the newest checkpoint of a run that is
// still training (/health names the one in use and counts the switches). A multi-domain run
// served from its best checkpoint answers each domain the job chose another epoch for from
// that epoch's checkpoint (best.json's "domains"; /health's domain_checkpoints lists them).
#pragma once

#include <string>
#include <vector>

namespace m6rec {

struct ServeOptions {
  std::string run_dir;
  std::string checkpoint;  // "" = the best epoch's, else the newest
  std::vector<std::string> overrides;
  std::string host = "127.0.0.1";
  int port = 0;           // 0 = any free port (printed, and written to port_file)
  std::string port_file;  // written once listening
  bool use_strategy = true;
  int max_k = 1000;
  // > 0: every follow_s seconds look for a newer complete checkpoint in run_dir (a training job
  // writing them) and switch to it: loaded and warmed on a side thread while requests go on
  // being answered from the current one, then swapped between two requests.
  double follow_s = 0;
};

int RunServe(const ServeOptions& o);

}  // namespace m6rec
