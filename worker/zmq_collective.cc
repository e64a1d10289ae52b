#include "worker/zmq_collective.h"

#include <cstring>
#include <zmq.hpp>

#include "common/clock.h"
#include "common/transport.h"

namespace m6rec {

struct ZmqCollectiveEndpoint::Impl {
  zmq::context_t ctx{1};
  zmq::socket_t router{ctx, zmq::socket_type::router};
  int port = 0;
};

StatusOr<std::shared_ptr<ZmqCollectiveEndpoint>> ZmqCollectiveEndpoint::Bind(const std::string& host) {
  auto ep = std::make_shared<ZmqCollectiveEndpoint>();
  ep->impl = std::make_unique<Impl>();
  try {
    ep->impl->router.set(zmq::sockopt::linger, 0);
    ep->impl->router.set(zmq::sockopt::router_mandatory, 1);
    ep->impl->router.bind(TcpEndpoint(host, 0));
  } catch (const zmq::error_t& e) {
    return Status::Unavailable("collective: cannot bind tcp://" + host + ":0: " + e.what());
  }
  M6_ASSIGN_OR_RETURN(ep->impl->port, BoundPort(ep->impl->router));
  return ep;
}

ZmqCollectiveEndpoint::~ZmqCollectiveEndpoint() = default;
int ZmqCollectiveEndpoint::port() const { return impl->port; }

namespace {

// Every message: [kind u32][rank u32][seq u64][count u64] + payload floats.
struct Hdr {
  uint32_t kind;
  uint32_t rank;
  uint64_t seq;
  uint64_t count;
};
enum Kind : uint32_t { kHello = 1, kReduce = 2, kResult = 3, kBcast = 4 };


class ZmqCollective final : public Collective {
 public:
  explicit ZmqCollective(const ZmqCollectiveOptions& o)
      : opts_(o), size_(static_cast<int>(o.peers.size())) {}

  Status Start() {
    if (opts_.rank == 0) {
      ids_.assign(size_, "");
      // Hellos tell rank 0 each peer's routing id.
      for (int got = 1; got < size_; ++got) {
        std::vector<zmq::message_t> parts;
        Hdr h;
        M6_RETURN_IF_ERROR(Recv(router(), &parts, &h, "hello"));
        if (h.kind != kHello || h.rank == 0 || h.rank >= uint32_t(size_) || !ids_[h.rank].empty())
          return Status::Internal("collective: unexpected hello from rank " + std::to_string(h.rank));
        ids_[h.rank] = parts[0].to_string();
      }
      // Everyone is here: release the peers (so no reduce can overtake a late hello).
      for (int r = 1; r < size_; ++r) M6_RETURN_IF_ERROR(Send(router(), ids_[r], {kHello, 0, 0, 0}, nullptr));
      return Status::OK();
    }
    dealer_ = std::make_unique<zmq::socket_t>(opts_.endpoint->impl->ctx, zmq::socket_type::dealer);
    dealer_->set(zmq::sockopt::linger, 0);
    dealer_->set(zmq::sockopt::routing_id, "r" + std::to_string(opts_.rank));
    try {
      dealer_->connect(opts_.peers[0]);
    } catch (const zmq::error_t& e) {
      return Status::Unavailable("collective: cannot connect to rank 0 at " + opts_.peers[0] + ": " + e.what());
    }
    M6_RETURN_IF_ERROR(Send(*dealer_, "", {kHello, uint32_t(opts_.rank), 0, 0}, nullptr));
    std::vector<zmq::message_t> parts;
    Hdr h;
    M6_RETURN_IF_ERROR(Recv(*dealer_, &parts, &h, "hello"));
    if (h.kind != kHello) return Status::Internal("collective: expected rank 0's hello");
    return Status::OK();
  }

  int rank() const override { return opts_.rank; }
  int size() const override { return size_; }
  std::string name() const override { return "zmq"; }
  Capabilities capabilities() const override { return Capabilities{}; }

  StatusOr<std::unique_ptr<Work>> AllReduceSumAsync(float* data, size_t n) override {
    return std::unique_ptr<Work>(new CompletedWork(AllReduce(data, n)));
  }

  Status Broadcast(float* data, size_t n, int root) override {
    if (root < 0 || root >= size_) return Status::InvalidArgument("broadcast root out of range");
    // Non-root roots hand their data to rank 0 first; rank 0 then sends it to everyone.
    const uint64_t seq = ++seq_;
    if (opts_.rank == 0) {
      std::vector<zmq::message_t> parts;
      Hdr h;
      if (root != 0) {
        M6_RETURN_IF_ERROR(Recv(router(), &parts, &h, "broadcast"));
        M6_RETURN_IF_ERROR(Check(h, kBcast, seq, n, root));
        std::memcpy(data, parts.back().data<char>() + sizeof(Hdr), n * sizeof(float));
      }
      for (int r = 1; r < size_; ++r)
        if (r != root) M6_RETURN_IF_ERROR(Send(router(), ids_[r], {kResult, 0, seq, n}, data));
      return Status::OK();
    }
    if (opts_.rank == root) return Send(*dealer_, "", {kBcast, uint32_t(opts_.rank), seq, n}, data);
    std::vector<zmq::message_t> parts;
    Hdr h;
    M6_RETURN_IF_ERROR(Recv(*dealer_, &parts, &h, "broadcast"));
    M6_RETURN_IF_ERROR(Check(h, kResult, seq, n, 0));
    std::memcpy(data, parts.back().data<char>() + sizeof(Hdr), n * sizeof(float));
    return Status::OK();
  }

