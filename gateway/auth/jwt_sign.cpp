// SPDX-License-Identifier: Apache-2.0
// Token signing over OpenSSL 3 EVP for mint-token and the tests (see jwt_sign.h).
#include "gateway/auth/jwt_sign.h"

#include <array>
#include <fstream>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "fhir/json.h"
#include "gateway/crypto/openssl.h"

namespace gw::auth {

namespace {

constexpr std::size_t kMaxPemBytes = 64 * 1024;

using crypto::BioPtr;
using crypto::BnPtr;
using crypto::bytes;
using crypto::EcdsaSigPtr;
using crypto::ErrorQueueGuard;
using crypto::MdCtxPtr;
using crypto::no_passphrase;
using crypto::ParamBldPtr;
using crypto::ParamPtr;
using crypto::PkeyCtxPtr;
using crypto::PkeyPtr;

fhir::Issue key_error(std::string why) { return fhir::Issue::make(fhir::ErrorCode::invalid_value, std::move(why)); }

std::string bn_bytes(const BIGNUM* bn, int width) {
  int n = width > 0 ? width : BN_num_bytes(bn);
  std::string out(static_cast<std::size_t>(n), '\0');
  if (BN_bn2binpad(bn, reinterpret_cast<unsigned char*>(out.data()), n) != n) return {};
  return out;
}

std::string bn_param(EVP_PKEY* pkey, const char* name, int width) {
  BIGNUM* raw = nullptr;
  if (EVP_PKEY_get_bn_param(pkey, name, &raw) != 1) return {};
  BnPtr bn(raw);
  return bn_bytes(bn.get(), width);
}

// Checks the key type and size; returns the algorithm it is pinned to.
fhir::Result<JwsAlgorithm> classify(EVP_PKEY* pkey) {
  if (EVP_PKEY_is_a(pkey, "EC")) {
    std::array<char, 64> group{};
    std::size_t len = 0;
    if (EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, group.data(), group.size(), &len) != 1 ||
        std::string_view(group.data(), len) != "prime256v1")
      return key_error("EC signing keys must use curve P-256 (prime256v1) for ES256");
    return JwsAlgorithm::es256;
  }
  if (EVP_PKEY_is_a(pkey, "RSA")) {
    int bits = EVP_PKEY_get_bits(pkey);
    if (bits < 2048 || bits > 8192) return key_error("RSA signing keys must have 2048 to 8192 bits for RS256");
    return JwsAlgorithm::rs256;
  }
  return key_error("unsupported signing key type; use an EC P-256 (ES256) or RSA (RS256) key");
}

}  // namespace

struct SigningKey::Key {
  PkeyPtr pkey;
};

fhir::Result<SigningKey> SigningKey::from_pem(std::string_view pem) {
  ErrorQueueGuard clear_errors;
  if (pem.size() > kMaxPemBytes) return key_error("PEM key is larger than 64 KiB");
  if (pem.find("ENCRYPTED") != std::string_view::npos)
    return key_error("encrypted PEM keys are not supported; use an unencrypted development key");
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!bio) return key_error("out of memory reading the PEM key");
  PkeyPtr pkey(PEM_read_bio_PrivateKey(bio.get(), nullptr, no_passphrase, nullptr));
  if (!pkey) return key_error("not a PEM private key (expected PKCS#8, SEC 1 or PKCS#1)");
  auto alg = classify(pkey.get());
  if (!alg) return std::move(alg).issue();
  auto key = std::make_shared<Key>();
  key->pkey = std::move(pkey);
  return SigningKey(std::move(key), *alg);
}

fhir::Result<SigningKey> SigningKey::load_pem_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return key_error("cannot read the key file " + path);
  std::string text;
  std::array<char, 4096> buf{};
  while (in && text.size() <= kMaxPemBytes) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    text.append(buf.data(), static_cast<std::size_t>(in.gcount()));
  }
  if (in.bad()) return key_error("cannot read the key file " + path);
  auto key = from_pem(text);
  if (!key) {
    fhir::Issue issue = std::move(key).issue();
    issue.diagnostics = path + ": " + issue.diagnostics;
    return issue;
  }
  return key;
}

fhir::Result<SigningKey> SigningKey::generate(JwsAlgorithm alg) {
  ErrorQueueGuard clear_errors;
  EVP_PKEY* raw = alg == JwsAlgorithm::es256 ? EVP_EC_gen("P-256") : EVP_RSA_gen(2048);
  if (raw == nullptr) return key_error("key generation failed");
  auto key = std::make_shared<Key>();
  key->pkey.reset(raw);
  return SigningKey(std::move(key), alg);
}

std::string SigningKey::public_key_der() const {
  int len = i2d_PUBKEY(key_->pkey.get(), nullptr);
  if (len <= 0) return {};
  std::string der(static_cast<std::size_t>(len), '\0');
  auto* p = reinterpret_cast<unsigned char*>(der.data());
  if (i2d_PUBKEY(key_->pkey.get(), &p) != len) return {};
  return der;
}

std::string SigningKey::public_key_pem() const {
  ErrorQueueGuard clear_errors;
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_PUBKEY(bio.get(), key_->pkey.get()) != 1) return {};
  char* data = nullptr;
  long len = BIO_get_mem_data(bio.get(), &data);
  return len > 0 ? std::string(data, static_cast<std::size_t>(len)) : std::string();
}

