// The command line of meshctl shell: words split as a POSIX shell splits them (quotes and
// backslashes), flags apart from the command's words.
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace nodemesh::cli {

struct ShellLine {
  std::vector<std::string> words;            // the command, then its arguments
  std::map<std::string, std::string> flags;  // by long name without dashes: "proto", "output"
};

// "a 'b c' d\ e" -> {a, "b c", "d e"}; an unclosed quote is an error.
absl::StatusOr<std::vector<std::string>> SplitShellWords(std::string_view line);

// Words and flags: `--NAME VALUE`, `--NAME=VALUE`, `-o P`, `-o=P` (every flag has a value;
// which ones a command takes, the command checks). A short flag other than -o, or a flag
// without its value, is an error naming it.
absl::StatusOr<ShellLine> ParseShellLine(std::string_view line);

}  // namespace nodemesh::cli
