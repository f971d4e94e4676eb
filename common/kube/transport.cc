#include "common/kube/transport.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <array>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <cstdlib>
#include <initializer_list>
#include <limits>
#include <optional>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "common/base/format.h"
#include "common/base/log.h"
#include "common/base/percent_encoding.h"
#include "common/base/version.h"

namespace nodemesh::kube {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;
using ErrorCode = boost::system::error_code;
using Clock = std::chrono::steady_clock;

// How often a stream looks at its stop flag.
constexpr std::chrono::milliseconds kStreamPoll{100};

// A URL's parts as far as a client needs them; "" for a part it has none of.
struct Url {
  std::string scheme, userinfo, host, port, path;  // host without brackets
};

std::optional<Url> ParseUrl(std::string_view text) {
  Url url;
  const size_t scheme_end = text.find("://");
  // Without a scheme, as curl and client-go read a proxy: http.
  url.scheme = scheme_end == std::string_view::npos
                   ? "http"
                   : absl::AsciiStrToLower(std::string(text.substr(0, scheme_end)));
  if (scheme_end != std::string_view::npos) text.remove_prefix(scheme_end + 3);
  const size_t path_start = text.find_first_of("/?#");
  std::string_view authority = text.substr(0, path_start);
  if (path_start != std::string_view::npos) {
    const std::string_view rest = text.substr(path_start);
    url.path = std::string(rest.substr(0, rest.find_first_of("?#")));
  }
  while (!url.path.empty() && url.path.back() == '/') url.path.pop_back();
  if (const size_t at = authority.rfind('@'); at != std::string_view::npos) {
    url.userinfo = std::string(authority.substr(0, at));
    authority.remove_prefix(at + 1);
  }
  std::string_view port;
  if (authority.starts_with('[')) {
    const size_t close = authority.find(']');
    if (close == std::string_view::npos) return std::nullopt;
    url.host = std::string(authority.substr(1, close - 1));
    port = authority.substr(close + 1);
  } else {
    const size_t colon = authority.rfind(':');
    url.host = std::string(authority.substr(0, colon));
    port = colon == std::string_view::npos ? "" : authority.substr(colon);
  }
  if (!port.empty()) {
    if (port.size() < 2 || port.size() > 6 || port[0] != ':') return std::nullopt;
    port.remove_prefix(1);
    if (!std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; }) ||
        std::atoi(std::string(port).c_str()) > 65535) {
      return std::nullopt;
    }
    url.port = std::string(port);
  } else if (url.scheme == "https") {
    url.port = "443";
  } else if (url.scheme == "http") {
    url.port = "80";
  }
  if (url.host.empty()) return std::nullopt;
  return url;
}

// Whether the address `host` lies in `cidr` ("10.0.0.0/8", "fd00::/8").
bool InCidr(std::string_view host, std::string_view cidr) {
  const size_t slash = cidr.find('/');
  ErrorCode error;
  const asio::ip::address address = asio::ip::make_address(std::string(host), error);
  if (error) return false;
  const asio::ip::address network =
      asio::ip::make_address(std::string(cidr.substr(0, slash)), error);
  if (error || address.is_v4() != network.is_v4()) return false;
  const int bits = std::atoi(std::string(cidr.substr(slash + 1)).c_str());
  const auto compare = [bits](const auto& a, const auto& b) {
    for (int bit = 0; bit < bits && bit < static_cast<int>(a.size()) * 8; ++bit) {
      const int mask = 0x80 >> (bit % 8);
      if ((a[bit / 8] & mask) != (b[bit / 8] & mask)) return false;
    }
    return true;
  };
  return address.is_v4() ? compare(address.to_v4().to_bytes(), network.to_v4().to_bytes())
                         : compare(address.to_v6().to_bytes(), network.to_v6().to_bytes());
}

