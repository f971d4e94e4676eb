#include "cli/shell/command_line.h"

#include "common/base/format.h"

namespace nodemesh::cli {
namespace {}  // namespace

absl::StatusOr<std::vector<std::string>> SplitShellWords(std::string_view line) {
  std::vector<std::string> words;
  std::string word;
  bool in_word = false;
  char quote = 0;
  for (size_t i = 0; i < line.size(); ++i) {
    const char c = line[i];
    if (quote != 0) {
      if (c == quote) {
        quote = 0;
      } else if (c == '\\' && quote == '"' && i + 1 < line.size() &&
                 (line[i + 1] == '"' || line[i + 1] == '\\')) {
        word += line[++i];
      } else {
        word += c;
      }
    } else if (c == '\'' || c == '"') {
      quote = c;
      in_word = true;
    } else if (c == '\\' && i + 1 < line.size()) {
      word += line[++i];
      in_word = true;
    } else if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
      if (in_word) words.push_back(std::move(word));
      word.clear();
      in_word = false;
    } else {
      word += c;
      in_word = true;
    }
  }
  if (quote != 0) return absl::InvalidArgumentError(fmt::format("unclosed quote {}", quote));
  if (in_word) words.push_back(std::move(word));
  return words;
}

absl::StatusOr<ShellLine> ParseShellLine(std::string_view line) {
  absl::StatusOr<std::vector<std::string>> words = SplitShellWords(line);
  if (!words.ok()) return words.status();
  ShellLine parsed;
  for (size_t i = 0; i < words->size(); ++i) {
    const std::string& word = (*words)[i];
    if (word.size() < 2 || word[0] != '-') {
      parsed.words.push_back(word);
      continue;
    }
    const size_t equals = word.find('=');
    const std::string_view spelling = std::string_view(word).substr(0, equals);
    // Which flags a command takes is the command's to say; here only their shape.
    std::string name;
    if (spelling == "-o" || spelling == "--output") {
      name = "output";
    } else if (spelling.starts_with("--") && spelling.size() > 2) {
      name = std::string(spelling.substr(2));
    } else {
      return absl::InvalidArgumentError(fmt::format(
          "unknown flag {}: flags are spelt --NAME VALUE (see help COMMAND), and -o table|json",
          spelling));
    }
    std::string value;
    if (equals != std::string::npos) {
      value = word.substr(equals + 1);
    } else if (i + 1 < words->size()) {
      value = (*words)[++i];
    } else {
      return absl::InvalidArgumentError(fmt::format("{} needs a value", spelling));
    }
    parsed.flags[name] = value;
  }
  return parsed;
}

}  // namespace nodemesh::cli