  Status Barrier() override {
    float x = 0;
    return AllReduce(&x, 1);
  }

 private:
  zmq::socket_t& router() { return opts_.endpoint->impl->router; }

  Status AllReduce(float* data, size_t n) {
    const uint64_t seq = ++seq_;
    if (size_ == 1) return Status::OK();
    if (opts_.rank != 0) {
      M6_RETURN_IF_ERROR(Send(*dealer_, "", {kReduce, uint32_t(opts_.rank), seq, n}, data));
      std::vector<zmq::message_t> parts;
      Hdr h;
      M6_RETURN_IF_ERROR(Recv(*dealer_, &parts, &h, "allreduce"));
      M6_RETURN_IF_ERROR(Check(h, kResult, seq, n, 0));
      std::memcpy(data, parts.back().data<char>() + sizeof(Hdr), n * sizeof(float));
      return Status::OK();
    }
    std::vector<std::vector<zmq::message_t>> by_rank(size_);
    for (int got = 1; got < size_; ++got) {
      std::vector<zmq::message_t> parts;
      Hdr h;
      M6_RETURN_IF_ERROR(Recv(router(), &parts, &h, "allreduce"));
      M6_RETURN_IF_ERROR(Check(h, kReduce, seq, n, -1));
      if (!by_rank[h.rank].empty()) return Status::Internal("collective: rank " + std::to_string(h.rank) + " sent twice");
      by_rank[h.rank] = std::move(parts);
    }
    for (int r = 1; r < size_; ++r) {  // rank order: the same sum whatever the arrival order
      const float* in = reinterpret_cast<const float*>(by_rank[r].back().data<char>() + sizeof(Hdr));
      for (size_t i = 0; i < n; ++i) data[i] += in[i];
    }
    for (int r = 1; r < size_; ++r) M6_RETURN_IF_ERROR(Send(router(), ids_[r], {kResult, 0, seq, n}, data));
    return Status::OK();
  }

  Status Check(const Hdr& h, uint32_t kind, uint64_t seq, size_t n, int from) {
    if (h.kind != kind || h.seq != seq || h.count != n || (from >= 0 && h.rank != uint32_t(from)) ||
        h.rank >= uint32_t(size_))
      return Status::Internal("collective: out-of-step message (kind " + std::to_string(h.kind) + ", seq " +
                              std::to_string(h.seq) + " vs " + std::to_string(seq) + ", count " +
                              std::to_string(h.count) + " vs " + std::to_string(n) +
                              "): the workers called different collectives");
    return Status::OK();
  }

  Status Send(zmq::socket_t& s, const std::string& to, Hdr h, const float* data) {
    const size_t bytes = sizeof(Hdr) + (data ? h.count * sizeof(float) : 0);
    zmq::message_t body(bytes);
    std::memcpy(body.data(), &h, sizeof(Hdr));
    if (data) std::memcpy(body.data<char>() + sizeof(Hdr), data, h.count * sizeof(float));
    try {
      if (!to.empty()) s.send(zmq::buffer(to), zmq::send_flags::sndmore);
      s.send(body, zmq::send_flags::none);
    } catch (const zmq::error_t& e) {
      return Status::Unavailable(std::string("collective: send failed: ") + e.what());
    }
    return Status::OK();
  }

  // Receives one message; parts[last] holds the header + payload.
  Status Recv(zmq::socket_t& s, std::vector<zmq::message_t>* parts, Hdr* h, const char* what) {
    const int64_t deadline = MonotonicMs() + opts_.timeout_ms;
    while (true) {
      M6_ASSIGN_OR_RETURN(bool got, RecvMultipart(s, parts, 200));
      if (got) break;
      std::string why;
      if (opts_.should_abort && opts_.should_abort(&why)) return Status::Aborted("collective " + std::string(what) + ": " + why);
      if (MonotonicMs() > deadline)
        return Status::DeadlineExceeded("collective " + std::string(what) + ": no message from the other workers in " +
                                        std::to_string(opts_.timeout_ms) + " ms");
    }
    if (parts->empty() || parts->back().size() < sizeof(Hdr)) return Status::Internal("collective: malformed message");
    std::memcpy(h, parts->back().data(), sizeof(Hdr));
    if (parts->back().size() != sizeof(Hdr) + (h->kind == kHello ? 0 : h->count * sizeof(float)))
      return Status::Internal("collective: message size does not match its header");
    return Status::OK();
  }

  ZmqCollectiveOptions opts_;
  int size_;
  uint64_t seq_ = 0;
  std::vector<std::string> ids_;
  std::unique_ptr<zmq::socket_t> dealer_;
};

}  // namespace

StatusOr<std::unique_ptr<Collective>> CreateZmqCollective(const ZmqCollectiveOptions& opts) {
  if (!opts.endpoint) return Status::InvalidArgument("zmq collective: no endpoint (ZmqCollectiveEndpoint::Bind)");
  if (opts.peers.empty() || opts.rank < 0 || opts.rank >= int(opts.peers.size()))
    return Status::InvalidArgument("zmq collective: rank " + std::to_string(opts.rank) + " of " +
                                   std::to_string(opts.peers.size()) + " peers");
  auto c = std::make_unique<ZmqCollective>(opts);
  M6_RETURN_IF_ERROR(c->Start());
  return std::unique_ptr<Collective>(std::move(c));
}

}  // namespace m6rec