// Whether no_proxy (a comma-separated list of names, domains, addresses and CIDRs, or "*")
// names `host`, as curl and Go read it: a name matches itself and its subdomains.
bool NoProxyNames(std::string_view list, const std::string& host) {
  const std::string lower_host = absl::AsciiStrToLower(host);
  size_t start = 0;
  while (start <= list.size()) {
    const size_t comma = std::min(list.find(',', start), list.size());
    std::string entry = absl::AsciiStrToLower(std::string(list.substr(start, comma - start)));
    start = comma + 1;
    entry.erase(0, entry.find_first_not_of(" \t"));
    entry.erase(entry.find_last_not_of(" \t") + 1);
    if (entry.starts_with('[') && entry.ends_with(']')) entry = entry.substr(1, entry.size() - 2);
    if (entry.empty()) continue;
    if (entry == "*") return true;
    if (entry.find('/') != std::string::npos) {
      if (InCidr(lower_host, entry)) return true;
      continue;
    }
    if (entry.starts_with('.')) entry.erase(0, 1);
    if (lower_host == entry || lower_host.ends_with("." + entry)) return true;
  }
  return false;
}

// The first of the environment variables `names` that is set and not empty.
std::string Environment(std::initializer_list<const char*> names) {
  for (const char* name : names) {
    const char* value = std::getenv(name);
    if (value != nullptr && value[0] != '\0') return value;
  }
  return {};
}

// Which CA the server's certificate was checked against, for TLS messages.
std::string CaDescription(const Config& config) {
  const std::string source = config.source.empty() ? "the configuration" : config.source;
  if (!config.ca_data.empty()) return fmt::format("the certificate-authority-data of {}", source);
  if (!config.ca_file.empty()) return fmt::format("the CA file {} ({})", config.ca_file, source);
  return "the system's CA certificates (no CA configured)";
}

}  // namespace

struct Endpoint::Parts {
  absl::Status usable;  // OK, or why no request can be made (without the request's name)
  bool tls = false;
  std::string host, port, path_prefix;
  std::string host_header;  // host[:port] as the server URL names it
  std::string tls_name;     // what the certificate is verified against, and the SNI
  // The HTTP proxy the connection goes through, if any: as configured (for messages), where
  // it is, and its Proxy-Authorization ("" without credentials in its URL).
  std::string proxy;
  std::string proxy_host, proxy_port, proxy_authorization;
};

Endpoint::Endpoint(const Config& config) {
  auto parts = std::make_unique<Parts>();
  const std::optional<Url> server = ParseUrl(config.server);
  if (!server || (server->scheme != "https" && server->scheme != "http")) {
    parts->usable = absl::InvalidArgumentError(fmt::format(
        "{} address {} is not a usable URL (https://HOST[:PORT][/PATH] expected)",
        config.server_role, config.server));
    parts_ = std::move(parts);
    return;
  }
  parts->tls = server->scheme == "https";
  parts->host = server->host;
  parts->port = server->port;
  parts->path_prefix = server->path;
  const bool bracketed = server->host.find(':') != std::string::npos;
  parts->host_header = bracketed ? fmt::format("[{}]", server->host) : server->host;
  if (server->port != (parts->tls ? "443" : "80")) parts->host_header += ":" + server->port;
  parts->tls_name = config.tls_server_name.empty() ? server->host : config.tls_server_name;

  parts->proxy = config.proxy_url;
  if (parts->proxy.empty() && !NoProxyNames(Environment({"no_proxy", "NO_PROXY"}), server->host)) {
    parts->proxy = parts->tls
                       ? Environment({"https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"})
                       : Environment({"http_proxy", "all_proxy", "ALL_PROXY"});
  }
  if (!parts->proxy.empty()) {
    const std::optional<Url> proxy = ParseUrl(parts->proxy);
    if (!proxy) {
      parts->usable = absl::InvalidArgumentError(fmt::format(
          "the proxy {} is not a usable URL (http://HOST:PORT expected)", parts->proxy));
    } else if (proxy->scheme != "http") {
      parts->usable = absl::InvalidArgumentError(
          fmt::format("the proxy {} is a {} proxy; {} is reached through HTTP proxies "
                      "(http://HOST:PORT, tunnelling with CONNECT) only",
                      parts->proxy, proxy->scheme, config.server_role));
    } else {
      parts->proxy_host = proxy->host;
      parts->proxy_port = proxy->port;
      if (!proxy->userinfo.empty()) {
        parts->proxy_authorization = "Basic " + absl::Base64Escape(PercentDecode(proxy->userinfo));
      }
    }
  }
  parts_ = std::move(parts);
}

