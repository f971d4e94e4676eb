#include "common/kube/reflector.h"

#include <malloc.h>

#include <algorithm>
#include <random>
#include <utility>

#include "common/base/format.h"
#include "common/base/log.h"
#include "common/base/percent_encoding.h"

namespace nodemesh::kube {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

// A watch that ends cleanly this soon without a single line is not trusted to mean "the
// server's timeout": something between us and the server is cutting watches, and
// re-watching at once would spin. The next one waits initial_backoff (as client-go does).
constexpr std::chrono::seconds kShortWatch{1};

const json* Find(const json& object, std::string_view key) {
  if (!object.is_object()) return nullptr;
  const auto it = object.find(key);
  return it == object.end() ? nullptr : &*it;
}

std::string StringAt(const json* object, std::string_view key) {
  const json* value = object != nullptr ? Find(*object, key) : nullptr;
  return value != nullptr && value->is_string() ? value->get<std::string>() : std::string();
}

std::string ResourceVersionOf(const json& object) {
  return StringAt(Find(object, "metadata"), "resourceVersion");
}

std::string Shorten(std::string_view text) {
  constexpr size_t kMax = 200;
  if (text.size() <= kMax) return std::string(text);
  return fmt::format("{}... ({} bytes)", text.substr(0, kMax), text.size());
}

bool Blank(std::string_view line) {
  return line.find_first_not_of(" \t\r") == std::string_view::npos;
}

}  // namespace

std::string ObjectKey(const json& object) {
  const json* metadata = Find(object, "metadata");
  const std::string name = StringAt(metadata, "name");
  const std::string namespace_name = StringAt(metadata, "namespace");
  if (name.empty() || namespace_name.empty()) return name;
  return namespace_name + "/" + name;
}

void SnapshotStore::Publish(Objects objects) {
  std::lock_guard lock(mutex_);
  objects_ = std::make_shared<const Objects>(std::move(objects));
}

void SnapshotStore::Replace(Objects objects) { Publish(std::move(objects)); }

void SnapshotStore::Put(const std::string& key, const json& object) {
  // Only the reflector's thread changes the store: the snapshot is current until Publish.
  Objects objects = *Snapshot();
  objects.insert_or_assign(key, object);
  Publish(std::move(objects));
}

bool SnapshotStore::Remove(const std::string& key) {
  const std::shared_ptr<const Objects> current = Snapshot();
  if (!current->contains(key)) return false;
  Objects objects = *current;
  objects.erase(key);
  Publish(std::move(objects));
  return true;
}

std::shared_ptr<const Objects> SnapshotStore::Snapshot() const {
  std::lock_guard lock(mutex_);
  return objects_;
}

Reflector::Reflector(Client& client, ReflectorOptions options, std::function<void()> on_change)
    : Reflector(client, std::move(options), own_store_, std::move(on_change)) {}

Reflector::Reflector(Client& client, ReflectorOptions options, ReflectorStore& store,
                     std::function<void()> on_change)
    : client_(client),
      options_(std::move(options)),
      on_change_(std::move(on_change)),
      store_(store) {}

Reflector::~Reflector() { Stop(); }

void Reflector::Start() {
  if (thread_.joinable()) return;
  stop_.store(false);
  thread_ = std::thread([this] { Loop(); });
}

void Reflector::Stop() {
  stop_.store(true);
  {
    // Taking the mutex orders the flag before any waiter's check of it: no lost wake-up.
    std::lock_guard lock(mutex_);
  }
  changed_.notify_all();
  if (thread_.joinable() && thread_.get_id() != std::this_thread::get_id()) thread_.join();
}

bool Reflector::WaitForSync(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  changed_.wait_for(lock, timeout, [this] { return synced_.load() || stop_.load(); });
  return synced_.load();
}

std::shared_ptr<const Objects> Reflector::Snapshot() const { return own_store_.Snapshot(); }

std::string Reflector::resource_version() const {
  std::lock_guard lock(mutex_);
  return resource_version_;
}

std::string Reflector::last_error() const {
  std::lock_guard lock(mutex_);
  return last_error_;
}

void Reflector::Changed(std::string resource_version) {
  {
    std::lock_guard lock(mutex_);
    if (!resource_version.empty()) resource_version_ = std::move(resource_version);
    synced_.store(true);
  }
  changed_.notify_all();
  if (on_change_) on_change_();
}

