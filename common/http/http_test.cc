// The HTTP server, over TLS and as plain HTTP on loopback, against real clients: curl with
// and without a client certificate, and the misbehaving clients of test_client.py (one that
// leaves mid-stream, one that stops reading, one that sends half a head). Cases that hold for
// both transports run once for each.
#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <vector>

#include "common/http/browser_guard.h"
#include "common/http/server.h"
#include "test/lib/certificates.h"
#include "test/lib/files.h"
#include "test/lib/process.h"

namespace nodemesh::http {
namespace {

using namespace std::chrono_literals;
using testing::Process;
using testing::ReadFile;
using testing::RunCommand;
using testing::TempDir;

constexpr const char* kText = "text/plain; charset=utf-8";

// A CA "ca" with a server certificate and a client certificate "proxy" (CN front-proxy); a
// second CA "other" with a client certificate "stranger" it signed.
struct Pki {
  Pki() {
    testing::MakeCa(dir, "ca");
    testing::MakeServerCertificate(dir, "ca");
    testing::MakeClientCertificate(dir, "ca", "proxy", "/CN=front-proxy/O=system:masters");
    testing::MakeCa(dir, "other");
    testing::MakeClientCertificate(dir, "other", "stranger", "/CN=stranger");
  }
  std::string File(const std::string& name) const { return dir.path() + "/" + name; }
  TlsServerOptions Tls(std::shared_ptr<ClientCaStore> client_ca) const {
    return {ReadFile(File("server.crt")), ReadFile(File("server.key")), std::move(client_ca)};
  }

