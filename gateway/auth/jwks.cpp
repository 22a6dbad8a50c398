// SPDX-License-Identifier: Apache-2.0
// JWKS loading (RFC 7517, key parameters per RFC 7518 section 6), base64url (RFC 7515
// section 2) and JWS signature verification for the two algorithms we accept, over OpenSSL 3.
#include "gateway/auth/jwks.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <fstream>
#include <iterator>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "fhir/json.h"
#include "gateway/crypto/openssl.h"

namespace gw::auth {

namespace {

constexpr std::size_t kMaxJwksBytes = 1024 * 1024;
constexpr std::size_t kMaxKeys = 100;
constexpr int kMinRsaBits = 2048;
constexpr int kMaxRsaBits = 8192;  // verification cost grows with the modulus; 8192 is plenty
constexpr std::size_t kMaxRsaExponentBytes = 8;
constexpr std::size_t kP256CoordinateBytes = 32;

// Order n of the P-256 base point (SEC 2 v2 section 2.4.2), big-endian.
constexpr std::array<unsigned char, 32> kP256Order = {
    0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x00, 0x00, 0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
    0xBC, 0xE6, 0xFA, 0xAD, 0xA7, 0x17, 0x9E, 0x84, 0xF3, 0xB9, 0xCA, 0xC2, 0xFC, 0x63, 0x25, 0x51};

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

bool valid_kid(std::string_view kid) {
  if (kid.empty() || kid.size() > 128) return false;
  return std::all_of(kid.begin(), kid.end(), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
           c == '-';
  });
}

std::string subject_public_key_info(EVP_PKEY* pkey) {
  int len = i2d_PUBKEY(pkey, nullptr);
  if (len <= 0) return {};
  std::string der(static_cast<std::size_t>(len), '\0');
  auto* p = reinterpret_cast<unsigned char*>(der.data());
  if (i2d_PUBKEY(pkey, &p) != len) return {};
  return der;
}

}  // namespace

class PublicKey {
 public:
  PublicKey(PkeyPtr pkey, JwsAlgorithm alg, std::string der)
      : pkey_(std::move(pkey)), alg_(alg), der_(std::move(der)) {}
  EVP_PKEY* get() const { return pkey_.get(); }
  JwsAlgorithm alg() const { return alg_; }
  const std::string& der() const { return der_; }

 private:
  PkeyPtr pkey_;
  JwsAlgorithm alg_;
  std::string der_;  // SubjectPublicKeyInfo, to compare key material across JWKS refreshes
};

std::string_view algorithm_name(JwsAlgorithm a) {
  switch (a) {
    case JwsAlgorithm::rs256: return "RS256";
    case JwsAlgorithm::es256: return "ES256";
  }
  return "";
}

// --- base64url (RFC 4648 section 5, unpadded as RFC 7515 section 2 requires) ---

std::string base64url_encode(std::string_view in) {
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string out;
  out.reserve((in.size() * 4 + 2) / 3);
  const unsigned char* p = bytes(in);
  std::size_t i = 0;
  for (; i + 3 <= in.size(); i += 3) {
    std::uint32_t v = (std::uint32_t{p[i]} << 16) | (std::uint32_t{p[i + 1]} << 8) | p[i + 2];
    out.push_back(kAlphabet[(v >> 18) & 63]);
    out.push_back(kAlphabet[(v >> 12) & 63]);
    out.push_back(kAlphabet[(v >> 6) & 63]);
    out.push_back(kAlphabet[v & 63]);
  }
  std::size_t rest = in.size() - i;
  if (rest == 1) {
    std::uint32_t v = std::uint32_t{p[i]} << 16;
    out.push_back(kAlphabet[(v >> 18) & 63]);
    out.push_back(kAlphabet[(v >> 12) & 63]);
  } else if (rest == 2) {
    std::uint32_t v = (std::uint32_t{p[i]} << 16) | (std::uint32_t{p[i + 1]} << 8);
    out.push_back(kAlphabet[(v >> 18) & 63]);
    out.push_back(kAlphabet[(v >> 12) & 63]);
    out.push_back(kAlphabet[(v >> 6) & 63]);
  }
  return out;
}

