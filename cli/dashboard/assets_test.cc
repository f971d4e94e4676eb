// The page built into meshctl: what index.html loads is there, each file is the one it was
// built from, and elkjs's licence goes with it.
#include "cli/dashboard/assets.h"

#include <fmt/format.h>
#include <openssl/sha.h>

#include <catch2/catch.hpp>
#include <regex>
#include <set>
#include <string>

#include "common/base/file.h"

namespace nodemesh::cli::dashboard {
namespace {

std::string Sha256Hex(std::string_view bytes) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size(), digest);
  std::string hex;
  for (unsigned char byte : digest) hex += fmt::format("{:02x}", byte);
  return hex;
}

std::string Served(std::string_view path) {
  const Asset* asset = FindAsset(path);
  REQUIRE(asset != nullptr);
  absl::StatusOr<std::string> bytes = Uncompressed(*asset);
  REQUIRE(bytes.ok());
  return *bytes;
}

std::string Source(const std::string& path) {
  absl::StatusOr<std::string> text = ReadFile(path);
  INFO(path);
  REQUIRE(text.ok());
  return *text;
}

TEST_CASE("every asset index.html refers to is served", "[dashboard]") {
  const std::string index = Served("/");
  // src= and href= of the page's own files (not data: URLs).
  const std::regex reference(R"re((?:src|href)="(/[^"]*)")re");
  std::set<std::string> referenced;
  for (auto it = std::sregex_iterator(index.begin(), index.end(), reference);
       it != std::sregex_iterator(); ++it) {
    referenced.insert((*it)[1]);
  }
  CHECK(referenced.count("/app.js") == 1);
  CHECK(referenced.count("/app.css") == 1);
  CHECK(referenced.count("/elk-api.js") == 1);
  for (const std::string& path : referenced) {
    INFO(path);
    CHECK(FindAsset(path) != nullptr);
  }
  // The worker graph.js starts is not in index.html.
  CHECK(FindAsset("/elk-worker.min.js") != nullptr);
  CHECK(FindAsset("/index.html") == nullptr);
  CHECK(FindAsset("/nothing.js") == nullptr);
}

TEST_CASE("each asset is the file it was built from, and its hash is that file's", "[dashboard]") {
  const std::string build = NODEMESH_DASHBOARD_BUILD_DIR;
  const std::string elkjs = NODEMESH_ELKJS_DIR;
  const std::pair<std::string, std::string> sources[] = {
      {"/", std::string(NODEMESH_SOURCE_DIR) + "/cli/dashboard/web/index.html"},
      {"/app.css", build + "/app.css"},
      {"/app.js", build + "/app.js"},
      {"/elk-api.js", elkjs + "/lib/elk-api.js"},
      {"/elk-worker.min.js", elkjs + "/lib/elk-worker.min.js"},
      {"/licenses/elkjs.txt", elkjs + "/LICENSE.md"}};
  CHECK(Assets().size() == std::size(sources));
  for (const auto& [path, file] : sources) {
    INFO(path);
    const Asset* asset = FindAsset(path);
    REQUIRE(asset != nullptr);
    const std::string source = Source(file);
    CHECK(Served(path) == source);
    CHECK(asset->sha256 == Sha256Hex(source));
    CHECK(asset->content_type.find("charset=utf-8") != std::string_view::npos);
  }
  CHECK(FindAsset("/")->content_type == "text/html; charset=utf-8");
  CHECK(FindAsset("/app.js")->content_type == "text/javascript; charset=utf-8");
}

TEST_CASE("app.js and app.css are the page's sources in their fixed order", "[dashboard]") {
  const std::string web = std::string(NODEMESH_SOURCE_DIR) + "/cli/dashboard/web/";
  std::string scripts;
  for (const char* name : {"state", "api", "commands", "table", "graph", "tap", "app"}) {
    std::string text = Source(web + "js/" + name + ".js");
    if (text.empty() || text.back() != '\n') text += '\n';
    scripts += text;
  }
  CHECK(Served("/app.js") == scripts);
  std::string styles;
  for (const char* name : {"app", "graph"}) {
    std::string text = Source(web + "css/" + name + ".css");
    if (text.empty() || text.back() != '\n') text += '\n';
    styles += text;
  }
  CHECK(Served("/app.css") == styles);
}

TEST_CASE("elkjs's licence is served with it", "[dashboard]") {
  const std::string licence = Served("/licenses/elkjs.txt");
  CHECK(licence.find("Eclipse Public License") != std::string::npos);
  CHECK(std::string(NODEMESH_ELKJS_VERSION) == "0.12.2");
  CHECK(std::string(NODEMESH_ELKJS_LICENSE) == "EPL-2.0 OR GPL-3.0-or-later");
}

}  // namespace
}  // namespace nodemesh::cli::dashboard