Endpoint::~Endpoint() = default;

struct Exchange::State {
  State(const Config& config_in, const Endpoint::Parts& endpoint_in, std::string what_in)
      : config(config_in), endpoint(endpoint_in), what(std::move(what_in)) {}

  // How an operation ended.
  enum class Ended { kDone, kDeadline, kStopped };

  // Starts an operation with `start(finish)`, where the operation's handler calls
  // finish(error); runs it until it finishes, or until `deadline` or `stop`: then cancels it
  // (closing the connection) and waits for its handler, so that nothing it refers to is
  // used after this returns.
  template <typename Start>
  Ended Run(Start&& start, ErrorCode& error, Clock::time_point deadline,
            const std::atomic<bool>* stop = nullptr) {
    bool done = false;
    start([&done, &error](ErrorCode result) {
      error = result;
      done = true;
    });
    io.restart();
    while (!done) {
      const Clock::time_point now = Clock::now();
      const bool stopped = stop != nullptr && stop->load();
      if (stopped || now >= deadline) {
        resolver.cancel();
        ErrorCode ignored;
        socket.close(ignored);
        while (!done) io.run_one();
        return stopped ? Ended::kStopped : Ended::kDeadline;
      }
      const Clock::duration wait =
          std::min<Clock::duration>(deadline - now, stop != nullptr ? kStreamPoll : deadline - now);
      io.run_one_for(wait);
    }
    return Ended::kDone;
  }

  // Calls `operation` with the connection's stream: TLS, or the socket itself.
  template <typename Operation>
  void WithStream(Operation&& operation) {
    if (tls) {
      operation(*tls);
    } else {
      operation(socket);
    }
  }

  std::string Server() const {
    return endpoint.proxy.empty()
               ? config.server
               : fmt::format("{} through the proxy {}", config.server, endpoint.proxy);
  }
  long TimeoutMs(Clock::time_point deadline) const {
    return static_cast<long>(
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - started).count());
  }
  absl::Status NotConnected(Clock::time_point deadline) const {
    return absl::DeadlineExceededError(
        fmt::format("{}: cannot connect to {} at {} within {} ms", what, config.server_role,
                    Server(), TimeoutMs(deadline)));
  }
  absl::Status NoAnswer(Clock::time_point deadline) const {
    return absl::DeadlineExceededError(
        fmt::format("{}: no complete answer from {} at {} within {} ms", what,
                    config.server_role, config.server, TimeoutMs(deadline)));
  }
  absl::Status Cut(const ErrorCode& error) const {
    return absl::UnavailableError(
        fmt::format("{}: the connection to {} at {} was cut ({})", what, config.server_role,
                    config.server, error.message()));
  }

  absl::Status Connect(const RequestCredentials& credentials, Clock::time_point deadline);
  absl::Status TunnelThroughProxy(Clock::time_point deadline);
  absl::Status StartTls(const RequestCredentials& credentials, Clock::time_point deadline);

  const Config& config;
  const Endpoint::Parts& endpoint;
  const std::string what;
  const Clock::time_point started = Clock::now();
  asio::io_context io{1};
  tcp::resolver resolver{io};
  tcp::socket socket{io};
  std::optional<asio::ssl::context> tls_context;
  std::optional<asio::ssl::stream<tcp::socket&>> tls;
  beast::flat_buffer buffer;
  std::optional<bhttp::response_parser<bhttp::buffer_body>> stream_parser;
};