fhir::Result<std::string> base64url_decode(std::string_view text) {
  auto value_of = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '-') return 62;
    if (c == '_') return 63;
    return -1;
  };
  if (text.size() % 4 == 1)
    return fhir::Issue::make(fhir::ErrorCode::invalid_value, "base64url text has an impossible length");
  std::string out;
  out.reserve(text.size() / 4 * 3 + 2);
  std::uint32_t acc = 0;
  int bits = 0;
  for (char c : text) {
    int v = value_of(c);
    if (v < 0)
      return fhir::Issue::make(fhir::ErrorCode::invalid_value,
                               c == '=' ? "base64url text must not be padded with '='"
                                        : "base64url text holds a character outside A-Z a-z 0-9 - _");
    acc = (acc << 6) | static_cast<std::uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xFF));
    }
  }
  // RFC 4648 section 3.5: the unused low bits of the last character must be zero, so each
  // byte string has exactly one encoding.
  if (bits > 0 && (acc & ((1u << bits) - 1)) != 0)
    return fhir::Issue::make(fhir::ErrorCode::invalid_value, "base64url text has non-zero trailing bits");
  return out;
}

// --- JWK import ---

namespace {

fhir::Issue key_error(std::size_t index, std::string_view kid, std::string_view why) {
  std::string msg = "JWKS key " + std::to_string(index);
  if (!kid.empty() && valid_kid(kid)) {
    msg.append(" (kid \"");
    msg.append(kid);
    msg.append("\")");
  }
  msg.append(": ");
  msg.append(why);
  return fhir::Issue::make(fhir::ErrorCode::invalid_value, std::move(msg));
}

// Decodes the base64url member `name`; empty result and a message on failure.
std::string member_bytes(const fhir::Json& jwk, std::string_view name, std::string& why) {
  const fhir::Json* v = jwk.find(name);
  if (v == nullptr || !v->is_string() || v->text().empty()) {
    why = "member \"" + std::string(name) + "\" is missing or not a string";
    return {};
  }
  auto decoded = base64url_decode(v->text());
  if (!decoded) {
    why = "member \"" + std::string(name) + "\" is not valid base64url";
    return {};
  }
  if (decoded->empty()) why = "member \"" + std::string(name) + "\" is empty";
  return std::move(decoded).value();
}

struct Imported {
  PkeyPtr pkey;
  std::string error;
};

Imported import_rsa(const fhir::Json& jwk) {
  Imported out;
  std::string n_bytes = member_bytes(jwk, "n", out.error);
  if (!out.error.empty()) return out;
  std::string e_bytes = member_bytes(jwk, "e", out.error);
  if (!out.error.empty()) return out;

  BnPtr n(BN_bin2bn(bytes(n_bytes), static_cast<int>(n_bytes.size()), nullptr));
  BnPtr e(BN_bin2bn(bytes(e_bytes), static_cast<int>(e_bytes.size()), nullptr));
  if (!n || !e) {
    out.error = "out of memory reading the RSA key";
    return out;
  }
  int bits = BN_num_bits(n.get());
  if (bits < kMinRsaBits) {
    out.error = "RSA key has " + std::to_string(bits) + " bits; at least 2048 are required";
    return out;
  }
  if (bits > kMaxRsaBits) {
    out.error = "RSA key has " + std::to_string(bits) + " bits; at most 8192 are supported";
    return out;
  }
  if (!BN_is_odd(n.get())) {
    out.error = "RSA modulus n is even, so it is not a valid modulus";
    return out;
  }
  if (e_bytes.size() > kMaxRsaExponentBytes || !BN_is_odd(e.get()) || BN_is_one(e.get())) {
    out.error = "RSA exponent e must be odd, at least 3 and at most 64 bits";
    return out;
  }

  ParamBldPtr bld(OSSL_PARAM_BLD_new());
  if (!bld || OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_N, n.get()) != 1 ||
      OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_E, e.get()) != 1) {
    out.error = "could not build the RSA key";
    return out;
  }
  ParamPtr params(OSSL_PARAM_BLD_to_param(bld.get()));
  PkeyCtxPtr ctx(EVP_PKEY_CTX_new_from_name(nullptr, "RSA", nullptr));
  EVP_PKEY* raw = nullptr;
  if (!params || !ctx || EVP_PKEY_fromdata_init(ctx.get()) != 1 ||
      EVP_PKEY_fromdata(ctx.get(), &raw, EVP_PKEY_PUBLIC_KEY, params.get()) != 1) {
    out.error = "OpenSSL refused the RSA key";
    return out;
  }
  out.pkey.reset(raw);
  return out;
}

