#include "launch/local_cluster.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <deque>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <thread>

#include "common/clock.h"
#include "common/config.h"
#include "common/logging.h"
#include "common/util.h"
#include "launch/progress_line.h"
#include "launch/roles.h"
#include "launch/run_dir.h"
#include "worker/evaluator.h"

namespace m6rec {

namespace {

int g_signal_pipe[2] = {-1, -1};

void OnSignal(int sig) {
  unsigned char c = static_cast<unsigned char>(sig);
  ssize_t ignored = ::write(g_signal_pipe[1], &c, 1);
  (void)ignored;
}

struct Child {
  std::string name;  // "server 1"
  pid_t pid = -1;
  int out_fd = -1;  // read end of the child's stdout+stderr
  std::string partial;
  std::deque<std::string> tail;
  std::ofstream log;
  bool exited = false;
  int status = 0;
};

std::string DescribeExit(int status) {
  if (WIFEXITED(status)) return "exited with code " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    int sig = WTERMSIG(status);
    return "was killed by signal " + std::to_string(sig) + " (" + strsignal(sig) + ")";
  }
  return "stopped (status " + std::to_string(status) + ")";
}

bool Succeeded(const Child& c) {
  return c.exited && WIFEXITED(c.status) && WEXITSTATUS(c.status) == 0;
}

class Launcher {
 public:
  explicit Launcher(const LocalClusterOptions& o) : opts_(o) {}

  int Run() {
    if (::pipe2(g_signal_pipe, O_CLOEXEC | O_NONBLOCK) != 0) {
      LOG_ERROR << "pipe: " << std::strerror(errno);
      return 1;
    }
    struct sigaction sa {};
    sa.sa_handler = OnSignal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, nullptr);
    sigaction(SIGTERM, &sa, nullptr);
    sigaction(SIGCHLD, &sa, nullptr);
    signal(SIGPIPE, SIG_IGN);

    Status s = Prepare();
    if (!s.ok()) {
      LOG_ERROR << s.message();
      return 2;
    }
    int rc = Supervise();
    Teardown();
    if (rc == 0)
      rc = WriteRunResult(cfg_, run_dir_, (MonotonicMs() - start_ms_) / 1000.0).ok() ? 0 : 1;
    return rc;
  }

 private:
  Status Prepare() {
    if (!opts_.adapt_from.empty()) {
      M6_ASSIGN_OR_RETURN(run_dir_, PrepareAdaptRun(opts_, &cfg_));
      LOG_INFO << "adapting the backbone " << cfg_.adapt.from << " (" << EnumName(cfg_.adapt.train)
               << ")";
    } else if (opts_.resume_dir.empty()) {
      M6_ASSIGN_OR_RETURN(run_dir_,
                          PrepareRunDir(opts_.config_path, opts_.overrides, opts_.run_dir, &cfg_));
    } else {
      M6_ASSIGN_OR_RETURN(resume_from_, PrepareResume(opts_, &cfg_));
      run_dir_ = opts_.resume_dir;
      LOG_INFO << "resuming " << run_dir_ << " from " << resume_from_;
    }
    token_ = RandomU64();
    LOG_INFO << "local cluster '" << cfg_.name << "': 1 scheduler, " << cfg_.cluster.servers
             << " servers (" << (cfg_.ps.store == PsConfig::Store::kRocksDB ? "rocksdb" : "memory")
             << "), " << cfg_.cluster.workers << " workers; run directory " << run_dir_;
    M6_ASSIGN_OR_RETURN(std::string data, PrepareData(cfg_, run_dir_));
    for (const DomainSpec& d : cfg_.data.domains)
      data += (data.empty() ? "" : ", ") + d.label + " (" + d.path +
              (d.name.empty() ? "" : ", " + d.name) + ")";
    LOG_INFO << "data: " << data;
    return Status::OK();
  }

