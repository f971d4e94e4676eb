// Opening a URL in the user's browser, for meshctl dashboard (Linux desktops: xdg-open).
#pragma once

#include <functional>
#include <optional>
#include <string>

namespace nodemesh::cli::dashboard {

// Starts `xdg-open URL` when a display is there (DISPLAY or WAYLAND_DISPLAY set) and
// xdg-open is on PATH; `getenv` reads the environment. Does not wait for it: it runs in a
// session of its own with no terminal output, and a thread reaps it when it ends. Returns
// whether it was started; a reason on stderr is the caller's to print when it was not but
// should have been (the error of the start).
struct BrowserStart {
  bool started = false;
  std::string problem;  // set when a display and xdg-open were there and it failed to start
};
BrowserStart OpenInBrowser(
    const std::string& url,
    const std::function<std::optional<std::string>(const std::string&)>& getenv);

}  // namespace nodemesh::cli::dashboard
