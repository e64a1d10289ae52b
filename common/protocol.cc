#include "common/protocol.h"

#include <cstring>

namespace m6rec {

const char* MsgTypeName(MsgType t) {
  switch (t) {
    case MsgType::kPull:
      return "PULL";
    case MsgType::kPullReply:
      return "PULL_REPLY";
    case MsgType::kPush:
      return "PUSH";
    case MsgType::kPushAck:
      return "PUSH_ACK";
    case MsgType::kAdmin:
      return "ADMIN";
    case MsgType::kAdminReply:
      return "ADMIN_REPLY";
    case MsgType::kError:
      return "ERROR";
    case MsgType::kRegister:
      return "REGISTER";
    case MsgType::kClusterView:
      return "CLUSTER_VIEW";
    case MsgType::kHeartbeat:
      return "HEARTBEAT";
    case MsgType::kBarrier:
      return "BARRIER";
    case MsgType::kBarrierRelease:
      return "BARRIER_RELEASE";
    case MsgType::kNodeDead:
      return "NODE_DEAD";
    case MsgType::kShutdown:
      return "SHUTDOWN";
    case MsgType::kFinished:
      return "FINISHED";
    case MsgType::kControlError:
      return "CONTROL_ERROR";
    case MsgType::kStatusRequest:
      return "STATUS_REQUEST";
    case MsgType::kStatusReply:
      return "STATUS_REPLY";
    case MsgType::kCollectiveHello:
      return "COLLECTIVE_HELLO";
    case MsgType::kCollectiveReduce:
      return "COLLECTIVE_REDUCE";
    case MsgType::kCollectiveResult:
      return "COLLECTIVE_RESULT";
    case MsgType::kCollectiveBroadcast:
      return "COLLECTIVE_BROADCAST";
    case MsgType::kRendezvous:
      return "RENDEZVOUS";
  }
  return "UNKNOWN";
}

size_t ElementSize(uint32_t element_type) {
  switch (static_cast<ElementType>(element_type)) {
    case ElementType::kFloat32:
      return 4;
    case ElementType::kFloat64:
      return 8;
    case ElementType::kNone:
      return 0;
  }
  return 0;
}

Status DecodeHeader(const void* data, size_t size, MsgHeader* out) {
  if (size != sizeof(MsgHeader))
    return Status::Corruption("header frame of " + std::to_string(size) + " bytes, expected " +
                              std::to_string(sizeof(MsgHeader)));
  std::memcpy(out, data, sizeof(MsgHeader));
  if (out->magic != kMagic) return Status::Corruption("bad magic: not an m6rec message");
  if (out->version != kProtocolVersion)
    return Status::Corruption("protocol version " + std::to_string(out->version) +
                              " (this build speaks " + std::to_string(kProtocolVersion) + ")");
  return Status::OK();
}

namespace {
bool MulOverflows(uint64_t a, uint64_t b, uint64_t* out) {
  return __builtin_mul_overflow(a, b, out);
}
}  // namespace

Status ValidateRequestFrames(const MsgHeader& h, const size_t* fs, size_t nf,
                             const RequestLimits& limits) {
  const auto type = static_cast<MsgType>(h.type);
  uint64_t key_bytes = 0, val_bytes = 0, total = 0;
  for (size_t i = 0; i < nf; ++i) total += fs[i];
  if (total > limits.max_bytes)
    return Status::InvalidArgument("message of " + std::to_string(total) + " bytes exceeds " +
                                   std::to_string(limits.max_bytes));
  switch (type) {
    case MsgType::kPull:
    case MsgType::kPush: {
      if (h.num_keys > limits.max_keys)
        return Status::InvalidArgument(std::to_string(h.num_keys) + " keys exceed the limit of " +
                                       std::to_string(limits.max_keys));
      if (MulOverflows(h.num_keys, 8, &key_bytes))
        return Status::InvalidArgument("key count overflows");
      size_t want_frames = type == MsgType::kPull ? 2 : 3;
      if (nf != want_frames)
        return Status::InvalidArgument(std::string(MsgTypeName(type)) + " with " +
                                       std::to_string(nf) + " frames, expected " +
                                       std::to_string(want_frames));
      if (fs[1] != key_bytes)
        return Status::InvalidArgument("keys frame of " + std::to_string(fs[1]) +
                                       " bytes, header says " + std::to_string(h.num_keys) +
                                       " keys");
      if (type == MsgType::kPush) {
        uint64_t n = 0;
        if (MulOverflows(h.num_keys, h.dim, &n) || MulOverflows(n, 4, &val_bytes))
          return Status::InvalidArgument("gradient size overflows");
        if (fs[2] != val_bytes)
          return Status::InvalidArgument("gradient frame of " + std::to_string(fs[2]) +
                                         " bytes, expected " + std::to_string(val_bytes));
      }
      return Status::OK();
    }
    case MsgType::kAdmin:
      if (nf != 2) return Status::InvalidArgument("ADMIN needs exactly 2 frames");
      return Status::OK();
    default:
      return Status::InvalidArgument("message type " + std::to_string(h.type) +
                                     " is not a data-plane request");
  }
}

std::string EncodeControlFrame(const MsgHeader& h, const std::string& payload) {
  uint32_t len = static_cast<uint32_t>(sizeof(MsgHeader) + payload.size());
  std::string out(4 + len, '\0');
  std::memcpy(&out[0], &len, 4);
  std::memcpy(&out[4], &h, sizeof(MsgHeader));
  std::memcpy(&out[4 + sizeof(MsgHeader)], payload.data(), payload.size());
  return out;
}

Status DecodeControlFrame(const char* data, size_t size, MsgHeader* h, std::string* payload) {
  if (size < sizeof(MsgHeader))
    return Status::Corruption("control frame of " + std::to_string(size) +
                              " bytes is shorter than a header");
  M6_RETURN_IF_ERROR(DecodeHeader(data, sizeof(MsgHeader), h));
  payload->assign(data + sizeof(MsgHeader), size - sizeof(MsgHeader));
  return Status::OK();
}

Status DecodeWholeControlFrame(const std::string& frame, MsgHeader* h, std::string* payload) {
  uint32_t len = 0;
  if (frame.size() < 4)
    return Status::Corruption("frame of " + std::to_string(frame.size()) +
                              " bytes has no length prefix");
  std::memcpy(&len, frame.data(), 4);
  if (len != frame.size() - 4)
    return Status::Corruption("frame says " + std::to_string(len) + " bytes follow its prefix, " +
                              std::to_string(frame.size() - 4) + " do (truncated, or not a frame)");
  if (len > kMaxControlFrame)
    return Status::Corruption("frame of " + std::to_string(len) + " bytes exceeds the limit");
  return DecodeControlFrame(frame.data() + 4, len, h, payload);
}

}  // namespace m6rec