absl::Status Exchange::State::Connect(const RequestCredentials& credentials,
                                      Clock::time_point deadline) {
  const Clock::time_point connect_deadline = std::min(deadline, started + kMaxConnectTimeout);
  const std::string& host = endpoint.proxy.empty() ? endpoint.host : endpoint.proxy_host;
  const std::string& port = endpoint.proxy.empty() ? endpoint.port : endpoint.proxy_port;
  ErrorCode error;
  tcp::resolver::results_type addresses;
  if (Run(
          [&](auto finish) {
            resolver.async_resolve(
                host, port,
                [&addresses, finish](ErrorCode result, tcp::resolver::results_type found) {
                  addresses = std::move(found);
                  finish(result);
                });
          },
          error, connect_deadline) != Ended::kDone) {
    return NotConnected(connect_deadline);
  }
  if (error) {
    return absl::UnavailableError(
        fmt::format("{}: cannot resolve the name of {} in {} ({})", what,
                    endpoint.proxy.empty() ? config.server_role : "the proxy",
                    endpoint.proxy.empty() ? config.server : endpoint.proxy, error.message()));
  }
  if (Run(
          [&](auto finish) {
            asio::async_connect(
                socket, addresses,
                [finish](ErrorCode result, const tcp::endpoint&) { finish(result); });
          },
          error, connect_deadline) != Ended::kDone) {
    return NotConnected(connect_deadline);
  }
  if (error) {
    return absl::UnavailableError(fmt::format("{}: cannot connect to {} at {} ({})", what,
                                              config.server_role, Server(), error.message()));
  }
  socket.set_option(asio::socket_base::keep_alive(true), error);
  if (!endpoint.proxy.empty()) {
    if (absl::Status tunnel = TunnelThroughProxy(connect_deadline); !tunnel.ok()) return tunnel;
  }
  if (!endpoint.tls) return absl::OkStatus();
  return StartTls(credentials, connect_deadline);
}

absl::Status Exchange::State::TunnelThroughProxy(Clock::time_point deadline) {
  const std::string authority = endpoint.host.find(':') != std::string::npos
                                    ? fmt::format("[{}]:{}", endpoint.host, endpoint.port)
                                    : fmt::format("{}:{}", endpoint.host, endpoint.port);
  bhttp::request<bhttp::empty_body> connect{bhttp::verb::connect, authority, 11};
  connect.set(bhttp::field::host, authority);
  if (!endpoint.proxy_authorization.empty()) {
    connect.set(bhttp::field::proxy_authorization, endpoint.proxy_authorization);
  }
  bhttp::response_parser<bhttp::empty_body> answer;
  answer.skip(true);  // an answer to CONNECT has no body, whatever its headers say
  ErrorCode error;
  const bool done =
      Run(
          [&](auto finish) {
            bhttp::async_write(socket, connect,
                               [finish](ErrorCode result, size_t) { finish(result); });
          },
          error, deadline) == Ended::kDone &&
      (error || Run(
                    [&](auto finish) {
                      bhttp::async_read(socket, buffer, answer,
                                        [finish](ErrorCode result, size_t) { finish(result); });
                    },
                    error, deadline) == Ended::kDone);
  if (!done) return NotConnected(deadline);
  if (error) {
    return absl::UnavailableError(fmt::format("{}: the proxy {} cut the connection ({})", what,
                                              endpoint.proxy, error.message()));
  }
  if (answer.get().result_int() / 100 != 2) {
    return absl::UnavailableError(
        fmt::format("{}: the proxy {} refused to connect to {}: {} {}", what, endpoint.proxy,
                    authority, answer.get().result_int(), std::string(answer.get().reason())));
  }
  buffer.consume(buffer.size());
  return absl::OkStatus();
}

