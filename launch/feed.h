// `m6rec feed`: a ZeroMQ feed of interactions for streaming jobs (worker/stream_source.h
// FeedSource). Reads "user item [timestamp]" lines from a file (every bad line an error with
// file:line), releases them at --rate per second from its start (0: all at once), keeps them
// numbered from 0 and answers "the events from S" to requests carrying the job token (others are
// dropped and counted). A consumer that restarts asks again from its saved sequence number, so
// each event reaches it once. SIGINT/SIGTERM stop it.
#pragma once

#include <string>

namespace m6rec {

struct FeedOptions {
  std::string from;
  std::string host = "127.0.0.1";
  int port = 0;
  std::string port_file;
  double rate = 0;    // events per second (0: all at once)
  std::string token;  // 16 hex digits: the consuming job's
};

int RunFeed(const FeedOptions& o);

}  // namespace m6rec
