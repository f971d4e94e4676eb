#include "test/lib/browser.h"

#include <unistd.h>

#include <stdexcept>
#include <string>

#include "test/lib/files.h"
#include "test/lib/process.h"

namespace nodemesh::testing {

const nlohmann::json& BrowserRun::Value(size_t index) const {
  if (index >= steps.size() || !steps[index].contains("value")) {
    throw std::runtime_error("browser step " + std::to_string(index) + " gave no value:\n" +
                             output);
  }
  return steps[index]["value"];
}

BrowserRun RunBrowser(const nlohmann::json& steps, std::chrono::seconds timeout) {
  if (::access("/usr/bin/chromium-headless-shell", X_OK) != 0) {
    throw std::runtime_error("needs chromium-headless-shell: run bash test/install-deps.sh");
  }
  TempDir dir;
  const std::string script = dir.Write("steps.json", steps.dump());
  // browser.py reads its steps on stdin; Process gives none, so a shell redirects the file.
  const CommandResult result =
      RunCommand({"/bin/sh", "-c", "exec /usr/bin/python3 \"$0\" < \"$1\"",
                  std::string(NODEMESH_SOURCE_DIR) + "/test/lib/browser.py", script},
                 timeout);
  if (result.timed_out) {
    throw std::runtime_error("browser.py did not end within " + std::to_string(timeout.count()) +
                             " s:\n" + Tail(result.output));
  }
  BrowserRun run;
  run.output = result.output;
  size_t start = 0;
  while (start < result.output.size()) {
    size_t end = result.output.find('\n', start);
    if (end == std::string::npos) end = result.output.size();
    const std::string line = result.output.substr(start, end - start);
    start = end + 1;
    const nlohmann::json parsed = nlohmann::json::parse(line, nullptr, false);
    if (parsed.is_discarded() || !parsed.is_object()) continue;  // Chromium's own chatter
    if (parsed.contains("console")) {
      run.page_errors = parsed;
    } else {
      run.steps.push_back(parsed);
    }
  }
  run.ok = result.exit_code == 0;
  return run;
}

}  // namespace nodemesh::testing
