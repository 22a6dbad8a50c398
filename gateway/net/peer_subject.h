// SPDX-License-Identifier: Apache-2.0
// The subject of a TLS peer's certificate, read the same way by the HTTPS listener
// (gateway/net/server.cpp) and the MLLP listener (adapters/hl7v2), so that one configured
// client_certificate_subject matches on both.
#pragma once

#if GW_WITH_TLS
#include <cstddef>
#include <string>

#include <openssl/bio.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

namespace gw::net {

// RFC 2253 text of the subject as OpenSSL prints it when the peer's certificate verified,
// else "" (none sent, or verification failed).
inline std::string verified_peer_subject(SSL* ssl) {
  X509* cert = SSL_get0_peer_certificate(ssl);
  if (!cert || SSL_get_verify_result(ssl) != X509_V_OK) return {};
  BIO* bio = BIO_new(BIO_s_mem());
  if (!bio) return {};
  X509_NAME_print_ex(bio, X509_get_subject_name(cert), 0, XN_FLAG_RFC2253);
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio, &data);
  std::string out(data, n > 0 ? static_cast<std::size_t>(n) : 0);
  BIO_free(bio);
  return out;
}

}  // namespace gw::net
#endif
