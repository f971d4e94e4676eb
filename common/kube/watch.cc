// Client::Stream: a streaming GET (a watch), its lines handed over as they arrive.
#include <algorithm>
#include <string>

#include "common/base/format.h"
#include "common/kube/client.h"
#include "common/kube/libcurl.h"

namespace nodemesh::kube {
namespace {

using Clock = std::chrono::steady_clock;

// How often a stream looks at its stop flag and its stall deadline.
constexpr std::chrono::milliseconds kStreamPoll{100};

// What a stream's callbacks share with the loop that drives it.
struct StreamState {
  CURL* easy = nullptr;
  const std::function<bool(std::string_view)>* on_line = nullptr;
  std::string pending;     // the part of a line received so far
  std::string error_body;  // the whole body of an answer >= 300
  long status = 0;
  bool ended_by_callback = false;
  bool too_long = false;
  Clock::time_point last_byte;
  curl_off_t last_downloaded = 0;
};

size_t StreamWrite(char* data, size_t size, size_t count, void* user) {
  auto* state = static_cast<StreamState*>(user);
  const size_t bytes = size * count;
  state->last_byte = Clock::now();
  if (state->status == 0) curl_easy_getinfo(state->easy, CURLINFO_RESPONSE_CODE, &state->status);
  if (state->status >= 300) {
    return AppendToString(data, size, count, &state->error_body);
  }
  std::string_view chunk(data, bytes);
  while (!chunk.empty()) {
    const size_t newline = chunk.find('\n');
    if (newline == std::string_view::npos) {
      if (state->pending.size() + chunk.size() > kMaxBody) {
        state->too_long = true;
        return 0;
      }
      state->pending.append(chunk);
      break;
    }
    std::string_view line = chunk.substr(0, newline);
    chunk.remove_prefix(newline + 1);
    if (!state->pending.empty()) {
      state->pending.append(line);
      line = state->pending;
    }
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    const bool more = (*state->on_line)(line);
    state->pending.clear();
    if (!more) {
      state->ended_by_callback = true;
      return 0;
    }
  }
  return bytes;
}

// Counts bytes libcurl received that never reach the write callback (transfer framing),
// so that a server's keep-alive traffic also keeps the stream alive.
int StreamProgress(void* user, curl_off_t, curl_off_t downloaded, curl_off_t, curl_off_t) {
  auto* state = static_cast<StreamState*>(user);
  if (downloaded != state->last_downloaded) {
    state->last_downloaded = downloaded;
    state->last_byte = Clock::now();
  }
  return 0;
}

// Runs the transfer until it ends, then gives its result; or ends it early: CANCELLED when
// `stop` became true, DEADLINE_EXCEEDED when no byte came for `stall_timeout`, INTERNAL when
// libcurl fails.
absl::StatusOr<CURLcode> Drive(CURLM* multi, const StreamState& state,
                               std::chrono::milliseconds stall_timeout,
                               const std::atomic<bool>& stop, std::string_view what,
                               std::string_view server) {
  while (true) {
    int running = 0;
    const CURLMcode multi_code = curl_multi_perform(multi, &running);
    if (multi_code != CURLM_OK) {
      return absl::InternalError(
          fmt::format("{}: libcurl: {}", what, curl_multi_strerror(multi_code)));
    }
    if (running == 0) {
      CURLcode result = CURLE_OK;
      int queued = 0;
      while (CURLMsg* message = curl_multi_info_read(multi, &queued)) {
        if (message->msg == CURLMSG_DONE) result = message->data.result;
      }
      return result;
    }
    if (stop.load()) {
      return absl::CancelledError(fmt::format("{}: stopped", what));
    }
    if (Clock::now() - state.last_byte >= stall_timeout) {
      return absl::DeadlineExceededError(
          fmt::format("{}: not a byte from the API server at {} for {} ms", what, server,
                      stall_timeout.count()));
    }
    curl_multi_poll(multi, nullptr, 0, static_cast<int>(kStreamPoll.count()), nullptr);
  }
}

}  // namespace

absl::Status Client::Stream(std::string_view path, std::chrono::milliseconds stall_timeout,
                            const std::function<bool(std::string_view line)>& on_line,
                            const std::atomic<bool>& stop) {
  const std::string what = DescribeRequest("GET", path);
  const absl::StatusOr<RequestCredentials> credentials = StartRequest(what);
  if (!credentials.ok()) return credentials.status();
  const absl::Status status = StreamOnce(path, stall_timeout, on_line, stop, *credentials, what);
  // UNAUTHENTICATED comes only from a 401, which arrives before any line.
  if (!absl::IsUnauthenticated(status)) return status;
  const absl::StatusOr<std::optional<RequestCredentials>> renewed =
      RenewAfterUnauthorized(*credentials, what);
  if (!renewed.ok()) return renewed.status();
  if (!renewed->has_value()) return status;
  return StreamOnce(path, stall_timeout, on_line, stop, **renewed, what);
}

absl::Status Client::StreamOnce(std::string_view path, std::chrono::milliseconds stall_timeout,
                                const std::function<bool(std::string_view line)>& on_line,
                                const std::atomic<bool>& stop,
                                const RequestCredentials& credentials, const std::string& what) {
  // A handle of its own: a stream runs for minutes and its connection is not reused after
  // being cut, so the pool would gain nothing.
  const EasyHandle easy(curl_easy_init());
  const MultiHandle multi(curl_multi_init());
  if (easy == nullptr || multi == nullptr) {
    stats_.failures.fetch_add(1, std::memory_order_relaxed);
    return absl::ResourceExhaustedError(fmt::format("{}: libcurl handle allocation failed", what));
  }
  const Slist headers(BaseHeaders(credentials.authorization));
  char error_buffer[CURL_ERROR_SIZE] = {};
  Configure(easy.get(), config_, *endpoint_, credentials, path, headers.get(), error_buffer);
  curl_easy_setopt(easy.get(), CURLOPT_HTTPGET, 1L);
  // A connection that cannot be made is a failure (UNAVAILABLE), not a stall; the stall
  // check covers everything after.
  const std::chrono::milliseconds connect_timeout =
      std::max(std::min(stall_timeout, kMaxConnectTimeout), std::chrono::milliseconds(1));
  curl_easy_setopt(easy.get(), CURLOPT_CONNECTTIMEOUT_MS,
                   static_cast<long>(connect_timeout.count()));

  StreamState state;
  state.easy = easy.get();
  state.on_line = &on_line;
  state.last_byte = Clock::now();
  curl_easy_setopt(easy.get(), CURLOPT_WRITEFUNCTION, StreamWrite);
  curl_easy_setopt(easy.get(), CURLOPT_WRITEDATA, &state);
  curl_easy_setopt(easy.get(), CURLOPT_NOPROGRESS, 0L);
  curl_easy_setopt(easy.get(), CURLOPT_XFERINFOFUNCTION, StreamProgress);
  curl_easy_setopt(easy.get(), CURLOPT_XFERINFODATA, &state);

  curl_multi_add_handle(multi.get(), easy.get());
  // Removes the easy handle from the multi before either is cleaned up, on every path.
  struct Detach {
    CURLM* multi;
    CURL* easy;
    ~Detach() {
      curl_multi_remove_handle(multi, easy);
      // The error buffer lives in this frame; the handle outlives it by a little.
      curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, nullptr);
    }
  } detach{multi.get(), easy.get()};

