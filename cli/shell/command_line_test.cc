#include "cli/shell/command_line.h"

#include <catch2/catch.hpp>

namespace nodemesh::cli {
namespace {

using Words = std::vector<std::string>;

TEST_CASE("shell line: words as a shell splits them", "[shell]") {
  CHECK(*SplitShellWords("") == Words{});
  CHECK(*SplitShellWords("  pods  ") == Words{"pods"});
  CHECK(*SplitShellWords("conns\temojivoto/web-1") == Words{"conns", "emojivoto/web-1"});
  CHECK(*SplitShellWords("a 'b c' \"d \\\"e\\\"\" f\\ g ''") ==
        Words{"a", "b c", "d \"e\"", "f g", ""});
  CHECK(SplitShellWords("conns 'web").status().message() == "unclosed quote '");
}

TEST_CASE("shell line: flags apart from words", "[shell]") {
  absl::StatusOr<ShellLine> line = ParseShellLine("conns web-1 --proto http1 -o json");
  REQUIRE(line.ok());
  CHECK(line->words == Words{"conns", "web-1"});
  CHECK(line->flags == std::map<std::string, std::string>{{"proto", "http1"}, {"output", "json"}});

  line = ParseShellLine("kernel map counters --limit=5 --output=table");
  REQUIRE(line.ok());
  CHECK(line->words == Words{"kernel", "map", "counters"});
  CHECK(line->flags == std::map<std::string, std::string>{{"limit", "5"}, {"output", "table"}});

  CHECK(ParseShellLine("conns --proto").status().message() == "--proto needs a value");
  CHECK(ParseShellLine("pods --all x")->flags == std::map<std::string, std::string>{{"all", "x"}});
  CHECK(ParseShellLine("pods -a").status().message() ==
        "unknown flag -a: flags are spelt --NAME VALUE (see help COMMAND), and -o table|json");
  // A lone dash is a word, not a flag.
  CHECK(ParseShellLine("help -")->words == Words{"help", "-"});
}

}  // namespace
}  // namespace nodemesh::cli
