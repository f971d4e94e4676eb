// The connect and idle deadlines of one worker's relays, and the quiet spell after which an
// idle relay is told once that it went quiet (Relay::Quiet: its observer gives back what it
// keeps for the next bytes). Every relay in a list has the same timeout, so each list is in
// deadline order: expiring pops from the front and activity moves a relay to the back, all
// in constant time; a relay gone quiet moves from the front of the established list to the
// back of the quiet one, which stays in the order of their last activity. The time is always
// passed in, so tests drive it with a clock of their own. Single-threaded, like the worker that
// owns it.
#pragma once

#include <cstdint>
#include <list>
#include <utility>

#include "agent/proxy/relay.h"

namespace nodemesh::agent {

class RelayTimeouts {
 public:
  RelayTimeouts(int64_t connect_timeout_ns, int64_t idle_timeout_ns, int64_t quiet_after_ns)
      : connect_timeout_ns_(connect_timeout_ns),
        idle_timeout_ns_(idle_timeout_ns),
        quiet_after_ns_(quiet_after_ns) {}

  // Where one relay stands; held by the relay's owner, read and written only here.
  class Entry {
   private:
    friend class RelayTimeouts;
    enum class List : uint8_t { kNone, kConnecting, kEstablished, kQuiet };
    List list_ = List::kNone;
    std::list<std::pair<Relay*, Entry*>>::iterator position_;
  };

  // A new relay, its connect in flight (deadline: its start plus the connect timeout).
  void Connecting(Entry& entry, Relay& relay) { Put(entry, List::kConnecting, relay); }
  // Connected, or active again (deadlines: its last activity plus the quiet spell, and plus
  // the idle timeout).
  void Active(Entry& entry, Relay& relay) { Put(entry, List::kEstablished, relay); }
  void Remove(Entry& entry) {
    if (entry.list_ == List::kNone) return;
    ListOf(entry.list_).erase(entry.position_);
    entry.list_ = List::kNone;
  }

  // Ends every relay whose deadline is before `now_ns`, taking it out of its list first, and
  // tells those whose quiet spell passed.
  void Expire(int64_t now_ns) {
    while (!connecting_.empty() &&
           now_ns - connecting_.front().first->started_ns() > connect_timeout_ns_) {
      Relay& relay = *connecting_.front().first;
      Remove(*connecting_.front().second);
      relay.ConnectTimedOut(now_ns);
    }
    while (!established_.empty() &&
           now_ns - established_.front().first->last_activity_ns() > quiet_after_ns_) {
      auto [relay, entry] = established_.front();
      Put(*entry, List::kQuiet, *relay);
      relay->Quiet();
    }
    // The quiet spell may be longer than the idle timeout: then idle relays are still among
    // the established.
    for (Lane* lane : {&quiet_, &established_}) {
      while (!lane->empty() &&
             now_ns - lane->front().first->last_activity_ns() > idle_timeout_ns_) {
        Relay& relay = *lane->front().first;
        Remove(*lane->front().second);
        relay.IdleTimedOut(now_ns);
      }
    }
  }

  size_t size() const { return connecting_.size() + established_.size() + quiet_.size(); }
  // Relays told they went quiet and idle since.
  size_t quiet() const { return quiet_.size(); }

 private:
  using List = Entry::List;

  using Lane = std::list<std::pair<Relay*, Entry*>>;
  Lane& ListOf(List list) {
    return list == List::kConnecting ? connecting_ : list == List::kQuiet ? quiet_ : established_;
  }
  void Put(Entry& entry, List list, Relay& relay) {
    Lane& to = ListOf(list);
    if (entry.list_ == List::kNone) {
      entry.position_ = to.insert(to.end(), {&relay, &entry});
    } else {
      to.splice(to.end(), ListOf(entry.list_), entry.position_);
    }
    entry.list_ = list;
  }

  const int64_t connect_timeout_ns_;
  const int64_t idle_timeout_ns_;
  const int64_t quiet_after_ns_;
  Lane connecting_;
  Lane established_;
  Lane quiet_;
};

}  // namespace nodemesh::agent
