#include "common/http/server.h"

#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <condition_variable>
#include <deque>
#include <functional>
#include <future>
#include <map>
#include <mutex>
#include <optional>
#include <sstream>
#include <thread>
#include <type_traits>
#include <vector>

#include "absl/strings/ascii.h"
#include "common/base/format.h"
#include "common/base/log.h"
#include "common/http/listener.h"
#include "common/net/address.h"

namespace nodemesh::http {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using Tcp = asio::ip::tcp;
using TlsStream = beast::ssl_stream<beast::tcp_stream>;  // ListenTcp
using PlainStream = beast::tcp_stream;                   // ListenLoopback

std::string_view View(beast::string_view text) { return {text.data(), text.size()}; }

// Handler threads, made as jobs need them, up to `max`; they wait for more work once made.
class HandlerPool {
 public:
  explicit HandlerPool(size_t max) : max_(max) {}
  ~HandlerPool() { Stop(); }

  // False when every thread is busy and no more may be made, or the pool is stopping.
  bool Submit(std::function<void()> job) {
    std::lock_guard lock(mutex_);
    if (stopping_) return false;
    if (unfinished_ >= threads_.size()) {
      if (threads_.size() >= max_) return false;
      threads_.emplace_back([this] { Run(); });
    }
    ++unfinished_;
    jobs_.push_back(std::move(job));
    ready_.notify_one();
    return true;
  }

  // Runs what was submitted, then ends every thread. Not from a handler thread.
  void Stop() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    ready_.notify_all();
    for (std::thread& thread : threads_) {
      if (thread.joinable()) thread.join();
    }
  }

 private:
  void Run() {
    std::unique_lock lock(mutex_);
    for (;;) {
      ready_.wait(lock, [this] { return stopping_ || !jobs_.empty(); });
      if (jobs_.empty()) return;
      std::function<void()> job = std::move(jobs_.front());
      jobs_.pop_front();
      lock.unlock();
      job();
      lock.lock();
      --unfinished_;
    }
  }

  const size_t max_;
  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<std::function<void()>> jobs_;
  size_t unfinished_ = 0;  // queued or running
  std::vector<std::thread> threads_;
  bool stopping_ = false;
};

// What the server keeps of a connection, whatever its stream: the means to start and close it.
class Link {
 public:
  virtual ~Link() = default;
  // Once, when accepted.
  virtual void Start() = 0;
  // From any thread: the connection is closed, and a stream writing on it stops.
  virtual void Abort() = 0;
};

// What the listener and every connection share; connections hold it, so it outlives them
// whichever goes last.
struct Shared {
  Shared(HttpRoutes served, HttpServerLimits chosen)
      : routes(std::move(served)), limits(chosen), pool(chosen.max_handler_threads) {}

  const HttpRoutes routes;
  const HttpServerLimits limits;
  HandlerPool pool;
  std::atomic<bool> stopping{false};
  std::mutex mutex;  // guards the two below
  std::map<uint64_t, std::weak_ptr<Link>> live;
  uint64_t next_id = 0;
};

// One client's connection over `Stream`, TlsStream or PlainStream: the same request loop for
// both, but a plain connection has no handshake and its peer_ stays empty. Its socket and
// parser are touched only on its strand; what a handler thread writing a stream waits on
// (gone_, written_) is guarded by mutex_.
template <typename Stream>
class Connection final : public Link, public std::enable_shared_from_this<Connection<Stream>> {
 public:
  using std::enable_shared_from_this<Connection>::shared_from_this;

  // `stream_args` make the stream: the accepted socket, and for TLS the server's context.
  template <typename... StreamArgs>
  Connection(std::shared_ptr<Shared> shared, uint64_t id, StreamArgs&&... stream_args)
      : stream_(std::forward<StreamArgs>(stream_args)...), shared_(std::move(shared)), id_(id) {}
  ~Connection() override {
    std::lock_guard lock(shared_->mutex);
    shared_->live.erase(id_);
  }

  void Start() override {
    asio::post(stream_.get_executor(), [self = shared_from_this()] { self->Handshake(); });
  }

  void Abort() override {
    MarkGone();
    asio::post(stream_.get_executor(), [self = shared_from_this()] { self->Close(); });
  }

  // The handler's side of a streamed answer (ResponseStream), on its thread.
  void RunStream(const HttpResponse& response);

