#include "parsers/detect.h"

#include <catch2/catch.hpp>

namespace nodemesh::parsers {
namespace {

TEST_CASE("HTTP/1 request lines are detected") {
  CHECK(DetectProtocol("GET / HTTP/1.1\r\n")->protocol == Protocol::kHttp1);
  CHECK(DetectProtocol("DELETE /x HTTP/1.1")->protocol == Protocol::kHttp1);
  CHECK_FALSE(DetectProtocol("GE").has_value());
  CHECK_FALSE(DetectProtocol("GET").has_value());
  CHECK(DetectProtocol("GETS / HTTP/1.1")->protocol == Protocol::kOpaque);
}

}  // namespace
}  // namespace nodemesh::parsers
