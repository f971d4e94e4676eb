#include "common/http/tls.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

#include "common/base/format.h"

namespace nodemesh::http {
namespace {

using Bio = std::unique_ptr<BIO, decltype(&BIO_free)>;

Bio ReadOnlyBio(std::string_view pem) {
  return Bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())), BIO_free);
}

// OpenSSL's queued error, as text (and the queue emptied).
std::string TakeOpenSslError() {
  const unsigned long error = ERR_get_error();
  ERR_clear_error();
  if (error == 0) return "unknown error";
  char text[256];
  ERR_error_string_n(error, text, sizeof text);
  return text;
}

// The CN of `certificate`'s subject, or "" if it has none.
std::string CommonName(X509* certificate) {
  X509_NAME* subject = X509_get_subject_name(certificate);
  const int at = subject ? X509_NAME_get_index_by_NID(subject, NID_commonName, -1) : -1;
  if (at < 0) return "";
  unsigned char* utf8 = nullptr;
  const int length =
      ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, at)));
  if (length < 0) return "";
  std::string name(reinterpret_cast<const char*>(utf8), static_cast<size_t>(length));
  OPENSSL_free(utf8);
  return name;
}

// The handshake's verification of a client's certificate, in place of OpenSSL's own (which
// would use the SSL_CTX's fixed store): the chain the client sent, against the store's CAs
// of this moment. The result is recorded as the connection's verify result and the handshake
// always goes on: a certificate is asked for, never required, and the handler decides.
int VerifyAgainstCurrentCas(X509_STORE_CTX* handshake, void* store) {
  const std::shared_ptr<X509_STORE> cas = static_cast<ClientCaStore*>(store)->Current();
  int result = X509_V_ERR_UNSPECIFIED;
  const std::unique_ptr<X509_STORE_CTX, decltype(&X509_STORE_CTX_free)> check(X509_STORE_CTX_new(),
                                                                              X509_STORE_CTX_free);
  if (check && X509_STORE_CTX_init(check.get(), cas.get(), X509_STORE_CTX_get0_cert(handshake),
                                   X509_STORE_CTX_get0_untrusted(handshake)) == 1) {
    X509_STORE_CTX_set_purpose(check.get(), X509_PURPOSE_SSL_CLIENT);
    result = X509_verify_cert(check.get()) == 1 ? X509_V_OK : X509_STORE_CTX_get_error(check.get());
  }
  ERR_clear_error();
  X509_STORE_CTX_set_error(handshake, result);
  return 1;
}

}  // namespace

ClientCaStore::ClientCaStore() : current_(X509_STORE_new(), X509_STORE_free) {}
ClientCaStore::~ClientCaStore() = default;

absl::Status ClientCaStore::Replace(std::string_view pem) {
  std::shared_ptr<X509_STORE> cas(X509_STORE_new(), X509_STORE_free);
  const Bio bio = ReadOnlyBio(pem);
  if (!cas || !bio) return absl::ResourceExhaustedError("out of memory reading client CAs");
  int count = 0;
  for (;;) {
    const std::unique_ptr<X509, decltype(&X509_free)> certificate(
        PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr), X509_free);
    if (!certificate) break;
    if (X509_STORE_add_cert(cas.get(), certificate.get()) != 1) {
      return absl::InvalidArgumentError(
          fmt::format("client CA certificate {}: {}", count + 1, TakeOpenSslError()));
    }
    ++count;
  }
  // Reading stops at the end of the text (PEM_R_NO_START_LINE) or at a block it cannot read.
  const unsigned long last = ERR_peek_last_error();
  if (last != 0 && ERR_GET_REASON(last) != PEM_R_NO_START_LINE) {
    return absl::InvalidArgumentError(fmt::format(
        "client CAs: PEM block {} is not a certificate: {}", count + 1, TakeOpenSslError()));
  }
  ERR_clear_error();
  if (count == 0) {
    return absl::InvalidArgumentError(
        "client CAs: no PEM certificate (-----BEGIN CERTIFICATE-----) in the text given");
  }
  std::lock_guard lock(mutex_);
  current_ = std::move(cas);
  return absl::OkStatus();
}

void ClientCaStore::Clear() {
  std::shared_ptr<X509_STORE> empty(X509_STORE_new(), X509_STORE_free);
  std::lock_guard lock(mutex_);
  current_ = std::move(empty);
}

std::shared_ptr<X509_STORE> ClientCaStore::Current() const {
  std::lock_guard lock(mutex_);
  return current_;
}

absl::Status ConfigureServerTls(SSL_CTX* context, const TlsServerOptions& options) {
  ERR_clear_error();
  const Bio chain = ReadOnlyBio(options.certificate_chain_pem);
  const std::unique_ptr<X509, decltype(&X509_free)> leaf(
      PEM_read_bio_X509(chain.get(), nullptr, nullptr, nullptr), X509_free);
  if (!leaf || SSL_CTX_use_certificate(context, leaf.get()) != 1) {
    return absl::InvalidArgumentError(fmt::format("server certificate: {}", TakeOpenSslError()));
  }
  SSL_CTX_clear_chain_certs(context);
  for (;;) {
    X509* intermediate = PEM_read_bio_X509(chain.get(), nullptr, nullptr, nullptr);
    if (!intermediate) break;
    SSL_CTX_add0_chain_cert(context, intermediate);  // the context owns it now
  }
  ERR_clear_error();  // the end of the chain's text
  const Bio key_text = ReadOnlyBio(options.private_key_pem);
  const std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> key(
      PEM_read_bio_PrivateKey(key_text.get(), nullptr, nullptr, nullptr), EVP_PKEY_free);
  if (!key) return absl::InvalidArgumentError(fmt::format("server key: {}", TakeOpenSslError()));
  if (SSL_CTX_use_PrivateKey(context, key.get()) != 1 || SSL_CTX_check_private_key(context) != 1) {
    return absl::InvalidArgumentError(
        fmt::format("server key does not match its certificate: {}", TakeOpenSslError()));
  }
  SSL_CTX_set_min_proto_version(context, TLS1_2_VERSION);
  SSL_CTX_set_session_cache_mode(context, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_options(context, SSL_OP_NO_TICKET);
  SSL_CTX_set_num_tickets(context, 0);
  if (options.client_ca) {
    SSL_CTX_set_verify(context, SSL_VERIFY_PEER, nullptr);
    SSL_CTX_set_cert_verify_callback(context, VerifyAgainstCurrentCas, options.client_ca.get());
  } else {
    SSL_CTX_set_verify(context, SSL_VERIFY_NONE, nullptr);
  }
  return absl::OkStatus();
}

PeerCertificate PeerOf(SSL* connection) {
  PeerCertificate peer;
  X509* leaf = SSL_get0_peer_certificate(connection);
  if (leaf == nullptr) return peer;
  peer.presented = true;
  const long result = SSL_get_verify_result(connection);
  if (result == X509_V_OK) {
    peer.verified = true;
    peer.common_name = CommonName(leaf);
  } else {
    peer.verify_error = X509_verify_cert_error_string(result);
  }
  return peer;
}

}  // namespace nodemesh::http
