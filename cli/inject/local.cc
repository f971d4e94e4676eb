#include "cli/inject/local.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "common/base/file.h"
#include "common/base/format.h"
#include "common/base/unique_fd.h"
#include "common/inventory/inventory.h"

namespace nodemesh::cli {
namespace {

using Json = nlohmann::ordered_json;

struct InventoryFile {
  std::string path;
  std::string text;
  Inventory inventory;
  Json document;  // the same file, for editing with every field kept in place
  bool changed = false;
};

std::string Directory(const std::string& path) {
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  return parent.empty() ? "." : parent.string();
}

// Two meshctl runs editing one inventory would lose one's change: each holds a lock on the
// directory (which, unlike the file, survives the rename) from reading to replacing.
absl::StatusOr<UniqueFd> LockDirectory(const std::string& directory, const std::string& inventory) {
  UniqueFd fd(::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd.valid() || ::flock(fd.get(), LOCK_EX) != 0) {
    return absl::FailedPreconditionError(
        fmt::format("cannot read the inventory {} (its directory: {}): pass --inventory PATH or "
                    "set NODEMESH_INVENTORY",
                    inventory, std::strerror(errno)));
  }
  return fd;
}

absl::StatusOr<InventoryFile> ReadInventory(const std::string& path) {
  InventoryFile file{path, "", {}, {}, false};
  absl::StatusOr<std::string> text = ReadFile(path);
  if (!text.ok()) {
    return absl::NotFoundError(fmt::format(
        "cannot read the inventory {} ({}): pass --inventory PATH or set NODEMESH_INVENTORY", path,
        text.status().message()));
  }
  file.text = *std::move(text);
  absl::StatusOr<Inventory> inventory = ParseInventory(file.text);
  if (!inventory.ok()) {
    return absl::InvalidArgumentError(fmt::format("inventory {} is invalid ({}): fix it first",
                                                  path, inventory.status().message()));
  }
  file.inventory = *std::move(inventory);
  file.document = Json::parse(file.text);
  return file;
}

std::string WorkloadOf(const PodInfo& pod) {
  v1::Identity identity;
  identity.set_pod(pod.name);
  identity.set_owner_kind(pod.owner_kind);
  identity.set_owner_name(pod.owner_name);
  return WorkloadLabel(identity);
}

absl::Status NoMatch(const std::vector<InventoryFile>& files, const ResourceRef& ref,
                     std::string_view namespace_name) {
  const std::string where =
      files.size() == 1 ? files[0].path : fmt::format("{} inventories", files.size());
  std::set<std::string> workloads, namespaces;
  const std::string_view wanted_namespace =
      ref.type == ResourceType::kNamespace && !ref.name.empty() ? ref.name : namespace_name;
  for (const InventoryFile& file : files) {
    for (const PodInfo& pod : file.inventory.pods) {
      namespaces.insert(pod.namespace_name);
      if (pod.namespace_name == wanted_namespace) workloads.insert(WorkloadOf(pod));
    }
  }
  if (workloads.empty()) {
    return absl::NotFoundError(fmt::format(
        "namespace {} has no pods in {}: {}", wanted_namespace, where,
        namespaces.empty() ? std::string("it lists no pods at all")
                           : fmt::format("use -n with one of {}", fmt::join(namespaces, ", "))));
  }
  return absl::NotFoundError(
      fmt::format("{} matches no pod in namespace {} in {}: its workloads "
                  "are {}",
                  Label(ref), namespace_name, where, fmt::join(workloads, ", ")));
}

// The document in the file's own layout: one line if it was one line, else indented as
// its first indented line.
std::string Serialize(const Json& document, std::string_view original) {
  std::string_view body = original;
  while (!body.empty() && std::isspace(static_cast<unsigned char>(body.back()))) {
    body.remove_suffix(1);
  }
  std::string text;
  const size_t newline = body.find('\n');
  if (newline == std::string_view::npos) {
    text = document.dump();
  } else {
    const size_t start = newline + 1;
    const char indent_char = start < body.size() && body[start] == '\t' ? '\t' : ' ';
    size_t width = 0;
    while (start + width < body.size() && body[start + width] == indent_char) ++width;
    text = document.dump(width == 0 ? 2 : static_cast<int>(width), indent_char);
  }
  if (!original.empty() && original.back() == '\n') text += '\n';
  return text;
}

absl::Status ReplaceAtomically(const std::string& path, const std::string& text) {
  const auto failed = [&](std::string_view what) {
    return absl::PermissionDeniedError(
        fmt::format("cannot {} {} ({}): run meshctl as root", what, path, std::strerror(errno)));
  };
  struct stat original;
  if (::stat(path.c_str(), &original) != 0) return failed("stat");
  // Hidden and under another name: the agents watch for the inventory's own name only.
  const std::filesystem::path target(path);
  std::string temporary =
      fmt::format("{}/.{}.meshctl-XXXXXX", Directory(path), target.filename().string());
  UniqueFd fd(::mkostemp(temporary.data(), O_CLOEXEC));
  if (!fd.valid()) return failed("create a temporary file next to");
  const auto discard = [&](std::string_view what) {
    const absl::Status status = failed(what);
    ::unlink(temporary.c_str());
    return status;
  };
  for (size_t written = 0; written < text.size();) {
    const ssize_t n = ::write(fd.get(), text.data() + written, text.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return discard("write");
    written += static_cast<size_t>(n);
  }
  // The replacement keeps the file's permissions and, where allowed, its owner.
  if (::fchmod(fd.get(), original.st_mode & 07777) != 0) return discard("set the mode of");
  [[maybe_unused]] const int owner_kept = ::fchown(fd.get(), original.st_uid, original.st_gid);
  if (::fsync(fd.get()) != 0) return discard("flush");
  if (::rename(temporary.c_str(), path.c_str()) != 0) return discard("replace");
  UniqueFd directory(::open(Directory(path).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (directory.valid()) ::fsync(directory.get());
  return absl::OkStatus();
}

}  // namespace

std::vector<std::string> InventoryPaths(const std::vector<std::string>& flags,
                                        const std::optional<std::string>& environment) {
  if (!flags.empty()) return flags;
  std::vector<std::string> paths;
  if (environment) {
    size_t start = 0;
    for (;;) {
      const size_t colon = environment->find(':', start);
      std::string path = environment->substr(start, colon - start);
      if (!path.empty()) paths.push_back(std::move(path));
      if (colon == std::string::npos) break;
      start = colon + 1;
    }
  }
  if (paths.empty()) paths.emplace_back(kDefaultInventory);
  return paths;
}

absl::StatusOr<std::vector<MeshChange>> SetMeshed(const std::vector<std::string>& paths,
                                                  const ResourceRef& ref,
                                                  std::string_view namespace_name, bool meshed) {
  // A file named twice is edited once; directories are locked in one order by every run.
  std::vector<std::string> unique_paths;
  std::set<std::string> seen;
  for (const std::string& path : paths) {
    std::error_code error;
    std::filesystem::path canonical = std::filesystem::weakly_canonical(path, error);
    if (seen.insert(error ? path : canonical.string()).second) unique_paths.push_back(path);
  }
  std::map<std::string, std::string> directories;  // to the first inventory in each
  for (const std::string& path : unique_paths) {
    std::error_code error;
    std::filesystem::path canonical = std::filesystem::weakly_canonical(Directory(path), error);
    directories.emplace(error ? Directory(path) : canonical.string(), path);
  }
  std::vector<UniqueFd> locks;
  for (const auto& [directory, inventory] : directories) {
    absl::StatusOr<UniqueFd> lock = LockDirectory(directory, inventory);
    if (!lock.ok()) return lock.status();
    locks.push_back(*std::move(lock));
  }

  std::vector<InventoryFile> files;
  for (const std::string& path : unique_paths) {
    absl::StatusOr<InventoryFile> file = ReadInventory(path);
    if (!file.ok()) return file.status();
    files.push_back(*std::move(file));
  }

  std::map<std::string, bool> changed_by_pod;
  for (InventoryFile& file : files) {
    for (size_t i = 0; i < file.inventory.pods.size(); ++i) {
      const PodInfo& pod = file.inventory.pods[i];
      if (!NamesPod(ref, namespace_name, pod)) continue;
      bool& changed = changed_by_pod[pod.key()];
      if (pod.meshed == meshed) continue;
      file.document["pods"][i]["meshed"] = meshed;
      file.changed = changed = true;
    }
  }
  if (changed_by_pod.empty()) return NoMatch(files, ref, namespace_name);

  for (const InventoryFile& file : files) {
    if (!file.changed) continue;
    if (absl::Status status = ReplaceAtomically(file.path, Serialize(file.document, file.text));
        !status.ok()) {
      return status;
    }
  }
  std::vector<MeshChange> changes;
  for (const auto& [pod, changed] : changed_by_pod) changes.push_back({pod, changed});
  return changes;
}

}  // namespace nodemesh::cli
