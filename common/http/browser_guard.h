// What a plain loopback server (HttpServer::ListenLoopback) serving a browser checks before
// anything else: that a request comes from its own page, not from a page of another site the
// same browser shows. Loopback keeps other machines out, not other sites' scripts: a page
// elsewhere may send requests to 127.0.0.1:PORT, or make a name of its own resolve to
// 127.0.0.1 (DNS rebinding) and read the answers as its own origin. Pure; any thread.
#pragma once

#include <cstdint>
#include <optional>

#include "common/http/routes.h"

namespace nodemesh::http {

// The answer refusing `request` to a loopback server on `port`, or nullopt when it may be
// served:
//   - Host must be 127.0.0.1:PORT, localhost:PORT or [::1]:PORT, else 421 with no body (a
//     rebinding page's requests carry its own name);
//   - Origin, when sent, must be http:// and that Host, and Sec-Fetch-Site, when sent,
//     same-origin or none, else 403;
//   - the method must be GET, else 405 with Allow: GET (nothing such a server serves changes
//     state, so no form or script of another site can make it do something).
std::optional<HttpResponse> RefuseForeignRequest(const HttpRequest& request, uint16_t port);

}  // namespace nodemesh::http
