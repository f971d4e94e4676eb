// Whole-file reads and writes for tests and benchmarks.
#pragma once

#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>

namespace nodemesh::testing {

// The file's contents; empty if it cannot be read.
inline std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream contents;
  contents << in.rdbuf();
  return contents.str();
}

// Replaces the file's contents; throws std::runtime_error if it cannot.
inline void WriteFile(const std::string& path, const std::string& contents) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << contents;
  if (!out) throw std::runtime_error("cannot write " + path);
}

}  // namespace nodemesh::testing
