#include "common/base/errno_status.h"

#include <cerrno>
#include <cstring>
#include <string>

#include "common/base/format.h"

namespace nodemesh {

absl::Status ErrnoStatus(std::string_view what, int error) {
  return absl::Status(ErrnoStatusCode(error), fmt::format("{}: {}", what, std::strerror(error)));
}

absl::StatusCode ErrnoStatusCode(int error) {
  switch (error) {
    case ENOENT:
      return absl::StatusCode::kNotFound;
    case EPERM:
    case EACCES:
      return absl::StatusCode::kPermissionDenied;
    case EINVAL:
      return absl::StatusCode::kInvalidArgument;
    default:
      return absl::StatusCode::kInternal;
  }
}

}  // namespace nodemesh