  Status Spawn(const std::string& name, const std::vector<std::string>& args) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0)
      return Status::IOError(std::string("pipe: ") + std::strerror(errno));
    const pid_t parent = ::getpid();
    const std::string exe = SelfExePath();
    std::vector<std::string> argv_s{exe};
    argv_s.insert(argv_s.end(), args.begin(), args.end());
    pid_t pid = ::fork();
    if (pid < 0) return Status::IOError(std::string("fork: ") + std::strerror(errno));
    if (pid == 0) {
      // Child: own process group (Ctrl-C reaches only the launcher, which stops everyone in
      // order), and die with the launcher whatever kills it.
      ::setpgid(0, 0);
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) _exit(1);
      struct sigaction dfl {};
      dfl.sa_handler = SIG_DFL;
      for (int sig : {SIGINT, SIGTERM, SIGCHLD, SIGPIPE}) sigaction(sig, &dfl, nullptr);
      ::dup2(fds[1], 1);
      ::dup2(fds[1], 2);
      ::setenv("M6REC_TOKEN", FormatToken(token_).c_str(), 1);
      ::setenv("M6REC_LOG_PREFIXED", "1", 1);
      ::setenv("OMP_NUM_THREADS", "1", 0);
      ::setenv("OPENBLAS_NUM_THREADS", "1", 0);
      std::vector<char*> argv;
      for (auto& a : argv_s) argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      ::execv(exe.c_str(), argv.data());
      _exit(127);
    }
    ::close(fds[1]);
    ::fcntl(fds[0], F_SETFL, O_NONBLOCK);
    auto c = std::make_unique<Child>();
    c->name = name;
    c->pid = pid;
    c->out_fd = fds[0];
    std::string file = name;
    for (auto& ch : file)
      if (ch == ' ') ch = '-';
    c->log.open(run_dir_ + "/logs/" + file + ".log");
    children_.push_back(std::move(c));
    return Status::OK();
  }

  std::vector<std::string> Common() const {
    return {"--config", run_dir_ + "/config.yaml", "--log-level", opts_.log_level};
  }

  int Supervise() {
    const std::string port_file = run_dir_ + "/scheduler.port";
    std::error_code ec;
    std::filesystem::remove(port_file, ec);  // a resumed run's directory holds the old one
    auto args = Common();
    args.insert(args.end(), {"--port-file", port_file, "--run-dir", run_dir_});
    Status s = Spawn("scheduler", PrependRole("scheduler", args));
    if (!s.ok()) return FailWith(s.message());
    // Wait for the scheduler's port, watching for it dying first.
    int port = 0;
    for (int waited = 0; port == 0; waited += 20) {
      auto text = ReadFileToString(port_file);
      if (text.ok()) port = std::atoi(text->c_str());
      if (port) break;
      if (!Pump(20)) return 130;
      if (AnyFailed()) return ReportFailure();
      if (waited > 30000) return FailWith("the scheduler did not start within 30 s");
    }
    const std::string sched = cfg_.cluster.host + ":" + std::to_string(port);
    for (int i = 0; i < cfg_.cluster.servers; ++i) {
      auto a = Common();
      a.insert(a.end(), {"--scheduler", sched, "--rank", std::to_string(i), "--data-dir",
                         run_dir_ + "/server-" + std::to_string(i)});
      if (!resume_from_.empty()) a.insert(a.end(), {"--resume-from", resume_from_});
      s = Spawn("server " + std::to_string(i), PrependRole("server", a));
      if (!s.ok()) return FailWith(s.message());
    }
    for (int i = 0; i < cfg_.cluster.workers; ++i) {
      auto a = Common();
      a.insert(a.end(), {"--scheduler", sched, "--rank", std::to_string(i), "--run-dir", run_dir_});
      if (!resume_from_.empty()) a.insert(a.end(), {"--resume-from", resume_from_});
      s = Spawn("worker " + std::to_string(i), PrependRole("worker", a));
      if (!s.ok()) return FailWith(s.message());
    }
    WritePids();
    int http_port = 0;  // the scheduler's "CONTROL HTTP" port file: the progress line's source
    if (auto text = ReadFileToString(port_file); text.ok()) {
      int control = 0;
      std::sscanf(text->c_str(), "%d %d", &control, &http_port);
    }
    for (;;) {
      if (!Pump(200)) return 130;
      if (AnyFailed()) return ReportFailure();
      bool all = true;
      for (const auto& c : children_) all &= c->exited;
      if (all) {
        progress_.Finish();
        return 0;
      }
      progress_.Update(cfg_.cluster.host, http_port);
    }
  }

  static std::vector<std::string> PrependRole(const std::string& role, std::vector<std::string> a) {
    a.insert(a.begin(), role);
    return a;
  }

  void WritePids() {
    nlohmann::json j = nlohmann::json::object();
    j["launcher"] = ::getpid();
    for (const auto& c : children_) j[c->name] = c->pid;
    (void)WriteFileAtomic(run_dir_ + "/pids.json", j.dump(2) + "\n");
  }

  // Forwards output and reaps children for up to timeout_ms. False when a stop signal came.
  bool Pump(int timeout_ms) {
    std::vector<pollfd> fds;
    fds.push_back({g_signal_pipe[0], POLLIN, 0});
    for (const auto& c : children_)
      if (c->out_fd >= 0) fds.push_back({c->out_fd, POLLIN, 0});
    ::poll(fds.data(), fds.size(), timeout_ms);
    bool stop = false;
    unsigned char sig;
    while (::read(g_signal_pipe[0], &sig, 1) == 1) {
      if (sig == SIGINT || sig == SIGTERM) {
        stop = true;
        LOG_WARN << "received " << strsignal(sig) << ": stopping the cluster";
      }
    }
    for (auto& c : children_) Drain(*c);
    Reap();
    return !stop;
  }

  void Drain(Child& c) {
    if (c.out_fd < 0) return;
    char buf[65536];
    for (;;) {
      ssize_t n = ::read(c.out_fd, buf, sizeof(buf));
      if (n > 0) {
        c.partial.append(buf, n);
        size_t pos;
        while ((pos = c.partial.find('\n')) != std::string::npos) {
          Emit(c, c.partial.substr(0, pos));
          c.partial.erase(0, pos + 1);
        }
        continue;
      }
      if (n == 0) {  // EOF: the child closed its output
        if (!c.partial.empty()) Emit(c, c.partial);
        c.partial.clear();
        ::close(c.out_fd);
        c.out_fd = -1;
      }
      return;
    }
  }

  void Emit(Child& c, const std::string& line) {
    // On a terminal the progress line stands for the workers' periodic step lines.
    if (!(progress_.enabled() && ProgressLine::IsProgressLogLine(line))) {
      progress_.Clear();
      std::string out = "[" + c.name + "] " + line + "\n";
      ssize_t ignored = ::write(2, out.data(), out.size());
      (void)ignored;
      progress_.Redraw();
    }
    c.log << line << "\n";
    c.log.flush();
    c.tail.push_back(line);
    if (c.tail.size() > 20) c.tail.pop_front();
  }

  void Reap() {
    for (;;) {
      int status = 0;
      pid_t pid = ::waitpid(-1, &status, WNOHANG);
      if (pid <= 0) return;
      for (auto& c : children_)
        if (c->pid == pid) {
          Drain(*c);
          c->exited = true;
          c->status = status;
          if (Succeeded(*c)) {
            progress_.Clear();
            LOG_INFO << c->name << " (pid " << pid << ") exited cleanly";
            progress_.Redraw();
          }
        }
    }
  }

  bool AnyFailed() const {
    for (const auto& c : children_)
      if (c->exited && !Succeeded(*c)) return true;
    return false;
  }

  int ReportFailure() {
    for (const auto& c : children_) {
      if (!c->exited || Succeeded(*c)) continue;
      std::string msg = c->name + " (pid " + std::to_string(c->pid) + ") " +
                        DescribeExit(c->status) + "; stopping the cluster.";
      LOG_ERROR << msg;
      if (!c->tail.empty()) {
        std::string t = "last lines of " + c->name + ":";
        for (const auto& l : c->tail) t += "\n    " + l;
        LOG_ERROR << t;
      }
      failure_ = msg;
      break;
    }
    return 1;
  }

  int FailWith(const std::string& msg) {
    LOG_ERROR << msg << "; stopping the cluster.";
    failure_ = msg;
    return 1;
  }

  void Teardown() {
    bool any = false;
    for (const auto& c : children_)
      if (!c->exited) {
        ::kill(c->pid, SIGTERM);
        any = true;
      }
    const auto deadline =
        std::chrono::steady_clock::now() + std::chrono::milliseconds(opts_.grace_ms);
    while (any && std::chrono::steady_clock::now() < deadline) {
      Pump(50);
      any = false;
      for (const auto& c : children_) any |= !c->exited;
    }
    for (const auto& c : children_)
      if (!c->exited) {
        LOG_WARN << c->name << " (pid " << c->pid << ") did not stop within " << opts_.grace_ms
                 << " ms: SIGKILL";
        ::kill(c->pid, SIGKILL);
      }
    for (auto& c : children_) {
      if (!c->exited) {
        int status = 0;
        ::waitpid(c->pid, &status, 0);
        c->exited = true;
        c->status = status;
      }
      Drain(*c);
      if (c->out_fd >= 0) ::close(c->out_fd);
      c->out_fd = -1;
    }
  }

  LocalClusterOptions opts_;
  JobConfig cfg_;
  std::string run_dir_;
  std::string resume_from_;  // the checkpoint a resumed run continues from
  uint64_t token_ = 0;
  int64_t start_ms_ = MonotonicMs();
  std::vector<std::unique_ptr<Child>> children_;
  std::string failure_;
  ProgressLine progress_{::isatty(2) == 1 && std::getenv("M6REC_NO_PROGRESS") == nullptr};
};

}  // namespace

int RunLocalCluster(const LocalClusterOptions& opts) { return Launcher(opts).Run(); }

}  // namespace m6rec
