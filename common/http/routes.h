// Requests, answers, and the table of paths that routes one to its handler: what every HTTP
// surface of nodemesh shares, whichever server reads the bytes (the agent's small server, the
// aggregator's HTTPS API) and when there is no socket at all (the admin requests the
// aggregator relays to an agent over its stream).
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace nodemesh::http {

// What the TLS handshake learnt of the client's certificate. A server asks for one without
// requiring it (server.h), so a request may come with none, or with one that did not verify;
// a handler decides what that means for it. Empty on plain connections and without a socket.
struct PeerCertificate {
  bool presented = false;
  bool verified = false;     // against the server's client CAs as they were at the handshake
  std::string verify_error;  // why not, when presented and not verified
  std::string common_name;   // the leaf's subject CN; empty unless verified
};

// Where a streamed answer's body goes (HttpResponse::stream). Used by one thread: the one
// running the stream's function.
class ResponseStream {
 public:
  virtual ~ResponseStream() = default;
  // Sends `chunk` as a piece of the body and returns once the connection took all of it.
  // False, and nothing more will be sent, if the client has gone, the server is stopping,
  // or the client did not take the bytes within `deadline`: a reader that stops reading
  // holds the writer that long at most, and the connection is closed.
  virtual bool Write(std::string_view chunk, std::chrono::milliseconds deadline) = 0;
  // True once the client has closed its end (noticed when it happens, without a write) or
  // the server is stopping: a stream waiting for something to send asks between waits.
  virtual bool ClientGone() const = 0;
};

struct HttpRequest {
  std::string method;
  std::string path;                                 // without the query, percent-encoded as sent
  std::map<std::string, std::string> query;         // decoded; a repeated parameter's last value
  std::string raw_query;                            // as sent, for readers of repeated parameters
  std::multimap<std::string, std::string> headers;  // names lower-cased
  std::string body;
  PeerCertificate peer;

  // The first value of header `name` (lower case), or "".
  std::string_view Header(std::string_view name) const;
};

struct HttpResponse {
  HttpResponse() = default;
  HttpResponse(int code, std::string type, std::string text)
      : status(code), content_type(std::move(type)), body(std::move(text)) {}
  // An answer whose body is what `write` writes, sent chunked as it goes: the server calls
  // it on the handler's thread and ends the answer when it returns.
  static HttpResponse Stream(int status, std::string content_type,
                             std::function<void(ResponseStream&)> write);

  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;  // unless streamed
  // Sent besides Content-Type and the body's length or framing.
  std::vector<std::pair<std::string, std::string>> headers;
  // Set for a streamed answer (Stream). The agent's server (agent/http_server.h) answers
  // with `body` only.
  std::function<void(ResponseStream&)> stream;
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
