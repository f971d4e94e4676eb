// Recorded connections for parser tests. A capture file is the byte stream of one TCP
// connection as a relay saw it, one segment per read:
//
//   c 123\n<123 bytes>\n      bytes the client sent
//   s 45\n<45 bytes>\n        bytes the server sent
//   c eof\n                   the client half-closed (likewise "s eof")
//
// test/fixtures/parsers/record.py writes them from real peers talking over loopback.
#pragma once

#include <random>
#include <string>
#include <vector>

#include "parsers/parser.h"

namespace nodemesh::testing {

struct Segment {
  parsers::Peer from = parsers::Peer::kClient;
  std::string bytes;
  bool eof = false;  // a half-close instead of bytes
};

std::vector<Segment> ReadCapture(const std::string& path);

// A fixture file under test/fixtures/, by path relative to it.
std::string FixturePath(const std::string& relative);

// Feeds segments to `parser` in order, segment i at timestamp i+1, and closes the
// connection at the end. With `rng`, each segment is cut at random points and fed as
// several pieces with the same timestamp, so the events must not change.
void Replay(const std::vector<Segment>& segments, parsers::ConnectionParser& parser,
            std::mt19937* rng = nullptr);

}  // namespace nodemesh::testing
