// Opening a URL in the user's browser, for meshctl dashboard (Linux desktops: xdg-open).
#pragma once

#include <functional>
#include <optional>
#include <string>

namespace nodemesh::cli::dashboard {

// Starts `xdg-open URL` when there is a display (DISPLAY or WAYLAND_DISPLAY set, as `getenv`
// reads them) and xdg-open is on PATH; nothing otherwise. It is not waited for: it runs in
// a session of its own, its output discarded, and a detached thread reaps it whenever it
// ends (xdg-open may last as long as the browser it started). Returns why it could not be
// started, or "" (started, or nothing to start).
std::string OpenInBrowser(
    const std::string& url,
    const std::function<std::optional<std::string>(const std::string&)>& getenv);

}  // namespace nodemesh::cli::dashboard
