// One TCP connection carrying a seeded pseudo-random byte stream each way, with SHA-256
// digests of what went out and what came in, so that a test can prove a proxy forwarded
// every byte unchanged and passed each side's FIN on while the other kept sending.
//
//   stream_peer server --listen IP:PORT --send BYTES --seed N [--send-after-eof]
//                      [--read-after PATH]
//   stream_peer client --connect IP:PORT --send BYTES --seed N [--send-after-eof]
//                      [--read-after PATH]
//
// Each side sends BYTES from its seed, then shutdown(SHUT_WR), while it reads the other
// side's bytes until EOF (both directions at once). With --send-after-eof it reads to EOF
// first and only then sends, so its peer must still receive after having half-closed.
// With --read-after it reads nothing until PATH exists (at most 120 s), so that its peer's
// sending stalls: what is in flight meanwhile shows how much a proxy between them holds.
// The server prints "listening" once it accepts, serves one connection and exits. Each
// ends by printing one line:
//   role=<server|client> peer=<ip:port> sent=<n> sent_sha256=<hex> received=<n>
//   received_sha256=<hex>
// and exits 0; on any error it prints "error: ..." and exits 1. Sockets time out after
// 60 s without progress, so nothing hangs.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace {

constexpr size_t kChunk = 256 * 1024;

[[noreturn]] void Die(const std::string& what) {
  std::printf("error: %s\n", what.c_str());
  std::fflush(stdout);
  std::exit(1);
}

[[noreturn]] void DieErrno(const std::string& what) { Die(what + ": " + std::strerror(errno)); }

// xoshiro256** seeded through splitmix64: fast, and the same stream for the same seed.
class Generator {
 public:
  explicit Generator(uint64_t seed) {
    for (uint64_t& word : state_) {
      seed += 0x9e3779b97f4a7c15;
      uint64_t z = seed;
      z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9;
      z = (z ^ (z >> 27)) * 0x94d049bb133111eb;
      word = z ^ (z >> 31);
    }
  }
  void Fill(unsigned char* out, size_t size) {
    for (size_t i = 0; i < size; i += 8) {
      const uint64_t value = Next();
      std::memcpy(out + i, &value, std::min<size_t>(8, size - i));
    }
  }

 private:
  static uint64_t Rotate(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t Next() {
    const uint64_t result = Rotate(state_[1] * 5, 7) * 9;
    const uint64_t t = state_[1] << 17;
    state_[2] ^= state_[0];
    state_[3] ^= state_[1];
    state_[1] ^= state_[2];
    state_[0] ^= state_[3];
    state_[2] ^= t;
    state_[3] = Rotate(state_[3], 45);
    return result;
  }
  uint64_t state_[4];
};

class Sha256 {
 public:
  Sha256() : context_(EVP_MD_CTX_new(), EVP_MD_CTX_free) {
    if (!context_ || EVP_DigestInit_ex(context_.get(), EVP_sha256(), nullptr) != 1) {
      Die("SHA-256 init");
    }
  }
  void Update(const void* data, size_t size) {
    if (EVP_DigestUpdate(context_.get(), data, size) != 1) Die("SHA-256 update");
  }
  std::string HexDigest() {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int length = 0;
    if (EVP_DigestFinal_ex(context_.get(), digest, &length) != 1) Die("SHA-256 final");
    std::string hex;
    char byte[3];
    for (unsigned int i = 0; i < length; ++i) {
      std::snprintf(byte, sizeof byte, "%02x", digest[i]);
      hex += byte;
    }
    return hex;
  }

 private:
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> context_;
};

struct Options {
  bool server = false;
  std::string address;  // IP:PORT, [IPv6]:PORT
  uint64_t bytes = 0;
  uint64_t seed = 0;
  bool send_after_eof = false;
  std::string read_after;  // a file that must exist before the first read
};

Options ParseOptions(int argc, char** argv) {
  if (argc < 2) Die("usage: stream_peer server|client ...");
  Options options;
  const std::string mode = argv[1];
  if (mode != "server" && mode != "client") Die("unknown mode " + mode);
  options.server = mode == "server";
  for (int i = 2; i < argc; ++i) {
    const std::string flag = argv[i];
    const auto value = [&]() -> std::string {
      if (i + 1 >= argc) Die(flag + " needs a value");
      return argv[++i];
    };
    if (flag == "--listen" || flag == "--connect") {
      options.address = value();
    } else if (flag == "--send") {
      options.bytes = std::strtoull(value().c_str(), nullptr, 10);
    } else if (flag == "--seed") {
      options.seed = std::strtoull(value().c_str(), nullptr, 10);
    } else if (flag == "--send-after-eof") {
      options.send_after_eof = true;
    } else if (flag == "--read-after") {
      options.read_after = value();
    } else {
      Die("unknown flag " + flag);
    }
  }
  if (options.address.empty()) Die("--listen or --connect is required");
  return options;
}

socklen_t ParseAddress(const std::string& text, sockaddr_storage* storage) {
  const size_t colon = text.rfind(':');
  if (colon == std::string::npos) Die("not IP:PORT: " + text);
  std::string host = text.substr(0, colon);
  const int port = std::atoi(text.c_str() + colon + 1);
  if (host.size() >= 2 && host.front() == '[') host = host.substr(1, host.size() - 2);
  *storage = {};
  auto* v4 = reinterpret_cast<sockaddr_in*>(storage);
  if (inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(static_cast<uint16_t>(port));
    return sizeof(sockaddr_in);
  }
  auto* v6 = reinterpret_cast<sockaddr_in6*>(storage);
  if (inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(static_cast<uint16_t>(port));
    return sizeof(sockaddr_in6);
  }
  Die("not an IP address: " + host);
}

std::string FormatPeer(int fd) {
  sockaddr_storage storage{};
  socklen_t length = sizeof storage;
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&storage), &length) != 0) return "?";
  char text[INET6_ADDRSTRLEN] = "?";
  int port = 0;
  if (storage.ss_family == AF_INET) {
    const auto* v4 = reinterpret_cast<const sockaddr_in*>(&storage);
    inet_ntop(AF_INET, &v4->sin_addr, text, sizeof text);
    port = ntohs(v4->sin_port);
  } else {
    const auto* v6 = reinterpret_cast<const sockaddr_in6*>(&storage);
    inet_ntop(AF_INET6, &v6->sin6_addr, text, sizeof text);
    port = ntohs(v6->sin6_port);
  }
  return std::string(text) + ":" + std::to_string(port);
}

