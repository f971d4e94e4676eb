// TLS settings from files: what each end refuses before it dials or listens, and where
// plaintext is allowed. (Handshakes with real certificates are in the kernel tier's trust
// test: test/kernel/trust_test.cc.)
#include "common/tls/tls.h"

#include <catch2/catch.hpp>

#include "test/lib/files.h"

namespace nodemesh {
namespace {

using testing::TempDir;

TlsFiles Files(std::string ca, std::string cert = "", std::string key = "") {
  TlsFiles files;
  files.ca = std::move(ca);
  files.cert = std::move(cert);
  files.key = std::move(key);
  return files;
}

TEST_CASE("plaintext is for loopback addresses only") {
  for (const char* address : {"127.0.0.1:8085", "127.8.9.1:1", "[::1]:8085", "localhost:8085"}) {
    INFO(address);
    CHECK(IsLoopbackAddress(address));
    CHECK(AggregatorDialer::Make(address, TlsFiles{}, "--").ok());
    CHECK_FALSE(AggregatorDialer::Make(address, TlsFiles{}, "--")->tls());
  }
  for (const char* address :
       {"0.0.0.0:8085", "10.0.0.1:8085", "[::]:8085", "nodemesh-aggregator.nodemesh.svc:8085",
        "localhost.example:1", "127.0.0.1"}) {
    INFO(address);
    CHECK_FALSE(IsLoopbackAddress(address));
  }
  const absl::StatusOr<AggregatorDialer> remote =
      AggregatorDialer::Make("10.0.0.1:8085", TlsFiles{}, "--aggregator-");
  REQUIRE_FALSE(remote.ok());
  CHECK(remote.status().message() ==
        "the aggregator at 10.0.0.1:8085 is not on loopback, and plaintext is for loopback "
        "only: give --aggregator-ca, the CA that issued the aggregator's certificate");
}

TEST_CASE("TLS files are read before anything is dialled and each problem is named") {
  TempDir dir;
  const std::string pem = dir.Write("ca.crt", "-----BEGIN CERTIFICATE-----\nAA==\n");
  const std::string text = dir.Write("notes.txt", "not a certificate\n");

  const absl::StatusOr<AggregatorDialer> tls =
      AggregatorDialer::Make("10.0.0.1:8085", Files(pem), "--");
  REQUIRE(tls.ok());
  CHECK(tls->tls());

  const auto error = [](const TlsFiles& files) {
    const absl::StatusOr<AggregatorDialer> dialer =
        AggregatorDialer::Make("10.0.0.1:8085", files, "--aggregator-");
    return dialer.ok() ? std::string() : std::string(dialer.status().message());
  };
  CHECK(error(Files(dir.path() + "/absent.crt")) ==
        "cannot read --aggregator-ca " + dir.path() +
            "/absent.crt: no such file, or not readable by this user");
  CHECK(error(Files(text)) ==
        "--aggregator-ca " + text + " is not PEM: give the file that starts with -----BEGIN");
  CHECK(error(Files(pem, pem)) ==
        "--aggregator-cert and --aggregator-key go together: give both, or neither");

  const absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> no_cert =
      ServerCredentials(Files(pem), "--tls-");
  REQUIRE_FALSE(no_cert.ok());
  CHECK(no_cert.status().message() ==
        "TLS needs the aggregator's certificate: give --tls-cert and --tls-key");
}

}  // namespace
}  // namespace nodemesh
