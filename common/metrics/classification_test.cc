// What counts as a failure, and the response series a request's end is counted in.
#include "common/metrics/classification.h"

#include <catch2/catch.hpp>

namespace nodemesh::metrics {
namespace {

using parsers::EndReason;

TEST_CASE("classification follows the failure rule", "[unit]") {
  CHECK_FALSE(IsFailure(200, -1, EndReason::kComplete));
  CHECK_FALSE(IsFailure(404, -1, EndReason::kComplete));
  CHECK(IsFailure(500, -1, EndReason::kComplete));
  CHECK(IsFailure(503, -1, EndReason::kComplete));
  CHECK_FALSE(IsFailure(200, 0, EndReason::kComplete));
  CHECK_FALSE(IsFailure(200, 5, EndReason::kComplete));  // NotFound is the caller's problem
  for (int failing : {2, 4, 13, 14, 15}) CHECK(IsFailure(200, failing, EndReason::kComplete));
  CHECK(IsFailure(200, 0, EndReason::kReset));
  CHECK(IsFailure(0, -1, EndReason::kAborted));
  CHECK(IsFailure(0, -1, EndReason::kRefused));
}

TEST_CASE("a request's end is counted under its statuses and classification", "[unit]") {
  const RequestKey request{{1, 2, Direction::kOutbound}, 7};
  const ResponseKey unknown = ResponseKeyOf(request, 200, 2, EndReason::kComplete);
  CHECK(unknown.request == request);
  CHECK(unknown.status == 200);
  CHECK(unknown.grpc_status == 2);
  CHECK(unknown.failure);
  const ResponseKey ok = ResponseKeyOf(request, 204, -1, EndReason::kComplete);
  CHECK(ok.grpc_status == -1);
  CHECK_FALSE(ok.failure);
}

}  // namespace
}  // namespace nodemesh::metrics
