#include "worker/zmq_collective.h"

#include <atomic>
#include <cstring>
#include <zmq.hpp>

#include "common/clock.h"
#include "common/logging.h"
#include "common/protocol.h"
#include "common/transport.h"

namespace m6rec {

struct ZmqCollectiveEndpoint::Impl {
  zmq::context_t ctx{1};
  zmq::socket_t router{ctx, zmq::socket_type::router};
  int port = 0;
  std::atomic<uint64_t> dropped_malformed{0}, dropped_bad_token{0};
};

StatusOr<std::shared_ptr<ZmqCollectiveEndpoint>> ZmqCollectiveEndpoint::Bind(
    const std::string& host) {
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

ZmqCollectiveEndpoint::Stats ZmqCollectiveEndpoint::stats() const {
  Stats s;
  s.dropped_malformed = impl->dropped_malformed.load();
  s.dropped_bad_token = impl->dropped_bad_token.load();
  return s;
}

namespace {

template <typename T>
constexpr ElementType kElementType = ElementType::kNone;
template <>
constexpr ElementType kElementType<float> = ElementType::kFloat32;
template <>
constexpr ElementType kElementType<double> = ElementType::kFloat64;

// One received message that checked out: its header, the elements (an empty frame for a
// hello) and, on rank 0's ROUTER, the sender's routing id.
struct Received {
  MsgHeader h;
  zmq::message_t payload;
  std::string from;
};

class ZmqCollective final : public Collective {
 public:
  explicit ZmqCollective(const ZmqCollectiveOptions& o)
      : opts_(o), size_(static_cast<int>(o.peers.size())) {}

  Status Start() {
    if (opts_.rank == 0) {
      ids_.assign(size_, "");
      // Hellos tell rank 0 each peer's routing id.
      for (int got = 1; got < size_; ++got) {
        Received m;
        M6_RETURN_IF_ERROR(Recv(router(), true, &m, "hello"));
        const uint32_t r = m.h.sender;
        if (m.h.type != uint16_t(MsgType::kCollectiveHello) || r == 0 || r >= uint32_t(size_) ||
            !ids_[r].empty())
          return Status::Internal("collective: unexpected " +
                                  std::string(MsgTypeName(MsgType(m.h.type))) + " from rank " +
                                  std::to_string(r) + " while the workers were joining");
        ids_[r] = m.from;
      }
      // Everyone is here: release the peers (so no reduce can overtake a late hello).
      for (int r = 1; r < size_; ++r)
        M6_RETURN_IF_ERROR(
            Send(router(), ids_[r], MsgType::kCollectiveHello, 0, ElementType::kNone, nullptr, 0));
      return Status::OK();
    }
    dealer_ = std::make_unique<zmq::socket_t>(opts_.endpoint->impl->ctx, zmq::socket_type::dealer);
    dealer_->set(zmq::sockopt::linger, 0);
    dealer_->set(zmq::sockopt::routing_id, "r" + std::to_string(opts_.rank));
    try {
      dealer_->connect(opts_.peers[0]);
    } catch (const zmq::error_t& e) {
      return Status::Unavailable("collective: cannot connect to rank 0 at " + opts_.peers[0] +
                                 ": " + e.what());
    }
    M6_RETURN_IF_ERROR(
        Send(*dealer_, "", MsgType::kCollectiveHello, 0, ElementType::kNone, nullptr, 0));
    Received m;
    M6_RETURN_IF_ERROR(Recv(*dealer_, false, &m, "hello"));
    return Check(m.h, MsgType::kCollectiveHello, 0, 0, ElementType::kNone, 0);
  }

  int rank() const override { return opts_.rank; }
  int size() const override { return size_; }
  std::string name() const override { return "zmq"; }
  Capabilities capabilities() const override { return Capabilities{}; }

  StatusOr<std::unique_ptr<Work>> AllReduceSumAsync(float* data, size_t n) override {
    return std::unique_ptr<Work>(new CompletedWork(AllReduce(data, n)));
  }
  StatusOr<std::unique_ptr<Work>> AllReduceSumAsync(double* data, size_t n) override {
    return std::unique_ptr<Work>(new CompletedWork(AllReduce(data, n)));
  }

  Status Broadcast(float* data, size_t n, int root) override {
    if (root < 0 || root >= size_) return Status::InvalidArgument("broadcast root out of range");
    // Non-root roots hand their data to rank 0 first; rank 0 then sends it to everyone.
    const uint64_t seq = ++seq_;
    const ElementType et = kElementType<float>;
    if (opts_.rank == 0) {
      if (root != 0) {
        Received m;
        M6_RETURN_IF_ERROR(Recv(router(), true, &m, "broadcast"));
        M6_RETURN_IF_ERROR(Check(m.h, MsgType::kCollectiveBroadcast, seq, n, et, root));
        std::memcpy(data, m.payload.data(), n * sizeof(float));
      }
      for (int r = 1; r < size_; ++r)
        if (r != root)
          M6_RETURN_IF_ERROR(Send(router(), ids_[r], MsgType::kCollectiveResult, seq, et, data, n));
      return Status::OK();
    }
    if (opts_.rank == root)
      return Send(*dealer_, "", MsgType::kCollectiveBroadcast, seq, et, data, n);
    Received m;
    M6_RETURN_IF_ERROR(Recv(*dealer_, false, &m, "broadcast"));
    M6_RETURN_IF_ERROR(Check(m.h, MsgType::kCollectiveResult, seq, n, et, 0));
    std::memcpy(data, m.payload.data(), n * sizeof(float));
    return Status::OK();
  }

  Status Barrier() override {
    float x = 0;
    return AllReduce(&x, 1);
  }

 private:
  zmq::socket_t& router() { return opts_.endpoint->impl->router; }

  template <typename T>
  Status AllReduce(T* data, size_t n) {
    const uint64_t seq = ++seq_;
    const ElementType et = kElementType<T>;
    if (size_ == 1) return Status::OK();
    if (opts_.rank != 0) {
      M6_RETURN_IF_ERROR(Send(*dealer_, "", MsgType::kCollectiveReduce, seq, et, data, n));
      Received m;
      M6_RETURN_IF_ERROR(Recv(*dealer_, false, &m, "allreduce"));
      M6_RETURN_IF_ERROR(Check(m.h, MsgType::kCollectiveResult, seq, n, et, 0));
      std::memcpy(data, m.payload.data(), n * sizeof(T));
      return Status::OK();
    }
    std::vector<Received> by_rank(size_);
    for (int got = 1; got < size_; ++got) {
      Received m;
      M6_RETURN_IF_ERROR(Recv(router(), true, &m, "allreduce"));
      M6_RETURN_IF_ERROR(Check(m.h, MsgType::kCollectiveReduce, seq, n, et, -1));
      const uint32_t r = m.h.sender;
      if (r == 0 || by_rank[r].h.type != 0)
        return Status::Internal("collective: rank " + std::to_string(r) + " sent twice");
      by_rank[r] = std::move(m);
    }
    for (int r = 1; r < size_; ++r) {  // rank order: the same sum whatever the arrival order
      const char* in = by_rank[r].payload.data<char>();
      for (size_t i = 0; i < n; ++i) {
        T x;
        std::memcpy(&x, in + i * sizeof(T), sizeof(T));  // zmq does not promise alignment
        data[i] += x;
      }
    }
    for (int r = 1; r < size_; ++r)
      M6_RETURN_IF_ERROR(Send(router(), ids_[r], MsgType::kCollectiveResult, seq, et, data, n));
    return Status::OK();
  }

  // A message of this job that does not fit the call in progress: the ranks disagree on what
  // they are doing (a bug in the caller, never a stray message: those are dropped earlier).
  Status Check(const MsgHeader& h, MsgType type, uint64_t seq, size_t n, ElementType et, int from) {
    if (h.type != uint16_t(type) || h.request_id != seq || h.num_keys != n ||
        h.dim != uint32_t(et) || (from >= 0 && h.sender != uint32_t(from)) ||
        h.sender >= uint32_t(size_))
      return Status::Internal(
          "collective: out-of-step message (" + std::string(MsgTypeName(MsgType(h.type))) +
          " from rank " + std::to_string(h.sender) + ", seq " + std::to_string(h.request_id) +
          " vs " + std::to_string(seq) + ", count " + std::to_string(h.num_keys) + " vs " +
          std::to_string(n) + ", element type " + std::to_string(h.dim) + " vs " +
          std::to_string(uint32_t(et)) + "): the workers called different collectives");
    return Status::OK();
  }

  Status Send(zmq::socket_t& s, const std::string& to, MsgType type, uint64_t seq, ElementType et,
              const void* data, size_t n) {
    MsgHeader h;
    h.type = static_cast<uint16_t>(type);
    h.token = opts_.token;
    h.request_id = seq;
    h.num_keys = n;
    h.dim = static_cast<uint32_t>(et);
    h.sender = static_cast<uint32_t>(opts_.rank);
    try {
      if (!to.empty()) s.send(zmq::buffer(to), zmq::send_flags::sndmore);
      if (type == MsgType::kCollectiveHello) {
        s.send(zmq::buffer(&h, sizeof(h)), zmq::send_flags::none);
      } else {
        s.send(zmq::buffer(&h, sizeof(h)), zmq::send_flags::sndmore);
        zmq::message_t body(n * ElementSize(h.dim));
        if (body.size() > 0) std::memcpy(body.data(), data, body.size());
        s.send(body, zmq::send_flags::none);
      }
    } catch (const zmq::error_t& e) {
      return Status::Unavailable(std::string("collective: send failed: ") + e.what());
    }
    return Status::OK();
  }

  // Why a message is not one to act on; empty when it checks out (then *out holds it).
  enum class Verdict { kOk, kMalformed, kBadToken };
  Verdict Validate(std::vector<zmq::message_t>& parts, bool routed, Received* out,
                   std::string* why) {
    const size_t first = routed ? 1 : 0;  // a ROUTER prepends the sender's routing id
    if (parts.size() < first + 1 || parts.size() > first + 2) {
      *why = std::to_string(parts.size()) + " frames";
      return Verdict::kMalformed;
    }
    Status s = DecodeHeader(parts[first].data(), parts[first].size(), &out->h);
    if (!s.ok()) {
      *why = s.message();
      return Verdict::kMalformed;
    }
    if (out->h.token != opts_.token) {
      *why = "another job's token";
      return Verdict::kBadToken;
    }
    const MsgHeader& h = out->h;
    const bool hello = h.type == uint16_t(MsgType::kCollectiveHello);
    if (h.type < uint16_t(MsgType::kCollectiveHello) ||
        h.type > uint16_t(MsgType::kCollectiveBroadcast)) {
      *why = std::string(MsgTypeName(MsgType(h.type))) + " is not a collective message";
      return Verdict::kMalformed;
    }
    const size_t want_frames = first + (hello ? 1 : 2);
    uint64_t bytes = 0;
    if (parts.size() != want_frames ||
        (hello ? h.num_keys != 0 || h.dim != 0
               : ElementSize(h.dim) == 0 ||
                     __builtin_mul_overflow(h.num_keys, uint64_t(ElementSize(h.dim)), &bytes) ||
                     parts.back().size() != bytes)) {
      *why = std::string(MsgTypeName(MsgType(h.type))) + " whose frames do not match its header";
      return Verdict::kMalformed;
    }
    if (routed) out->from = parts[0].to_string();
    if (!hello) out->payload = std::move(parts.back());
    return Verdict::kOk;
  }

  void CountDrop(Verdict v, const std::string& why) {
    auto& counter = v == Verdict::kBadToken ? opts_.endpoint->impl->dropped_bad_token
                                            : opts_.endpoint->impl->dropped_malformed;
    const uint64_t n = ++counter;
    if ((n & (n - 1)) == 0)  // the 1st, 2nd, 4th, ... so a flood cannot flood the log
      LOG_WARN << "collective: dropped a message (" << why << "); "
               << (v == Verdict::kBadToken ? "foreign-token" : "malformed")
               << " drops so far: " << n;
  }

  // Waits for the next message that checks out, dropping (and counting) any other, until the
  // call's deadline or should_abort.
  Status Recv(zmq::socket_t& s, bool routed, Received* out, const char* what) {
    const int64_t deadline = MonotonicMs() + opts_.timeout_ms;
    while (true) {
      std::vector<zmq::message_t> parts;
      const int64_t left = deadline - MonotonicMs();
      M6_ASSIGN_OR_RETURN(
          bool got,
          RecvMultipart(s, &parts, int(std::max<int64_t>(0, std::min<int64_t>(200, left)))));
      if (got) {
        std::string why;
        const Verdict v = Validate(parts, routed, out, &why);
        if (v == Verdict::kOk) return Status::OK();
        CountDrop(v, why);
      }
      std::string why;
      if (opts_.should_abort && opts_.should_abort(&why))
        return Status::Aborted("collective " + std::string(what) + ": " + why);
      if (MonotonicMs() > deadline)
        return Status::DeadlineExceeded("collective " + std::string(what) +
                                        ": no message from the other workers in " +
                                        std::to_string(opts_.timeout_ms) + " ms");
    }
  }

  ZmqCollectiveOptions opts_;
  int size_;
  uint64_t seq_ = 0;
  std::vector<std::string> ids_;
  std::unique_ptr<zmq::socket_t> dealer_;
};

}  // namespace

StatusOr<std::unique_ptr<Collective>> CreateZmqCollective(const ZmqCollectiveOptions& opts) {
  if (!opts.endpoint)
    return Status::InvalidArgument("zmq collective: no endpoint (ZmqCollectiveEndpoint::Bind)");
  if (opts.peers.empty() || opts.rank < 0 || opts.rank >= int(opts.peers.size()))
    return Status::InvalidArgument("zmq collective: rank " + std::to_string(opts.rank) + " of " +
                                   std::to_string(opts.peers.size()) + " peers");
  auto c = std::make_unique<ZmqCollective>(opts);
  M6_RETURN_IF_ERROR(c->Start());
  return std::unique_ptr<Collective>(std::move(c));
}

}  // namespace m6rec
