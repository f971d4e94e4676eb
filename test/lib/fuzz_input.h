// The input format the connection-parser fuzz targets share, so that seeds made from
// recorded captures (test/fixtures/parsers/*.capture, see make_seeds.py next to the
// corpora) reach deep into each protocol. An input is a sequence of records:
//
//   flags (1 byte) | length (2 bytes, little endian) | bytes
//
// flags bit 0: the server sent it (else the client); bit 1: that peer then half-closed;
// bits 2-7: when non-zero, the bytes are fed in pieces of that many bytes, to vary splits.
// A record cut short by the end of the input is fed as far as it goes.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "parsers/parser.h"

namespace nodemesh::testing {

inline void FeedFuzzInput(parsers::ConnectionParser& parser, std::string_view input) {
  parsers::Timestamp now = 0;
  while (input.size() >= 3) {
    const auto flags = static_cast<uint8_t>(input[0]);
    const size_t length =
        static_cast<uint8_t>(input[1]) | (static_cast<size_t>(static_cast<uint8_t>(input[2])) << 8);
    input.remove_prefix(3);
    std::string_view bytes = input.substr(0, std::min(length, input.size()));
    input.remove_prefix(bytes.size());
    const parsers::Peer from = (flags & 1) ? parsers::Peer::kServer : parsers::Peer::kClient;
    const size_t piece = (flags >> 2) == 0 ? bytes.size() : (flags >> 2);
    ++now;
    while (!bytes.empty()) {
      parser.Feed(from, bytes.substr(0, piece), now);
      bytes.remove_prefix(std::min(piece, bytes.size()));
    }
    if (flags & 2) parser.EndOfInput(from, now);
  }
  parser.Close(now + 1);
}

}  // namespace nodemesh::testing
