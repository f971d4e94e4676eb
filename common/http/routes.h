// Requests, answers, and the table of paths that routes one to its handler: what every HTTP
// surface of nodemesh shares, whichever server reads the bytes, and when there is no socket at
// all (the admin requests the aggregator relays to an agent over its stream).
#pragma once

#include <functional>
#include <map>
#include <string>
#include <string_view>

namespace nodemesh::http {

struct HttpRequest {
  std::string method;
  std::string path;  // without the query
  std::map<std::string, std::string> query;
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
};

// Paths and their handlers. Handlers may be called from several threads at once when the
// server serving them has several; the table itself is not changed once serving.
class HttpRoutes {
 public:
  using Handler = std::function<HttpResponse(const HttpRequest&)>;

  // A path ending in '/' also serves every path under it (the longest such prefix wins when
  // no exact path matches).
  void Handle(const std::string& path, Handler handler) { handlers_[path] = std::move(handler); }
  // The handler's answer, or 404 listing the paths.
  HttpResponse Serve(const HttpRequest& request) const;
  // `target` is the path with its query: "/tap?session=a1&pod=ns%2Fweb".
  static HttpRequest Request(std::string method, std::string_view target);

 private:
  std::map<std::string, Handler> handlers_;
};

}  // namespace nodemesh::http