std::string SigningKey::default_kid() const {
  std::string kid = "dev-";
  kid.append(hex_encode(sha256(public_key_der())).substr(0, 8));
  return kid;
}

std::string SigningKey::public_jwk_json(std::string_view kid) const {
  fhir::Json jwk = fhir::Json::object();
  EVP_PKEY* pkey = key_->pkey.get();
  if (alg_ == JwsAlgorithm::es256) {
    jwk.set("kty", fhir::Json::string("EC"));
    jwk.set("crv", fhir::Json::string("P-256"));
    jwk.set("x", fhir::Json::string(base64url_encode(bn_param(pkey, OSSL_PKEY_PARAM_EC_PUB_X, 32))));
    jwk.set("y", fhir::Json::string(base64url_encode(bn_param(pkey, OSSL_PKEY_PARAM_EC_PUB_Y, 32))));
  } else {
    jwk.set("kty", fhir::Json::string("RSA"));
    jwk.set("n", fhir::Json::string(base64url_encode(bn_param(pkey, OSSL_PKEY_PARAM_RSA_N, 0))));
    jwk.set("e", fhir::Json::string(base64url_encode(bn_param(pkey, OSSL_PKEY_PARAM_RSA_E, 0))));
  }
  ERR_clear_error();
  jwk.set("kid", fhir::Json::string(std::string(kid)));
  jwk.set("use", fhir::Json::string("sig"));
  jwk.set("alg", fhir::Json::string(std::string(algorithm_name(alg_))));
  return fhir::to_json(jwk);
}

std::string SigningKey::jwks_json(std::string_view kid) const {
  std::string out = "{\"keys\":[";
  out.append(public_jwk_json(kid));
  out.append("]}");
  return out;
}

fhir::Result<std::string> SigningKey::sign(std::string_view signing_input) const {
  ErrorQueueGuard clear_errors;
  MdCtxPtr md(EVP_MD_CTX_new());
  EVP_PKEY_CTX* pctx = nullptr;  // owned by md
  if (!md || EVP_DigestSignInit(md.get(), &pctx, EVP_sha256(), nullptr, key_->pkey.get()) != 1)
    return key_error("could not start signing");
  if (alg_ == JwsAlgorithm::rs256 && EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) <= 0)
    return key_error("could not select RSASSA-PKCS1-v1_5");
  std::size_t len = 0;
  if (EVP_DigestSign(md.get(), nullptr, &len, bytes(signing_input), signing_input.size()) != 1)
    return key_error("signing failed");
  std::string sig(len, '\0');
  if (EVP_DigestSign(md.get(), reinterpret_cast<unsigned char*>(sig.data()), &len, bytes(signing_input),
                     signing_input.size()) != 1)
    return key_error("signing failed");
  sig.resize(len);
  if (alg_ == JwsAlgorithm::rs256) return sig;

  // EVP produces DER (SEC 1 ECDSA-Sig-Value); JWS wants fixed-width R || S (RFC 7518 3.4).
  const auto* p = bytes(sig);
  EcdsaSigPtr ecdsa(d2i_ECDSA_SIG(nullptr, &p, static_cast<long>(sig.size())));
  if (!ecdsa) return key_error("could not decode the ECDSA signature");
  const BIGNUM* r = nullptr;
  const BIGNUM* s = nullptr;
  ECDSA_SIG_get0(ecdsa.get(), &r, &s);
  std::string raw = bn_bytes(r, 32);
  std::string s_bytes = bn_bytes(s, 32);
  if (raw.size() != 32 || s_bytes.size() != 32) return key_error("could not encode the ECDSA signature");
  raw.append(s_bytes);
  return raw;
}

fhir::Result<std::string> sign_compact(const SigningKey& key, std::string_view header_json,
                                       std::string_view claims_json) {
  std::string token = base64url_encode(header_json);
  token.push_back('.');
  token.append(base64url_encode(claims_json));
  auto sig = key.sign(token);
  if (!sig) return std::move(sig).issue();
  token.push_back('.');
  token.append(base64url_encode(*sig));
  return token;
}

fhir::Result<std::string> sign_jwt(const SigningKey& key, std::string_view kid, const fhir::Json& claims,
                                   std::string_view typ) {
  if (!claims.is_object()) return key_error("token claims must be a JSON object");
  fhir::Json header = fhir::Json::object();
  header.set("alg", fhir::Json::string(std::string(algorithm_name(key.algorithm()))));
  if (!typ.empty()) header.set("typ", fhir::Json::string(std::string(typ)));
  header.set("kid", fhir::Json::string(std::string(kid)));
  return sign_compact(key, fhir::to_json(header), fhir::to_json(claims));
}

std::string hex_encode(std::string_view in) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(in.size() * 2);
  for (unsigned char c : in) {
    out.push_back(kHex[c >> 4]);
    out.push_back(kHex[c & 15]);
  }
  return out;
}

std::string sha256(std::string_view data) {
  std::array<unsigned char, EVP_MAX_MD_SIZE> md{};
  unsigned int len = 0;
  if (EVP_Digest(data.data(), data.size(), md.data(), &len, EVP_sha256(), nullptr) != 1) {
    ERR_clear_error();
    return {};
  }
  return std::string(reinterpret_cast<const char*>(md.data()), len);
}

}  // namespace gw::auth
