// meshctl shell: an interactive look inside one node's agent and kernel programs, through
// the agent's admin API (admin_client.h). Each command fetches what it shows at the time it
// runs; nothing is cached.
#pragma once

#include <ostream>
#include <string>
#include <string_view>
#include <vector>

#include "cli/cancel.h"
#include "cli/shell/admin_client.h"
#include "cli/views/views.h"

namespace nodemesh::cli {

class Shell {
 public:
  // `format`: kTable, or kJson for every command's result as JSON (`-o json`). `cancel`
  // stops a live command (tap); the REPL re-arms it after each command.
  Shell(AdminClient& agent, OutputFormat format, CancelSource& cancel)
      : agent_(agent), format_(format), cancel_(cancel) {}

  struct Outcome {
    int code = 0;  // 0 done, 1 a failure (the agent, the kernel), 2 a usage error
    bool exit = false;
  };
  // Runs one command line; prints its result on `out`, what went wrong and what to do on
  // `err`.
  Outcome Run(std::string_view line, std::ostream& out, std::ostream& err);

  // The words that may follow `before` (the line's complete words) and start with
  // `prefix`: command names, pod names and connection ids (asked of the agent now), map
  // names, levels, flags. Sorted, unique.
  std::vector<std::string> Complete(const std::vector<std::string>& before,
                                    std::string_view prefix);

  // The node the agent runs on, or empty when it does not answer.
  std::string Node();

  CancelSource& cancel() { return cancel_; }

 private:
  AdminClient& agent_;
  OutputFormat format_;
  CancelSource& cancel_;
};

// The command names, in the order help lists them.
std::vector<std::string> ShellCommandNames();

// Reads commands with line editing (libedit), history in `history_path` and Tab
// completion, until `exit` or end of input. Ctrl-C clears the line being typed, and stops
// a live command (tap) without leaving the shell.
int RunShellRepl(Shell& shell, const std::string& history_path, std::ostream& out,
                 std::ostream& err);

}  // namespace nodemesh::cli