Imported import_p256(const fhir::Json& jwk) {
  Imported out;
  std::string x = member_bytes(jwk, "x", out.error);
  if (!out.error.empty()) return out;
  std::string y = member_bytes(jwk, "y", out.error);
  if (!out.error.empty()) return out;
  // RFC 7518 section 6.2.1.2/6.2.1.3: coordinates are the full field size, 32 octets for P-256.
  if (x.size() != kP256CoordinateBytes || y.size() != kP256CoordinateBytes) {
    out.error = "EC P-256 coordinates x and y must each be 32 bytes";
    return out;
  }
  std::string point;
  point.reserve(1 + 2 * kP256CoordinateBytes);
  point.push_back('\x04');  // uncompressed point (SEC 1 v2 section 2.3.3)
  point.append(x);
  point.append(y);

  ParamBldPtr bld(OSSL_PARAM_BLD_new());
  if (!bld || OSSL_PARAM_BLD_push_utf8_string(bld.get(), OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0) != 1 ||
      OSSL_PARAM_BLD_push_octet_string(bld.get(), OSSL_PKEY_PARAM_PUB_KEY, point.data(), point.size()) != 1) {
    out.error = "could not build the EC key";
    return out;
  }
  ParamPtr params(OSSL_PARAM_BLD_to_param(bld.get()));
  PkeyCtxPtr ctx(EVP_PKEY_CTX_new_from_name(nullptr, "EC", nullptr));
  EVP_PKEY* raw = nullptr;
  if (!params || !ctx || EVP_PKEY_fromdata_init(ctx.get()) != 1 ||
      EVP_PKEY_fromdata(ctx.get(), &raw, EVP_PKEY_PUBLIC_KEY, params.get()) != 1) {
    out.error = "EC point (x, y) is not on the P-256 curve";
    return out;
  }
  PkeyPtr pkey(raw);
  // Explicit public-key validation (SP 800-56A rev3 section 5.6.2.3.3: on the curve, not the
  // point at infinity), rather than trusting that the import above checked it.
  PkeyCtxPtr check(EVP_PKEY_CTX_new_from_pkey(nullptr, pkey.get(), nullptr));
  if (!check || EVP_PKEY_public_check(check.get()) != 1) {
    out.error = "EC point (x, y) is not on the P-256 curve";
    return out;
  }
  out.pkey = std::move(pkey);
  return out;
}

}  // namespace

