// The dashboard's browser tests: test/lib/browser.py (headless Chromium over its debugging
// pipe) run as a process with a deadline, its JSON lines parsed.
//
// Every call starts its own Chromium and ends it (browser.py kills it by its pid and removes
// its profile, also when a step fails). Not thread-safe only in the sense that each call
// blocks its thread until browser.py ends.
#pragma once

#include <chrono>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace nodemesh::testing {

struct BrowserRun {
  bool ok = false;                    // every step passed and the page threw nothing
  std::vector<nlohmann::json> steps;  // one result per step run: {"ok": true, ...} or the error
  nlohmann::json page_errors;         // {"console": [...], "exceptions": [...]}
  std::string output;                 // all browser.py printed, for failure messages

  // The value of the step at `index` (an eval's or a wait's).
  const nlohmann::json& Value(size_t index) const;
};

// Runs `steps` (browser.py's JSON steps). Throws std::runtime_error with "needs
// chromium-headless-shell: run bash test/install-deps.sh" when Chromium is not installed,
// and when browser.py does not end within `timeout` (it is killed then).
BrowserRun RunBrowser(const nlohmann::json& steps,
                      std::chrono::seconds timeout = std::chrono::seconds(120));

}  // namespace nodemesh::testing
