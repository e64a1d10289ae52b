// ZeroMQ helpers for the data plane: endpoints, multipart receive with a deadline, the bound
// port of a socket, and zero-copy messages over malloc'd buffers. Sockets are not thread-safe:
// each is used by one thread (the owner documented at its declaration).
#pragma once

#include <string>
#include <vector>
#include <zmq.hpp>

#include "common/status.h"

namespace m6rec {

std::string TcpEndpoint(const std::string& host, int port);

// Port a socket bound to "tcp://host:0" actually got.
StatusOr<int> BoundPort(zmq::socket_t& sock);

// Receives one whole multipart message. Returns false on timeout (timeout_ms < 0 waits forever).
StatusOr<bool> RecvMultipart(zmq::socket_t& sock, std::vector<zmq::message_t>* parts,
                             int timeout_ms);

// Sends parts[0..n) as one multipart message (moves the messages out).
Status SendMultipart(zmq::socket_t& sock, std::vector<zmq::message_t>& parts);

// A message of `bytes` uninitialised bytes that zmq frees (no copy when sent).
zmq::message_t AllocMessage(size_t bytes);

// Splits "host:port"; port must be 1..65535.
Status ParseHostPort(const std::string& s, std::string* host, int* port);

}  // namespace m6rec
