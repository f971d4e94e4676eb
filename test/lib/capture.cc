#include "test/lib/capture.h"

#include <fstream>
#include <sstream>
#include <stdexcept>

namespace nodemesh::testing {

std::vector<Segment> ReadCapture(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open capture " + path);
  std::vector<Segment> segments;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream words(line);
    std::string who, size;
    words >> who >> size;
    if ((who != "c" && who != "s") || size.empty()) {
      throw std::runtime_error("bad capture line in " + path + ": " + line);
    }
    Segment segment;
    segment.from = who == "c" ? parsers::Peer::kClient : parsers::Peer::kServer;
    if (size == "eof") {
      segment.eof = true;
    } else {
      segment.bytes.resize(std::stoul(size));
      in.read(segment.bytes.data(), static_cast<std::streamsize>(segment.bytes.size()));
      if (in.gcount() != static_cast<std::streamsize>(segment.bytes.size()) || in.get() != '\n') {
        throw std::runtime_error("truncated segment in capture " + path);
      }
    }
    segments.push_back(std::move(segment));
  }
  return segments;
}

std::string FixturePath(const std::string& relative) {
  return std::string(NODEMESH_SOURCE_DIR) + "/test/fixtures/" + relative;
}

void Replay(const std::vector<Segment>& segments, parsers::ConnectionParser& parser,
            std::mt19937* rng) {
  parsers::Timestamp now = 0;
  for (const Segment& segment : segments) {
    ++now;
    if (segment.eof) {
      parser.EndOfInput(segment.from, now);
      continue;
    }
    std::string_view rest = segment.bytes;
    while (!rest.empty()) {
      size_t piece = rest.size();
      if (rng != nullptr) {
        // Mostly tiny pieces, to cut through every field, and some large ones.
        const size_t most = (*rng)() % 3 == 0 ? rest.size() : std::min<size_t>(rest.size(), 7);
        piece = std::uniform_int_distribution<size_t>(1, most)(*rng);
      }
      parser.Feed(segment.from, rest.substr(0, piece), now);
      rest.remove_prefix(piece);
    }
  }
  parser.Close(now + 1);
}

}  // namespace nodemesh::testing