 private:
  class Writer;

  void Handshake() {
    if constexpr (std::is_same_v<Stream, PlainStream>) {
      AwaitRequest(shared_->limits.request_deadline);
    } else {
      beast::get_lowest_layer(stream_).expires_after(shared_->limits.request_deadline);
      stream_.async_handshake(asio::ssl::stream_base::server,
                              [self = shared_from_this()](beast::error_code error) {
                                if (error) return self->Close();
                                self->peer_ = PeerOf(self->stream_.native_handle());
                                self->AwaitRequest(self->shared_->limits.request_deadline);
                              });
    }
  }

  // Waits up to `timeout` for the first byte of the next request, then gives the whole
  // request the request deadline: an idle kept-alive connection may wait longer than a
  // request may take to arrive.
  void AwaitRequest(std::chrono::milliseconds timeout) {
    if (buffer_.size() > 0) return ReadRequest();  // already here (pipelined)
    beast::get_lowest_layer(stream_).expires_after(timeout);
    stream_.async_read_some(buffer_.prepare(4096),
                            [self = shared_from_this()](beast::error_code error, size_t bytes) {
                              if (error) return self->Close();
                              self->buffer_.commit(bytes);
                              self->ReadRequest();
                            });
  }

  void ReadRequest() {
    beast::get_lowest_layer(stream_).expires_after(shared_->limits.request_deadline);
    parser_.emplace();
    parser_->header_limit(static_cast<uint32_t>(shared_->limits.max_head_bytes));
    parser_->body_limit(shared_->limits.max_body_bytes);
    bhttp::async_read(
        stream_, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code error, size_t) { self->OnRequest(error); });
  }

  void OnRequest(beast::error_code error) {
    if (error == bhttp::error::header_limit) {
      return RespondError(431, fmt::format("the request's head is larger than {} bytes",
                                           shared_->limits.max_head_bytes));
    }
    if (error == bhttp::error::body_limit) {
      return RespondError(413, fmt::format("the request's body is larger than {} bytes",
                                           shared_->limits.max_body_bytes));
    }
    if (error && error.category() == bhttp::make_error_code(bhttp::error::bad_target).category() &&
        error != bhttp::error::end_of_stream && error != bhttp::error::partial_message) {
      return RespondError(400, fmt::format("malformed HTTP request: {}", error.message()));
    }
    if (error) return Close();  // the client went, or was too slow
    beast::get_lowest_layer(stream_).expires_never();
    bhttp::request<bhttp::string_body> message = parser_->release();
    keep_alive_ = message.keep_alive();
    HttpRequest request =
        HttpRoutes::Request(std::string(View(message.method_string())), View(message.target()));
    for (const auto& field : message) {
      std::string name(View(field.name_string()));
      absl::AsciiStrToLower(&name);
      request.headers.emplace(std::move(name), std::string(View(field.value())));
    }
    request.body = std::move(message.body());
    request.peer = peer_;
    const bool taken = shared_->pool.Submit([self = shared_from_this(),
                                             request = std::move(request)]() mutable {
      HttpResponse response = self->shared_->routes.Serve(request);
      if (response.stream) return self->RunStream(response);
      asio::post(self->stream_.get_executor(), [self, response = std::move(response)]() mutable {
        self->Respond(std::move(response));
      });
    });
    if (!taken) {
      HttpResponse busy{503, "text/plain; charset=utf-8",
                        "every handler of this server is busy: try again\n"};
      busy.headers.emplace_back("Retry-After", "1");
      Respond(std::move(busy));
    }
  }

  template <typename Body>
  void SetHead(bhttp::response<Body>& message, const HttpResponse& response) {
    message.version(11);
    message.result(static_cast<unsigned>(response.status));
    message.set(bhttp::field::content_type, response.content_type);
    for (const auto& [name, value] : response.headers) message.set(name, value);
  }

  void Respond(HttpResponse response) {
    if (closed_) return;
    auto message = std::make_shared<bhttp::response<bhttp::string_body>>();
    SetHead(*message, response);
    message->keep_alive(keep_alive_ && !shared_->stopping);
    message->body() = std::move(response.body);
    message->prepare_payload();
    // A client that does not read its answer is not waited for longer than an idle one.
    beast::get_lowest_layer(stream_).expires_after(shared_->limits.idle_timeout);
    bhttp::async_write(stream_, *message,
                       [self = shared_from_this(), message](beast::error_code error, size_t) {
                         if (error) return self->Close();
                         if (!message->keep_alive()) return self->LingeringClose();
                         self->AwaitRequest(self->shared_->limits.idle_timeout);
                       });
  }

  void RespondError(int status, std::string text) {
    keep_alive_ = false;  // what follows in the connection cannot be read reliably
    Respond(HttpResponse{status, "text/plain; charset=utf-8", std::move(text) + "\n"});
  }

  // After an answer that ends the connection the client may still be sending (a head or a
  // body past its limit): closing with its bytes unread would reset the connection, and the
  // reset can destroy the answer before the client reads it. So stop sending, drop what
  // still comes for a moment, then close.
  void LingeringClose() {
    beast::error_code ignored;
    beast::get_lowest_layer(stream_).socket().shutdown(Tcp::socket::shutdown_send, ignored);
    beast::get_lowest_layer(stream_).expires_after(std::chrono::seconds(2));
    Drain();
  }

  void Drain() {
    beast::get_lowest_layer(stream_).async_read_some(
        asio::buffer(discarded_), [self = shared_from_this()](beast::error_code error, size_t) {
          if (error) return self->Close();
          self->Drain();
        });
  }

  // While a stream is written, a read is kept pending: it ends when the client closes its
  // end, at once, without waiting for a write to fail. What the client sends is dropped.
  void WatchForClose() {
    stream_.async_read_some(asio::buffer(discarded_),
                            [self = shared_from_this()](beast::error_code error, size_t) {
                              if (error) return self->Close();
                              self->WatchForClose();
                            });
  }

  // On the strand: writes `buffers` (whose bytes `keep` holds, when they are not their own)
  // and counts one write done (written_) unless it failed; `then` runs after a success.
  template <typename Buffers>
  void WriteCounted(std::shared_ptr<Buffers> buffers, std::shared_ptr<const std::string> keep,
                    std::function<void()> then = nullptr) {
    if (closed_) return;
    asio::async_write(stream_, *buffers,
                      [self = shared_from_this(), buffers, keep, then = std::move(then)](
                          beast::error_code error, size_t) {
                        if (error) return self->Close();
                        if (then) then();
                        std::lock_guard lock(self->mutex_);
                        ++self->written_;
                        self->changed_.notify_all();
                      });
  }

  void MarkGone() {
    std::lock_guard lock(mutex_);
    gone_ = true;
    changed_.notify_all();
  }

  void Close() {
    MarkGone();
    if (closed_) return;
    closed_ = true;
    beast::error_code ignored;
    beast::get_lowest_layer(stream_).socket().shutdown(Tcp::socket::shutdown_both, ignored);
    beast::get_lowest_layer(stream_).close();
  }

  Stream stream_;
  const std::shared_ptr<Shared> shared_;
  const uint64_t id_;
  // On the strand.
  PeerCertificate peer_;
  beast::flat_buffer buffer_;
  std::optional<bhttp::request_parser<bhttp::string_body>> parser_;
  bool keep_alive_ = false;
  bool closed_ = false;
  char discarded_[512];
  // Between the strand and a stream's handler thread.
  std::mutex mutex_;
  std::condition_variable changed_;
  bool gone_ = false;
  uint64_t written_ = 0;  // stream pieces the connection took
};