void SetTimeouts(int fd) {
  const timeval limit{.tv_sec = 60, .tv_usec = 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof limit);
}

int Connect(const Options& options) {
  sockaddr_storage address;
  const socklen_t length = ParseAddress(options.address, &address);
  const int fd = socket(address.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) DieErrno("socket");
  SetTimeouts(fd);
  if (connect(fd, reinterpret_cast<sockaddr*>(&address), length) != 0) {
    DieErrno("connect " + options.address);
  }
  return fd;
}

int AcceptOne(const Options& options) {
  sockaddr_storage address;
  const socklen_t length = ParseAddress(options.address, &address);
  const int listener = socket(address.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listener < 0) DieErrno("socket");
  const int one = 1;
  setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(listener, reinterpret_cast<sockaddr*>(&address), length) != 0) {
    DieErrno("bind " + options.address);
  }
  if (listen(listener, 16) != 0) DieErrno("listen");
  std::printf("listening\n");
  std::fflush(stdout);
  const int fd = accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
  if (fd < 0) DieErrno("accept");
  close(listener);
  SetTimeouts(fd);
  return fd;
}

struct Received {
  uint64_t bytes = 0;
  std::string sha256;
};

void WaitForFile(const std::string& path) {
  for (int waited_ms = 0; access(path.c_str(), F_OK) != 0; waited_ms += 10) {
    if (waited_ms >= 120'000) Die("nobody created " + path);
    usleep(10'000);
  }
}

Received ReceiveToEof(int fd, const std::string& read_after) {
  if (!read_after.empty()) WaitForFile(read_after);
  std::vector<unsigned char> buffer(kChunk);
  Sha256 hash;
  Received received;
  for (;;) {
    const ssize_t n = recv(fd, buffer.data(), buffer.size(), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) DieErrno("recv after " + std::to_string(received.bytes) + " bytes");
    if (n == 0) break;
    hash.Update(buffer.data(), static_cast<size_t>(n));
    received.bytes += static_cast<uint64_t>(n);
  }
  received.sha256 = hash.HexDigest();
  return received;
}

std::string SendAndShutdown(int fd, uint64_t bytes, uint64_t seed) {
  std::vector<unsigned char> buffer(kChunk);
  Generator generator(seed);
  Sha256 hash;
  for (uint64_t sent = 0; sent < bytes;) {
    const size_t size = static_cast<size_t>(std::min<uint64_t>(kChunk, bytes - sent));
    generator.Fill(buffer.data(), size);
    hash.Update(buffer.data(), size);
    for (size_t offset = 0; offset < size;) {
      const ssize_t n = send(fd, buffer.data() + offset, size - offset, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) DieErrno("send after " + std::to_string(sent + offset) + " bytes");
      offset += static_cast<size_t>(n);
    }
    sent += size;
  }
  if (shutdown(fd, SHUT_WR) != 0) DieErrno("shutdown");
  return hash.HexDigest();
}

}  // namespace

int main(int argc, char** argv) {
  const Options options = ParseOptions(argc, argv);
  const int fd = options.server ? AcceptOne(options) : Connect(options);
  const std::string peer = FormatPeer(fd);
  std::string sent_sha256;
  Received received;
  if (options.send_after_eof) {
    received = ReceiveToEof(fd, options.read_after);
    sent_sha256 = SendAndShutdown(fd, options.bytes, options.seed);
  } else {
    std::thread sender([&] { sent_sha256 = SendAndShutdown(fd, options.bytes, options.seed); });
    received = ReceiveToEof(fd, options.read_after);
    sender.join();
  }
  close(fd);
  std::printf("role=%s peer=%s sent=%llu sent_sha256=%s received=%llu received_sha256=%s\n",
              options.server ? "server" : "client", peer.c_str(),
              static_cast<unsigned long long>(options.bytes), sent_sha256.c_str(),
              static_cast<unsigned long long>(received.bytes), received.sha256.c_str());
  return 0;
}
