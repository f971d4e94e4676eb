// Golden files for the CLI's tests: cli/testdata/NAME, compared byte for byte.
// UPDATE_GOLDEN=1 rewrites them from the current output instead (then review the diff).
#pragma once

#include <catch2/catch.hpp>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "google/protobuf/text_format.h"

namespace nodemesh::cli::testing {

// The time the canned answers of cli/testdata were taken at.
constexpr int64_t kNow = 1700000012;

inline std::string TestdataPath(const std::string& name) {
  return std::string(NODEMESH_SOURCE_DIR) + "/cli/testdata/" + name;
}

inline std::string ReadTestdata(const std::string& name) {
  std::ifstream in(TestdataPath(name), std::ios::binary);
  if (!in) FAIL("cannot read cli/testdata/" << name);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

inline void CheckGolden(const std::string& name, const std::string& actual) {
  const char* update = std::getenv("UPDATE_GOLDEN");
  if (update != nullptr && std::string(update) == "1") {
    std::ofstream(TestdataPath(name), std::ios::binary) << actual;
    WARN("rewrote cli/testdata/" << name);
    return;
  }
  std::ifstream in(TestdataPath(name), std::ios::binary);
  if (!in) FAIL("cli/testdata/" << name << " is missing: run the test with UPDATE_GOLDEN=1");
  std::stringstream expected;
  expected << in.rdbuf();
  INFO("golden file cli/testdata/" << name << " (UPDATE_GOLDEN=1 rewrites it)");
  CHECK(actual == expected.str());
}

// A canned answer of the agent's admin API (for the shell) from a JSON file in cli/testdata.
inline nlohmann::json ReadJsonTestdata(const std::string& name) {
  return nlohmann::json::parse(ReadTestdata(name));
}

// A canned API message from a text-format file in cli/testdata.
template <typename Message>
Message ReadTextProto(const std::string& name) {
  Message message;
  if (!google::protobuf::TextFormat::ParseFromString(ReadTestdata(name), &message)) {
    FAIL("cli/testdata/" << name << " is not a valid " << Message::descriptor()->full_name());
  }
  return message;
}

}  // namespace nodemesh::cli::testing
