// TLS for the HTTPS server (server.h): its certificate, and the CAs that verify a client's
// certificate, which can be replaced while the server runs (an API server's front-proxy CA
// comes from a ConfigMap that changes when the CA rotates). OpenSSL stays inside tls.cc.
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "common/http/routes.h"

// OpenSSL's types, opaque here (X509_STORE, SSL_CTX, SSL).
struct x509_store_st;
struct ssl_ctx_st;
struct ssl_st;

namespace nodemesh::http {

// The CAs a client certificate is verified against. Thread-safe: Replace may run while
// handshakes verify; each handshake verifies against the CAs of its moment, and a connection
// keeps what its handshake found (PeerCertificate) for its life.
class ClientCaStore {
 public:
  // Holds no CA: every certificate fails to verify until Replace.
  ClientCaStore();
  ~ClientCaStore();
  ClientCaStore(const ClientCaStore&) = delete;
  ClientCaStore& operator=(const ClientCaStore&) = delete;

  // The CAs become those of `pem` (one or more PEM certificates). An error, naming what is
  // wrong, leaves the CAs as they were.
  absl::Status Replace(std::string_view pem);
  // No CA any more: every certificate fails to verify.
  void Clear();

  // The CAs of this moment, for a handshake (tls.cc).
  std::shared_ptr<x509_store_st> Current() const;

 private:
  mutable std::mutex mutex_;
  std::shared_ptr<x509_store_st> current_;
};

struct TlsServerOptions {
  std::string certificate_chain_pem;  // the server's certificate, then its intermediates
  std::string private_key_pem;
  // Set: every client is asked for a certificate, never required to give one, and the one it
  // gives is verified against these CAs (HttpRequest::peer says how it went). Null: no
  // client is asked.
  std::shared_ptr<ClientCaStore> client_ca;
};

// For server.cc, on the SSL_CTX of its TLS context: the server's certificate and key, TLS 1.2
// at least, the client-certificate request and verification of `options`, and no session
// resumption (a resumed session would keep a verification made against CAs since replaced).
// An error names the PEM that is wrong.
absl::Status ConfigureServerTls(ssl_ctx_st* context, const TlsServerOptions& options);

// What the handshake of `connection` found of the client's certificate.
PeerCertificate PeerOf(ssl_st* connection);

}  // namespace nodemesh::http
