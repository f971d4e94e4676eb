#include "common/http/browser_guard.h"

#include <string>

#include "common/base/format.h"

namespace nodemesh::http {

std::optional<HttpResponse> RefuseForeignRequest(const HttpRequest& request, uint16_t port) {
  const std::string_view host = request.Header("host");
  if (host != fmt::format("127.0.0.1:{}", port) && host != fmt::format("localhost:{}", port) &&
      host != fmt::format("[::1]:{}", port)) {
    return HttpResponse(421, "text/plain; charset=utf-8", "");
  }
  if (const std::string_view origin = request.Header("origin");
      !origin.empty() && origin != "http://" + std::string(host)) {
    return HttpResponse(403, "text/plain; charset=utf-8",
                        fmt::format("requests from {} are refused: this server answers "
                                    "its own pages only\n",
                                    origin));
  }
  if (const std::string_view site = request.Header("sec-fetch-site");
      !site.empty() && site != "same-origin" && site != "none") {
    return HttpResponse(403, "text/plain; charset=utf-8",
                        fmt::format("a {} request is refused: this server answers its own "
                                    "pages only\n",
                                    site));
  }
  if (request.method != "GET") {
    HttpResponse refused(
        405, "text/plain; charset=utf-8",
        fmt::format("{} is not allowed: this server answers GET only\n", request.method));
    refused.headers.emplace_back("Allow", "GET");
    return refused;
  }
  return std::nullopt;
}

}  // namespace nodemesh::http
