// How meshctl writes numbers, durations and tables: one set of rules for every command, so
// that the same latency reads the same in `stat`, `routes`, `top`, `edges` and `tap`.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace nodemesh::cli {

// Below one second in milliseconds to the microsecond ("0.734ms", "12.500ms"), from one
// second on in seconds to the millisecond ("1.234s"): sub-millisecond precision where it
// matters and no rounding of slow requests down to a bucket boundary.
std::string FormatLatency(int64_t nanoseconds);

// Requests per second, as Linkerd writes them ("1.9rps"), with two significant digits for
// rates below 0.1 that one decimal would round to zero ("0.05rps", "0.017rps").
std::string FormatRps(double rps);

// A success rate in 0..1 as a percentage with two decimals ("97.35%"). A rate with any
// failure never reads "100.00%", and one with any success never reads "0.00%".
std::string FormatSuccessRate(double rate);

std::string FormatBytesPerSecond(double bytes_per_second);  // "1234.5B/s"
std::string FormatBytes(uint64_t bytes);                    // "5B"

// A span of whole seconds: "45s", "1m", "1m30s", "1h", "1h5m".
std::string FormatSeconds(int64_t seconds);

// The gRPC status code's name ("OK", "Unknown", "DeadlineExceeded", ...), or the number.
std::string GrpcStatusName(int32_t code);

// The HTTP/2 error code's name ("CANCEL", "REFUSED_STREAM", ...), or its hex value.
std::string Http2ErrorName(uint32_t code);

// Columns separated by three spaces, each as wide as its widest cell, as Linkerd's
// tables are; no trailing blanks.
class Table {
 public:
  enum class Align { kLeft, kRight };
  struct Column {
    std::string header;
    Align align = Align::kRight;
  };

  explicit Table(std::vector<Column> columns) : columns_(std::move(columns)) {}
  // `cells` has one entry per column.
  void AddRow(std::vector<std::string> cells);
  size_t rows() const { return rows_.size(); }
  std::string Render() const;

 private:
  std::vector<Column> columns_;
  std::vector<std::vector<std::string>> rows_;
};
// Columns are declared {"NAME", Align::kLeft} by every view.
using Align = Table::Align;

// Terminal columns taken by UTF-8 `text` (one per code point: names and routes are not
// expected to hold wide characters).
size_t DisplayWidth(std::string_view text);

}  // namespace nodemesh::cli
