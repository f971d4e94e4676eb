// meshctl as a function: arguments, environment, clock and terminal in; exit code out.
// main() passes the real ones, tests their own.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "cli/cancel.h"

namespace nodemesh::cli {

struct Context {
  std::ostream& out;
  std::ostream& err;
  // A terminal gets live views (top refreshing in place); a pipe gets one snapshot.
  bool out_is_tty = false;
  // Whether stdin is a terminal: a kubeconfig's exec plugin may then ask the user (its
  // interactiveMode decides, as with kubectl).
  bool in_is_tty = false;
  std::function<std::optional<std::string>(const std::string&)> getenv;
  std::function<int64_t()> now_unix_seconds;
  // Fired by Ctrl-C: streams and live views end and the command exits 0.
  CancelSource& cancel;
};

// `args` without the program name. Exit codes: 0 success, 1 a failure at run time (the
// aggregator, a file, problems found by check), 2 a usage error.
int RunMeshctl(const std::vector<std::string>& args, const Context& context);

}  // namespace nodemesh::cli
