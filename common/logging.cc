#include "common/logging.h"

#include <sys/time.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <ctime>

#include "common/mutex.h"

namespace m6rec {
namespace {
std::atomic<int> g_level{static_cast<int>(LogLevel::kInfo)};
Mutex g_prefix_mu;
std::string g_prefix GUARDED_BY(g_prefix_mu);
}  // namespace

void SetLogPrefix(const std::string& prefix) {
  const char* env = std::getenv("M6REC_LOG_PREFIXED");
  MutexLock lock(&g_prefix_mu);
  g_prefix = (env && env[0] == '1') ? std::string() : prefix;
}

void SetLogLevel(LogLevel level) { g_level.store(static_cast<int>(level)); }
LogLevel GetLogLevel() { return static_cast<LogLevel>(g_level.load(std::memory_order_relaxed)); }

bool ParseLogLevel(const std::string& s, LogLevel* out) {
  if (s == "debug")
    *out = LogLevel::kDebug;
  else if (s == "info")
    *out = LogLevel::kInfo;
  else if (s == "warn")
    *out = LogLevel::kWarn;
  else if (s == "error")
    *out = LogLevel::kError;
  else
    return false;
  return true;
}

LogMessage::LogMessage(LogLevel level, const char*, int) : level_(level) {}

LogMessage::~LogMessage() {
  struct timeval tv;
  gettimeofday(&tv, nullptr);
  struct tm tm;
  localtime_r(&tv.tv_sec, &tm);
  char ts[32];
  std::snprintf(ts, sizeof(ts), "%02d:%02d:%02d.%03d", tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<int>(tv.tv_usec / 1000));
  static const char kLevels[] = {'D', 'I', 'W', 'E'};
  std::string line;
  {
    MutexLock lock(&g_prefix_mu);
    line = std::string(ts) + " " + kLevels[static_cast<int>(level_)] + " " +
           (g_prefix.empty() ? "" : "[" + g_prefix + "] ") + os_.str() + "\n";
  }
  ssize_t ignored = ::write(2, line.data(), line.size());
  (void)ignored;
}

}  // namespace m6rec