  TempDir dir;
};

// How a case's server is reached: ListenTcp (with Pki's server certificate) or ListenLoopback.
enum class Transport { kTls, kPlain };

const char* NameOf(Transport transport) { return transport == Transport::kTls ? "TLS" : "plain"; }

std::string PortOf(const HttpServer& server) {
  return server.address().substr(server.address().rfind(':') + 1);
}

// curl asking `path` of `server` with `flags`.
std::vector<std::string> CurlCommand(Transport transport, const Pki& pki, const HttpServer& server,
                                     const std::string& path, std::vector<std::string> flags) {
  std::vector<std::string> argv = {"curl", "-sS", "--max-time", "20"};
  if (transport == Transport::kTls) {
    flags.insert(flags.begin(), {"--cacert", pki.File("ca.crt")});
  }
  argv.insert(argv.end(), flags.begin(), flags.end());
  // The server certificate names localhost; a plain server is asked at the address it bound.
  argv.push_back(transport == Transport::kTls ? "https://localhost:" + PortOf(server) + path
                                              : "http://" + server.address() + path);
  return argv;
}

// curl's answer to GET `path`: the body, then the status on a line of its own.
std::string Curl(Transport transport, const Pki& pki, const HttpServer& server,
                 const std::string& path, std::vector<std::string> extra = {}) {
  extra.insert(extra.begin(), {"-w", "\n%{http_code}"});
  return RunCommand(CurlCommand(transport, pki, server, path, std::move(extra)), 30s).output;
}

std::vector<std::string> ClientCertificate(const Pki& pki, const std::string& name) {
  return {"--cert", pki.File(name + ".crt"), "--key", pki.File(name + ".key")};
}

// Answers /whoami with what the handshake found of the caller's certificate.
HttpRoutes WhoAmI() {
  HttpRoutes routes;
  routes.Handle("/whoami", [](const HttpRequest& request) {
    const PeerCertificate& peer = request.peer;
    return HttpResponse(200, kText,
                        peer.verified    ? "verified " + peer.common_name
                        : peer.presented ? "unverified: " + peer.verify_error
                                         : "no certificate");
  });
  return routes;
}

std::unique_ptr<HttpServer> Started(absl::StatusOr<std::unique_ptr<HttpServer>> server,
                                    HttpRoutes routes) {
  REQUIRE(server.ok());
  (*server)->Serve(std::move(routes));
  (*server)->Start();
  return *std::move(server);
}

std::unique_ptr<HttpServer> StartServer(TlsServerOptions tls, HttpRoutes routes,
                                        HttpServerLimits limits = {}) {
  return Started(HttpServer::ListenTcp("127.0.0.1:0", std::move(tls), limits), std::move(routes));
}

// Over TLS without client CAs, or plain.
std::unique_ptr<HttpServer> StartServer(Transport transport, const Pki& pki, HttpRoutes routes,
                                        HttpServerLimits limits = {}) {
  if (transport == Transport::kTls) return StartServer(pki.Tls(nullptr), std::move(routes), limits);
  return Started(HttpServer::ListenLoopback("127.0.0.1:0", limits), std::move(routes));
}

// test_client.py in `mode` against `server`.
Process Misbehave(Transport transport, const Pki& pki, const HttpServer& server,
                  const std::string& mode) {
  return Process({"python3", std::string(NODEMESH_SOURCE_DIR) + "/common/http/test_client.py", mode,
                  PortOf(server), transport == Transport::kTls ? pki.File("ca.crt") : "plain"});
}

TEST_CASE("a client certificate is asked for, never required, and verified against the CAs") {
  const Pki pki;
  auto cas = std::make_shared<ClientCaStore>();
  REQUIRE(cas->Replace(ReadFile(pki.File("ca.crt"))).ok());
  const auto server = StartServer(pki.Tls(cas), WhoAmI());

  CHECK(Curl(Transport::kTls, pki, *server, "/whoami") == "no certificate\n200");
  CHECK(Curl(Transport::kTls, pki, *server, "/whoami", ClientCertificate(pki, "proxy")) ==
        "verified front-proxy\n200");
  const std::string stranger =
      Curl(Transport::kTls, pki, *server, "/whoami", ClientCertificate(pki, "stranger"));
  CHECK(stranger.starts_with("unverified: unable to get local issuer certificate"));
}

TEST_CASE("client CAs replaced at run time verify the next handshake") {
  const Pki pki;
  auto cas = std::make_shared<ClientCaStore>();
  const auto server = StartServer(pki.Tls(cas), WhoAmI());
  // No CA yet: nothing verifies.
  CHECK(Curl(Transport::kTls, pki, *server, "/whoami", ClientCertificate(pki, "proxy"))
            .starts_with("unverified: "));

  REQUIRE(cas->Replace(ReadFile(pki.File("other.crt")) + ReadFile(pki.File("ca.crt"))).ok());
  CHECK(Curl(Transport::kTls, pki, *server, "/whoami", ClientCertificate(pki, "proxy")) ==
        "verified front-proxy\n200");
  CHECK(Curl(Transport::kTls, pki, *server, "/whoami", ClientCertificate(pki, "stranger")) ==
        "verified stranger\n200");

  const absl::Status garbage = cas->Replace("not a certificate");
  CHECK(garbage.code() == absl::StatusCode::kInvalidArgument);
  CHECK(std::string(garbage.message()).find("BEGIN CERTIFICATE") != std::string::npos);
  // A failed replacement leaves the CAs as they were.
  CHECK(Curl(Transport::kTls, pki, *server, "/whoami", ClientCertificate(pki, "stranger")) ==
        "verified stranger\n200");

  cas->Clear();
  CHECK(Curl(Transport::kTls, pki, *server, "/whoami", ClientCertificate(pki, "proxy"))
            .starts_with("unverified: "));
}

TEST_CASE("a server certificate that cannot be used is named at listen") {
  const Pki pki;
  TlsServerOptions tls = pki.Tls(nullptr);
  tls.private_key_pem = ReadFile(pki.File("proxy.key"));
  const absl::StatusOr<std::unique_ptr<HttpServer>> mismatched =
      HttpServer::ListenTcp("127.0.0.1:0", tls);
  REQUIRE_FALSE(mismatched.ok());
  CHECK(std::string(mismatched.status().message()).starts_with("server key does not match"));

  tls.certificate_chain_pem = "garbage";
  const absl::StatusOr<std::unique_ptr<HttpServer>> unreadable =
      HttpServer::ListenTcp("127.0.0.1:0", tls);
  REQUIRE_FALSE(unreadable.ok());
  CHECK(std::string(unreadable.status().message()).starts_with("server certificate: "));
}

TEST_CASE("plain HTTP listens on loopback addresses only, and its requests carry no certificate") {
  for (const std::string address :
       {"0.0.0.0:0", ":0", "[::]:0", "10.1.2.3:0", "example.com:80", "127.0.0.1"}) {
    INFO(address);
    const absl::StatusOr<std::unique_ptr<HttpServer>> refused = HttpServer::ListenLoopback(address);
    REQUIRE_FALSE(refused.ok());
    CHECK(refused.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK(std::string(refused.status().message())
              .starts_with("'" + address +
                           "' is not a loopback address: plain HTTP is served "
                           "only on 127.0.0.0/8 or [::1]"));
  }
  const Pki pki;
  for (const std::string address : {"127.0.0.2:0", "localhost:0"}) {
    INFO(address);
    const auto server = Started(HttpServer::ListenLoopback(address), WhoAmI());
    CHECK(server->address().starts_with(address == "localhost:0" ? "127.0.0.1:" : "127.0.0.2:"));
    CHECK(Curl(Transport::kPlain, pki, *server, "/whoami") == "no certificate\n200");
  }
}

TEST_CASE("requests carry their method, query, headers and body, and answers their headers") {
  const Transport transport = GENERATE(Transport::kTls, Transport::kPlain);
  INFO(NameOf(transport));
  const Pki pki;
  HttpRoutes routes;
  routes.Handle("/echo", [](const HttpRequest& request) {
    HttpResponse response(200, "application/json",
                          request.method + " " + request.path + " " + request.raw_query + " " +
                              request.query.at("b") + " " +
                              std::string(request.Header("x-remote-user")) + " " + request.body);
    response.headers.emplace_back("Nodemesh-Relayed-From", "node-1");
    return response;
  });
  const auto server = StartServer(transport, pki, std::move(routes));
  CHECK(Curl(transport, pki, *server, "/echo?a=1&b=x%20y&b=z", {"-H", "X-Remote-User: alice"}) ==
        "GET /echo a=1&b=x%20y&b=z z alice \n200");
  CHECK(Curl(transport, pki, *server, "/echo?b=1", {"--data-binary", "payload"}) ==
        "POST /echo b=1 1  payload\n200");
  const std::string head =
      Curl(transport, pki, *server, "/echo?b=1", {"-D", "-", "-o", "/dev/null"});
  CHECK(head.find("Nodemesh-Relayed-From: node-1\r\n") != std::string::npos);
  CHECK(head.find("Content-Type: application/json\r\n") != std::string::npos);
  CHECK(Curl(transport, pki, *server, "/nothing").ends_with("\n404"));
}

TEST_CASE("a request head or body past its limit is refused with 431 or 413") {
  const Transport transport = GENERATE(Transport::kTls, Transport::kPlain);
  INFO(NameOf(transport));
  const Pki pki;
  HttpRoutes routes;
  routes.Handle("/", [](const HttpRequest&) { return HttpResponse(200, kText, "ok"); });
  const auto server = StartServer(transport, pki, std::move(routes));
  const std::string big_header = "X-Big: " + std::string(20 * 1024, 'a');
  const std::string head = Curl(transport, pki, *server, "/", {"-H", big_header});
  CHECK(head.ends_with("\n431"));
  CHECK(head.find("larger than 16384 bytes") != std::string::npos);

  const std::string body = pki.dir.Write("body", std::string(100 * 1024, 'b'));
  const std::string posted = Curl(transport, pki, *server, "/", {"--data-binary", "@" + body});
  CHECK(posted.ends_with("\n413"));
  CHECK(Curl(transport, pki, *server, "/", {"--data-binary", std::string(1000, 'c')}) == "ok\n200");
}

TEST_CASE("a client sending half a request is cut off at the request deadline") {
  const Transport transport = GENERATE(Transport::kTls, Transport::kPlain);
  INFO(NameOf(transport));
  const Pki pki;
  HttpRoutes routes;
  const auto server =
      StartServer(transport, pki, std::move(routes), {.request_deadline = 1s, .idle_timeout = 30s});
  Process stall = Misbehave(transport, pki, *server, "stall");
  REQUIRE(stall.WaitForOutput("closed after", 10s));
  const std::string out = stall.output();
  const double seconds = std::stod(out.substr(out.find("closed after ") + 13));
  CHECK(seconds >= 0.5);
  CHECK(seconds < 5);
}

TEST_CASE("connections past the limit are closed at once, and the others still served") {
  const Transport transport = GENERATE(Transport::kTls, Transport::kPlain);
  INFO(NameOf(transport));
  const Pki pki;
  const auto server =
      StartServer(transport, pki, WhoAmI(), {.idle_timeout = 30s, .max_connections = 2});
  Process first = Misbehave(transport, pki, *server, "hold");
  REQUIRE(first.WaitForOutput("connected", 10s));
  Process second = Misbehave(transport, pki, *server, "hold");
  REQUIRE(second.WaitForOutput("connected", 10s));
  Process third = Misbehave(transport, pki, *server, "hold");
  REQUIRE(third.WaitForOutput("refused", 10s));

  first.Kill();
  // Its connection is counted until the server notices it closed.
  CHECK(testing::PollUntil(
      [&] { return Curl(transport, pki, *server, "/whoami") == "no certificate\n200"; }, 10s,
      100ms));
}

TEST_CASE("handlers run off the I/O threads, and a request finding every one busy gets 503") {
  const Transport transport = GENERATE(Transport::kTls, Transport::kPlain);
  INFO(NameOf(transport));
  const Pki pki;
  std::mutex mutex;
  std::condition_variable changed;
  bool release = false;
  int waiting = 0;
  HttpRoutes routes;
  routes.Handle("/block", [&](const HttpRequest&) {
    std::unique_lock lock(mutex);
    ++waiting;
    changed.notify_all();
    changed.wait(lock, [&] { return release; });
    return HttpResponse(200, kText, "released");
  });
  const auto server =
      StartServer(transport, pki, std::move(routes), {.max_handler_threads = 1, .io_threads = 1});
  Process blocked(CurlCommand(transport, pki, *server, "/block", {}));
  {
    std::unique_lock lock(mutex);
    REQUIRE(changed.wait_for(lock, 10s, [&] { return waiting == 1; }));
  }
  // The one I/O thread still serves while the one handler thread is held.
  const std::string busy = Curl(transport, pki, *server, "/block", {"-D", "-"});
  CHECK(busy.ends_with("\n503"));
  CHECK(busy.find("Retry-After: 1\r\n") != std::string::npos);
  {
    std::lock_guard lock(mutex);
    release = true;
  }
  changed.notify_all();
  REQUIRE(blocked.WaitForOutput("released", 10s));
}

// A stream's function, run by the test: it reports what it saw and waits for the test's word.
struct StreamProbe {
  std::mutex mutex;
  std::condition_variable changed;
  int step = 0;         // what the test allows
  bool gone = false;    // ClientGone() was seen
  bool failed = false;  // a Write returned false
  uint64_t written = 0;

  void Allow(int next) {
    std::lock_guard lock(mutex);
    step = next;
    changed.notify_all();
  }
  template <typename Condition>
  bool Await(Condition condition, std::chrono::milliseconds timeout) {
    std::unique_lock lock(mutex);
    return changed.wait_for(lock, timeout, [&] { return condition(*this); });
  }
};

TEST_CASE("a streamed answer reaches curl piece by piece, as it is written") {
  const Transport transport = GENERATE(Transport::kTls, Transport::kPlain);
  INFO(NameOf(transport));
  const Pki pki;
  StreamProbe probe;
  HttpRoutes routes;
  routes.Handle("/stream", [&](const HttpRequest&) {
    return HttpResponse::Stream(200, "application/json", [&](ResponseStream& out) {
      for (int line = 1; line <= 3; ++line) {
        {
          std::unique_lock lock(probe.mutex);
          probe.changed.wait(lock, [&] { return probe.step >= line; });
        }
        // Not REQUIRE: this is the server's handler thread. A failed write shows in curl's output.
        if (!out.Write("{\"line\":" + std::to_string(line) + "}\n", 5s)) return;
      }
    });
  });
  const auto server = StartServer(transport, pki, std::move(routes));
  Process curl(CurlCommand(transport, pki, *server, "/stream", {"-N"}));
  probe.Allow(1);
  REQUIRE(curl.WaitForOutput("{\"line\":1}\n", 10s));
  CHECK(curl.output().find("line\":2") == std::string::npos);
  probe.Allow(2);
  REQUIRE(curl.WaitForOutput("{\"line\":2}\n", 10s));
  probe.Allow(3);
  const std::optional<testing::ExitStatus> ended = curl.Wait(10s);
  REQUIRE(ended);
  CHECK(ended->ok());
  CHECK(curl.output() == "{\"line\":1}\n{\"line\":2}\n{\"line\":3}\n");
}

// /stream: writes one line, then waits (asking ClientGone) until the client goes; or, with
// `flood`, writes 64 KiB pieces with a 500 ms deadline until one is not taken.
HttpRoutes StreamRoutes(StreamProbe& probe, bool flood) {
  HttpRoutes routes;
  routes.Handle("/stream", [&probe, flood](const HttpRequest&) {
    return HttpResponse::Stream(200, kText, [&probe, flood](ResponseStream& out) {
      const std::string piece(flood ? 64 * 1024 : 6, 'x');
      while (out.Write(piece, 500ms)) {
        std::lock_guard lock(probe.mutex);
        probe.written += piece.size();
        if (!flood) break;
        // A client that stops reading must stop the writer: a bounded amount only.
        if (probe.written > (1u << 30)) return;
      }
      if (!flood) {
        while (!out.ClientGone()) std::this_thread::sleep_for(10ms);
      }
      std::lock_guard lock(probe.mutex);
      (flood ? probe.failed : probe.gone) = true;
      probe.changed.notify_all();
    });
  });
  return routes;
}

TEST_CASE("a client that leaves mid-stream is noticed without a write") {
  const Transport transport = GENERATE(Transport::kTls, Transport::kPlain);
  INFO(NameOf(transport));
  const Pki pki;
  StreamProbe probe;
  const auto server = StartServer(transport, pki, StreamRoutes(probe, false));
  Process leave = Misbehave(transport, pki, *server, "leave");
  REQUIRE(leave.WaitForOutput("closed", 10s));
  CHECK(probe.Await([](const StreamProbe& p) { return p.gone; }, 5s));
}

TEST_CASE("a client that stops reading makes the stream's write fail at its deadline") {
  const Transport transport = GENERATE(Transport::kTls, Transport::kPlain);
  INFO(NameOf(transport));
  const Pki pki;
  StreamProbe probe;
  const auto server = StartServer(transport, pki, StreamRoutes(probe, true));
  Process slow = Misbehave(transport, pki, *server, "slow");
  REQUIRE(slow.WaitForOutput("sent", 10s));
  REQUIRE(probe.Await([](const StreamProbe& p) { return p.failed; }, 60s));
  // What was taken is what the sockets' buffers hold, not everything the writer had.
  CHECK(probe.written < (64u << 20));
}

TEST_CASE("stopping the server ends a stream waiting for its client") {
  const Transport transport = GENERATE(Transport::kTls, Transport::kPlain);
  INFO(NameOf(transport));
  const Pki pki;
  StreamProbe probe;
  auto server = StartServer(transport, pki, StreamRoutes(probe, false));
  Process curl(CurlCommand(transport, pki, *server, "/stream", {"-N"}));
  REQUIRE(curl.WaitForOutput("xxxxxx", 10s));
  server->Stop();
  CHECK(probe.Await([](const StreamProbe& p) { return p.gone; }, 1s));
  CHECK(curl.Wait(10s));
}

// `method` of "/" with `headers`, checked for a loopback server on port 8085: the status of
// the refusal, or 0 when served.
int GuardStatus(const std::string& method,
                const std::vector<std::pair<std::string, std::string>>& headers) {
  HttpRequest request = HttpRoutes::Request(method, "/");
  for (const auto& [name, value] : headers) request.headers.emplace(name, value);
  const std::optional<HttpResponse> refusal = RefuseForeignRequest(request, 8085);
  return refusal ? refusal->status : 0;
}

TEST_CASE("a loopback server's own page is served, requests of other sites are refused") {
  CHECK(GuardStatus("GET", {{"host", "127.0.0.1:8085"}}) == 0);
  CHECK(GuardStatus("GET", {{"host", "localhost:8085"}, {"origin", "http://localhost:8085"}}) == 0);
  CHECK(GuardStatus("GET", {{"host", "[::1]:8085"}, {"sec-fetch-site", "same-origin"}}) == 0);
  CHECK(GuardStatus("GET", {{"host", "127.0.0.1:8085"}, {"sec-fetch-site", "none"}}) == 0);
  // DNS rebinding: another name, or the right name on another port.
  CHECK(GuardStatus("GET", {{"host", "rebind.example:8085"}}) == 421);
  CHECK(GuardStatus("GET", {{"host", "127.0.0.1:9999"}}) == 421);
  CHECK(GuardStatus("GET", {}) == 421);
  // Another site's page.
  CHECK(GuardStatus("GET", {{"host", "127.0.0.1:8085"}, {"origin", "http://evil.example"}}) == 403);
  CHECK(GuardStatus("GET", {{"host", "127.0.0.1:8085"}, {"origin", "http://localhost:8085"}}) ==
        403);
  CHECK(GuardStatus("GET", {{"host", "127.0.0.1:8085"}, {"sec-fetch-site", "cross-site"}}) == 403);
  CHECK(GuardStatus("POST", {{"host", "127.0.0.1:8085"}}) == 405);

  HttpRequest post = HttpRoutes::Request("POST", "/");
  post.headers.emplace("host", "localhost:8085");
  const std::optional<HttpResponse> refused = RefuseForeignRequest(post, 8085);
  REQUIRE(refused);
  CHECK(refused->body == "POST is not allowed: this server answers GET only\n");
  CHECK(refused->headers == std::vector<std::pair<std::string, std::string>>{{"Allow", "GET"}});
}

}  // namespace
}  // namespace nodemesh::http
