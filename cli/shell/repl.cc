// The interactive side of meshctl shell: libedit's line editing, history and completion.
#include <histedit.h>

#include <cstdio>
#include <cstring>
#include <ostream>

#include "cli/shell/command_line.h"
#include "cli/shell/shell.h"
#include "common/base/format.h"

namespace nodemesh::cli {
namespace {

std::string prompt_text;  // libedit asks for the prompt through a plain function

char* Prompt(EditLine*) { return prompt_text.data(); }

Shell* ShellOf(EditLine* editor) {
  void* data = nullptr;
  el_get(editor, EL_CLIENTDATA, &data);
  return static_cast<Shell*>(data);
}

// Tab: completes the word under the cursor, or lists the candidates.
unsigned char CompleteWord(EditLine* editor, int) {
  const LineInfo* line = el_line(editor);
  const std::string before(line->buffer, line->cursor);
  const size_t space = before.find_last_of(" \t");
  const std::string prefix = space == std::string::npos ? before : before.substr(space + 1);
  absl::StatusOr<std::vector<std::string>> words =
      SplitShellWords(space == std::string::npos ? "" : before.substr(0, space));
  if (!words.ok()) return CC_REFRESH_BEEP;
  const std::vector<std::string> candidates = ShellOf(editor)->Complete(*words, prefix);
  if (candidates.empty()) return CC_REFRESH_BEEP;
  if (candidates.size() == 1) {
    const std::string rest = candidates[0].substr(prefix.size()) + " ";
    el_insertstr(editor, rest.c_str());
    return CC_REFRESH;
  }
  // Candidates are sorted: their common prefix is that of the first and the last.
  const std::string& first = candidates.front();
  const std::string& last = candidates.back();
  size_t common = 0;
  while (common < first.size() && common < last.size() && first[common] == last[common]) ++common;
  if (common > prefix.size()) {
    el_insertstr(editor, first.substr(prefix.size(), common - prefix.size()).c_str());
    return CC_REFRESH;
  }
  std::string list = "\n";
  for (const std::string& candidate : candidates) list += candidate + "  ";
  list += "\n";
  std::fputs(list.c_str(), stdout);
  std::fflush(stdout);
  return CC_REDISPLAY;
}

// Ctrl-C at the prompt: the line is dropped and a new prompt shown; the shell stays.
unsigned char ClearLine(EditLine* editor, int) {
  const LineInfo* line = el_line(editor);
  el_cursor(editor, static_cast<int>(line->lastchar - line->cursor));
  line = el_line(editor);
  el_deletestr(editor, static_cast<int>(line->cursor - line->buffer));
  std::fputs("^C\n", stdout);
  std::fflush(stdout);
  return CC_REDISPLAY;
}

}  // namespace

int RunShellRepl(Shell& shell, const std::string& history_path, std::ostream& out,
                 std::ostream& err) {
  const std::string node = shell.Node();
  prompt_text = node.empty() ? "meshctl> " : fmt::format("meshctl@{}> ", node);
  if (node.empty()) {
    // Say at once what is wrong; the shell stays open for when the agent comes up.
    shell.Run("version", out, err);
  }
  EditLine* editor = el_init("meshctl", stdin, stdout, stderr);
  History* history = history_init();
  HistEvent event;
  ::history(history, &event, H_SETSIZE, 1000);
  ::history(history, &event, H_SETUNIQUE, 1);
  if (!history_path.empty()) ::history(history, &event, H_LOAD, history_path.c_str());
  el_set(editor, EL_EDITOR, "emacs");
  el_set(editor, EL_HIST, ::history, history);
  el_set(editor, EL_PROMPT, Prompt);
  el_set(editor, EL_CLIENTDATA, &shell);
  el_set(editor, EL_ADDFN, "nm-complete", "Complete a command, pod or connection id", CompleteWord);
  el_set(editor, EL_BIND, "^I", "nm-complete", nullptr);
  el_set(editor, EL_ADDFN, "nm-clear-line", "Drop the line being typed", ClearLine);
  el_set(editor, EL_BIND, "^C", "nm-clear-line", nullptr);
  // While a line is edited, Ctrl-C is a key (bound above), not SIGINT, which would reach
  // meshctl's signal thread and end the process.
  el_set(editor, EL_SETTY, "-d", "-isig", nullptr);
  el_source(editor, nullptr);  // ~/.editrc, as every libedit program reads it

  int code = 0;
  for (;;) {
    int count = 0;
    const char* read = el_gets(editor, &count);
    if (read == nullptr || count <= 0) {
      out << "\n";
      break;
    }
    std::string line(read);
    while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    ::history(history, &event, H_ENTER, line.c_str());
    if (!history_path.empty()) ::history(history, &event, H_SAVE, history_path.c_str());
    Shell::Outcome outcome;
    {
      // While a command runs the terminal is back to normal: Ctrl-C is SIGINT, which
      // meshctl's signal thread turns into a cancel. Something listening keeps it from
      // ending the process; a live command (tap) stops.
      const CancelSource::Registration listening = shell.cancel().OnCancel([] {});
      outcome = shell.Run(line, out, err);
    }
    // The terminal echoed ^C where the output stopped: the prompt goes on a line of its own.
    if (shell.cancel().cancelled()) out << "\n" << std::flush;
    shell.cancel().Reset();
    out.flush();
    err.flush();
    code = outcome.code;
    if (outcome.exit) {
      code = 0;
      break;
    }
  }
  history_end(history);
  el_end(editor);
  return code;
}

}  // namespace nodemesh::cli
