#include "test/lib/certificates.h"

#include <fmt/format.h>

#include <stdexcept>
#include <vector>

#include "test/lib/process.h"

namespace nodemesh::testing {
namespace {

using namespace std::chrono_literals;

void Run(std::vector<std::string> argv) {
  const std::string command = fmt::format("{}", fmt::join(argv, " "));
  const CommandResult result = RunCommand(std::move(argv), 30s);
  if (result.exit_code != 0) {
    throw std::runtime_error(
        fmt::format("`{}` failed ({}): {}", command,
                    result.timed_out ? "timed out" : "exit " + std::to_string(result.exit_code),
                    result.output));
  }
}

// <name>.csr signed by CA `ca` into <name>.crt, with the extensions in `extensions`.
void Sign(const TempDir& dir, const std::string& ca, const std::string& name,
          const std::string& extensions) {
  const std::string& d = dir.path();
  Run({"openssl", "x509", "-req", "-in", d + "/" + name + ".csr", "-CA", d + "/" + ca + ".crt",
       "-CAkey", d + "/" + ca + ".key", "-CAcreateserial", "-out", d + "/" + name + ".crt", "-days",
       "7", "-extfile", extensions});
}

}  // namespace

void MakeCa(const TempDir& dir, const std::string& name) {
  const std::string& d = dir.path();
  Run({"openssl",
       "req",
       "-x509",
       "-newkey",
       "ec",
       "-pkeyopt",
       "ec_paramgen_curve:P-256",
       "-nodes",
       "-keyout",
       d + "/" + name + ".key",
       "-out",
       d + "/" + name + ".crt",
       "-days",
       "7",
       "-subj",
       "/CN=" + name,
       "-addext",
       "basicConstraints=critical,CA:TRUE",
       "-addext",
       "keyUsage=critical,keyCertSign,cRLSign"});
}

void MakeServerCertificate(const TempDir& dir, const std::string& ca, const std::string& name,
                           const std::vector<std::string>& extra_dns_names) {
  const std::string& d = dir.path();
  Run({"openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
       "-keyout", d + "/" + name + ".key", "-out", d + "/" + name + ".csr", "-subj",
       "/CN=127.0.0.1"});
  std::string names = "IP:127.0.0.1,DNS:localhost";
  for (const std::string& dns_name : extra_dns_names) names += ",DNS:" + dns_name;
  const std::string extensions =
      dir.Write(name + ".ext", "subjectAltName=" + names +
                                   "\n"
                                   "basicConstraints=CA:FALSE\n"
                                   "keyUsage=critical,digitalSignature,keyEncipherment\n"
                                   "extendedKeyUsage=serverAuth\n"
                                   "subjectKeyIdentifier=hash\n"
                                   "authorityKeyIdentifier=keyid,issuer\n");
  Sign(dir, ca, name, extensions);
}

void MakeClientCertificate(const TempDir& dir, const std::string& ca, const std::string& name,
                           const std::string& subject) {
  const std::string& d = dir.path();
  Run({"openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
       "-keyout", d + "/" + name + ".key", "-out", d + "/" + name + ".csr", "-subj", subject});
  const std::string extensions = dir.Write(name + ".ext",
                                           "basicConstraints=CA:FALSE\n"
                                           "keyUsage=critical,digitalSignature\n"
                                           "extendedKeyUsage=clientAuth\n"
                                           "subjectKeyIdentifier=hash\n"
                                           "authorityKeyIdentifier=keyid,issuer\n");
  Sign(dir, ca, name, extensions);
}

}  // namespace nodemesh::testing
