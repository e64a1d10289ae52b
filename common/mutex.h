// Mutex, MutexLock, CondVar: std::mutex and std::condition_variable with clang's thread-safety
// attributes (common/thread_annotations.h), so GUARDED_BY / REQUIRES on the state they protect
// are checked. libstdc++'s own types carry no attributes: a std::lock_guard is invisible to the
// analysis, which is why guarded state in this tree uses these instead (CI rejects the raw std
// types, see launch/check-style.sh). Thin inline wrappers: they cost what the std types cost.
//
//   Mutex mu_;
//   CondVar cv_;
//   bool ready_ GUARDED_BY(mu_) = false;
//
//   void Set() EXCLUDES(mu_) {
//     MutexLock lock(&mu_);
//     ready_ = true;
//     cv_.NotifyAll();
//   }
//   void Await() EXCLUDES(mu_) {
//     MutexLock lock(&mu_);
//     cv_.Wait(&mu_, [this]() REQUIRES(mu_) { return ready_; });
//   }
//
// Threading: a Mutex and a CondVar may be used from any thread (that is what they are for); a
// MutexLock belongs to the thread that made it. Not recursive; not copyable or movable.
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <utility>

#include "common/thread_annotations.h"

namespace m6rec {

class CAPABILITY("mutex") Mutex {
 public:
  // constexpr: a global Mutex is initialised before any code runs (as std::mutex is).
  constexpr Mutex() noexcept = default;
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;

  void Lock() ACQUIRE() { mu_.lock(); }
  void Unlock() RELEASE() { mu_.unlock(); }

 private:
  friend class CondVar;
  std::mutex mu_;
};

// Holds a Mutex for its scope. Unlock() and Lock() let a scope drop the mutex around a slow call
// (a socket write) and take it back; the analysis tracks that too.
class SCOPED_CAPABILITY MutexLock {
 public:
  explicit MutexLock(Mutex* mu) ACQUIRE(mu) : mu_(mu) { mu_->Lock(); }
  ~MutexLock() RELEASE() {
    if (held_) mu_->Unlock();
  }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

  void Unlock() RELEASE() {
    mu_->Unlock();
    held_ = false;
  }
  void Lock() ACQUIRE() {
    mu_->Lock();
    held_ = true;
  }

 private:
  Mutex* const mu_;
  bool held_ = true;
};

// A condition variable that waits on a Mutex the caller holds (pass it: the analysis checks the
// caller holds that very mutex). Like std::condition_variable, a plain Wait may wake spuriously;
// the predicate forms loop until the predicate holds. A predicate runs with the mutex held and
// is a function of its own to the analysis: annotate it, `[this]() REQUIRES(mu_) { ... }`.
class CondVar {
 public:
  CondVar() = default;
  CondVar(const CondVar&) = delete;
  CondVar& operator=(const CondVar&) = delete;

  void NotifyOne() { cv_.notify_one(); }
  void NotifyAll() { cv_.notify_all(); }

  void Wait(Mutex* mu) REQUIRES(mu) {
    Lent lent(mu);
    cv_.wait(lent.lock);
  }
  // std::cv_status::timeout once `deadline` passed (a wake-up may also be spurious).
  template <typename Clock, typename Duration>
  std::cv_status WaitUntil(Mutex* mu, const std::chrono::time_point<Clock, Duration>& deadline)
      REQUIRES(mu) {
    Lent lent(mu);
    return cv_.wait_until(lent.lock, deadline);
  }
  template <typename Rep, typename Period>
  std::cv_status WaitFor(Mutex* mu, const std::chrono::duration<Rep, Period>& timeout)
      REQUIRES(mu) {
    return WaitUntil(mu, std::chrono::steady_clock::now() + timeout);
  }

  // Until pred() holds.
  template <typename Pred>
  void Wait(Mutex* mu, Pred pred) REQUIRES(mu) NO_THREAD_SAFETY_ANALYSIS {
    // Not analysed: pred's own REQUIRES names the caller's mutex, which this template cannot
    // name. The REQUIRES(mu) above is still checked at every call.
    while (!pred()) Wait(mu);
  }
  // Until pred() holds (returns true) or `deadline` passed with it false (returns false).
  template <typename Clock, typename Duration, typename Pred>
  bool WaitUntil(Mutex* mu, const std::chrono::time_point<Clock, Duration>& deadline, Pred pred)
      REQUIRES(mu) NO_THREAD_SAFETY_ANALYSIS {
    while (!pred())
      if (WaitUntil(mu, deadline) == std::cv_status::timeout) return pred();
    return true;
  }
  template <typename Rep, typename Period, typename Pred>
  bool WaitFor(Mutex* mu, const std::chrono::duration<Rep, Period>& timeout, Pred pred)
      REQUIRES(mu) NO_THREAD_SAFETY_ANALYSIS {
    return WaitUntil(mu, std::chrono::steady_clock::now() + timeout, std::move(pred));
  }

 private:
  // The std::mutex inside a Mutex the caller holds, lent to a std::unique_lock for one std wait
  // and given back still held, also if the wait throws (a std wait re-locks before it throws).
  struct Lent {
    explicit Lent(Mutex* mu) : lock(mu->mu_, std::adopt_lock) {}
    ~Lent() { lock.release(); }
    std::unique_lock<std::mutex> lock;
  };

  std::condition_variable cv_;
};

}  // namespace m6rec
