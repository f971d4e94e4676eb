// Client::Stream: a streaming GET (a watch), its lines handed over as they arrive.
#include <algorithm>
#include <string>

#include "common/base/format.h"
#include "common/kube/client.h"
#include "common/kube/transport.h"

namespace nodemesh::kube {

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
  Exchange exchange(config_, *endpoint_, what);
  // A connection that cannot be made is a failure (UNAVAILABLE), not a stall; the stall
  // check covers everything after.
  const std::chrono::milliseconds connect_timeout =
      std::max(std::min(stall_timeout, kMaxConnectTimeout), std::chrono::milliseconds(1));
  const absl::Status sent =
      exchange.Send("GET", path, {}, {}, credentials, Exchange::Clock::now() + connect_timeout);
  if (!sent.ok()) {
    stats_.failures.fetch_add(1, std::memory_order_relaxed);
    if (absl::IsDeadlineExceeded(sent)) return absl::UnavailableError(sent.message());
    return sent;
  }

  std::string pending;     // the part of a line received so far
  std::string error_body;  // the whole body of an answer >= 300
  bool ended_by_callback = false;
  bool too_long = false;
  const auto on_data = [&](std::string_view chunk) {
    if (exchange.status() >= 300) {
      too_long = error_body.size() + chunk.size() > kMaxBody;
      if (!too_long) error_body.append(chunk);
      return !too_long;
    }
    while (!chunk.empty()) {
      const size_t newline = chunk.find('\n');
      if (newline == std::string_view::npos) {
        too_long = pending.size() + chunk.size() > kMaxBody;
        if (!too_long) pending.append(chunk);
        return !too_long;
      }
      std::string_view line = chunk.substr(0, newline);
      chunk.remove_prefix(newline + 1);
      if (!pending.empty()) {
        pending.append(line);
        line = pending;
      }
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      const bool more = on_line(line);
      pending.clear();
      if (!more) {
        ended_by_callback = true;
        return false;
      }
    }
    return true;
  };
  const absl::Status received = exchange.ReceiveStream(on_data, stall_timeout, stop);
  if (!received.ok()) {
    if (!absl::IsCancelled(received)) stats_.failures.fetch_add(1, std::memory_order_relaxed);
    return received;
  }
  if (ended_by_callback) return absl::OkStatus();
  const int status = exchange.status();
  if (too_long) {
    stats_.failures.fetch_add(1, std::memory_order_relaxed);
    return absl::ResourceExhaustedError(
        status >= 300
            ? fmt::format("{}: the answer {} is larger than {} bytes", what, status, kMaxBody)
            : fmt::format("{}: a line of the stream is longer than {} bytes", what, kMaxBody));
  }
  if (status >= 300) {
    if (status >= 400) stats_.failures.fetch_add(1, std::memory_order_relaxed);
    return StatusFromResponse(Response{status, std::move(error_body)}, what);
  }
  // A last line the server did not end with a newline.
  if (!pending.empty()) {
    std::string_view line = pending;
    if (line.back() == '\r') line.remove_suffix(1);
    on_line(line);
  }
  return absl::OkStatus();
}

}  // namespace nodemesh::kube
