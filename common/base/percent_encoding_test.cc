// Percent-encoding and decoding: what is kept, what is escaped, round trips, and escapes that
// are not escapes.
#include "common/base/percent_encoding.h"

#include <catch2/catch.hpp>
#include <string>

namespace nodemesh {
namespace {

TEST_CASE("PercentEncode keeps the unreserved characters and escapes every other byte", "[unit]") {
  CHECK(PercentEncode("AZaz09-._~") == "AZaz09-._~");
  CHECK(PercentEncode("") == "");
  // A label selector, a namespaced name, a query's own delimiters.
  CHECK(PercentEncode("app=web,tier!=db") == "app%3Dweb%2Ctier%21%3Ddb");
  CHECK(PercentEncode("emojivoto/web-1") == "emojivoto%2Fweb-1");
  CHECK(PercentEncode("a b+c&d?e#f%g") == "a%20b%2Bc%26d%3Fe%23f%25g");
  // Bytes past ASCII, and NUL, in uppercase hex.
  CHECK(PercentEncode("\xc3\xa9") == "%C3%A9");
  CHECK(PercentEncode(std::string("\0\xff", 2)) == "%00%FF");
}

TEST_CASE("PercentEncode keeps what it is asked to keep besides", "[unit]") {
  CHECK(PercentEncode("/api/users?id=1", "/") == "/api/users%3Fid%3D1");
  CHECK(PercentEncode("a b", "/") == "a%20b");
}

TEST_CASE("PercentDecode reads back what PercentEncode wrote", "[unit]") {
  std::string every_byte;
  for (int byte = 0; byte < 256; ++byte) every_byte += static_cast<char>(byte);
  CHECK(PercentDecode(PercentEncode(every_byte)) == every_byte);
  CHECK(QueryDecode(PercentEncode(every_byte)) == every_byte);
  CHECK(PercentDecode(PercentEncode(every_byte, "/")) == every_byte);
  CHECK(PercentDecode("%c3%A9") == "\xc3\xa9");  // either case of hex digit
}

TEST_CASE("PercentDecode keeps an escape that is not one as written", "[unit]") {
  CHECK(PercentDecode("100%") == "100%");
  CHECK(PercentDecode("%4") == "%4");
  CHECK(PercentDecode("%zz%41") == "%zzA");
  CHECK(PercentDecode("%%41") == "%A");
  CHECK(PercentDecode("%41%") == "A%");
  CHECK(PercentDecode("50% off") == "50% off");
}

TEST_CASE("a '+' is a space in a query only", "[unit]") {
  CHECK(PercentDecode("a+b%2Bc") == "a+b+c");
  CHECK(QueryDecode("a+b%2Bc") == "a b+c");
  CHECK(QueryDecode("%zz+") == "%zz ");
}

}  // namespace
}  // namespace nodemesh
