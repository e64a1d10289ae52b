// Process-wide logging to stderr: "HH:MM:SS.mmm L [prefix] message". The prefix names the role
// and rank ("server 1"); the local launcher adds its own prefix and sets M6REC_LOG_PREFIXED=1 so
// lines are not prefixed twice. Thread-safe: each line is written with one write(2).
#pragma once

#include <sstream>
#include <string>

namespace m6rec {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };

void SetLogPrefix(const std::string& prefix);
void SetLogLevel(LogLevel level);
LogLevel GetLogLevel();
bool ParseLogLevel(const std::string& s, LogLevel* out);

class LogMessage {
 public:
  LogMessage(LogLevel level, const char* file, int line);
  ~LogMessage();
  std::ostringstream& stream() { return os_; }

 private:
  LogLevel level_;
  std::ostringstream os_;
};

// Turns the stream expression into void so the logging macro is a single expression.
struct LogVoidify {
  void operator&(std::ostream&) {}
};

}  // namespace m6rec

#define M6_LOG_IF(level)                                                 \
  !(static_cast<int>(level) >= static_cast<int>(::m6rec::GetLogLevel())) \
      ? (void)0                                                          \
      : ::m6rec::LogVoidify() & ::m6rec::LogMessage(level, __FILE__, __LINE__).stream()

#define LOG_DEBUG M6_LOG_IF(::m6rec::LogLevel::kDebug)
#define LOG_INFO M6_LOG_IF(::m6rec::LogLevel::kInfo)
#define LOG_WARN M6_LOG_IF(::m6rec::LogLevel::kWarn)
#define LOG_ERROR M6_LOG_IF(::m6rec::LogLevel::kError)
