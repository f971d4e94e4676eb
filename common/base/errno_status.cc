#include "common/base/errno_status.h"

#include <cerrno>
#include <cstring>
#include <string>

#include "common/base/format.h"

namespace nodemesh {

absl::Status ErrnoStatus(std::string_view what, int error) {
  const std::string message = fmt::format("{}: {}", what, std::strerror(error));
  switch (error) {
    case ENOENT:
      return absl::NotFoundError(message);
    case EPERM:
    case EACCES:
      return absl::PermissionDeniedError(message);
    case EINVAL:
      return absl::InvalidArgumentError(message);
    default:
      return absl::InternalError(message);
  }
}

}  // namespace nodemesh