fhir::Result<std::shared_ptr<const KeySet>> KeySet::parse(std::string_view jwks_json) {
  ErrorQueueGuard clear_errors;
  auto fail = [](std::string why) { return fhir::Issue::make(fhir::ErrorCode::invalid_value, std::move(why)); };
  if (jwks_json.size() > kMaxJwksBytes) return fail("JWKS document is larger than 1 MiB");
  fhir::JsonLimits limits;
  limits.max_bytes = kMaxJwksBytes;
  limits.max_depth = 8;
  limits.max_members = 1000;
  auto doc = fhir::parse_json(jwks_json, limits);
  if (!doc) return fail("JWKS document is not valid JSON: " + doc.issue().diagnostics);
  const fhir::Json* keys = doc->is_object() ? doc->find("keys") : nullptr;
  if (keys == nullptr || !keys->is_array())
    return fail("JWKS document must be an object with a \"keys\" array (RFC 7517 section 5)");
  if (keys->items().empty()) return fail("JWKS document holds no keys");
  if (keys->items().size() > kMaxKeys) return fail("JWKS document holds more than 100 keys");

  auto set = std::make_shared<KeySet>();
  for (std::size_t i = 0; i < keys->items().size(); ++i) {
    const fhir::Json& jwk = keys->items()[i];
    if (!jwk.is_object()) return key_error(i, {}, "is not a JSON object");
    const fhir::Json* kid_member = jwk.find("kid");
    if (kid_member == nullptr || !kid_member->is_string() || kid_member->text().empty())
      return key_error(i, {}, "has no \"kid\"; every key must be named so tokens can select it");
    const std::string& kid = kid_member->text();
    if (!valid_kid(kid)) return key_error(i, {}, "\"kid\" must be 1 to 128 characters from A-Z a-z 0-9 . _ -");

    // A JWKS for token verification publishes public keys only (RFC 7518 section 6.2.2 and
    // 6.3.2 list the private members; "k" is a symmetric secret).
    for (std::string_view priv : {"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
      if (jwk.find(priv) != nullptr)
        return key_error(i, kid,
                         "carries private key material (\"" + std::string(priv) + "\"); publish only the public key");

    // RFC 7517 section 4.2: an identity provider's set may hold keys for other purposes
    // (Keycloak publishes an RSA-OAEP encryption key beside its signing key). Keys that are
    // not for verifying signatures, or are for an algorithm we do not verify, are skipped
    // rather than failing the set; malformed members are still errors.
    auto skip = [&](std::string why) { set->skipped_.push_back(SkippedJwk{i, kid, std::move(why)}); };
    if (const fhir::Json* use = jwk.find("use"); use != nullptr) {
      if (use->is_string() && use->text() == "enc") {
        skip("\"use\" is \"enc\": an encryption key, not a token-signing key");
        continue;
      }
      if (!use->is_string() || use->text() != "sig")
        return key_error(i, kid, "\"use\" must be \"sig\" (or \"enc\" for a key this gateway skips)");
    }
    if (const fhir::Json* ops = jwk.find("key_ops"); ops != nullptr) {
      if (!ops->is_array() || std::any_of(ops->items().begin(), ops->items().end(),
                                          [](const fhir::Json& op) { return !op.is_string(); }))
        return key_error(i, kid, "\"key_ops\" must be an array of strings");
      if (std::none_of(ops->items().begin(), ops->items().end(),
                       [](const fhir::Json& op) { return op.text() == "verify"; })) {
        skip("\"key_ops\" does not allow \"verify\"");
        continue;
      }
    }
    const fhir::Json* alg_member = jwk.find("alg");
    if (alg_member != nullptr && !alg_member->is_string()) return key_error(i, kid, "\"alg\" must be a string");
    const std::string_view alg_text = alg_member != nullptr ? std::string_view(alg_member->text()) : "";
    if (alg_member != nullptr && alg_text != "RS256" && alg_text != "ES256") {
      std::string shown;  // the IdP's text goes to a log line and maybe a terminal
      for (char c : alg_text.substr(0, 32)) shown.push_back(c >= 0x20 && c < 0x7F ? c : '?');
      skip("unsupported algorithm \"" + shown + "\"; this gateway verifies RS256 and ES256");
      continue;
    }

    std::string_view kty = jwk.string_at("kty");
    JwsAlgorithm alg = JwsAlgorithm::rs256;
    if (kty == "EC") {
      if (jwk.string_at("crv") != "P-256") {
        skip("unsupported EC curve; this gateway verifies ES256, which uses P-256");
        continue;
      }
      alg = JwsAlgorithm::es256;
    } else if (kty == "OKP") {
      skip("unsupported key type \"OKP\" (EdDSA); this gateway verifies RS256 and ES256");
      continue;
    } else if (kty != "RSA") {
      return key_error(i, kid, "unsupported key type; use kty \"RSA\" (RS256) or \"EC\" with crv \"P-256\" (ES256)");
    }
    if (alg_member != nullptr && alg_text != algorithm_name(alg))
      return key_error(i, kid,
                       "\"alg\" disagrees with the key type; this gateway accepts only " +
                           std::string(algorithm_name(alg)) + " with this key");
    if (set->find(kid) != nullptr) return key_error(i, kid, "duplicate \"kid\"; each kid must name one key");
    Imported imported = alg == JwsAlgorithm::rs256 ? import_rsa(jwk) : import_p256(jwk);
    if (!imported.error.empty()) return key_error(i, kid, imported.error);
    std::string der = subject_public_key_info(imported.pkey.get());
    if (der.empty()) return key_error(i, kid, "could not encode the public key");
    set->keys_.push_back(
        Jwk{kid, alg, std::make_shared<const PublicKey>(std::move(imported.pkey), alg, std::move(der))});
  }
  if (set->keys_.empty()) {
    std::string why =
        "JWKS document holds no key this gateway can verify tokens with (RS256: RSA of at least 2048 bits; ES256: "
        "EC P-256)";
    for (const SkippedJwk& k : set->skipped_)
      why.append("; key ").append(std::to_string(k.index)).append(" (kid \"").append(k.kid).append("\"): ").append(k.reason);
    return fail(std::move(why));
  }
  return std::shared_ptr<const KeySet>(std::move(set));
}

fhir::Result<std::shared_ptr<const KeySet>> KeySet::load_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return fhir::Issue::make(fhir::ErrorCode::invalid_value, "cannot read the JWKS file " + path);
  std::string text;
  std::array<char, 16384> buf{};
  while (in && text.size() <= kMaxJwksBytes) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    text.append(buf.data(), static_cast<std::size_t>(in.gcount()));
  }
  if (text.size() > kMaxJwksBytes)
    return fhir::Issue::make(fhir::ErrorCode::invalid_value, "JWKS file " + path + " is larger than 1 MiB");
  if (in.bad()) return fhir::Issue::make(fhir::ErrorCode::invalid_value, "cannot read the JWKS file " + path);
  auto set = parse(text);
  if (!set) {
    fhir::Issue issue = std::move(set).issue();
    issue.diagnostics = path + ": " + issue.diagnostics;
    return issue;
  }
  return set;
}