std::string Reflector::Query(bool watch) const {
  std::string query;
  auto add = [&query](std::string_view name, std::string_view value) {
    query += query.empty() ? '?' : '&';
    query += name;
    query += '=';
    query += PercentEncode(value);  // selectors hold '=', ',', '!' and spaces
  };
  if (watch) {
    add("watch", "1");
    add("allowWatchBookmarks", "true");
    add("timeoutSeconds", std::to_string(std::max<int64_t>(options_.watch_timeout.count(), 1)));
    add("resourceVersion", resource_version());
  }
  if (!options_.field_selector.empty()) add("fieldSelector", options_.field_selector);
  if (!options_.label_selector.empty()) add("labelSelector", options_.label_selector);
  return query;
}

absl::Status Reflector::List() {
  // The list is read through Stream so that Stop() interrupts it like a watch, and a server
  // that goes silent in the middle of a list is noticed after stall_timeout.
  std::string body;
  const absl::Status status = client_.Stream(
      options_.path + Query(/*watch=*/false), options_.stall_timeout,
      [&body](std::string_view line) {
        body.append(line);
        body += '\n';
        return true;
      },
      stop_);
  if (!status.ok()) return status;
  json list = json::parse(body, nullptr, /*allow_exceptions=*/false);
  json* items = list.is_object() && list.contains("items") ? &list["items"] : nullptr;
  if (!list.is_object() || (items != nullptr && !items->is_array() && !items->is_null())) {
    return absl::InternalError(
        fmt::format("list {}: the answer is not a list: {}", options_.what, Shorten(body)));
  }
  body = std::string();  // a large collection's answer is held once, not twice
  const std::string version = ResourceVersionOf(list);
  if (version.empty()) {
    return absl::InternalError(fmt::format(
        "list {}: the answer has no metadata.resourceVersion to watch from", options_.what));
  }
  Objects objects;
  if (items != nullptr && items->is_array()) {
    for (json& item : *items) {
      std::string key = ObjectKey(item);
      if (key.empty()) continue;  // not an object with a name: nothing could refer to it
      objects.insert_or_assign(std::move(key), std::move(item));
    }
  }
  stats_.lists.fetch_add(1, std::memory_order_relaxed);
  // Before the copy is published, so that whoever waits for it sees no stale error.
  Recovered();
  store_.Replace(std::move(objects));
  list = json();
  // The answer and its parsed form, many times the size of what a store keeps of a large
  // collection (10,000 Services: tens of MiB), were freed at once: give their pages back
  // rather than keep them resident until the next list.
  ::malloc_trim(0);
  Changed(version);
  return absl::OkStatus();
}

absl::Status Reflector::Watch() {
  stats_.watches.fetch_add(1, std::memory_order_relaxed);
  watch_lines_ = 0;
  absl::Status event_error;
  const auto on_line = [this, &event_error](std::string_view line) {
    if (Blank(line)) return true;  // a keep-alive
    if (watch_lines_++ == 0) Recovered();
    const json event = json::parse(line, nullptr, /*allow_exceptions=*/false);
    const json* object = Find(event, "object");
    const std::string type = StringAt(&event, "type");
    if (!event.is_object() || object == nullptr || type.empty()) {
      event_error = absl::InternalError(fmt::format(
          "watch {}: a line that is not a watch event: {}", options_.what, Shorten(line)));
      return false;
    }
    if (type == "ERROR") {
      // The object is a Status.
      const json* code = Find(*object, "code");
      const std::string message = StringAt(object, "message");
      if (code != nullptr && code->is_number_integer() && code->get<int64_t>() == 410) {
        event_error = absl::FailedPreconditionError(
            fmt::format("watch {}: {}: {}", options_.what, kGoneReason, message));
      } else {
        event_error = absl::UnknownError(fmt::format(
            "watch {}: the server sent an error: {} {}: {}", options_.what,
            code != nullptr ? code->dump() : "(no code)", StringAt(object, "reason"), message));
      }
      return false;
    }
    std::string version = ResourceVersionOf(*object);
    if (type == "BOOKMARK") {
      stats_.bookmarks.fetch_add(1, std::memory_order_relaxed);
      if (!version.empty()) {
        std::lock_guard lock(mutex_);
        resource_version_ = std::move(version);
      }
      return true;
    }
    const bool deleted = type == "DELETED";
    if (!deleted && type != "ADDED" && type != "MODIFIED") {
      Log(LogLevel::kWarning, "kube: watch {}: ignoring an event of unknown type {}", options_.what,
          type);
      return true;
    }
    const std::string key = ObjectKey(*object);
    stats_.events.fetch_add(1, std::memory_order_relaxed);
    bool changed = false;
    if (key.empty()) {
      // Not an object with a name: nothing could refer to it.
    } else if (deleted) {
      changed = store_.Remove(key);
    } else {
      store_.Put(key, *object);
      changed = true;
    }
    if (!changed) {
      if (!version.empty()) {
        std::lock_guard lock(mutex_);
        resource_version_ = std::move(version);
      }
      return true;
    }
    Changed(std::move(version));
    return true;
  };
  const absl::Status status =
      client_.Stream(options_.path + Query(/*watch=*/true), options_.stall_timeout, on_line, stop_);
  if (!event_error.ok()) return event_error;
  return status;
}

