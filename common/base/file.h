// Whole files read into memory: configuration, credentials, inventories, /proc and cgroup
// files.
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace nodemesh {

// Everything in the file at `path`. On failure the status's message is the reason alone,
// strerror of the open or read that failed ("No such file or directory"), for the caller to
// name the file in its own words; its code is ErrnoStatus's for that errno (errno_status.h).
absl::StatusOr<std::string> ReadFile(const std::string& path);

// The same for `path` relative to the open directory `directory_fd` (openat(2)), so that a
// walk of a directory that may be replaced meanwhile reads inside the one it opened.
absl::StatusOr<std::string> ReadFileAt(int directory_fd, const std::string& path);

}  // namespace nodemesh
