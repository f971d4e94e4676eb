#include "cli/views/format.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cmath>

namespace nodemesh::cli {

std::string FormatLatency(int64_t nanoseconds) {
  nanoseconds = std::max<int64_t>(nanoseconds, 0);
  // Integer rounding: no binary fraction can turn 1.5 ms into "1.499ms".
  const int64_t microseconds = (nanoseconds + 500) / 1000;
  if (microseconds < 1'000'000) {
    return fmt::format("{}.{:03}ms", microseconds / 1000, microseconds % 1000);
  }
  const int64_t milliseconds = (nanoseconds + 500'000) / 1'000'000;
  return fmt::format("{}.{:03}s", milliseconds / 1000, milliseconds % 1000);
}

std::string FormatRps(double rps) {
  if (!(rps > 0)) return "0.0rps";
  // Anything that one decimal shows as at least 0.1.
  if (rps >= 0.095) return fmt::format("{:.1f}rps", rps);
  const int decimals = 1 - static_cast<int>(std::floor(std::log10(rps)));
  std::string digits = fmt::format("{:.{}f}", rps, decimals);
  while (digits.back() == '0') digits.pop_back();
  if (digits.back() == '.') digits.pop_back();
  return digits + "rps";
}

std::string FormatSuccessRate(double rate) {
  rate = std::clamp(rate, 0.0, 1.0);
  std::string text = fmt::format("{:.2f}%", rate * 100);
  // Rounding must not hide the failures (or the successes) the user is looking for.
  if (rate < 1 && text == "100.00%") return "99.99%";
  if (rate > 0 && text == "0.00%") return "0.01%";
  return text;
}

std::string FormatBytesPerSecond(double bytes_per_second) {
  return fmt::format("{:.1f}B/s", std::max(bytes_per_second, 0.0));
}

std::string FormatBytes(uint64_t bytes) { return fmt::format("{}B", bytes); }

std::string FormatSeconds(int64_t seconds) {
  seconds = std::max<int64_t>(seconds, 0);
  const int64_t hours = seconds / 3600, minutes = seconds % 3600 / 60, rest = seconds % 60;
  std::string text;
  if (hours > 0) text += fmt::format("{}h", hours);
  if (minutes > 0) text += fmt::format("{}m", minutes);
  // Seconds are left out of spans of hours: "1h5m", not "1h5m3s".
  if (rest > 0 && hours == 0) text += fmt::format("{}s", rest);
  return text.empty() ? "0s" : text;
}

std::string GrpcStatusName(int32_t code) {
  static constexpr std::array<std::string_view, 17> kNames = {
      "OK",       "Cancelled",      "Unknown",          "InvalidArgument",   "DeadlineExceeded",
      "NotFound", "AlreadyExists",  "PermissionDenied", "ResourceExhausted", "FailedPrecondition",
      "Aborted",  "OutOfRange",     "Unimplemented",    "Internal",          "Unavailable",
      "DataLoss", "Unauthenticated"};
  if (code >= 0 && static_cast<size_t>(code) < kNames.size()) return std::string(kNames[code]);
  return fmt::format("{}", code);
}

std::string Http2ErrorName(uint32_t code) {
  static constexpr std::array<std::string_view, 14> kNames = {"NO_ERROR",
                                                              "PROTOCOL_ERROR",
                                                              "INTERNAL_ERROR",
                                                              "FLOW_CONTROL_ERROR",
                                                              "SETTINGS_TIMEOUT",
                                                              "STREAM_CLOSED",
                                                              "FRAME_SIZE_ERROR",
                                                              "REFUSED_STREAM",
                                                              "CANCEL",
                                                              "COMPRESSION_ERROR",
                                                              "CONNECT_ERROR",
                                                              "ENHANCE_YOUR_CALM",
                                                              "INADEQUATE_SECURITY",
                                                              "HTTP_1_1_REQUIRED"};
  if (code < kNames.size()) return std::string(kNames[code]);
  return fmt::format("0x{:x}", code);
}

size_t DisplayWidth(std::string_view text) {
  // Counts the bytes that start a code point (every byte but UTF-8 continuation bytes).
  return static_cast<size_t>(std::count_if(text.begin(), text.end(), [](char c) {
    return (static_cast<unsigned char>(c) & 0xC0) != 0x80;
  }));
}

void Table::AddRow(std::vector<std::string> cells) {
  cells.resize(columns_.size());
  rows_.push_back(std::move(cells));
}

std::string Table::Render() const {
  std::vector<size_t> widths(columns_.size());
  for (size_t i = 0; i < columns_.size(); ++i) {
    widths[i] = DisplayWidth(columns_[i].header);
    for (const auto& row : rows_) widths[i] = std::max(widths[i], DisplayWidth(row[i]));
  }
  std::string text;
  const auto add_line = [&](auto cell_of) {
    std::string line;
    for (size_t i = 0; i < columns_.size(); ++i) {
      const std::string& cell = cell_of(i);
      const std::string padding(widths[i] - DisplayWidth(cell), ' ');
      if (i > 0) line += "   ";
      if (columns_[i].align == Align::kLeft) {
        line += cell + padding;
      } else {
        line += padding + cell;
      }
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    text += line + "\n";
  };
  add_line([&](size_t i) -> const std::string& { return columns_[i].header; });
  for (const auto& row : rows_) {
    add_line([&](size_t i) -> const std::string& { return row[i]; });
  }
  return text;
}

}  // namespace nodemesh::cli
