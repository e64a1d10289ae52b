// The m6rec wire protocol, shared by the data plane (ZeroMQ multipart messages between workers
// and servers) and the control plane (length-prefixed frames over TCP to the scheduler).
//
// Every message starts with a fixed 48-byte MsgHeader (magic, version, type, job token, request
// id, table, dim, key count, sender, status). Payloads travel as separate frames so that keys and
// float rows are never re-packed:
//   PULL        [hdr][keys u64 x n]                  -> PULL_REPLY [hdr][rows f32 x n*dim]
//   PUSH        [hdr][keys u64 x n][grads f32 x n*dim] -> PUSH_ACK [hdr]  (sent once durable)
//   ADMIN       [hdr][json request]                  -> ADMIN_REPLY [hdr][json]
//   any request, when it is refused                  -> ERROR      [hdr status=code][text]
// Control messages carry one JSON payload after the header.
// The workers' zmq collective uses the same header (types kCollective*): sender = rank,
// request_id = the call's sequence number, num_keys = element count, dim = ElementType; the
// elements follow in one frame (none for a hello).
// Decoding never trusts a length: every size is checked against the header (with overflow
// checks) before anything is read, and a message that does not check out is refused whole.
// Integers are little-endian (all supported hosts are; a static_assert keeps it so).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "common/status.h"

namespace m6rec {

constexpr uint32_t kMagic = 0x4352364Du;  // bytes "M6RC" on the wire
constexpr uint16_t kProtocolVersion = 1;
constexpr uint32_t kNoRank = 0xffffffffu;

enum class MsgType : uint16_t {
  // data plane
  kPull = 1,
  kPullReply = 2,
  kPush = 3,
  kPushAck = 4,
  kAdmin = 5,
  kAdminReply = 6,
  kError = 7,
  // control plane (scheduler)
  kRegister = 16,     // node -> scheduler: {role, host, port, requested_rank, pid}
  kClusterView = 17,  // scheduler -> node: {rank, servers, workers, slot_map, ...}
  kHeartbeat = 18,    // node -> scheduler
  kBarrier = 19,      // node -> scheduler: {name, group}
  kBarrierRelease = 20,
  kNodeDead = 21,       // scheduler -> all: {role, rank, reason}
  kShutdown = 22,       // scheduler -> all: {reason, ok}
  kFinished = 23,       // worker -> scheduler: {ok, summary}
  kControlError = 24,   // scheduler -> node: a refused control request
  kStatusRequest = 25,  // anyone -> scheduler: cluster status as JSON
  kStatusReply = 26,
  // worker collective (zmq backend), between rank 0 and the other workers
  kCollectiveHello = 32,      // rank -> rank 0 (joining), rank 0 -> rank (everyone is here)
  kCollectiveReduce = 33,     // rank -> rank 0: its buffer to sum
  kCollectiveResult = 34,     // rank 0 -> rank: the sum, or the broadcast buffer
  kCollectiveBroadcast = 35,  // root rank (not 0) -> rank 0: the buffer to broadcast
  // cluster launches (mpirun, srun): rank 0 -> every rank, over MPI or a file; request_id = the
  // message's index, token = the job token rank 0 made; JSON payload
  kRendezvous = 48,
};

// Element type of a collective message's payload, carried in MsgHeader::dim.
enum class ElementType : uint32_t { kNone = 0, kFloat32 = 1, kFloat64 = 2 };
// Bytes per element; 0 for kNone and for codes this build does not know.
size_t ElementSize(uint32_t element_type);

const char* MsgTypeName(MsgType t);

#pragma pack(push, 1)
struct MsgHeader {
  uint32_t magic = kMagic;
  uint16_t version = kProtocolVersion;
  uint16_t type = 0;
  uint64_t token = 0;
  uint64_t request_id = 0;
  uint32_t table = 0;
  uint32_t dim = 0;
  uint64_t num_keys = 0;
  uint32_t sender = kNoRank;
  uint32_t status = 0;  // StatusCode, in replies
};
#pragma pack(pop)
static_assert(sizeof(MsgHeader) == 48, "MsgHeader is 48 bytes on the wire");
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "m6rec's wire format is little-endian");

// Checks size, magic and version and copies the header out. Does not check the token: callers
// count token failures separately from malformed messages.
Status DecodeHeader(const void* data, size_t size, MsgHeader* out);

// Limits a receiver enforces on a data-plane request before touching any table.
struct RequestLimits {
  uint64_t max_keys = 1 << 22;
  uint64_t max_bytes = 1ull << 30;
};

// Checks that a data-plane request's frames match its header exactly: frame count, key bytes,
// value bytes (n * dim * 4, overflow-checked) and limits. `frame_sizes[0]` is the header frame.
Status ValidateRequestFrames(const MsgHeader& h, const size_t* frame_sizes, size_t num_frames,
                             const RequestLimits& limits);

// Control-plane framing over a byte stream: [u32 length of the rest][MsgHeader][payload].
constexpr uint32_t kMaxControlFrame = 16u << 20;
std::string EncodeControlFrame(const MsgHeader& h, const std::string& payload);
// Decodes the part after the length prefix.
Status DecodeControlFrame(const char* data, size_t size, MsgHeader* h, std::string* payload);
// Decodes one whole frame as EncodeControlFrame made it (length prefix included), e.g. a file:
// the prefix must match the bytes that follow exactly (a truncated or padded frame is refused).
Status DecodeWholeControlFrame(const std::string& frame, MsgHeader* h, std::string* payload);

}  // namespace m6rec
