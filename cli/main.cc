// meshctl: the command line of nodemesh.
#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <ctime>
#include <iostream>
#include <thread>

#include "cli/meshctl.h"

int main(int argc, char** argv) {
  using nodemesh::cli::CancelSource;
  // Ctrl-C is taken by a thread of our own rather than a handler: cancelling an RPC is not
  // async-signal-safe. Blocked before any thread starts, so every thread inherits it.
  static sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  static CancelSource cancel;
  std::thread([] {
    for (;;) {
      int signal_number = 0;
      if (sigwait(&signals, &signal_number) != 0) continue;
      // A command with nothing to stop cleanly (or a second Ctrl-C) ends at once.
      if (!cancel.Cancel()) std::_Exit(128 + signal_number);
    }
  }).detach();

  const nodemesh::cli::Context context{
      .out = std::cout,
      .err = std::cerr,
      .out_is_tty = isatty(STDOUT_FILENO) == 1,
      .in_is_tty = isatty(STDIN_FILENO) == 1,
      .getenv = [](const std::string& name) -> std::optional<std::string> {
        const char* value = std::getenv(name.c_str());
        if (value == nullptr) return std::nullopt;
        return std::string(value);
      },
      .now_unix_seconds = [] { return static_cast<int64_t>(std::time(nullptr)); },
      .cancel = cancel,
  };
  const int code =
      nodemesh::cli::RunMeshctl(std::vector<std::string>(argv + 1, argv + argc), context);
  std::cout.flush();
  return code;
}
