// SPDX-License-Identifier: Apache-2.0
// The hostile-token catalogue of jwt_attacks.h. Each case is built so that it passes every
// check before the one it targets (e.g. an expired token carries a genuine signature), so a
// validator that skipped that check would accept it.
#include "tests/gateway/auth/jwt_attacks.h"

#include <array>
#include <limits>
#include <mutex>
#include <stdexcept>

#include <openssl/evp.h>
#include <openssl/hmac.h>

namespace gw::test {

namespace {

using auth::JwsAlgorithm;

template <class T>
T take(fhir::Result<T> r, const char* what) {
  if (!r) throw std::runtime_error(std::string(what) + ": " + r.issue().diagnostics);
  return std::move(r).value();
}

std::string b64(std::string_view s) { return auth::base64url_encode(s); }

std::string header_text(std::string_view alg, std::string_view kid) {
  std::string h = R"({"alg":")";
  h.append(alg);
  h.append(R"(","typ":"JWT","kid":")");
  h.append(kid);
  h.append("\"}");
  return h;
}

// A header with one extra member (raw JSON value) after alg, typ and kid.
std::string header_with(std::string_view alg, std::string_view kid, std::string_view name, std::string_view value) {
  std::string h = header_text(alg, kid);
  h.pop_back();
  h.append(",\"");
  h.append(name);
  h.append("\":");
  h.append(value);
  h.push_back('}');
  return h;
}

std::string signed_by(const auth::SigningKey& key, std::string_view header, std::string_view claims) {
  return take(auth::sign_compact(key, header, claims), "signing a test token");
}

std::string unsigned_token(std::string_view header, std::string_view claims, std::string_view signature_b64) {
  std::string t = b64(header);
  t.push_back('.');
  t.append(b64(claims));
  t.push_back('.');
  t.append(signature_b64);
  return t;
}

std::string hs256(std::string_view secret, std::string_view header, std::string_view claims) {
  std::string input = b64(header);
  input.push_back('.');
  input.append(b64(claims));
  std::array<unsigned char, EVP_MAX_MD_SIZE> mac{};
  unsigned int len = 0;
  if (HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
           reinterpret_cast<const unsigned char*>(input.data()), input.size(), mac.data(), &len) == nullptr)
    throw std::runtime_error("HMAC failed");
  input.push_back('.');
  input.append(b64(std::string_view(reinterpret_cast<const char*>(mac.data()), len)));
  return input;
}

std::string signature_part(const std::string& token) { return token.substr(token.rfind('.') + 1); }

std::string with_signature(const std::string& token, std::string_view raw_signature) {
  return token.substr(0, token.rfind('.') + 1) + b64(raw_signature);
}

std::string claims_with(const TestKeys& keys, std::int64_t now, std::string_view name, fhir::Json value) {
  fhir::Json c = valid_claims(keys, now);
  c.set(std::string(name), std::move(value));
  return fhir::to_json(c);
}

std::string claims_without(const TestKeys& keys, std::int64_t now, std::string_view name) {
  fhir::Json c = valid_claims(keys, now);
  c.erase(name);
  return fhir::to_json(c);
}

// Claims text with `member_json` (e.g. "\"exp\":\"123\"") spliced in as the first member, for
// values fhir::Json cannot express (duplicates, fractions, huge numbers).
std::string claims_raw(const TestKeys& keys, std::int64_t now, std::string_view drop, std::string_view member_json) {
  fhir::Json c = valid_claims(keys, now);
  if (!drop.empty()) c.erase(drop);
  std::string text = fhir::to_json(c);
  std::string out = "{";
  out.append(member_json);
  out.push_back(',');
  out.append(text.substr(1));
  return out;
}

}  // namespace

