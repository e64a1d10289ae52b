// Helpers for tests: temporary directories, and running the real m6rec binary as a child
// process (foreground with a deadline, or background with a handle that kills it on scope exit).
#pragma once

#include <sys/types.h>

#include <map>
#include <string>
#include <vector>

namespace m6rec {
namespace testing {

// A fresh directory under $TMPDIR (or /tmp), removed with its contents on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

struct RunResult {
  int exit_code = -1;  // -1 when killed by a signal or timed out
  int signal = 0;
  bool timed_out = false;
  double seconds = 0;
  std::string output;       // stdout + stderr, as they arrived
  std::string stdout_text;  // stdout alone: what a program prints as its answer (logs go to stderr)
};

// Runs `args` (args[0] is the program) with extra environment; kills it after timeout_s.
RunResult RunCommand(const std::vector<std::string>& args, double timeout_s,
                     const std::map<std::string, std::string>& env = {});

// A child process running in the background with its output captured to a file.
class Background {
 public:
  Background(const std::vector<std::string>& args, const std::string& log_path,
             const std::map<std::string, std::string>& env = {});
  ~Background();  // SIGKILLs the child if it still runs
  pid_t pid() const { return pid_; }
  // Waits up to timeout_s for exit; returns true when it exited (result in exit_code/signal).
  bool Wait(double timeout_s);
  void Kill(int sig);
  bool running();
  int exit_code() const { return exit_code_; }
  int signal() const { return signal_; }
  std::string Output() const;

 private:
  pid_t pid_ = -1;
  std::string log_;
  bool reaped_ = false;
  int exit_code_ = -1, signal_ = 0;
};

// Waits up to timeout_s for `path` to exist and be non-empty; returns its content or "".
std::string WaitForFile(const std::string& path, double timeout_s);
bool ProcessAlive(pid_t pid);
std::string Binary();  // the m6rec binary under test
std::string SourceDir();
// The real datasets: $M6REC_DATA, else ../shared/data beside the source tree.
std::string SharedDataDir();
std::string WriteFile(const std::string& path, const std::string& content);
// A small MovieLens-100K style directory (u.data, u.item, u.user, u1.base, u1.test) whose
// tasks have known answers: items 1..items/2 are genre 0, the rest genre 1; a user's gender
// decides the genre it mostly watches (80%) and rates high (4-5, else 1-2; 5% of ratings
// flipped); age and occupation are random. Each user watches `per_user` items in time order;
// u1.test holds every 5th rating of u.data, u1.base the others.
void WriteTasteMovieLens(const std::string& dir, int users, int items, int per_user, unsigned seed);

}  // namespace testing
}  // namespace m6rec
