// common/mutex.h: the annotated Mutex, MutexLock and CondVar behave as the std types they wrap.
// (That a missing lock is a compile error is checked by launch/check-style.sh, not here.)
#include "common/mutex.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

namespace m6rec {
namespace {

struct Counter {
  Mutex mu;
  CondVar cv;
  int value GUARDED_BY(mu) = 0;
};

TEST(Mutex, ExcludesOtherThreads) {
  Counter c;
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t)
    ts.emplace_back([&c] {
      for (int i = 0; i < 50000; ++i) {
        MutexLock lock(&c.mu);
        ++c.value;
      }
    });
  for (auto& t : ts) t.join();
  MutexLock lock(&c.mu);
  EXPECT_EQ(c.value, 4 * 50000) << "increments under the lock must not be lost";
}

TEST(MutexLock, UnlockLetsAnotherThreadInAndLockTakesItBack) {
  Counter c;
  MutexLock lock(&c.mu);
  lock.Unlock();
  std::thread other([&c] {
    MutexLock l(&c.mu);
    c.value = 7;
  });
  other.join();  // would deadlock if Unlock() had not released the mutex
  lock.Lock();
  EXPECT_EQ(c.value, 7) << "the other thread's write, made while the scope had unlocked";
}

TEST(CondVar, WaitReturnsOnceThePredicateHolds) {
  Counter c;
  std::thread setter([&c] {
    for (int i = 1; i <= 3; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
      MutexLock lock(&c.mu);
      c.value = i;
      c.cv.NotifyAll();
    }
  });
  {
    MutexLock lock(&c.mu);
    c.cv.Wait(&c.mu, [&c]() REQUIRES(c.mu) { return c.value == 3; });
    EXPECT_EQ(c.value, 3) << "Wait must not return before its predicate holds";
  }
  setter.join();
}

TEST(CondVar, TimedWaitsReportTheTimeoutAndKeepTheLock) {
  Counter c;
  MutexLock lock(&c.mu);
  const auto t0 = std::chrono::steady_clock::now();
  bool got = c.cv.WaitFor(&c.mu, std::chrono::milliseconds(30),
                          [&c]() REQUIRES(c.mu) { return c.value != 0; });
  EXPECT_FALSE(got) << "nothing set the value, so the wait must time out";
  EXPECT_GE(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(30))
      << "a timed wait must not give up early";
  EXPECT_EQ(c.cv.WaitUntil(&c.mu, std::chrono::steady_clock::now()), std::cv_status::timeout)
      << "a deadline that has passed times out at once";
  // Still held after the waits: another thread blocks until this scope unlocks.
  std::atomic<bool> other_done{false};
  std::thread other([&] {
    MutexLock l(&c.mu);
    other_done = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_FALSE(other_done) << "another thread took the mutex while the waiter should hold it";
  lock.Unlock();
  other.join();
  EXPECT_TRUE(other_done);
}

}  // namespace
}  // namespace m6rec