TestKeys make_test_keys() {
  TestKeys k{take(auth::SigningKey::generate(JwsAlgorithm::es256), "generating the EC test key"),
             take(auth::SigningKey::generate(JwsAlgorithm::rs256), "generating the RSA test key"),
             take(auth::SigningKey::generate(JwsAlgorithm::es256), "generating the foreign key"),
             "test-ec-1",
             "test-rsa-1",
             {},
             {},
             {}};
  std::string ec_jwk = k.ec.public_jwk_json(k.ec_kid);
  std::string rsa_jwk = k.rsa.public_jwk_json(k.rsa_kid);
  k.jwks_json = "{\"keys\":[";
  k.jwks_json.append(ec_jwk);
  k.jwks_json.push_back(',');
  k.jwks_json.append(rsa_jwk);
  k.jwks_json.append("]}");
  k.keys = take(auth::KeySet::parse(k.jwks_json), "parsing the test JWKS");
  k.config.issuer = "https://idp.test.invalid/realms/nhs";
  k.config.audiences = {"https://gateway.test.invalid", "fhir-gateway"};
  k.config.required_typ = "JWT";
  k.config.leeway = std::chrono::seconds(30);
  k.config.max_lifetime = std::chrono::seconds(24 * 3600);
  k.config.max_token_bytes = 8192;
  return k;
}

const TestKeys& shared_test_keys() {
  static const TestKeys keys = make_test_keys();
  return keys;
}

fhir::Json valid_claims(const TestKeys& keys, std::int64_t now) {
  fhir::Json c = fhir::Json::object();
  c.set("iss", fhir::Json::string(keys.config.issuer));
  c.set("sub", fhir::Json::string("555123456789"));
  c.set("aud", fhir::Json::string(keys.config.audiences.front()));
  c.set("iat", fhir::Json::integer(now));
  c.set("nbf", fhir::Json::integer(now));
  c.set("exp", fhir::Json::integer(now + 600));
  c.set("jti", fhir::Json::string("tok-" + std::to_string(now)));
  c.set("client_id", fhir::Json::string("test-client"));
  c.set("scope", fhir::Json::string("user/Patient.rs user/Observation.rs"));
  c.set("fhirUser", fhir::Json::string("Practitioner/p-1"));
  c.set(keys.config.role_claim, fhir::Json::string("R8000"));
  c.set(keys.config.organisation_claim, fhir::Json::string("RX809"));
  c.set(keys.config.purpose_claim, fhir::Json::string("TREAT"));
  return c;
}

std::string mint_token(const TestKeys& keys, const fhir::Json& claims, JwsAlgorithm alg) {
  const auth::SigningKey& key = alg == JwsAlgorithm::es256 ? keys.ec : keys.rsa;
  const std::string& kid = alg == JwsAlgorithm::es256 ? keys.ec_kid : keys.rsa_kid;
  return take(auth::sign_jwt(key, kid, claims), "minting a test token");
}

std::string mint_valid_token(const TestKeys& keys, std::int64_t now, JwsAlgorithm alg) {
  return mint_token(keys, valid_claims(keys, now), alg);
}

