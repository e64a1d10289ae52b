// Thread-safety annotations: macros over clang's thread-safety attributes, so that which mutex
// guards which member, and which methods need it held, is written in the header and checked by
// the compiler (clang's -Wthread-safety; launch/check-style.sh runs it in CI). Under other
// compilers (g++ builds the project) every macro expands to nothing.
//
// The analysis only knows types that carry these attributes: libstdc++'s std::mutex does not,
// so guarded state uses common/mutex.h (Mutex, MutexLock, CondVar).
//
//   class Inbox {
//    public:
//     void Put(Msg m) EXCLUDES(mu_);          // takes mu_ itself: call without it
//    private:
//     void DropOldest() REQUIRES(mu_);        // call with mu_ held
//     Mutex mu_;
//     std::deque<Msg> queue_ GUARDED_BY(mu_);  // read or written only with mu_ held
//     Msg* newest_ PT_GUARDED_BY(mu_);         // the pointer is free, *newest_ needs mu_
//   };
//
// A lambda that touches guarded state under a lock its caller holds (a CondVar predicate) is a
// function of its own to the analysis: annotate it too, `[this]() REQUIRES(mu_) { ... }`.
// Only what the tree uses is here; clang has more (shared/reader locks, try-lock, lock order):
// add the macro together with its first user.
#pragma once

#if defined(__clang__)
#define M6_THREAD_ANNOTATION_(x) __attribute__((x))
#else
#define M6_THREAD_ANNOTATION_(x)
#endif

// On a class: its objects are capabilities (lockable); `name` appears in diagnostics.
#define CAPABILITY(name) M6_THREAD_ANNOTATION_(capability(name))
// On a class: RAII objects that acquire a capability in the constructor and release it in the
// destructor (MutexLock).
#define SCOPED_CAPABILITY M6_THREAD_ANNOTATION_(scoped_lockable)

// On a data member (or global): reading or writing it needs `mu` held.
#define GUARDED_BY(mu) M6_THREAD_ANNOTATION_(guarded_by(mu))
// On a pointer member: dereferencing it needs `mu` held (the pointer itself is not guarded).
#define PT_GUARDED_BY(mu) M6_THREAD_ANNOTATION_(pt_guarded_by(mu))

// On a function: callers must hold these capabilities (exclusively) when calling it.
#define REQUIRES(...) M6_THREAD_ANNOTATION_(requires_capability(__VA_ARGS__))
// The older name of REQUIRES (LevelDB's, abseil's), for readers who know that one.
#define EXCLUSIVE_LOCKS_REQUIRED(...) REQUIRES(__VA_ARGS__)
// On a function: callers must not hold these (the function takes them itself; no recursion).
#define EXCLUDES(...) M6_THREAD_ANNOTATION_(locks_excluded(__VA_ARGS__))

// On a function: it acquires / releases the capabilities (with no argument: `this`).
#define ACQUIRE(...) M6_THREAD_ANNOTATION_(acquire_capability(__VA_ARGS__))
#define RELEASE(...) M6_THREAD_ANNOTATION_(release_capability(__VA_ARGS__))
// On a function: its body is not checked (say why next to it). Callers still are.
#define NO_THREAD_SAFETY_ANALYSIS M6_THREAD_ANNOTATION_(no_thread_safety_analysis)
