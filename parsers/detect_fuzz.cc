// libFuzzer target: protocol detection over any prefix of any client bytes.
#include <cstddef>
#include <cstdint>

#include "parsers/detect.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  const auto detection = nodemesh::parsers::DetectProtocol(bytes);
  // Detection must be stable: once decided, more bytes never change the verdict.
  if (detection.has_value() && size > 1) {
    const auto shorter = nodemesh::parsers::DetectProtocol(bytes.substr(0, size - 1));
    if (shorter.has_value() && shorter->protocol != detection->protocol) __builtin_trap();
  }
  if (size >= nodemesh::parsers::kMaxDetectionBytes && !detection.has_value()) __builtin_trap();
  return 0;
}
