#include "common/base/log.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <ctime>

namespace nodemesh {
namespace {

std::atomic<LogLevel> min_level{LogLevel::kInfo};

std::string_view LevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug:
      return "debug";
    case LogLevel::kInfo:
      return "info";
    case LogLevel::kWarning:
      return "warning";
    case LogLevel::kError:
      return "error";
  }
  return "?";
}

}  // namespace

void SetLogLevel(LogLevel level) { min_level.store(level, std::memory_order_relaxed); }

LogLevel CurrentLogLevel() { return min_level.load(std::memory_order_relaxed); }

std::string_view LogLevelName(LogLevel level) { return LevelName(level); }

bool LogEnabled(LogLevel level) { return level >= min_level.load(std::memory_order_relaxed); }

bool ParseLogLevel(std::string_view text, LogLevel* level) {
  for (LogLevel candidate :
       {LogLevel::kDebug, LogLevel::kInfo, LogLevel::kWarning, LogLevel::kError}) {
    if (text == LevelName(candidate)) {
      *level = candidate;
      return true;
    }
  }
  return false;
}

void WriteLog(LogLevel level, std::string_view message) {
  const auto now = std::chrono::system_clock::now();
  const std::time_t seconds = std::chrono::system_clock::to_time_t(now);
  const auto millis =
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm utc;
  gmtime_r(&seconds, &utc);
  const std::string line = fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z {:<7} {}\n",
                                       utc.tm_year + 1900, utc.tm_mon + 1, utc.tm_mday, utc.tm_hour,
                                       utc.tm_min, utc.tm_sec, millis, LevelName(level), message);
  // One write per line, so lines from different threads never interleave.
  [[maybe_unused]] const ssize_t written = ::write(STDERR_FILENO, line.data(), line.size());
}

}  // namespace nodemesh
