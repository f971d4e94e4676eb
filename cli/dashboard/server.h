// meshctl dashboard's answers to the browser: the page (assets.h), and the aggregator's API
// relayed through meshctl's own AggregatorApi, so that the page sees what the user may see and
// nothing more. It holds no credentials of its own: every API request of the page is one
// call of `api` (a View, a Tap, the NodeAdmin reads of explain).
//
// Routes:
//   GET /?token=T              trades the printed token for the session cookie, 303 to /
//   GET / /app.js /app.css /elk-api.js /elk-worker.min.js /licenses/elkjs.txt
//                              the assets (public code: no cookie needed), ETag, 304
//   GET /api/v1alpha1/...      a view or a tap, as under /apis/nodemesh.io/v1alpha1
//   GET /api/dashboard/info    meshctl's version, its API path, elkjs's version and licence
//   GET /api/dashboard/explain?pod=NS/NAME   the shell's explain of a pod, on its node
// Every /api/ path needs the cookie (401 otherwise). Before any route, RefuseForeignRequest
// (common/http/browser_guard.h) turns away other sites' pages: Host, Origin, GET only.
//
// Threads: Serve runs on the HTTP server's handler threads, several at once, and calls `api`
// from each (GrpcApiClient and KubeApiClient take concurrent calls). A tap has a thread of
// its own running AggregatorApi::Tap into a bounded queue that the handler's stream drains;
// the client leaving (or the server stopping) cancels the tap, and the stream's end joins it.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "cli/api.h"
#include "common/http/routes.h"

namespace nodemesh::cli::dashboard {

inline constexpr std::string_view kCookieName = "nodemesh_dashboard";

struct DashboardSettings {
  std::string token;     // the secret of the printed URL (NewToken)
  uint16_t port = 0;     // the port the server is bound to, which Host must name
  std::string version;   // meshctl's
  std::string api_path;  // how meshctl reaches the aggregator, in its words
  // A tap quiet for this long gets a `{}` line, so the page tells a quiet tap from a dead one
  // (as the aggregator's HTTPS API does).
  std::chrono::milliseconds heartbeat_interval{10000};
  // How long a tap may take to be refused before its answer starts as a 200 stream: a
  // refusal after that ends the stream with an error line instead.
  std::chrono::milliseconds tap_open_wait{2000};
};

// 128 random bits in hex.
std::string NewToken();

class Dashboard {
 public:
  Dashboard(AggregatorApi& api, DashboardSettings settings)
      : api_(api), settings_(std::move(settings)) {}

  // Any request to the server; any thread.
  http::HttpResponse Serve(const http::HttpRequest& request) const;

  const std::string& token() const { return settings_.token; }

 private:
  http::HttpResponse ServeApi(const http::HttpRequest& request) const;
  http::HttpResponse Relay(const http::HttpRequest& request) const;
  http::HttpResponse Explain(const http::HttpRequest& request) const;
  http::HttpResponse Tap(const v1::TapRequestSpec& spec) const;
  bool HasSession(const http::HttpRequest& request) const;

  AggregatorApi& api_;
  const DashboardSettings settings_;
};

}  // namespace nodemesh::cli::dashboard
