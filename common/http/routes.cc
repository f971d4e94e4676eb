#include "common/http/routes.h"

#include "common/base/format.h"
#include "common/base/percent_encoding.h"

namespace nodemesh::http {
namespace {

std::map<std::string, std::string> ParseQuery(std::string_view query) {
  std::map<std::string, std::string> out;
  while (!query.empty()) {
    const size_t amp = query.find('&');
    const std::string_view pair = query.substr(0, amp);
    const size_t equals = pair.find('=');
    out[QueryDecode(pair.substr(0, equals))] =
        equals == std::string_view::npos ? "" : QueryDecode(pair.substr(equals + 1));
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
  }
  return out;
}

}  // namespace

HttpRequest HttpRoutes::Request(std::string method, std::string_view target) {
  HttpRequest request;
  request.method = std::move(method);
  const size_t question = target.find('?');
  request.path = std::string(target.substr(0, question));
  if (question != std::string_view::npos) {
    request.raw_query = std::string(target.substr(question + 1));
    request.query = ParseQuery(request.raw_query);
  }
  return request;
}

HttpResponse HttpResponse::Stream(int status, std::string content_type,
                                  std::function<void(ResponseStream&)> write) {
  HttpResponse response(status, std::move(content_type), "");
  response.stream = std::move(write);
  return response;
}

std::string_view HttpRequest::Header(std::string_view name) const {
  const auto found = headers.find(std::string(name));
  return found == headers.end() ? std::string_view() : std::string_view(found->second);
}

HttpResponse HttpRoutes::Serve(const HttpRequest& request) const {
  auto handler = handlers_.find(request.path);
  if (handler == handlers_.end()) {
    for (auto it = handlers_.begin(); it != handlers_.end(); ++it) {
      const std::string& path = it->first;
      if (!path.empty() && path.back() == '/' && request.path.starts_with(path) &&
          (handler == handlers_.end() || path.size() > handler->first.size())) {
        handler = it;
      }
    }
  }
  if (handler != handlers_.end()) return handler->second(request);
  std::string paths;
  for (const auto& [path, unused] : handlers_) paths += "  " + path + "\n";
  return {404, "text/plain; charset=utf-8",
          fmt::format("no such endpoint: {}\navailable:\n{}", request.path, paths)};
}

}  // namespace nodemesh::http