absl::Status Exchange::State::StartTls(const RequestCredentials& credentials,
                                       Clock::time_point deadline) {
  tls_context.emplace(asio::ssl::context::tls_client);
  asio::ssl::context& context = *tls_context;
  ErrorCode error;
  if (config.insecure_skip_tls_verify) {
    context.set_verify_mode(asio::ssl::verify_none);
    Log(LogLevel::kWarning,
        "kube: {} does not verify the certificate of {} (insecure-skip-tls-verify): "
        "anyone on the path can read and change this request",
        config.source.empty() ? config.server : config.source, config.server_role);
  } else {
    context.set_verify_mode(asio::ssl::verify_peer);
    if (!config.ca_data.empty()) {
      context.add_certificate_authority(asio::buffer(config.ca_data), error);
    } else if (!config.ca_file.empty()) {
      context.load_verify_file(config.ca_file, error);
    } else {
      context.set_default_verify_paths(error);
    }
    if (error) {
      return absl::UnavailableError(
          fmt::format("{}: TLS: cannot use {} ({}); it must hold PEM certificates", what,
                      CaDescription(config), error.message()));
    }
  }
  if (!credentials.client_certificate_pem.empty()) {
    context.use_certificate_chain(asio::buffer(credentials.client_certificate_pem), error);
    if (!error) {
      context.use_private_key(asio::buffer(credentials.client_key_pem), asio::ssl::context::pem,
                              error);
    }
    if (error) {
      return absl::UnavailableError(fmt::format(
          "{}: TLS: cannot use the client certificate or key of {} ({})", what,
          config.source.empty() ? "the configuration" : config.source, error.message()));
    }
  }
  tls.emplace(socket, context);
  SSL* ssl = tls->native_handle();
  ErrorCode not_address;
  asio::ip::make_address(endpoint.tls_name, not_address);
  X509_VERIFY_PARAM* verify = SSL_get0_param(ssl);
  if (not_address) {
    // SNI names a host, never an address (RFC 6066).
    SSL_set_tlsext_host_name(ssl, endpoint.tls_name.c_str());
    X509_VERIFY_PARAM_set1_host(verify, endpoint.tls_name.c_str(), endpoint.tls_name.size());
  } else {
    X509_VERIFY_PARAM_set1_ip_asc(verify, endpoint.tls_name.c_str());
  }
  const Ended ended = Run(
      [&](auto finish) {
        tls->async_handshake(asio::ssl::stream_base::client,
                             [finish](ErrorCode result) { finish(result); });
      },
      error, deadline);
  if (ended != Ended::kDone) {
    return absl::DeadlineExceededError(
        fmt::format("{}: no TLS handshake with {} at {} within {} ms", what, config.server_role,
                    Server(), TimeoutMs(deadline)));
  }
  if (!error) return absl::OkStatus();
  const long verified = SSL_get_verify_result(ssl);
  ERR_clear_error();
  if (verified != X509_V_OK && !config.insecure_skip_tls_verify) {
    return absl::UnavailableError(fmt::format(
        "{}: TLS: the certificate of {} at {}{} did not verify against {}: {}; check "
        "that this CA signed the server's certificate and that the server name matches",
        what, config.server_role, config.server,
        config.tls_server_name.empty()
            ? std::string()
            : fmt::format(" (as {}, the cluster's tls-server-name)", config.tls_server_name),
        CaDescription(config), X509_verify_cert_error_string(verified)));
  }
  return absl::UnavailableError(fmt::format(
      "{}: TLS handshake with {} failed ({}); the server's certificate was checked against {}",
      what, config.server, error.message(), CaDescription(config)));
}

Exchange::Exchange(const Config& config, const Endpoint& endpoint, std::string what)
    : state_(std::make_unique<State>(config, endpoint.parts(), std::move(what))) {}

Exchange::~Exchange() = default;

