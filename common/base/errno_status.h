// A failed system call as an absl::Status.
#pragma once

#include <string_view>

#include "absl/status/status.h"

namespace nodemesh {

// "what: strerror(error)", with the status code that fits the error (ErrnoStatusCode).
absl::Status ErrnoStatus(std::string_view what, int error);

// The status code that fits an errno: ENOENT: NOT_FOUND, EPERM and EACCES: PERMISSION_DENIED,
// EINVAL: INVALID_ARGUMENT, else INTERNAL.
absl::StatusCode ErrnoStatusCode(int error);

}  // namespace nodemesh
