// SPDX-License-Identifier: Apache-2.0
#include "gateway/net/tls_context.h"

#include <openssl/ssl.h>

namespace gw::net {

// ECDHE only (forward secrecy) and AEAD only (GCM, ChaCha20-Poly1305); TLS 1.3 suites are
// all AEAD with ephemeral key exchange by construction.
const char* const kTls12Ciphers =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

std::shared_ptr<boost::asio::ssl::context> make_server_tls_context(const config::Config& cfg) {
  namespace ssl = boost::asio::ssl;
  const std::string& file = cfg.source_file.empty() ? std::string("(defaults)") : cfg.source_file;
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_server);
  ctx->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 | ssl::context::no_sslv3 |
                   ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1 | ssl::context::single_dh_use |
                   ssl::context::no_compression);
  SSL_CTX* native = ctx->native_handle();
  SSL_CTX_set_min_proto_version(native, TLS1_2_VERSION);
  SSL_CTX_set_options(native, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
  if (SSL_CTX_set_cipher_list(native, kTls12Ciphers) != 1)
    throw config::ConfigError(file, "server.https", "OpenSSL rejected the cipher list");

  boost::system::error_code ec;
  ctx->use_certificate_chain_file(cfg.https.certificate, ec);
  if (ec)
    throw config::ConfigError(file, "server.https.certificate",
                              "cannot load PEM certificate chain " + cfg.https.certificate + ": " + ec.message());
  ctx->use_private_key_file(cfg.https.private_key, ssl::context::pem, ec);
  if (ec)
    throw config::ConfigError(file, "server.https.private_key",
                              "cannot load PEM private key " + cfg.https.private_key + ": " + ec.message());
  if (SSL_CTX_check_private_key(native) != 1)
    throw config::ConfigError(file, "server.https.private_key", "the private key does not match the certificate");

  if (cfg.https.client_certificates != config::ClientCertificates::none) {
    ctx->load_verify_file(cfg.https.client_ca, ec);
    if (ec)
      throw config::ConfigError(file, "server.https.client_ca",
                                "cannot load CA bundle " + cfg.https.client_ca + ": " + ec.message());
    if (STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(cfg.https.client_ca.c_str()))
      SSL_CTX_set_client_CA_list(native, names);
    auto mode = ssl::verify_peer;
    if (cfg.https.client_certificates == config::ClientCertificates::required)
      mode |= ssl::verify_fail_if_no_peer_cert;
    ctx->set_verify_mode(mode);
    static const unsigned char kSessionContext[] = "fhir-gateway";
    SSL_CTX_set_session_id_context(native, kSessionContext, sizeof kSessionContext - 1);
  }
  return ctx;
}

}  // namespace gw::net