// A streamed answer's ResponseStream: each piece is written on the strand while the
// handler's thread waits for its completion, which is the backpressure.
template <typename Stream>
class Connection<Stream>::Writer : public ResponseStream {
 public:
  explicit Writer(std::shared_ptr<Connection> connection) : connection_(std::move(connection)) {}

  // The head goes first; its completion is waited for by the first Write or by Finish.
  void Begin(const HttpResponse& response) {
    bhttp::response<bhttp::empty_body> head;
    connection_->SetHead(head, response);
    head.keep_alive(false);  // a stream ends its connection
    head.chunked(true);
    std::ostringstream text;
    text << head.base();  // the status line and fields, through the blank line
    auto bytes = std::make_shared<const std::string>(text.str());
    Issue([connection = connection_, bytes] {
      connection->WriteCounted(std::make_shared<asio::const_buffer>(bytes->data(), bytes->size()),
                               bytes, [connection] { connection->WatchForClose(); });
    });
  }

  bool Write(std::string_view chunk, std::chrono::milliseconds deadline) override {
    const auto until = std::chrono::steady_clock::now() + deadline;
    if (!Written(until)) return false;
    if (chunk.empty()) return true;  // an empty chunk would end the body
    auto piece = std::make_shared<const std::string>(chunk);
    Issue([connection = connection_, piece] {
      connection->WriteCounted(std::make_shared<ChunkOf>(bhttp::make_chunk(
                                   asio::const_buffer(piece->data(), piece->size()))),
                               piece);
    });
    return Written(until);
  }

