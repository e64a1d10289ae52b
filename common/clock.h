// Time sources. Heartbeat and timeout logic takes a Clock so tests can advance time by hand
// (FakeClock) instead of sleeping. SteadyClock is thread-safe; FakeClock is too (atomic).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

namespace m6rec {

class Clock {
 public:
  virtual ~Clock() = default;
  virtual int64_t NowMs() const = 0;
};

class SteadyClock final : public Clock {
 public:
  int64_t NowMs() const override {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }
};

class FakeClock final : public Clock {
 public:
  explicit FakeClock(int64_t start_ms = 1000) : now_(start_ms) {}
  int64_t NowMs() const override { return now_.load(); }
  void Advance(int64_t ms) { now_ += ms; }

 private:
  std::atomic<int64_t> now_;
};

inline int64_t MonotonicMs() { return SteadyClock().NowMs(); }
// Microseconds on the steady clock, for timing short operations (a pull's service time).
inline int64_t MonotonicUs() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace m6rec
