// The dashboard's page as meshctl serves it: files built into the binary (embed.cmake writes
// the table at build time), each gzip-compressed, with the SHA-256 of its uncompressed bytes.
// Immutable; any thread.
#pragma once

#include <span>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace nodemesh::cli::dashboard {

struct Asset {
  std::string_view path;          // as served: "/", "/app.js", "/licenses/elkjs.txt"
  std::string_view content_type;  // "text/javascript; charset=utf-8"
  std::string_view sha256;        // hex, of the uncompressed file: its ETag
  std::string_view gzip;          // the file, gzip-compressed
};

// Every asset, in the order of cli/dashboard/CMakeLists.txt.
std::span<const Asset> Assets();

// The asset served at `path`, or nullptr.
const Asset* FindAsset(std::string_view path);

// The asset's bytes, for a client that does not take gzip.
absl::StatusOr<std::string> Uncompressed(const Asset& asset);

}  // namespace nodemesh::cli::dashboard
