#include "common/transport.h"

#include <cstdlib>

namespace m6rec {

std::string TcpEndpoint(const std::string& host, int port) {
  return "tcp://" + host + ":" + std::to_string(port);
}

StatusOr<int> BoundPort(zmq::socket_t& sock) {
  std::string ep = sock.get(zmq::sockopt::last_endpoint);
  size_t colon = ep.rfind(':');
  if (colon == std::string::npos) return Status::Internal("no bound endpoint: '" + ep + "'");
  return std::atoi(ep.c_str() + colon + 1);
}

StatusOr<bool> RecvMultipart(zmq::socket_t& sock, std::vector<zmq::message_t>* parts,
                             int timeout_ms) {
  parts->clear();
  try {
    if (timeout_ms >= 0) {
      zmq::pollitem_t item{static_cast<void*>(sock), 0, ZMQ_POLLIN, 0};
      int n = zmq::poll(&item, 1, std::chrono::milliseconds(timeout_ms));
      if (n == 0) return false;
    }
    do {
      zmq::message_t m;
      auto r = sock.recv(m, zmq::recv_flags::none);
      if (!r) return false;
      parts->push_back(std::move(m));
    } while (parts->back().more());
  } catch (const zmq::error_t& e) {
    return Status::IOError(std::string("zmq receive: ") + e.what());
  }
  return true;
}

Status SendMultipart(zmq::socket_t& sock, std::vector<zmq::message_t>& parts) {
  try {
    for (size_t i = 0; i < parts.size(); ++i) {
      auto flags = i + 1 < parts.size() ? zmq::send_flags::sndmore : zmq::send_flags::none;
      if (!sock.send(parts[i], flags)) return Status::Unavailable("zmq send would block");
    }
  } catch (const zmq::error_t& e) {
    return Status::IOError(std::string("zmq send: ") + e.what());
  }
  return Status::OK();
}

zmq::message_t AllocMessage(size_t bytes) { return zmq::message_t(bytes); }

Status ParseHostPort(const std::string& s, std::string* host, int* port) {
  size_t colon = s.rfind(':');
  if (colon == std::string::npos || colon == 0)
    return Status::InvalidArgument("address '" + s + "': expected host:port");
  char* end = nullptr;
  long p = std::strtol(s.c_str() + colon + 1, &end, 10);
  if (*end != '\0' || p < 1 || p > 65535)
    return Status::InvalidArgument("address '" + s + "': port must be 1..65535");
  *host = s.substr(0, colon);
  *port = static_cast<int>(p);
  return Status::OK();
}

}  // namespace m6rec