  const absl::StatusOr<CURLcode> result =
      Drive(multi.get(), state, stall_timeout, stop, what, config_.server);
  if (!result.ok()) {
    if (!absl::IsCancelled(result.status())) {
      stats_.failures.fetch_add(1, std::memory_order_relaxed);
    }
    return result.status();
  }

  if (state.ended_by_callback) return absl::OkStatus();
  if (state.status == 0) curl_easy_getinfo(easy.get(), CURLINFO_RESPONSE_CODE, &state.status);
  if (*result != CURLE_OK) {
    stats_.failures.fetch_add(1, std::memory_order_relaxed);
    if (state.too_long) {
      return absl::ResourceExhaustedError(
          fmt::format("{}: a line of the stream is longer than {} bytes", what, kMaxBody));
    }
    if (*result == CURLE_WRITE_ERROR && state.status >= 300) {
      return absl::ResourceExhaustedError(
          fmt::format("{}: the answer {} is larger than {} bytes", what, state.status, kMaxBody));
    }
    if (*result == CURLE_OPERATION_TIMEDOUT) {
      // The only libcurl timeout a stream has is the connect timeout.
      return absl::UnavailableError(
          fmt::format("{}: cannot connect to the API server at {} within {} ms", what,
                      config_.server, connect_timeout.count()));
    }
    long os_errno = 0;
    curl_easy_getinfo(easy.get(), CURLINFO_OS_ERRNO, &os_errno);
    return TransportError(config_, what, *result, error_buffer, os_errno, connect_timeout);
  }
  if (state.status >= 300) {
    if (state.status >= 400) stats_.failures.fetch_add(1, std::memory_order_relaxed);
    return StatusFromResponse(Response{state.status, std::move(state.error_body)}, what);
  }
  // A last line the server did not end with a newline.
  if (!state.pending.empty()) {
    std::string_view line = state.pending;
    if (line.back() == '\r') line.remove_suffix(1);
    on_line(line);
  }
  return absl::OkStatus();
}

}  // namespace nodemesh::kube
