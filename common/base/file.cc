#include "common/base/file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/base/errno_status.h"
#include "common/base/unique_fd.h"

namespace nodemesh {
namespace {

absl::Status ReadError(int error) {
  return absl::Status(ErrnoStatusCode(error), std::strerror(error));
}

}  // namespace

absl::StatusOr<std::string> ReadFile(const std::string& path) { return ReadFileAt(AT_FDCWD, path); }

absl::StatusOr<std::string> ReadFileAt(int directory_fd, const std::string& path) {
  const UniqueFd fd(::openat(directory_fd, path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return ReadError(errno);
  std::string contents;
  char buffer[16384];
  while (true) {
    const ssize_t n = ::read(fd.get(), buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ReadError(errno);
    if (n == 0) return contents;
    contents.append(buffer, static_cast<size_t>(n));
  }
}

}  // namespace nodemesh
