// How a request ended: the word of the parsers' vocabulary that the metric model (failure
// classification) and the wire form (tap events) speak too. A header of its own, which the
// parsers use, so that what reads it (the aggregator, meshctl) links neither llhttp nor
// nghttp2.
#pragma once

#include <cstdint>

namespace nodemesh::parsers {

enum class EndReason : uint8_t {
  kComplete,  // response fully received
  kReset,     // RST_STREAM, by either peer
  kRefused,   // never processed: above a GOAWAY's last stream id
  kAborted,   // the connection closed first
};

}  // namespace nodemesh::parsers
