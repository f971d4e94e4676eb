// Leveled logging to stderr, one line per event, safe from any thread.
#pragma once

#include <string_view>

#include "common/base/format.h"

namespace nodemesh {

enum class LogLevel { kDebug, kInfo, kWarning, kError };

void SetLogLevel(LogLevel level);
LogLevel CurrentLogLevel();
std::string_view LogLevelName(LogLevel level);  // "debug", "info", "warning", "error"
bool LogEnabled(LogLevel level);
// Parses "debug", "info", "warning" or "error".
bool ParseLogLevel(std::string_view text, LogLevel* level);
void WriteLog(LogLevel level, std::string_view message);

template <typename... Args>
void Log(LogLevel level, fmt::format_string<Args...> format, Args&&... args) {
  if (LogEnabled(level)) WriteLog(level, fmt::format(format, std::forward<Args>(args)...));
}

}  // namespace nodemesh
