#include "common/tls/tls.h"

#include <fmt/format.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/security/server_credentials.h>

#include "common/base/file.h"
#include "common/net/address.h"

namespace nodemesh {
namespace {

absl::StatusOr<std::string> ReadPem(const std::string& path, std::string_view flag) {
  absl::StatusOr<std::string> text = ReadFile(path);
  if (!text.ok()) {
    return absl::InvalidArgumentError(
        fmt::format("cannot read {} {}: no such file, or not readable by this user", flag, path));
  }
  if (text->find("-----BEGIN ") == std::string::npos) {
    return absl::InvalidArgumentError(
        fmt::format("{} {} is not PEM: give the file that starts with -----BEGIN", flag, path));
  }
  return text;
}

// Reads the files that are given; a certificate needs its key and a key its certificate.
absl::Status ReadAll(const TlsFiles& files, std::string_view prefix, std::string* ca,
                     std::string* cert, std::string* key) {
  if (files.cert.empty() != files.key.empty()) {
    return absl::InvalidArgumentError(
        fmt::format("{0}cert and {0}key go together: give both, or neither", prefix));
  }
  for (auto [path, name, out] :
       {std::tuple{&files.ca, "ca", ca}, std::tuple{&files.cert, "cert", cert},
        std::tuple{&files.key, "key", key}}) {
    if (path->empty()) continue;
    absl::StatusOr<std::string> pem = ReadPem(*path, fmt::format("{}{}", prefix, name));
    if (!pem.ok()) return pem.status();
    *out = *std::move(pem);
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> ClientCredentials(
    const TlsFiles& files, std::string_view flag_prefix) {
  grpc::SslCredentialsOptions options;
  if (absl::Status read = ReadAll(files, flag_prefix, &options.pem_root_certs,
                                  &options.pem_cert_chain, &options.pem_private_key);
      !read.ok()) {
    return read;
  }
  // No `ca`: the system's roots verify the aggregator.
  return grpc::SslCredentials(options);
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> ServerCredentials(
    const TlsFiles& files, std::string_view flag_prefix) {
  if (files.cert.empty()) {
    return absl::InvalidArgumentError(fmt::format(
        "TLS needs the aggregator's certificate: give {0}cert and {0}key", flag_prefix));
  }
  std::string ca;
  grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
  if (absl::Status read = ReadAll(files, flag_prefix, &ca, &pair.cert_chain, &pair.private_key);
      !read.ok()) {
    return read;
  }
  // With a CA, a peer's certificate is asked for and verified when given, but not required:
  // meshctl may come with a token or nothing, and each call decides what it needs.
  grpc::SslServerCredentialsOptions options(ca.empty()
                                                ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
                                                : GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY);
  options.pem_root_certs = ca;
  options.pem_key_cert_pairs.push_back(std::move(pair));
  return grpc::SslServerCredentials(options);
}

absl::StatusOr<AggregatorDialer> AggregatorDialer::Make(std::string address, const TlsFiles& files,
                                                        std::string_view flag_prefix) {
  AggregatorDialer dialer;
  dialer.address_ = std::move(address);
  dialer.server_name_ = files.server_name;
  dialer.tls_ = !files.empty();
  if (dialer.tls_) {
    absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> credentials =
        ClientCredentials(files, flag_prefix);
    if (!credentials.ok()) return credentials.status();
    dialer.credentials_ = *std::move(credentials);
  } else if (IsLoopbackAddress(dialer.address_)) {
    dialer.credentials_ = grpc::InsecureChannelCredentials();
  } else {
    return absl::InvalidArgumentError(fmt::format(
        "the aggregator at {} is not on loopback, and plaintext is for loopback only: give "
        "{}ca, the CA that issued the aggregator's certificate",
        dialer.address_, flag_prefix));
  }
  return dialer;
}

std::shared_ptr<grpc::Channel> AggregatorDialer::Dial(grpc::ChannelArguments arguments) const {
  if (tls_ && !server_name_.empty()) arguments.SetSslTargetNameOverride(server_name_);
  return grpc::CreateCustomChannel(address_, credentials_, arguments);
}

bool IsLoopbackAddress(std::string_view address) {
  const size_t colon = address.rfind(':');
  if (colon == std::string_view::npos) return false;
  std::string_view host = address.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  if (host == "localhost") return true;
  const std::optional<IpAddress> ip = IpAddress::Parse(host);
  return ip && ip->is_loopback();
}

}  // namespace nodemesh