absl::Status Exchange::Send(std::string_view method, std::string_view path, std::string_view body,
                            std::string_view content_type, const RequestCredentials& credentials,
                            Clock::time_point deadline) {
  State& state = *state_;
  if (!state.endpoint.usable.ok()) {
    return absl::Status(state.endpoint.usable.code(),
                        fmt::format("{}: {}", state.what, state.endpoint.usable.message()));
  }
  if (absl::Status connected = state.Connect(credentials, deadline); !connected.ok()) {
    return connected;
  }
  bhttp::request<bhttp::string_body> request;
  request.version(11);
  request.method_string(beast::string_view(method.data(), method.size()));
  request.target(state.endpoint.path_prefix + std::string(path));
  request.set(bhttp::field::host, state.endpoint.host_header);
  static const std::string user_agent = fmt::format("nodemesh/{}", kVersion);
  request.set(bhttp::field::user_agent, user_agent);
  request.set(bhttp::field::accept, "application/json");
  if (!credentials.authorization.empty()) {
    request.set(bhttp::field::authorization, credentials.authorization);
  }
  if (!body.empty()) {
    request.set(bhttp::field::content_type,
                beast::string_view(content_type.data(), content_type.size()));
    request.body() = std::string(body);
  }
  request.prepare_payload();
  ErrorCode error;
  const State::Ended ended = state.Run(
      [&](auto finish) {
        state.WithStream([&](auto& stream) {
          bhttp::async_write(stream, request,
                             [finish](ErrorCode result, size_t) { finish(result); });
        });
      },
      error, deadline);
  if (ended != State::Ended::kDone) return state.NoAnswer(deadline);
  if (error) return state.Cut(error);
  return absl::OkStatus();
}

absl::StatusOr<Response> Exchange::Receive(Clock::time_point deadline) {
  State& state = *state_;
  bhttp::response_parser<bhttp::string_body> parser;
  parser.body_limit(kMaxBody);
  ErrorCode error;
  const State::Ended ended = state.Run(
      [&](auto finish) {
        state.WithStream([&](auto& stream) {
          bhttp::async_read(stream, state.buffer, parser,
                            [finish](ErrorCode result, size_t) { finish(result); });
        });
      },
      error, deadline);
  if (ended != State::Ended::kDone) return state.NoAnswer(deadline);
  if (error == bhttp::error::body_limit) {
    return absl::ResourceExhaustedError(
        fmt::format("{}: the answer is larger than {} bytes", state.what, kMaxBody));
  }
  if (error) return state.Cut(error);
  return Response{parser.get().result_int(), std::move(parser.get().body())};
}

int Exchange::status() const {
  const auto& parser = state_->stream_parser;
  return parser && parser->is_header_done() ? static_cast<int>(parser->get().result_int()) : 0;
}

absl::Status Exchange::ReceiveStream(const std::function<bool(std::string_view data)>& on_data,
                                     std::chrono::milliseconds stall_timeout,
                                     const std::atomic<bool>& stop) {
  State& state = *state_;
  state.stream_parser.emplace();
  bhttp::response_parser<bhttp::buffer_body>& parser = *state.stream_parser;
  parser.body_limit(std::numeric_limits<uint64_t>::max());  // a watch runs for minutes
  Clock::time_point last_byte = Clock::now();
  std::array<char, 16384> piece;
  bool header = true;
  while (header || !parser.is_done()) {
    parser.get().body().data = piece.data();
    parser.get().body().size = piece.size();
    size_t bytes = 0;
    ErrorCode error;
    const State::Ended ended = state.Run(
        [&](auto finish) {
          state.WithStream([&](auto& stream) {
            const auto handler = [finish, &bytes](ErrorCode result, size_t transferred) {
              bytes = transferred;
              finish(result);
            };
            if (header) {
              bhttp::async_read_header(stream, state.buffer, parser, handler);
            } else {
              bhttp::async_read_some(stream, state.buffer, parser, handler);
            }
          });
        },
        error, last_byte + stall_timeout, &stop);
    if (ended == State::Ended::kStopped) {
      return absl::CancelledError(fmt::format("{}: stopped", state.what));
    }
    if (ended == State::Ended::kDeadline) {
      return absl::DeadlineExceededError(
          fmt::format("{}: not a byte from {} at {} for {} ms", state.what,
                      state.config.server_role, state.config.server, stall_timeout.count()));
    }
    if (bytes > 0) last_byte = Clock::now();
    const size_t received = piece.size() - parser.get().body().size;
    if (received > 0 && !on_data(std::string_view(piece.data(), received))) {
      return absl::OkStatus();
    }
    if (error == bhttp::error::need_buffer) error = {};
    if (error) return state.Cut(error);
    header = false;
  }
  return absl::OkStatus();
}

}  // namespace nodemesh::kube
