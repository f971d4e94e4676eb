// Certificates for tests, made with the openssl command line in a temporary directory: a
// CA, and server and client certificates it signs. Keys are P-256; everything is valid for
// a week, and the extensions are explicit so as not to depend on the system's openssl.cnf.
#pragma once

#include <string>
#include <vector>

#include "test/lib/files.h"

namespace nodemesh::testing {

// <dir>/<name>.crt and <dir>/<name>.key: a self-signed CA.
void MakeCa(const TempDir& dir, const std::string& name);

// <dir>/<name>.crt and .key, signed by CA `ca`: a server certificate for 127.0.0.1,
// localhost and `extra_dns_names` ("nodemesh-aggregator.nodemesh.svc", the name the
// aggregation layer checks), with the extensions strict verifiers (Go's, OpenSSL's strict
// mode) ask for.
void MakeServerCertificate(const TempDir& dir, const std::string& ca,
                           const std::string& name = "server",
                           const std::vector<std::string>& extra_dns_names = {});

// <dir>/<name>.crt and .key, signed by CA `ca`: a client certificate of `subject`
// ("/CN=system:node:node-a/O=system:nodes").
void MakeClientCertificate(const TempDir& dir, const std::string& ca, const std::string& name,
                           const std::string& subject);

}  // namespace nodemesh::testing