const Jwk* KeySet::find(std::string_view kid) const {
  for (const Jwk& k : keys_)
    if (k.kid == kid) return &k;
  return nullptr;
}

bool same_key(const Jwk& a, const Jwk& b) {
  return a.kid == b.kid && a.alg == b.alg && a.key && b.key && a.key->alg() == b.key->alg() &&
         a.key->der() == b.key->der();
}

// --- verification ---

namespace {

// RFC 7518 section 3.4: ES256 signatures are R || S, each 32 bytes big-endian. Both must lie
// in [1, n-1] (SEC 1 v2 section 4.1.4 step 1); checked here so that r = s = 0 ("psychic
// signatures", CVE-2022-21449 in another stack) is refused before any library sees it.
bool es256_scalar_in_range(const unsigned char* v) {
  bool zero = std::all_of(v, v + 32, [](unsigned char c) { return c == 0; });
  return !zero && std::memcmp(v, kP256Order.data(), kP256Order.size()) < 0;
}

std::string es256_raw_to_der(std::string_view raw) {
  EcdsaSigPtr sig(ECDSA_SIG_new());
  if (!sig) return {};
  BIGNUM* r = BN_bin2bn(bytes(raw), 32, nullptr);
  BIGNUM* s = BN_bin2bn(bytes(raw) + 32, 32, nullptr);
  if (r == nullptr || s == nullptr || ECDSA_SIG_set0(sig.get(), r, s) != 1) {
    BN_free(r);
    BN_free(s);
    return {};
  }
  int len = i2d_ECDSA_SIG(sig.get(), nullptr);
  if (len <= 0) return {};
  std::string der(static_cast<std::size_t>(len), '\0');
  auto* p = reinterpret_cast<unsigned char*>(der.data());
  if (i2d_ECDSA_SIG(sig.get(), &p) != len) return {};
  return der;
}

}  // namespace

bool verify_signature(const Jwk& key, std::string_view signing_input, std::string_view signature) {
  ErrorQueueGuard clear_errors;
  if (!key.key || key.key->alg() != key.alg) return false;
  EVP_PKEY* pkey = key.key->get();
  std::string der;
  std::string_view sig = signature;
  if (key.alg == JwsAlgorithm::es256) {
    if (signature.size() != 64) return false;
    if (!es256_scalar_in_range(bytes(signature)) || !es256_scalar_in_range(bytes(signature) + 32)) return false;
    der = es256_raw_to_der(signature);
    if (der.empty()) return false;
    sig = der;
  } else {
    // RFC 8017 section 8.2.2 step 1: the signature is exactly as long as the modulus.
    if (signature.size() != static_cast<std::size_t>(EVP_PKEY_get_size(pkey))) return false;
  }
  MdCtxPtr md(EVP_MD_CTX_new());
  EVP_PKEY_CTX* pctx = nullptr;  // owned by md
  if (!md || EVP_DigestVerifyInit(md.get(), &pctx, EVP_sha256(), nullptr, pkey) != 1) return false;
  if (key.alg == JwsAlgorithm::rs256 && EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) <= 0) return false;
  return EVP_DigestVerify(md.get(), bytes(sig), sig.size(), bytes(signing_input), signing_input.size()) == 1;
}

}  // namespace gw::auth
