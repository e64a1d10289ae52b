#include "common/protocol.h"

#include <gtest/gtest.h>

#include <cstring>

namespace m6rec {

namespace {
MsgHeader Pull(uint64_t n) {
  MsgHeader h;
  h.type = static_cast<uint16_t>(MsgType::kPull);
  h.token = 42;
  h.num_keys = n;
  h.dim = 8;
  return h;
}
RequestLimits Limits() { return RequestLimits{1000, 1 << 20}; }
}  // namespace

TEST(Protocol, HeaderRoundTrip) {
  MsgHeader h = Pull(3);
  h.request_id = 77;
  h.table = 5;
  h.sender = 9;
  char buf[sizeof(MsgHeader)];
  std::memcpy(buf, &h, sizeof(h));
  MsgHeader out;
  ASSERT_TRUE(DecodeHeader(buf, sizeof(buf), &out).ok());
  EXPECT_EQ(out.request_id, 77u);
  EXPECT_EQ(out.table, 5u);
  EXPECT_EQ(out.sender, 9u);
  EXPECT_EQ(out.num_keys, 3u);
  EXPECT_EQ(out.token, 42u);
}

TEST(Protocol, RejectsShortLongForeignAndFutureHeaders) {
  MsgHeader h = Pull(1), out;
  char buf[sizeof(MsgHeader) + 1];
  std::memcpy(buf, &h, sizeof(h));
  EXPECT_EQ(DecodeHeader(buf, sizeof(MsgHeader) - 1, &out).code(), StatusCode::kCorruption);
  EXPECT_EQ(DecodeHeader(buf, sizeof(MsgHeader) + 1, &out).code(), StatusCode::kCorruption);
  MsgHeader bad = h;
  bad.magic = 0x12345678;
  std::memcpy(buf, &bad, sizeof(bad));
  EXPECT_EQ(DecodeHeader(buf, sizeof(MsgHeader), &out).code(), StatusCode::kCorruption);
  bad = h;
  bad.version = kProtocolVersion + 1;
  std::memcpy(buf, &bad, sizeof(bad));
  Status s = DecodeHeader(buf, sizeof(MsgHeader), &out);
  EXPECT_EQ(s.code(), StatusCode::kCorruption);
  EXPECT_NE(s.message().find("version"), std::string::npos) << s.message();
}

TEST(Protocol, ValidatesPullFrames) {
  MsgHeader h = Pull(4);
  size_t ok[] = {48, 32};
  EXPECT_TRUE(ValidateRequestFrames(h, ok, 2, Limits()).ok());
  size_t truncated[] = {48, 31};
  EXPECT_FALSE(ValidateRequestFrames(h, truncated, 2, Limits()).ok());
  size_t extra[] = {48, 32, 8};
  EXPECT_FALSE(ValidateRequestFrames(h, extra, 3, Limits()).ok());
  MsgHeader many = Pull(1001);
  size_t m[] = {48, 8008};
  EXPECT_FALSE(ValidateRequestFrames(many, m, 2, Limits()).ok()) << "over the key limit";
}

TEST(Protocol, ValidatesPushFramesWithOverflowChecks) {
  MsgHeader h = Pull(4);
  h.type = static_cast<uint16_t>(MsgType::kPush);
  size_t ok[] = {48, 32, 4 * 8 * 4};
  EXPECT_TRUE(ValidateRequestFrames(h, ok, 3, Limits()).ok());
  size_t short_grads[] = {48, 32, 4 * 8 * 4 - 4};
  EXPECT_FALSE(ValidateRequestFrames(h, short_grads, 3, Limits()).ok());
  size_t no_grads[] = {48, 32};
  EXPECT_FALSE(ValidateRequestFrames(h, no_grads, 2, Limits()).ok());
  // A dim chosen so that num_keys * dim * 4 wraps around 2^64 must not validate.
  MsgHeader evil = h;
  evil.num_keys = 2;
  evil.dim = 0xffffffffu;
  size_t e[] = {48, 16, 8};
  RequestLimits big{1u << 30, ~0ull};
  EXPECT_FALSE(ValidateRequestFrames(evil, e, 3, big).ok());
}

TEST(Protocol, RejectsOversizedAndUnknownTypes) {
  MsgHeader h = Pull(4);
  size_t huge[] = {48, 2u << 20};
  EXPECT_FALSE(ValidateRequestFrames(h, huge, 2, Limits()).ok());
  MsgHeader weird = h;
  weird.type = 999;
  size_t f[] = {48, 32};
  EXPECT_FALSE(ValidateRequestFrames(weird, f, 2, Limits()).ok());
  MsgHeader reply = h;
  reply.type = static_cast<uint16_t>(MsgType::kPullReply);
  EXPECT_FALSE(ValidateRequestFrames(reply, f, 2, Limits()).ok()) << "a reply is not a request";
}

TEST(Protocol, ControlFrameRoundTripAndRejection) {
  MsgHeader h;
  h.type = static_cast<uint16_t>(MsgType::kRegister);
  h.token = 5;
  std::string f = EncodeControlFrame(h, "{\"role\":\"server\"}");
  uint32_t len;
  std::memcpy(&len, f.data(), 4);
  ASSERT_EQ(len, f.size() - 4);
  MsgHeader out;
  std::string payload;
  ASSERT_TRUE(DecodeControlFrame(f.data() + 4, len, &out, &payload).ok());
  EXPECT_EQ(payload, "{\"role\":\"server\"}");
  EXPECT_EQ(out.type, h.type);
  EXPECT_FALSE(DecodeControlFrame(f.data() + 4, 10, &out, &payload).ok());
  std::string garbage(100, 'x');
  EXPECT_FALSE(DecodeControlFrame(garbage.data(), garbage.size(), &out, &payload).ok());
}

TEST(Protocol, WholeControlFramesMustMatchTheirLengthPrefix) {
  MsgHeader h;
  h.type = static_cast<uint16_t>(MsgType::kRendezvous);
  h.token = 7;
  const std::string f = EncodeControlFrame(h, "{\"x\":1}");
  MsgHeader out;
  std::string payload;
  ASSERT_TRUE(DecodeWholeControlFrame(f, &out, &payload).ok());
  EXPECT_EQ(payload, "{\"x\":1}");
  EXPECT_EQ(out.token, 7u);
  Status s = DecodeWholeControlFrame(f.substr(0, f.size() - 1), &out, &payload);
  EXPECT_EQ(s.code(), StatusCode::kCorruption);
  EXPECT_NE(s.message().find("truncated"), std::string::npos) << s.message();
  EXPECT_FALSE(DecodeWholeControlFrame(f + "x", &out, &payload).ok()) << "padded";
  EXPECT_FALSE(DecodeWholeControlFrame("ok", &out, &payload).ok()) << "shorter than a prefix";
  EXPECT_FALSE(DecodeWholeControlFrame(std::string(60, 'x'), &out, &payload).ok()) << "text";
}

TEST(Protocol, CollectiveElementTypesHaveTheirSizesAndUnknownOnesNone) {
  EXPECT_EQ(ElementSize(uint32_t(ElementType::kFloat32)), 4u);
  EXPECT_EQ(ElementSize(uint32_t(ElementType::kFloat64)), 8u);
  EXPECT_EQ(ElementSize(uint32_t(ElementType::kNone)), 0u);
  EXPECT_EQ(ElementSize(77), 0u) << "a code this build does not know has no size";
  EXPECT_STREQ(MsgTypeName(MsgType::kCollectiveReduce), "COLLECTIVE_REDUCE");
}

}  // namespace m6rec
