// List then watch one collection of the Kubernetes API, as client-go's reflector does,
// keeping a local copy of its objects that follows the cluster:
//   - list (`?resourceVersion=` unset, so the answer is current), remember the list's
//     metadata.resourceVersion, replace the copy;
//   - watch from there with allowWatchBookmarks=true and timeoutSeconds; each event line
//     (ADDED, MODIFIED, DELETED, BOOKMARK) updates the copy and the resourceVersion;
//   - a watch that ends (the server's timeout, a dropped connection) or stalls (not a
//     byte, not even a bookmark, for `stall_timeout`) is started again from the last
//     resourceVersion; a 410 Gone, as the watch's HTTP status or as an ERROR event in the
//     stream, means that version is too old: list again;
//   - failures (unreachable, TLS, 401/403) are logged once per distinct message and
//     retried with capped exponential backoff; the copy is kept meanwhile, so whoever
//     reads it carries on with the last view.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "common/kube/client.h"

namespace nodemesh::kube {

struct ReflectorOptions {
  // The collection, e.g. "/api/v1/pods", "/api/v1/namespaces", "/api/v1/services".
  std::string path;
  std::string field_selector;  // e.g. "spec.nodeName=node-1"
  std::string label_selector;
  // What the log lines call it: "pods on node-1".
  std::string what;
  // Asked of the server per watch; it ends the watch after about this long.
  std::chrono::seconds watch_timeout{300};
  // No byte for this long: the watch is considered dead. The API server sends a bookmark
  // about once a minute to a watcher that allows them.
  std::chrono::milliseconds stall_timeout{std::chrono::seconds(90)};
  std::chrono::milliseconds initial_backoff{500};
  std::chrono::milliseconds max_backoff{std::chrono::seconds(30)};
};

struct ReflectorStats {
  std::atomic<uint64_t> lists{0};
  std::atomic<uint64_t> watches{0};
  std::atomic<uint64_t> events{0};  // ADDED, MODIFIED, DELETED applied
  std::atomic<uint64_t> bookmarks{0};
  std::atomic<uint64_t> gone{0};    // 410s, each followed by a list
  std::atomic<uint64_t> stalls{0};  // watches given up for silence
  std::atomic<uint64_t> errors{0};  // failed lists and watches (then backoff)
};

// Objects by "namespace/name" (or "name" for cluster-scoped ones), as the API gave them.
using Objects = std::map<std::string, nlohmann::json>;

// Where a reflector keeps its copy of the collection, changed per list and per event (as
// client-go's Store). Its methods run on the reflector's thread, one at a time; how it shares
// what it keeps with readers on other threads is its own affair.
class ReflectorStore {
 public:
  virtual ~ReflectorStore() = default;
  // A list's objects, in place of everything held.
  virtual void Replace(Objects objects) = 0;
  // An object ADDED or MODIFIED.
  virtual void Put(const std::string& key, const nlohmann::json& object) = 0;
  // An object DELETED; returns whether it was held (if not, nothing changed).
  virtual bool Remove(const std::string& key) = 0;
};

// The store of a collection of a few hundred objects at most (a node's pods, namespaces, a
// ConfigMap): every change publishes a whole new immutable copy.
class SnapshotStore final : public ReflectorStore {
 public:
  void Replace(Objects objects) override;
  void Put(const std::string& key, const nlohmann::json& object) override;
  bool Remove(const std::string& key) override;
  // The copy as of the last change; never changes once returned.
  std::shared_ptr<const Objects> Snapshot() const;

 private:
  void Publish(Objects objects);
  mutable std::mutex mutex_;
  std::shared_ptr<const Objects> objects_ = std::make_shared<const Objects>();
};

class Reflector {
 public:
  using Objects = kube::Objects;

  // Keeps its copy in a SnapshotStore of its own. `on_change` runs on the reflector's thread
  // after every list and every event that changed the copy; it reads it with Snapshot().
  Reflector(Client& client, ReflectorOptions options, std::function<void()> on_change);
  // Keeps its copy in `store`, which outlives it (Snapshot() stays empty); `on_change` as
  // above, after the store was changed.
  Reflector(Client& client, ReflectorOptions options, ReflectorStore& store,
            std::function<void()> on_change);
  ~Reflector();  // Stop()s
  Reflector(const Reflector&) = delete;
  Reflector& operator=(const Reflector&) = delete;

  void Start();
  void Stop();
  // Blocks until the first list has been applied or `timeout` passed; returns whether it was.
  bool WaitForSync(std::chrono::milliseconds timeout);

  std::shared_ptr<const Objects> Snapshot() const;
  bool synced() const { return synced_.load(); }
  std::string resource_version() const;
  // The last failure's message, empty once a list or watch succeeds again.
  std::string last_error() const;
  const ReflectorStats& stats() const { return stats_; }
  const ReflectorOptions& options() const { return options_; }

 private:
  void Loop();
  absl::Status List();
  // Watches from resource_version_ until the stream ends; FAILED_PRECONDITION on a 410.
  absl::Status Watch();
  // The store changed: sets the resourceVersion (unless empty), then calls on_change_.
  void Changed(std::string resource_version);
  // Sleeps about `delay` (or until Stop) and doubles it, up to max_backoff.
  void Backoff(std::chrono::milliseconds& delay);
  // "?fieldSelector=...": the list's query, or the watch's from resource_version_.
  std::string Query(bool watch) const;
  // A list or watch failed: counted, kept in last_error_, logged if it is new.
  void Fail(const absl::Status& status);
  // The server answers: clears last_error_, saying so in the log if there was one.
  void Recovered();

  Client& client_;
  const ReflectorOptions options_;
  const std::function<void()> on_change_;
  ReflectorStats stats_;

  SnapshotStore own_store_;  // the store, unless one was given
  ReflectorStore& store_;

  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::string resource_version_;
  std::string last_error_;
  std::atomic<bool> synced_{false};
  std::atomic<bool> stop_{false};
  std::thread thread_;
  // The reflector thread's own: the last failure logged, and the lines of the current watch.
  std::string logged_error_;
  uint64_t watch_lines_ = 0;
};

// "namespace/name" of an object, or "name" when it has no namespace.
std::string ObjectKey(const nlohmann::json& object);

}  // namespace nodemesh::kube
