// An EventSink that keeps every event, for comparing parser runs in tests.
#pragma once

#include <ostream>
#include <string>
#include <variant>
#include <vector>

#include "parsers/parser.h"

namespace nodemesh::parsers {
// For readable test failures.
inline std::ostream& operator<<(std::ostream& out, const Header& header) {
  return out << header.name << ": " << header.value;
}
}  // namespace nodemesh::parsers

namespace nodemesh::testing {

using Event = std::variant<parsers::RequestStart, parsers::ResponseStart, parsers::StreamEnd>;

std::string ToString(const Event& event);

class RecordingSink final : public parsers::EventSink {
 public:
  void OnRequestStart(const parsers::RequestStart& request) override { events.push_back(request); }
  void OnResponseStart(const parsers::ResponseStart& response) override {
    events.push_back(response);
  }
  void OnStreamEnd(const parsers::StreamEnd& end) override { events.push_back(end); }

  std::vector<parsers::RequestStart> requests() const { return Of<parsers::RequestStart>(); }
  std::vector<parsers::ResponseStart> responses() const { return Of<parsers::ResponseStart>(); }
  std::vector<parsers::StreamEnd> ends() const { return Of<parsers::StreamEnd>(); }
  // All events, one per line, for readable test failures.
  std::string Dump() const;

  std::vector<Event> events;

 private:
  template <typename T>
  std::vector<T> Of() const {
    std::vector<T> out;
    for (const Event& event : events) {
      if (const T* typed = std::get_if<T>(&event)) out.push_back(*typed);
    }
    return out;
  }
};

}  // namespace nodemesh::testing
