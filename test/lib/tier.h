// What the kernel and end-to-end test files share: the root check their tiers need, and
// small file (files.h) and port helpers. Include after catch.hpp.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <string>

#include "test/lib/files.h"
#include "test/lib/peers.h"
#include "test/lib/process.h"

namespace nodemesh::testing {

// Fails the test (never skips it) when not root: network namespaces, cgroups and eBPF need
// it. `tier` is the CTest label to rerun, "kernel" or "e2e".
inline void RequireRoot(const std::string& tier) {
  if (::geteuid() != 0) {
    FAIL(tier << " tests need root (network namespaces, veths, cgroups, eBPF): run them as "
                 "root, e.g. `sudo ctest --preset release -L "
              << tier << "`");
  }
}

// RequireRoot as the first member of a fixture, so that the check runs before any other
// member creates namespaces, cgroups or processes: `RootRequired root_required{"e2e"};`.
struct RootRequired {
  explicit RootRequired(const std::string& tier) { RequireRoot(tier); }
};

// Everything a command reported, for failure messages.
inline std::string Describe(const CommandResult& result) {
  return (result.timed_out ? "timed out; " : "exit " + std::to_string(result.exit_code) + "; ") +
         result.output;
}

// A free TCP port on loopback. It is released before use: another process could take it
// in between, which a test may accept.
inline uint16_t FreeLoopbackPort() {
  const CommandResult probe = RunCommand(
      {kPython, "-c",
       "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])"});
  return static_cast<uint16_t>(std::stoi(probe.output));
}

}  // namespace nodemesh::testing
