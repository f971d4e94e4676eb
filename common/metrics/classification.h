// Success or failure of a request, as docs/ARCHITECTURE.md section 6 defines it.
#pragma once

#include "common/metrics/sample.h"
#include "parsers/end_reason.h"

namespace nodemesh::metrics {

// Failure: HTTP 5xx; gRPC Unknown, DeadlineExceeded, Internal, Unavailable or DataLoss; or a
// stream reset, refused or cut off by the connection closing.
inline bool IsFailure(int http_status, int grpc_status, parsers::EndReason reason) {
  if (reason != parsers::EndReason::kComplete) return true;
  if (http_status >= 500) return true;
  switch (grpc_status) {
    case 2:   // UNKNOWN
    case 4:   // DEADLINE_EXCEEDED
    case 13:  // INTERNAL
    case 14:  // UNAVAILABLE
    case 15:  // DATA_LOSS
      return true;
    default:
      return false;
  }
}

// The response series a request's end counts in: its statuses, and whether it failed.
inline ResponseKey ResponseKeyOf(const RequestKey& request, int http_status, int grpc_status,
                                 parsers::EndReason reason) {
  return ResponseKey{request, static_cast<uint16_t>(http_status), static_cast<int16_t>(grpc_status),
                     IsFailure(http_status, grpc_status, reason)};
}

}  // namespace nodemesh::metrics