  bool ClientGone() const override {
    std::lock_guard lock(connection_->mutex_);
    return connection_->gone_;
  }

  // The last chunk, once what came before has gone; then the connection closes.
  void Finish(std::chrono::milliseconds deadline) {
    if (!Written(std::chrono::steady_clock::now() + deadline)) return;
    Issue([connection = connection_] {
      connection->WriteCounted(std::make_shared<LastChunk>(bhttp::make_chunk_last()), nullptr,
                               [connection] { connection->Close(); });
    });
  }

 private:
  using ChunkOf = decltype(bhttp::make_chunk(asio::const_buffer()));
  using LastChunk = decltype(bhttp::make_chunk_last());

  // Runs `write` on the strand, counted as one more write to wait for.
  void Issue(std::function<void()> write) {
    ++issued_;
    asio::post(connection_->stream_.get_executor(), std::move(write));
  }

  // Waits until every write issued has completed: false if the client went first, or the
  // time ran out (then the connection is closed: a reader that stopped reading is let go).
  bool Written(std::chrono::steady_clock::time_point until) {
    std::unique_lock lock(connection_->mutex_);
    const bool done = connection_->changed_.wait_until(
        lock, until, [this] { return connection_->gone_ || connection_->written_ >= issued_; });
    if (connection_->gone_) return false;
    if (!done) {
      lock.unlock();
      connection_->Abort();
      return false;
    }
    return true;
  }

  const std::shared_ptr<Connection> connection_;
  uint64_t issued_ = 0;
};

template <typename Stream>
void Connection<Stream>::RunStream(const HttpResponse& response) {
  Writer writer(shared_from_this());
  writer.Begin(response);
  response.stream(writer);
  writer.Finish(shared_->limits.request_deadline);
}

}  // namespace

class HttpServer::Engine {
 public:
  // Without `tls`, plain HTTP.
  Engine(std::optional<TlsServerOptions> tls, HttpServerLimits limits)
      : tls_options_(std::move(tls)),
        limits_(limits),
        acceptor_(asio::make_strand(io_)),
        retry_(acceptor_.get_executor()) {
    if (tls_options_) tls_.emplace(asio::ssl::context::tls_server);
  }

  ~Engine() { Stop(); }

  absl::Status Listen(const std::string& address) {
    if (tls_) {
      if (absl::Status configured = ConfigureServerTls(tls_->native_handle(), *tls_options_);
          !configured.ok()) {
        return configured;
      }
    }
    absl::StatusOr<TcpListener> listener = http::ListenTcp(address, 128);
    if (!listener.ok()) return listener.status();
    sockaddr_storage bound{};
    socklen_t length = sizeof bound;
    getsockname(listener->fd.get(), reinterpret_cast<sockaddr*>(&bound), &length);
    beast::error_code error;
    acceptor_.assign(bound.ss_family == AF_INET6 ? Tcp::v6() : Tcp::v4(), listener->fd.get(),
                     error);
    if (error)
      return absl::InternalError(fmt::format("listening on {}: {}", address, error.message()));
    listener->fd.Release();  // the acceptor owns it now
    address_ = listener->address;
    return absl::OkStatus();
  }

  void Serve(HttpRoutes routes) { routes_ = std::move(routes); }

  void Start() {
    shared_ = std::make_shared<Shared>(std::move(routes_), limits_);
    asio::post(acceptor_.get_executor(), [this] { Accept(); });
    for (int i = 0; i < std::max(1, limits_.io_threads); ++i) {
      io_threads_.emplace_back([this] { io_.run(); });
    }
  }

