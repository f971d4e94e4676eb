#include "test/lib/peers.h"

#include <fmt/format.h>
#include <stdlib.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <sstream>
#include <stdexcept>

namespace nodemesh::testing {

std::string SourcePath(const std::string& relative) {
  return std::string(NODEMESH_SOURCE_DIR) + "/" + relative;
}

std::string Target(const Pod& pod, uint16_t port) { return fmt::format("{}:{}", pod.ip, port); }

Process StartNginx(const Pod& pod, const Pod& prober, const std::string& root,
                   const std::string& conf, const std::string& probe_url,
                   std::vector<std::string> wrap) {
  std::filesystem::create_directories(root + "/tmp");
  WriteFile(root + "/nginx.conf", conf);
  wrap.insert(wrap.end(), {"nginx", "-p", root, "-e", root + "/error.log", "-c",
                           root + "/nginx.conf", "-g", "daemon off;"});
  Process nginx = pod.Run(std::move(wrap));
  const bool up = PollUntil(
      [&] {
        return prober
                   .RunCommand({"curl", "-sS", "--max-time", "2", "-o", "/dev/null", probe_url},
                               std::chrono::seconds(10))
                   .exit_code == 0;
      },
      std::chrono::seconds(20), std::chrono::milliseconds(100));
  if (!up) {
    throw std::runtime_error("nginx did not start: " + nginx.output() +
                             ReadFile(root + "/error.log"));
  }
  return nginx;
}

std::string NginxTempPaths(const std::string& root) {
  return fmt::format(
      "client_body_temp_path {0}/tmp/body;\nproxy_temp_path {0}/tmp/proxy;\n"
      "fastcgi_temp_path {0}/tmp/fastcgi;\nuwsgi_temp_path {0}/tmp/uwsgi;\n"
      "scgi_temp_path {0}/tmp/scgi;\n",
      root);
}

std::vector<std::string> TcpPeer(const std::string& mode, std::vector<std::string> arguments) {
  arguments.insert(arguments.begin(), {kPython, "-u", SourcePath("test/lib/tcp_peer.py"), mode});
  return arguments;
}

Process StartTcpServer(const Pod& pod, const std::string& mode, uint16_t port,
                       const std::string& address) {
  Process server = pod.Run(TcpPeer(
      mode, {"--listen", address.empty() ? pod.ip : address, "--port", std::to_string(port)}));
  if (!server.WaitForOutput("listening", std::chrono::seconds(20))) {
    throw std::runtime_error(
        fmt::format("tcp_peer.py {} in {} did not start: {}", mode, pod.name, server.output()));
  }
  return server;
}

Process StartEchoServer(const Pod& pod, uint16_t port, const std::string& address) {
  return StartTcpServer(pod, "echo-server", port, address);
}

CommandResult Dial(const Pod& client, const std::string& target, int count,
                   std::chrono::milliseconds timeout) {
  return client.RunCommand(TcpPeer("dial", {"--connect", target, "--count", std::to_string(count)}),
                           timeout);
}

std::string FieldOf(const std::string& output, const std::string& line_prefix,
                    const std::string& key) {
  std::istringstream lines(output);
  std::string line;
  while (std::getline(lines, line)) {
    if (!line.starts_with(line_prefix)) continue;
    std::istringstream words(line);
    std::string word;
    while (words >> word) {
      if (word.starts_with(key + "=")) return word.substr(key.size() + 1);
    }
    return "";
  }
  return "";
}

int CountLines(const std::string& output, const std::string& prefix) {
  std::istringstream lines(output);
  std::string line;
  int count = 0;
  while (std::getline(lines, line)) count += line.starts_with(prefix) ? 1 : 0;
  return count;
}

std::vector<std::string> AcceptedFrom(const Process& echo_server) {
  std::istringstream lines(echo_server.output());
  std::string line;
  std::vector<std::string> peers;
  while (std::getline(lines, line)) {
    std::istringstream words(line);
    std::string verb, ip;
    if (words >> verb >> ip && verb == "accepted") peers.push_back(ip);
  }
  return peers;
}

}  // namespace nodemesh::testing