std::vector<JwtAttack> make_jwt_attacks(const TestKeys& keys, std::int64_t now) {
  std::vector<JwtAttack> out;
  auto add = [&out](std::string name, std::string token, std::string expect) {
    out.push_back(JwtAttack{std::move(name), std::move(token), std::move(expect)});
  };
  const std::string claims = fhir::to_json(valid_claims(keys, now));
  const std::string es_header = header_text("ES256", keys.ec_kid);
  const std::string rs_header = header_text("RS256", keys.rsa_kid);
  const std::string valid = signed_by(keys.ec, es_header, claims);
  const std::string valid_sig = signature_part(valid);
  auto es = [&](std::string_view claims_json) { return signed_by(keys.ec, es_header, claims_json); };

  // --- alg none (RFC 7518 section 3.6): never accepted, with or without a signature part ---
  for (std::string_view none : {"none", "None", "NONE", "nOnE"}) {
    std::string h = header_text(none, keys.ec_kid);
    std::string suffix(none);
    add("alg_" + suffix + "_empty_signature", unsigned_token(h, claims, ""), "alg none");
    add("alg_" + suffix + "_with_signature", unsigned_token(h, claims, valid_sig), "alg none");
  }
  add("alg_none_no_kid", unsigned_token(R"({"alg":"none","typ":"JWT"})", claims, ""), "alg none");

  // --- key confusion: HS256 with a public key (as an attacker could fetch it) as HMAC secret ---
  add("hs256_secret_rsa_public_pem", hs256(keys.rsa.public_key_pem(), header_text("HS256", keys.rsa_kid), claims),
      "rs256 or es256");
  add("hs256_secret_ec_public_pem", hs256(keys.ec.public_key_pem(), header_text("HS256", keys.ec_kid), claims),
      "rs256 or es256");
  add("hs256_secret_rsa_public_der", hs256(keys.rsa.public_key_der(), header_text("HS256", keys.rsa_kid), claims),
      "rs256 or es256");
  add("hs256_secret_jwks_text", hs256(keys.jwks_json, header_text("HS256", keys.ec_kid), claims), "rs256 or es256");
  add("alg_es256_lowercase", signed_by(keys.ec, header_text("es256", keys.ec_kid), claims), "rs256 or es256");
  add("alg_es384", signed_by(keys.ec, header_text("ES384", keys.ec_kid), claims), "rs256 or es256");
  add("alg_ps256", signed_by(keys.rsa, header_text("PS256", keys.rsa_kid), claims), "rs256 or es256");
  add("alg_missing", signed_by(keys.ec, "{\"typ\":\"JWT\",\"kid\":\"" + keys.ec_kid + "\"}", claims), "no algorithm");

  // --- alg/key mismatch: the key's pinned algorithm wins ---
  add("rs256_header_kid_of_ec_key", signed_by(keys.rsa, header_text("RS256", keys.ec_kid), claims),
      "does not match its key");
  add("es256_header_kid_of_rsa_key", signed_by(keys.ec, header_text("ES256", keys.rsa_kid), claims),
      "does not match its key");

  // --- kid ---
  add("kid_unknown", signed_by(keys.ec, header_text("ES256", "no-such-key"), claims), "trusted key set");
  add("kid_path_traversal", signed_by(keys.ec, header_text("ES256", "../../etc/passwd"), claims), "kid) is invalid");
  add("kid_sql_injection", signed_by(keys.ec, header_text("ES256", "' OR 1=1 --"), claims), "kid) is invalid");
  add("kid_missing", signed_by(keys.ec, R"({"alg":"ES256","typ":"JWT"})", claims), "no key id");
  add("kid_empty", signed_by(keys.ec, header_text("ES256", ""), claims), "kid) is invalid");
  add("kid_not_string", signed_by(keys.ec, R"({"alg":"ES256","typ":"JWT","kid":7})", claims), "kid) is invalid");
  add("kid_too_long", signed_by(keys.ec, header_text("ES256", std::string(129, 'a')), claims), "kid) is invalid");
  add("kid_nul_byte", signed_by(keys.ec, header_text("ES256", keys.ec_kid + "\\u0000"), claims), "kid) is invalid");

  // --- signature ---
  add("signature_stripped", valid.substr(0, valid.rfind('.') + 1), "no signature");
  add("signature_foreign_key", signed_by(keys.foreign, es_header, claims), "signature is invalid");
  {
    std::string sig = take(auth::base64url_decode(valid_sig), "decoding a signature");
    sig[10] = static_cast<char>(sig[10] ^ 0x01);
    add("signature_bit_flipped", with_signature(valid, sig), "signature is invalid");
    add("signature_truncated", with_signature(valid, sig.substr(0, 63)), "signature is invalid");
    add("signature_es256_r_s_zero", with_signature(valid, std::string(64, '\0')), "signature is invalid");
    // r = n (the group order, out of range) with s = 1.
    static constexpr unsigned char kOrder[32] = {
        0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x00, 0x00, 0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
        0xBC, 0xE6, 0xFA, 0xAD, 0xA7, 0x17, 0x9E, 0x84, 0xF3, 0xB9, 0xCA, 0xC2, 0xFC, 0x63, 0x25, 0x51};
    std::string r_is_n(reinterpret_cast<const char*>(kOrder), sizeof kOrder);
    r_is_n.append(31, '\0');
    r_is_n.push_back('\x01');
    add("signature_es256_r_equals_order", with_signature(valid, r_is_n), "signature is invalid");
  }
  add("signature_rs256_on_es256_token", with_signature(valid, std::string(256, '\x01')), "signature is invalid");
  {
    // Claims altered after signing (privilege escalation), and a signature spliced from
    // another genuine token.
    fhir::Json c = valid_claims(keys, now);
    c.set(keys.config.role_claim, fhir::Json::string("R0001"));
    std::string tampered = b64(es_header) + "." + b64(fhir::to_json(c)) + "." + valid_sig;
    add("claims_tampered_after_signing", tampered, "signature is invalid");
    std::string other = mint_valid_token(keys, now + 1);
    add("signature_spliced_from_other_token", valid.substr(0, valid.rfind('.') + 1) + signature_part(other),
        "signature is invalid");
  }

  // --- header members that carry keys or key locations, even with a genuine signature ---
  add("header_jku",
      signed_by(keys.ec, header_with("ES256", keys.ec_kid, "jku", R"("https://attacker.example/jwks")"), claims),
      "'jku'");
  add("header_x5u",
      signed_by(keys.ec, header_with("ES256", keys.ec_kid, "x5u", R"("https://attacker.example/c.pem")"), claims),
      "'x5u'");
  add("header_jwk_foreign_key",
      signed_by(keys.foreign, header_with("ES256", keys.ec_kid, "jwk", keys.foreign.public_jwk_json("attacker")),
                claims),
      "'jwk'");
  add("header_x5c",
      signed_by(keys.ec, header_with("ES256", keys.ec_kid, "x5c", R"(["MIIBszCCAVmgAwIBAgIUd"])"), claims), "'x5c'");
  add("header_x5t", signed_by(keys.ec, header_with("ES256", keys.ec_kid, "x5t", R"("dGh1bWJwcmludA")"), claims),
      "'x5t'");
  add("header_crit_unknown", signed_by(keys.ec, header_with("ES256", keys.ec_kid, "crit", R"(["exp"])"), claims),
      "crit");
  add("header_crit_b64_unencoded",
      signed_by(keys.ec, header_with("ES256", keys.ec_kid, "crit", R"(["b64"],"b64":false)"), claims), "crit");
  add("header_typ_wrong",
      signed_by(keys.ec, R"({"alg":"ES256","typ":"secevent+jwt","kid":")" + keys.ec_kid + "\"}", claims), "typ");
  add("header_duplicate_alg",
      signed_by(keys.ec, R"({"alg":"ES256","typ":"JWT","kid":")" + keys.ec_kid + R"(","alg":"none"})", claims),
      "header is not a valid json");
  add("header_duplicate_kid",
      signed_by(keys.ec, R"({"alg":"ES256","typ":"JWT","kid":"unknown","kid":")" + keys.ec_kid + "\"}", claims),
      "header is not a valid json");
  add("header_not_json", unsigned_token("alg=ES256", claims, valid_sig), "header is not a valid json");
  add("header_json_array", signed_by(keys.ec, R"(["ES256"])", claims), "header is not a valid json");
  add("header_trailing_garbage", signed_by(keys.ec, es_header + "x", claims), "header is not a valid json");

  // --- time claims (all genuinely signed) ---
  add("exp_expired", es(claims_with(keys, now, "exp", fhir::Json::integer(now - 3600))), "expired");
  add("exp_just_beyond_leeway",
      es(claims_with(keys, now, "exp", fhir::Json::integer(now - keys.config.leeway.count()))), "expired");
  add("exp_missing", es(claims_without(keys, now, "exp")), "no expiry");
  add("exp_string", es(claims_with(keys, now, "exp", fhir::Json::string(std::to_string(now + 600)))), "integer");
  add("exp_fraction", es(claims_raw(keys, now, "exp", "\"exp\":" + std::to_string(now + 600) + ".5")), "integer");
  add("exp_exponent", es(claims_raw(keys, now, "exp", "\"exp\":1e10")), "integer");
  add("exp_beyond_int64", es(claims_raw(keys, now, "exp", "\"exp\":99999999999999999999999")), "integer");
  add("exp_negative", es(claims_with(keys, now, "exp", fhir::Json::integer(-1))), "out of range");
  add("exp_zero", es(claims_with(keys, now, "exp", fhir::Json::integer(0))), "out of range");
  add("exp_too_far_ahead", es(claims_with(keys, now, "exp", fhir::Json::integer(now + 10LL * 365 * 86400))), "too far");
  add("exp_int64_max", es(claims_with(keys, now, "exp", fhir::Json::integer(std::numeric_limits<std::int64_t>::max()))),
      "too far");
  add("nbf_in_future", es(claims_with(keys, now, "nbf", fhir::Json::integer(now + 3600))), "not valid yet");
  add("nbf_string", es(claims_with(keys, now, "nbf", fhir::Json::string("0"))), "integer");
  add("iat_far_future", es(claims_with(keys, now, "iat", fhir::Json::integer(now + 86400))), "iat");
  add("iat_fraction", es(claims_raw(keys, now, "iat", "\"iat\":" + std::to_string(now) + ".25")), "integer");

  // --- issuer, audience, subject, typed claims ---
  add("iss_wrong", es(claims_with(keys, now, "iss", fhir::Json::string("https://attacker.example"))), "issuer");
  add("iss_prefix_of_trusted", es(claims_with(keys, now, "iss", fhir::Json::string(keys.config.issuer + "/evil"))),
      "issuer");
  add("iss_missing", es(claims_without(keys, now, "iss")), "no issuer");
  add("iss_not_string", es(claims_with(keys, now, "iss", fhir::Json::integer(1))), "issuer");
  add("aud_wrong", es(claims_with(keys, now, "aud", fhir::Json::string("https://other-service.example"))), "audience");
  add("aud_missing", es(claims_without(keys, now, "aud")), "no audience");
  {
    fhir::Json auds = fhir::Json::array();
    auds.push_back(fhir::Json::string("https://other-service.example"));
    add("aud_array_without_ours", es(claims_with(keys, now, "aud", std::move(auds))), "audience");
    add("aud_empty_array", es(claims_with(keys, now, "aud", fhir::Json::array())), "audience");
    fhir::Json mixed = fhir::Json::array();
    mixed.push_back(fhir::Json::string(keys.config.audiences.front()));
    mixed.push_back(fhir::Json::integer(1));
    add("aud_array_with_number", es(claims_with(keys, now, "aud", std::move(mixed))), "audience");
  }
  add("sub_missing", es(claims_without(keys, now, "sub")), "no subject");
  add("sub_empty", es(claims_with(keys, now, "sub", fhir::Json::string(""))), "no subject");
  add("role_not_string", es(claims_with(keys, now, keys.config.role_claim, fhir::Json::integer(8000))),
      "must be a string");
  add("claims_duplicate_sub", es(claims_raw(keys, now, "", "\"sub\":\"someone-else\"")), "claims are not a valid json");
  add("claims_duplicate_exp", es(claims_raw(keys, now, "", "\"exp\":" + std::to_string(now + 80000))),
      "claims are not a valid json");
  add("claims_json_array", es("[" + claims + "]"), "claims are not a valid json");
  {
    std::string deep = claims;
    deep.pop_back();
    deep.append(",\"nest\":");
    deep.append(std::string(40, '['));
    deep.append(std::string(40, ']'));
    deep.push_back('}');
    add("claims_deeply_nested", es(deep), "claims are not a valid json");
  }
  {
    std::string big = claims;
    big.pop_back();
    big.append(",\"pad\":\"");
    big.append(keys.config.max_token_bytes, 'A');
    big.append("\"}");
    add("token_oversize", es(big), "larger than");
  }

  // --- framing and encoding ---
  add("empty_token", "", "empty");
  add("two_parts", valid.substr(0, valid.rfind('.')), "compact jws");
  add("four_parts", valid + ".", "compact jws");
  add("jwe_five_parts", b64(R"({"alg":"RSA-OAEP","enc":"A256GCM"})") + ".AAAA.AAAA.AAAA.AAAA", "compact jws");
  add("header_standard_base64_chars", "+/" + valid.substr(2), "base64url");
  add("header_padded", b64(es_header) + "=." + valid.substr(valid.find('.') + 1), "base64url");
  add("signature_padded", valid + "==", "base64url");
  add("leading_space", " " + valid, "base64url");
  add("bearer_prefix_left_in", "Bearer " + valid, "base64url");
  add("claims_not_base64url", valid.substr(0, valid.find('.') + 1) + "!!!!" + valid.substr(valid.rfind('.')),
      "signature is invalid");
  return out;
}

}  // namespace gw::test