void Reflector::Recovered() {
  std::string previous;
  {
    std::lock_guard lock(mutex_);
    previous = std::exchange(last_error_, std::string());
  }
  if (!previous.empty()) {
    Log(LogLevel::kInfo, "kube: {}: the API server answers again", options_.what);
  }
  logged_error_.clear();
}

void Reflector::Fail(const absl::Status& status) {
  stats_.errors.fetch_add(1, std::memory_order_relaxed);
  std::string message(status.message());
  if (message != logged_error_) {
    Log(LogLevel::kError, "kube: {}: {}; keeping the last copy and retrying", options_.what,
        message);
    logged_error_ = message;
  }
  std::lock_guard lock(mutex_);
  last_error_ = std::move(message);
}

void Reflector::Backoff(std::chrono::milliseconds& delay) {
  // Waits between half the delay and the whole of it, so that many agents that lost the
  // server together do not come back together.
  static thread_local std::minstd_rand random(std::random_device{}());
  const int64_t half = std::max<int64_t>(delay.count() / 2, 1);
  const std::chrono::milliseconds wait(half +
                                       std::uniform_int_distribution<int64_t>(0, half)(random));
  {
    std::unique_lock lock(mutex_);
    changed_.wait_for(lock, wait, [this] { return stop_.load(); });
  }
  delay = std::min(delay * 2, std::max(options_.max_backoff, options_.initial_backoff));
}

void Reflector::Loop() {
  std::chrono::milliseconds delay = options_.initial_backoff;
  bool need_list = true;
  while (!stop_.load()) {
    if (need_list) {
      const absl::Status status = List();
      if (stop_.load()) break;
      if (!status.ok()) {
        Fail(status);
        Backoff(delay);
        continue;
      }
      delay = options_.initial_backoff;
      need_list = false;
    }
    const Clock::time_point started = Clock::now();
    const absl::Status status = Watch();
    if (stop_.load()) break;
    if (status.ok()) {
      if (watch_lines_ == 0 && Clock::now() - started < kShortWatch) {
        Log(LogLevel::kDebug, "kube: watch {}: ended at once with nothing; waiting {} ms",
            options_.what, options_.initial_backoff.count());
        std::chrono::milliseconds wait = options_.initial_backoff;
        Backoff(wait);
      }
      continue;  // the server's timeout: watch again from the last version
    }
    if (status.code() == absl::StatusCode::kFailedPrecondition &&
        std::string_view(status.message().data(), status.message().size()).find(kGoneReason) !=
            std::string_view::npos) {
      stats_.gone.fetch_add(1, std::memory_order_relaxed);
      Log(LogLevel::kInfo, "kube: {}: resourceVersion {} is too old; listing again", options_.what,
          resource_version());
      need_list = true;
      continue;
    }
    if (status.code() == absl::StatusCode::kDeadlineExceeded) {
      stats_.stalls.fetch_add(1, std::memory_order_relaxed);
      Log(LogLevel::kWarning, "kube: {}; watching again from resourceVersion {}", status.message(),
          resource_version());
      continue;
    }
    if (watch_lines_ > 0 && status.code() == absl::StatusCode::kUnavailable) {
      // A watch that was working and then was cut (the server went away, a proxy closed
      // it): start again at once; if the server is really gone that attempt fails.
      Log(LogLevel::kDebug, "kube: {}", status.message());
      continue;
    }
    Fail(status);
    Backoff(delay);
  }
}

}  // namespace nodemesh::kube
