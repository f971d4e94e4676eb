// Whole-file reads: contents byte for byte, relative to a directory, and the reason a file
// cannot be read.
#include "common/base/file.h"

#include <fcntl.h>

#include <catch2/catch.hpp>
#include <string>

#include "common/base/unique_fd.h"
#include "test/lib/files.h"

namespace nodemesh {
namespace {

using testing::TempDir;

TEST_CASE("ReadFile reads a whole file byte for byte", "[unit]") {
  const TempDir dir;
  const std::string bytes = std::string("line\r\n\0binary\xff", 14) + std::string(100'000, 'x');
  const absl::StatusOr<std::string> read = ReadFile(dir.Write("data", bytes));
  REQUIRE(read.ok());
  CHECK(*read == bytes);
  const absl::StatusOr<std::string> empty = ReadFile(dir.Write("empty", ""));
  REQUIRE(empty.ok());
  CHECK(empty->empty());
}

TEST_CASE("ReadFile gives the reason alone for a file it cannot read", "[unit]") {
  const TempDir dir;
  const absl::StatusOr<std::string> missing = ReadFile(dir.path() + "/absent");
  CHECK(missing.status().code() == absl::StatusCode::kNotFound);
  CHECK(missing.status().message() == "No such file or directory");
  const absl::StatusOr<std::string> directory = ReadFile(dir.path());
  CHECK(!directory.ok());
  CHECK(directory.status().message() == "Is a directory");
}

TEST_CASE("ReadFileAt reads relative to an open directory", "[unit]") {
  const TempDir dir;
  dir.Write("name", "in the directory");
  const UniqueFd directory(::open(dir.path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  REQUIRE(directory.valid());
  const absl::StatusOr<std::string> read = ReadFileAt(directory.get(), "name");
  REQUIRE(read.ok());
  CHECK(*read == "in the directory");
  CHECK(ReadFileAt(directory.get(), "absent").status().code() == absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace nodemesh
