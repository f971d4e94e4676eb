// meshctl run in this process for the command tests: arguments in, exit code and what it
// printed out, at the canned answers' clock (golden.h's kNow) and with the environment given.
#pragma once

#include <algorithm>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <sstream>
#include <streambuf>
#include <string>
#include <vector>

#include "cli/cancel.h"
#include "cli/golden.h"
#include "cli/meshctl.h"

namespace nodemesh::cli::testing {

struct Result {
  int code = -1;
  std::string out, err;
};

// Standard output a test can watch while a command still writes to it.
class WatchedOutput : public std::streambuf {
 public:
  std::string text() const {
    std::lock_guard lock(mutex_);
    return text_;
  }
  int lines() const {
    std::lock_guard lock(mutex_);
    return static_cast<int>(std::count(text_.begin(), text_.end(), '\n'));
  }

 protected:
  // No put area: every write comes here or to overflow().
  std::streamsize xsputn(const char* data, std::streamsize size) override {
    std::lock_guard lock(mutex_);
    text_.append(data, static_cast<size_t>(size));
    return size;
  }
  int_type overflow(int_type c) override {
    if (c == traits_type::eof()) return traits_type::not_eof(c);
    std::lock_guard lock(mutex_);
    text_ += traits_type::to_char_type(c);
    return c;
  }

 private:
  mutable std::mutex mutex_;
  std::string text_;
};

// Runs meshctl with `args`; `tty` says standard output is a terminal, `cancel` is its
// Ctrl-C, `watched` (if given) takes its standard output as it comes.
inline Result Run(const std::vector<std::string>& args, std::map<std::string, std::string> env = {},
                  bool tty = false, CancelSource* cancel = nullptr,
                  WatchedOutput* watched = nullptr) {
  std::ostringstream own_out, err;
  std::ostream watched_out(watched);
  std::ostream& out = watched != nullptr ? watched_out : own_out;
  CancelSource never;
  const Context context{
      .out = out,
      .err = err,
      .out_is_tty = tty,
      .getenv = [env](const std::string& name) -> std::optional<std::string> {
        const auto it = env.find(name);
        if (it == env.end()) return std::nullopt;
        return it->second;
      },
      .now_unix_seconds = [] { return kNow; },
      .cancel = cancel != nullptr ? *cancel : never,
  };
  Result result;
  result.code = RunMeshctl(args, context);
  result.out = watched != nullptr ? watched->text() : own_out.str();
  result.err = err.str();
  return result;
}

}  // namespace nodemesh::cli::testing