  void Stop() {
    if (!shared_ || stopped_) return;
    stopped_ = true;
    shared_->stopping = true;
    std::promise<void> closed;
    asio::post(acceptor_.get_executor(), [this, &closed] {
      beast::error_code ignored;
      acceptor_.close(ignored);
      retry_.cancel();
      closed.set_value();
    });
    closed.get_future().wait();
    std::vector<std::shared_ptr<Link>> open;
    {
      std::lock_guard lock(shared_->mutex);
      for (const auto& [id, connection] : shared_->live) {
        if (std::shared_ptr<Link> alive = connection.lock()) open.push_back(alive);
      }
    }
    for (const std::shared_ptr<Link>& connection : open) connection->Abort();
    open.clear();
    shared_->pool.Stop();  // handlers return; streams see their client gone
    io_.stop();
    for (std::thread& thread : io_threads_) thread.join();
  }

  const std::string& address() const { return address_; }

 private:
  // On the acceptor's strand.
  void Accept() {
    acceptor_.async_accept(
        asio::make_strand(io_), [this](beast::error_code error, Tcp::socket socket) {
          if (shared_->stopping) return;
          if (error) {
            // Out of descriptors, most likely: rest rather than spin on a listener that stays
            // readable.
            Log(LogLevel::kWarning, "{}: accepting a connection: {}", address_, error.message());
            retry_.expires_after(std::chrono::milliseconds(100));
            retry_.async_wait([this](beast::error_code waited) {
              if (!waited) Accept();
            });
            return;
          }
          Admit(std::move(socket));
          Accept();
        });
  }

  void Admit(Tcp::socket socket) {
    // Declared before the lock, so released after it: a connection that has already ended on
    // another I/O thread ends here, and its destructor takes the lock.
    std::shared_ptr<Link> connection;
    std::lock_guard lock(shared_->mutex);
    if (shared_->live.size() >= limits_.max_connections) {
      beast::error_code ignored;
      socket.close(ignored);
      return;
    }
    const uint64_t id = ++shared_->next_id;
    if (tls_) {
      connection = std::make_shared<Connection<TlsStream>>(shared_, id, std::move(socket), *tls_);
    } else {
      connection = std::make_shared<Connection<PlainStream>>(shared_, id, std::move(socket));
    }
    shared_->live.emplace(id, connection);
    connection->Start();
  }

  // Both empty for plain HTTP. The options' CA store is the handshakes' (tls.h).
  const std::optional<TlsServerOptions> tls_options_;
  const HttpServerLimits limits_;
  HttpRoutes routes_;  // until Start
  asio::io_context io_;
  std::optional<asio::ssl::context> tls_;
  Tcp::acceptor acceptor_;
  asio::steady_timer retry_;
  std::shared_ptr<Shared> shared_;
  std::vector<std::thread> io_threads_;
  std::string address_;
  bool stopped_ = false;
};

HttpServer::HttpServer(std::unique_ptr<Engine> engine) : engine_(std::move(engine)) {}
HttpServer::~HttpServer() = default;

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::ListenTcp(const std::string& address,
                                                                  TlsServerOptions tls,
                                                                  HttpServerLimits limits) {
  return Listen(std::make_unique<Engine>(std::move(tls), limits), address);
}

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::ListenLoopback(const std::string& address,
                                                                       HttpServerLimits limits) {
  const std::optional<Endpoint> endpoint = Endpoint::Parse(address);
  if (!endpoint || !endpoint->ip.is_loopback()) {
    return absl::InvalidArgumentError(fmt::format(
        "'{}' is not a loopback address: plain HTTP is served only on 127.0.0.0/8 or [::1], "
        "which no other machine can reach (e.g. 127.0.0.1:0)",
        address));
  }
  return Listen(std::make_unique<Engine>(std::nullopt, limits), endpoint->ToString());
}

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Listen(std::unique_ptr<Engine> engine,
                                                               const std::string& address) {
  if (absl::Status listening = engine->Listen(address); !listening.ok()) return listening;
  return std::unique_ptr<HttpServer>(new HttpServer(std::move(engine)));
}

void HttpServer::Serve(HttpRoutes routes) { engine_->Serve(std::move(routes)); }
void HttpServer::Start() { engine_->Start(); }
void HttpServer::Stop() { engine_->Stop(); }
const std::string& HttpServer::address() const { return engine_->address(); }

}  // namespace nodemesh::http
