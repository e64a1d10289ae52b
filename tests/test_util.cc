#include "test_util.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

#include "common/util.h"

namespace m6rec {
namespace testing {

namespace {
double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// The child's stdout goes to out_fd, its stderr to err_fd (they may be the same).
pid_t SpawnChild(const std::vector<std::string>& args, int out_fd, int err_fd,
                 const std::map<std::string, std::string>& env) {
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(1);
    setpgid(0, 0);
    dup2(out_fd, 1);
    dup2(err_fd, 2);
    for (const auto& [k, v] : env) setenv(k.c_str(), v.c_str(), 1);
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(argv[0], argv.data());
    _exit(127);
  }
  return pid;
}

void Decode(int status, int* code, int* sig) {
  if (WIFEXITED(status)) {
    *code = WEXITSTATUS(status);
    *sig = 0;
  } else if (WIFSIGNALED(status)) {
    *code = -1;
    *sig = WTERMSIG(status);
  }
}
}  // namespace

TempDir::TempDir() {
  const char* base = std::getenv("TMPDIR");
  std::string tmpl = std::string(base && *base ? base : "/tmp") + "/m6rec-test-XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  if (!mkdtemp(buf.data())) std::abort();
  path_ = buf.data();
}

TempDir::~TempDir() {
  if (!std::getenv("M6REC_KEEP_TEST_DIRS")) (void)RemoveTree(path_);
}

RunResult RunCommand(const std::vector<std::string>& args, double timeout_s,
                     const std::map<std::string, std::string>& env) {
  RunResult r;
  // Two pipes, read as the child writes: stdout and stderr both go to r.output in arrival
  // order, stdout alone also to r.stdout_text. The read ends are non-blocking, and reading stops
  // once the child is reaped, so a grandchild that keeps a pipe open cannot stall the test.
  int out[2], err[2];
  if (pipe2(out, O_CLOEXEC) != 0) std::abort();
  if (pipe2(err, O_CLOEXEC) != 0) std::abort();
  const double t0 = Now();
  pid_t pid = SpawnChild(args, out[1], err[1], env);
  close(out[1]);
  close(err[1]);
  pollfd fds[2] = {{out[0], POLLIN, 0}, {err[0], POLLIN, 0}};
  for (pollfd& p : fds) fcntl(p.fd, F_SETFL, fcntl(p.fd, F_GETFL) | O_NONBLOCK);
  auto drain = [&] {
    char buf[65536];
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0) continue;
      ssize_t n;
      while ((n = read(fds[i].fd, buf, sizeof(buf))) > 0) {
        r.output.append(buf, n);
        if (i == 0) r.stdout_text.append(buf, n);
      }
      if (n == 0) fds[i].fd = -1;  // end of file: every writer closed it; poll ignores -1
    }
  };
  int status = 0;
  for (;;) {
    poll(fds, 2, 10);
    drain();
    pid_t w = waitpid(pid, &status, WNOHANG);
    if (w == pid) break;
    if (Now() - t0 > timeout_s) {
      r.timed_out = true;
      kill(-pid, SIGKILL);
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      break;
    }
  }
  r.seconds = Now() - t0;
  Decode(status, &r.exit_code, &r.signal);
  drain();  // what the child wrote just before it exited
  close(out[0]);
  close(err[0]);
  return r;
}

Background::Background(const std::vector<std::string>& args, const std::string& log_path,
                       const std::map<std::string, std::string>& env)
    : log_(log_path) {
  int fd = open(log_path.c_str(), O_CREAT | O_WRONLY | O_TRUNC, 0644);
  pid_ = SpawnChild(args, fd, fd, env);
  close(fd);
}

Background::~Background() {
  if (!reaped_ && pid_ > 0) {
    kill(pid_, SIGKILL);
    Wait(10);
  }
}

bool Background::Wait(double timeout_s) {
  if (reaped_) return true;
  const double t0 = Now();
  int status = 0;
  for (;;) {
    pid_t w = waitpid(pid_, &status, WNOHANG);
    if (w == pid_) {
      reaped_ = true;
      Decode(status, &exit_code_, &signal_);
      return true;
    }
    if (Now() - t0 > timeout_s) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

void Background::Kill(int sig) {
  if (!reaped_) kill(pid_, sig);
}

bool Background::running() { return !Wait(0); }

std::string Background::Output() const {
  std::ifstream in(log_);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string WaitForFile(const std::string& path, double timeout_s) {
  const double t0 = Now();
  while (Now() - t0 < timeout_s) {
    std::ifstream in(path);
    if (in) {
      std::stringstream ss;
      ss << in.rdbuf();
      if (!ss.str().empty()) return ss.str();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return "";
}

bool ProcessAlive(pid_t pid) {
  if (kill(pid, 0) != 0) return false;
  // A zombie still answers kill(0); look at its state.
  std::ifstream st("/proc/" + std::to_string(pid) + "/stat");
  std::string s;
  std::getline(st, s);
  size_t rp = s.rfind(')');
  return !(rp != std::string::npos && rp + 2 < s.size() && s[rp + 2] == 'Z');
}

std::string Binary() { return M6REC_BINARY; }
std::string SourceDir() { return M6REC_SOURCE_DIR; }
std::string SharedDataDir() {
  const char* env = std::getenv("M6REC_DATA");
  return env && *env ? std::string(env) : SourceDir() + "/../shared/data";
}

std::string WriteFile(const std::string& path, const std::string& content) {
  std::ofstream out(path);
  out << content;
  return path;
}

void WriteTasteMovieLens(const std::string& dir, int users, int items, int per_user,
                         unsigned seed) {
  std::filesystem::create_directories(dir);
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> unif(0, 1);
  const int half = items / 2;
  std::ofstream item_file(dir + "/u.item");
  for (int i = 1; i <= items; ++i) {
    item_file << i << "|Movie " << i << " (1995)|01-Jan-1995||http://x";
    for (int g = 0; g < 19; ++g) item_file << "|" << (g == (i <= half ? 3 : 7) ? 1 : 0);
    item_file << "\n";
  }
  static const char* kJobs[] = {"student", "engineer", "artist", "writer"};
  std::ofstream user_file(dir + "/u.user");
  std::ofstream data(dir + "/u.data"), base(dir + "/u1.base"), test(dir + "/u1.test");
  int line = 0;
  for (int u = 1; u <= users; ++u) {
    const bool female = unif(rng) < 0.5;
    user_file << u << "|" << 15 + int(rng() % 50) << "|" << (female ? "F" : "M") << "|"
              << kJobs[rng() % 4] << "|00000\n";
    std::vector<int> seen;
    for (int k = 0; k < per_user; ++k) {
      const bool liked_genre = unif(rng) < 0.8;
      const bool genre0 = liked_genre == female;
      int item;
      do {
        item = genre0 ? 1 + int(rng() % half) : half + 1 + int(rng() % (items - half));
      } while (std::find(seen.begin(), seen.end(), item) != seen.end());
      seen.push_back(item);
      bool high = liked_genre;
      if (unif(rng) < 0.05) high = !high;
      const int rating = high ? 4 + int(rng() % 2) : 1 + int(rng() % 2);
      const std::string row = std::to_string(u) + "\t" + std::to_string(item) + "\t" +
                              std::to_string(rating) + "\t" + std::to_string(880000000 + k) + "\n";
      data << row;
      (++line % 5 == 0 ? test : base) << row;
    }
  }
}

}  // namespace testing
}  // namespace m6rec
