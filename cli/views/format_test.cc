#include "cli/views/format.h"

#include <catch2/catch.hpp>

namespace nodemesh::cli {
namespace {

TEST_CASE("latencies are exact to the microsecond below one second", "[format]") {
  CHECK(FormatLatency(0) == "0.000ms");
  CHECK(FormatLatency(499) == "0.000ms");
  CHECK(FormatLatency(500) == "0.001ms");
  CHECK(FormatLatency(734000) == "0.734ms");
  CHECK(FormatLatency(12500000) == "12.500ms");
  CHECK(FormatLatency(1500000) == "1.500ms");
  CHECK(FormatLatency(999999499) == "999.999ms");
}

TEST_CASE("latencies from one second on are in seconds to the millisecond", "[format]") {
  CHECK(FormatLatency(999999500) == "1.000s");  // would round to "1000.000ms"
  CHECK(FormatLatency(1000000000) == "1.000s");
  CHECK(FormatLatency(1234567890) == "1.235s");
  CHECK(FormatLatency(61000000000) == "61.000s");
  CHECK(FormatLatency(-5) == "0.000ms");
}

TEST_CASE("request rates keep two significant digits below 0.1", "[format]") {
  CHECK(FormatRps(1.9) == "1.9rps");
  CHECK(FormatRps(120) == "120.0rps");
  CHECK(FormatRps(0.1) == "0.1rps");
  CHECK(FormatRps(0.096) == "0.1rps");
  CHECK(FormatRps(0.05) == "0.05rps");
  CHECK(FormatRps(1.0 / 60) == "0.017rps");
  CHECK(FormatRps(1.0 / 3600) == "0.00028rps");
  CHECK(FormatRps(0.00996) == "0.01rps");
  CHECK(FormatRps(0) == "0.0rps");
}

TEST_CASE("success rates never round failures or successes away", "[format]") {
  CHECK(FormatSuccessRate(1) == "100.00%");
  CHECK(FormatSuccessRate(0.9735) == "97.35%");
  CHECK(FormatSuccessRate(0) == "0.00%");
  CHECK(FormatSuccessRate(29999.0 / 30000) == "99.99%");
  CHECK(FormatSuccessRate(1.0 / 30000) == "0.01%");
  CHECK(FormatSuccessRate(1.5) == "100.00%");
}

TEST_CASE("spans of seconds read like windows", "[format]") {
  CHECK(FormatSeconds(0) == "0s");
  CHECK(FormatSeconds(12) == "12s");
  CHECK(FormatSeconds(60) == "1m");
  CHECK(FormatSeconds(90) == "1m30s");
  CHECK(FormatSeconds(3600) == "1h");
  CHECK(FormatSeconds(3900) == "1h5m");
  CHECK(FormatSeconds(3903) == "1h5m");
}

TEST_CASE("bytes", "[format]") {
  CHECK(FormatBytes(5) == "5B");
  CHECK(FormatBytesPerSecond(2048.25) == "2048.2B/s");
  CHECK(FormatBytesPerSecond(0) == "0.0B/s");
}

TEST_CASE("gRPC statuses by name", "[format]") {
  const std::vector<std::string> names = {
      "OK",       "Cancelled",      "Unknown",          "InvalidArgument",   "DeadlineExceeded",
      "NotFound", "AlreadyExists",  "PermissionDenied", "ResourceExhausted", "FailedPrecondition",
      "Aborted",  "OutOfRange",     "Unimplemented",    "Internal",          "Unavailable",
      "DataLoss", "Unauthenticated"};
  for (size_t code = 0; code < names.size(); ++code) {
    CHECK(GrpcStatusName(static_cast<int32_t>(code)) == names[code]);
  }
  CHECK(GrpcStatusName(17) == "17");
  CHECK(GrpcStatusName(-1) == "-1");
}

TEST_CASE("HTTP/2 error codes by name", "[format]") {
  CHECK(Http2ErrorName(0) == "NO_ERROR");
  CHECK(Http2ErrorName(7) == "REFUSED_STREAM");
  CHECK(Http2ErrorName(8) == "CANCEL");
  CHECK(Http2ErrorName(13) == "HTTP_1_1_REQUIRED");
  CHECK(Http2ErrorName(0x1f) == "0x1f");
}

TEST_CASE("tables align text left and numbers right, with no trailing blanks", "[format]") {
  Table table({{"NAME", Table::Align::kLeft}, {"RPS"}, {"NOTE", Table::Align::kLeft}});
  table.AddRow({"web", "1.9rps", ""});
  table.AddRow({"emoji-svc", "12.0rps", "x"});
  CHECK(table.Render() ==
        "NAME            RPS   NOTE\n"
        "web          1.9rps\n"
        "emoji-svc   12.0rps   x\n");
}

TEST_CASE("columns are as wide as their text reads, not its bytes", "[format]") {
  CHECK(DisplayWidth("café") == 4);
  Table table({{"ROUTE", Table::Align::kLeft}, {"N"}});
  table.AddRow({"/café", "1"});
  table.AddRow({"/cafe", "2"});
  CHECK(table.Render() ==
        "ROUTE   N\n"
        "/café   1\n"
        "/cafe   2\n");
}

}  // namespace
}  // namespace nodemesh::cli
