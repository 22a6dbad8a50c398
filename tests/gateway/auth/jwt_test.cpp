// SPDX-License-Identifier: Apache-2.0
// Bearer JWT validation: the attack catalogue (jwt_attacks.h), valid RS256/ES256 tokens and
// their claims, leeway edges, the verified-token cache, JWKS loading, base64url and signing.
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <fstream>
#include <set>
#include <thread>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "support/paths.h"
#include "tests/gateway/auth/jwt_attacks.h"

using gw::auth::JwsAlgorithm;
using gw::auth::JwtConfig;
using gw::auth::JwtValidator;
using gw::auth::KeySet;

namespace {

// A fixed clock: tests never read the wall clock.
constexpr std::int64_t kNow = 1'900'000'000;

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

template <class T>
std::string diagnostics_of(const fhir::Result<T>& r) {
  return r ? std::string("(ok)") : r.issue().diagnostics;
}

// The JWK of `key` as a JSON object, for tests that break one member.
fhir::Json jwk_of(const gw::auth::SigningKey& key, const std::string& kid) {
  auto j = fhir::parse_json(key.public_jwk_json(kid));
  REQUIRE(j.ok());
  return *j;
}

std::string jwks_of(std::initializer_list<fhir::Json> keys) {
  fhir::Json arr = fhir::Json::array();
  for (const fhir::Json& k : keys) arr.push_back(k);
  fhir::Json doc = fhir::Json::object();
  doc.set("keys", std::move(arr));
  return fhir::to_json(doc);
}

std::string b64(std::string_view s) { return gw::auth::base64url_encode(s); }
std::string unb64(std::string_view s) {
  auto r = gw::auth::base64url_decode(s);
  REQUIRE(r.ok());
  return *r;
}

// An EVP private key as PEM text: PKCS#8, or the traditional (SEC 1 / PKCS#1) form.
std::string private_pem(EVP_PKEY* pkey, bool traditional) {
  BIO* bio = BIO_new(BIO_s_mem());
  REQUIRE(bio != nullptr);
  int ok = traditional ? PEM_write_bio_PrivateKey_traditional(bio, pkey, nullptr, nullptr, 0, nullptr, nullptr)
                       : PEM_write_bio_PrivateKey(bio, pkey, nullptr, nullptr, 0, nullptr, nullptr);
  char* data = nullptr;
  long len = BIO_get_mem_data(bio, &data);
  std::string out = ok == 1 && len > 0 ? std::string(data, static_cast<std::size_t>(len)) : std::string();
  BIO_free(bio);
  return out;
}

JwtValidator validator(const gw::test::TestKeys& keys, std::size_t cache_entries = 100) {
  JwtConfig config = keys.config;
  config.cache_entries = cache_entries;
  return JwtValidator(config, keys.keys);
}

}  // namespace

TEST_CASE("JwtValidator: the valid counterpart of the attacks is accepted") {
  const auto& keys = gw::test::shared_test_keys();
  auto v = validator(keys);
  auto es = v.validate(gw::test::mint_valid_token(keys, kNow, JwsAlgorithm::es256), kNow);
  CHECK_MESSAGE(es.ok(), diagnostics_of(es));
  auto rs = v.validate(gw::test::mint_valid_token(keys, kNow, JwsAlgorithm::rs256), kNow);
  CHECK_MESSAGE(rs.ok(), diagnostics_of(rs));
}

TEST_CASE("JwtValidator: every attack token is refused as unauthenticated, naming the failed check") {
  const auto& keys = gw::test::shared_test_keys();
  auto attacks = gw::test::make_jwt_attacks(keys, kNow);
  CHECK(attacks.size() >= 30);
  std::set<std::string> names;
  for (const auto& a : attacks) names.insert(a.name);
  CHECK(names.size() == attacks.size());

  auto v = validator(keys);
  for (const auto& attack : attacks) {
    CAPTURE(attack.name);
    auto r = v.validate(attack.token, kNow);
    REQUIRE_FALSE(r.ok());
    CHECK(r.issue().code == fhir::ErrorCode::unauthenticated);
    CHECK_MESSAGE(lower(r.issue().diagnostics).find(attack.expect) != std::string::npos, r.issue().diagnostics);
    // Never echo the token (or its header or signature part) back.
    const std::string_view token(attack.token);
    for (std::string_view part : {token.substr(0, token.find('.')), token.substr(token.rfind('.') + 1)})
      if (part.size() >= 8) CHECK(r.issue().diagnostics.find(part) == std::string::npos);
  }
  // A second pass over the same attacks fails the same way: failures are never cached.
  for (const auto& attack : attacks) {
    CAPTURE(attack.name);
    CHECK_FALSE(v.validate(attack.token, kNow).ok());
  }
  CHECK(v.cache_hits() == 0);
}

TEST_CASE("JwtValidator: ES256 and RS256 tokens yield every claim") {
  const auto& keys = gw::test::shared_test_keys();
  auto v = validator(keys);
  for (JwsAlgorithm alg : {JwsAlgorithm::es256, JwsAlgorithm::rs256}) {
    CAPTURE(gw::auth::algorithm_name(alg));
    fhir::Json claims = gw::test::valid_claims(keys, kNow);
    claims.set(keys.config.patient_claim, fhir::Json::string("pat-0042"));
    auto r = v.validate(gw::test::mint_token(keys, claims, alg), kNow);
    REQUIRE_MESSAGE(r.ok(), diagnostics_of(r));
    const auto& t = **r;
    CHECK(t.issuer == keys.config.issuer);
    CHECK(t.subject == "555123456789");
    CHECK(t.audience == std::vector<std::string>{keys.config.audiences.front()});
    CHECK(t.token_id == "tok-" + std::to_string(kNow));
    CHECK(t.client_id == "test-client");
    CHECK(t.role == "R8000");
    CHECK(t.organisation == "RX809");
    CHECK(t.scope == "user/Patient.rs user/Observation.rs");
    CHECK(t.purpose_of_use == "TREAT");
    CHECK(t.patient == "pat-0042");
    CHECK(t.fhir_user == "Practitioner/p-1");
    CHECK(t.expires_at == kNow + 600);
    CHECK(t.issued_at == kNow);
    CHECK(t.not_before == kNow);
  }
}

TEST_CASE("JwtValidator: the patient claim must be a Patient id, under its configured name") {
  const auto& keys = gw::test::shared_test_keys();
  auto v = validator(keys);
  for (const char* bad : {"", "Patient/pat-1", "pat 1", "p\u00e9t"}) {
    CAPTURE(bad);
    fhir::Json claims = gw::test::valid_claims(keys, kNow);
    auto parsed = fhir::parse_json(std::string("\"") + bad + "\"");
    REQUIRE(parsed);
    claims.set("patient", std::move(*parsed));
    auto r = v.validate(gw::test::mint_token(keys, claims, JwsAlgorithm::es256), kNow);
    REQUIRE_FALSE(r.ok());
    CHECK(r.issue().code == fhir::ErrorCode::unauthenticated);
    CHECK(r.issue().diagnostics.find("token claim 'patient' must be a Patient id") != std::string::npos);
  }
  fhir::Json claims = gw::test::valid_claims(keys, kNow);
  claims.set("patient", fhir::Json::integer(42));
  CHECK_FALSE(v.validate(gw::test::mint_token(keys, claims, JwsAlgorithm::es256), kNow).ok());

  // Configured under another name, the claim is read from there and "patient" is ignored.
  auto config = keys.config;
  config.patient_claim = "launch_patient";
  gw::auth::JwtValidator renamed(config, v.keys());
  claims = gw::test::valid_claims(keys, kNow);
  claims.set("patient", fhir::Json::string("Patient/not-an-id"));
  claims.set("launch_patient", fhir::Json::string("pat-7"));
  auto r = renamed.validate(gw::test::mint_token(keys, claims, JwsAlgorithm::es256), kNow);
  REQUIRE_MESSAGE(r.ok(), diagnostics_of(r));
  CHECK((*r)->patient == "pat-7");
}

TEST_CASE("JwtValidator: scp array, azp, aud array, second audience and token id without jti") {
  const auto& keys = gw::test::shared_test_keys();
  auto v = validator(keys);
  fhir::Json claims = gw::test::valid_claims(keys, kNow);
  claims.erase("scope");
  claims.erase("client_id");
  claims.erase("jti");
  claims.erase("nbf");
  claims.erase("iat");
  fhir::Json scp = fhir::Json::array();
  scp.push_back(fhir::Json::string("patient/*.read"));
  scp.push_back(fhir::Json::string("launch"));
  claims.set("scp", std::move(scp));
  claims.set("azp", fhir::Json::string("spa-client"));
  fhir::Json aud = fhir::Json::array();
  aud.push_back(fhir::Json::string("https://elsewhere.example"));
  aud.push_back(fhir::Json::string("fhir-gateway"));  // the second configured audience
  claims.set("aud", std::move(aud));
  std::string token = gw::test::mint_token(keys, claims);
  auto r = v.validate(token, kNow);
  REQUIRE_MESSAGE(r.ok(), diagnostics_of(r));
  CHECK((*r)->scope == "patient/*.read launch");
  CHECK((*r)->client_id == "spa-client");
  CHECK((*r)->audience.size() == 2);
  CHECK((*r)->issued_at == 0);
  CHECK((*r)->not_before == 0);
  // Without jti: 16 bytes of SHA-256 over the signature part, as hex; no token text kept.
  const std::string sig_part = token.substr(token.rfind('.') + 1);
  CHECK((*r)->token_id == gw::auth::hex_encode(gw::auth::sha256(sig_part).substr(0, 16)));
  CHECK((*r)->token_id.size() == 32);

  claims.set("scp", fhir::Json::string("a b"));
  auto as_string = v.validate(gw::test::mint_token(keys, claims), kNow);
  REQUIRE(as_string.ok());
  CHECK((*as_string)->scope == "a b");
  CHECK((*as_string)->token_id != (*r)->token_id);

  fhir::Json bad_scp = fhir::Json::array();
  bad_scp.push_back(fhir::Json::integer(1));
  claims.set("scp", std::move(bad_scp));
  auto bad = v.validate(gw::test::mint_token(keys, claims), kNow);
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.issue().diagnostics.find("'scp'") != std::string::npos);
}

TEST_CASE("JwtValidator: typ is compared case-insensitively, with or without application/") {
  const auto& keys = gw::test::shared_test_keys();
  JwtConfig config = keys.config;
  config.required_typ = "at+jwt";
  JwtValidator v(config, keys.keys);
  const std::string claims = fhir::to_json(gw::test::valid_claims(keys, kNow));
  auto with_typ = [&](std::string_view typ) {
    std::string h = R"({"alg":"ES256","typ":")";
    h.append(typ);
    h.append(R"(","kid":")" + keys.ec_kid + "\"}");
    auto t = gw::auth::sign_compact(keys.ec, h, claims);
    REQUIRE(t.ok());
    return v.validate(*t, kNow);
  };
  CHECK(with_typ("at+jwt").ok());
  CHECK(with_typ("AT+JWT").ok());
  CHECK(with_typ("application/at+jwt").ok());
  CHECK(with_typ("Application/At+JWT").ok());
  CHECK_FALSE(with_typ("JWT").ok());
  CHECK_FALSE(with_typ("application/").ok());
  // No typ at all while one is required.
  auto no_typ = gw::auth::sign_compact(keys.ec, R"({"alg":"ES256","kid":")" + keys.ec_kid + "\"}", claims);
  REQUIRE(no_typ.ok());
  CHECK_FALSE(v.validate(*no_typ, kNow).ok());
  // With required_typ empty, typ is not checked.
  config.required_typ.clear();
  JwtValidator any(config, keys.keys);
  CHECK(any.validate(*no_typ, kNow).ok());
}

TEST_CASE("JwtValidator: leeway edges for exp, nbf, iat and the maximum lifetime") {
  const auto& keys = gw::test::shared_test_keys();
  auto v = validator(keys, 0);
  const std::int64_t leeway = keys.config.leeway.count();
  const std::int64_t max_life = keys.config.max_lifetime.count();
  auto with = [&](std::string_view name, std::int64_t value) {
    fhir::Json claims = gw::test::valid_claims(keys, kNow);
    claims.set(std::string(name), fhir::Json::integer(value));
    return v.validate(gw::test::mint_token(keys, claims), kNow);
  };
  CHECK(with("exp", kNow - leeway + 1).ok());
  auto expired = with("exp", kNow - leeway);
  REQUIRE_FALSE(expired.ok());
  CHECK(expired.issue().diagnostics.find("expired") != std::string::npos);

  CHECK(with("nbf", kNow + leeway).ok());
  CHECK_FALSE(with("nbf", kNow + leeway + 1).ok());
  CHECK(with("iat", kNow + leeway).ok());
  CHECK_FALSE(with("iat", kNow + leeway + 1).ok());
  CHECK(with("exp", kNow + max_life + leeway).ok());
  CHECK_FALSE(with("exp", kNow + max_life + leeway + 1).ok());
}

TEST_CASE("JwtValidator: a cached token skips the signature check but not the expiry check") {
  const auto& keys = gw::test::shared_test_keys();
  auto v = validator(keys);
  const std::string token = gw::test::mint_valid_token(keys, kNow);
  auto first = v.validate(token, kNow);
  REQUIRE(first.ok());
  CHECK(v.signature_checks() == 1);
  CHECK(v.cache_hits() == 0);

  auto second = v.validate(token, kNow + 10);
  REQUIRE(second.ok());
  CHECK(v.signature_checks() == 1);
  CHECK(v.cache_hits() == 1);
  CHECK(second->get() == first->get());
  // The cache key, handed on with the token for the principal cache: the whole token's
  // SHA-256, and nothing when there is no cache to key.
  CHECK((*first)->token_sha256 == gw::auth::sha256(token));
  CHECK((*first)->token_sha256.size() == 32);
  auto uncached = validator(keys, 0).validate(token, kNow);
  REQUIRE(uncached.ok());
  CHECK((*uncached)->token_sha256.empty());

  // Before nbf - leeway: refused from the cache as well.
  auto early = v.validate(token, kNow - keys.config.leeway.count() - 1);
  REQUIRE_FALSE(early.ok());
  CHECK(early.issue().diagnostics.find("not valid yet") != std::string::npos);

  // exp is now + 600: at exp + leeway the cached entry no longer counts.
  const std::int64_t dead = kNow + 600 + keys.config.leeway.count();
  CHECK(v.validate(token, dead - 1).ok());
  auto late = v.validate(token, dead);
  REQUIRE_FALSE(late.ok());
  CHECK(late.issue().code == fhir::ErrorCode::unauthenticated);
  CHECK(late.issue().diagnostics.find("expired") != std::string::npos);
  CHECK(v.cache_hits() == 2);
  // Dropped from the cache: another attempt verifies the signature again and still fails.
  CHECK_FALSE(v.validate(token, dead).ok());
  CHECK(v.signature_checks() == 2);
}

TEST_CASE("JwtValidator: the cache is bounded and evicts the entry closest to expiry") {
  const auto& keys = gw::test::shared_test_keys();
  auto v = validator(keys, 2);
  auto token_expiring_in = [&](std::int64_t seconds) {
    fhir::Json claims = gw::test::valid_claims(keys, kNow);
    claims.set("exp", fhir::Json::integer(kNow + seconds));
    return gw::test::mint_token(keys, claims);
  };
  const std::string soon = token_expiring_in(100);
  const std::string later = token_expiring_in(200);
  const std::string latest = token_expiring_in(300);
  REQUIRE(v.validate(soon, kNow).ok());
  REQUIRE(v.validate(later, kNow).ok());
  REQUIRE(v.validate(latest, kNow).ok());  // evicts `soon`
  CHECK(v.signature_checks() == 3);
  REQUIRE(v.validate(latest, kNow).ok());
  REQUIRE(v.validate(later, kNow).ok());
  CHECK(v.cache_hits() == 2);
  CHECK(v.signature_checks() == 3);
  REQUIRE(v.validate(soon, kNow).ok());
  CHECK(v.signature_checks() == 4);

  // Expired entries are dropped first: at kNow + 250 `soon` is dead and goes, `latest` stays.
  const std::string fresh = token_expiring_in(1000);
  REQUIRE(v.validate(fresh, kNow + 250).ok());
  CHECK(v.signature_checks() == 5);
  REQUIRE(v.validate(latest, kNow + 250).ok());
  CHECK(v.signature_checks() == 5);

  auto uncached = validator(keys, 0);
  REQUIRE(uncached.validate(latest, kNow).ok());
  REQUIRE(uncached.validate(latest, kNow).ok());
  CHECK(uncached.cache_hits() == 0);
  CHECK(uncached.signature_checks() == 2);
}

TEST_CASE("JwtValidator: set_keys drops cached tokens whose key is gone or changed") {
  const auto& keys = gw::test::shared_test_keys();
  auto v = validator(keys);
  const std::string es = gw::test::mint_valid_token(keys, kNow, JwsAlgorithm::es256);
  const std::string rs = gw::test::mint_valid_token(keys, kNow, JwsAlgorithm::rs256);
  REQUIRE(v.validate(es, kNow).ok());
  REQUIRE(v.validate(rs, kNow).ok());
  CHECK(v.signature_checks() == 2);

  SUBCASE("the same keys re-read keep the cache") {
    auto same = KeySet::parse(keys.jwks_json);
    REQUIRE(same.ok());
    v.set_keys(*same);
    CHECK(v.keys() == *same);
    CHECK(v.validate(es, kNow).ok());
    CHECK(v.validate(rs, kNow).ok());
    CHECK(v.signature_checks() == 2);
    CHECK(v.cache_hits() == 2);
  }
  SUBCASE("a removed key drops its tokens only") {
    auto only_rsa = KeySet::parse(jwks_of({jwk_of(keys.rsa, keys.rsa_kid)}));
    REQUIRE(only_rsa.ok());
    v.set_keys(*only_rsa);
    auto r = v.validate(es, kNow);
    REQUIRE_FALSE(r.ok());
    CHECK(r.issue().diagnostics.find("trusted key set") != std::string::npos);
    CHECK(v.validate(rs, kNow).ok());
    CHECK(v.cache_hits() == 1);
    CHECK(v.signature_checks() == 2);
  }
  SUBCASE("a kid reused for different key material drops its tokens") {
    auto swapped = KeySet::parse(jwks_of({jwk_of(keys.foreign, keys.ec_kid), jwk_of(keys.rsa, keys.rsa_kid)}));
    REQUIRE(swapped.ok());
    v.set_keys(*swapped);
    auto r = v.validate(es, kNow);
    REQUIRE_FALSE(r.ok());
    CHECK(r.issue().diagnostics.find("signature is invalid") != std::string::npos);
    CHECK(v.signature_checks() == 3);
  }
}

TEST_CASE("JwtValidator: a token over max_token_bytes is refused before decoding") {
  const auto& keys = gw::test::shared_test_keys();
  JwtConfig config = keys.config;
  config.max_token_bytes = 64;
  JwtValidator v(config, keys.keys);
  auto r = v.validate(gw::test::mint_valid_token(keys, kNow), kNow);
  REQUIRE_FALSE(r.ok());
  CHECK(r.issue().diagnostics == "token is larger than 64 bytes");
  CHECK(v.signature_checks() == 0);
}

TEST_CASE("JwtValidator: concurrent validation of shared tokens") {
  const auto& keys = gw::test::shared_test_keys();
  auto v = validator(keys, 4);
  std::vector<std::string> tokens;
  for (int i = 0; i < 8; ++i) {
    fhir::Json claims = gw::test::valid_claims(keys, kNow);
    claims.set("jti", fhir::Json::string(std::string("t").append(std::to_string(i))));  // not "t" + string&&: g++ 12 -Wrestrict
    tokens.push_back(gw::test::mint_token(keys, claims, i % 2 ? JwsAlgorithm::rs256 : JwsAlgorithm::es256));
  }
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (int round = 0; round < 20; ++round)
        if (!v.validate(tokens[static_cast<std::size_t>((round + t) % 8)], kNow).ok()) ++failures;
      if (t == 0) v.set_keys(keys.keys);
    });
  for (auto& th : threads) th.join();
  CHECK(failures.load() == 0);
  CHECK(v.cache_hits() + v.signature_checks() == 80);
}

// --- JWKS ---

TEST_CASE("KeySet: parses RSA and EC keys and pins their algorithms") {
  const auto& keys = gw::test::shared_test_keys();
  auto set = KeySet::parse(keys.jwks_json);
  REQUIRE(set.ok());
  REQUIRE((*set)->keys().size() == 2);
  const auto* ec = (*set)->find(keys.ec_kid);
  const auto* rsa = (*set)->find(keys.rsa_kid);
  REQUIRE(ec != nullptr);
  REQUIRE(rsa != nullptr);
  CHECK(ec->alg == JwsAlgorithm::es256);
  CHECK(rsa->alg == JwsAlgorithm::rs256);
  CHECK((*set)->find("TEST-EC-1") == nullptr);  // exact match only
  CHECK((*set)->find("") == nullptr);
  CHECK(gw::auth::same_key(*ec, *(*KeySet::parse(keys.jwks_json))->find(keys.ec_kid)));
  CHECK_FALSE(gw::auth::same_key(*ec, *rsa));

  // Members we do not use (x5c, x5t, key_ops with verify) are allowed in a JWKS.
  fhir::Json ec_jwk = jwk_of(keys.ec, "k1");
  ec_jwk.set("x5t", fhir::Json::string("abc"));
  fhir::Json ops = fhir::Json::array();
  ops.push_back(fhir::Json::string("verify"));
  ec_jwk.set("key_ops", std::move(ops));
  ec_jwk.erase("alg");
  ec_jwk.erase("use");
  CHECK(KeySet::parse(jwks_of({ec_jwk})).ok());
}

TEST_CASE("KeySet: refuses bad JWKS documents with a message naming the key") {
  const auto& keys = gw::test::shared_test_keys();
  const fhir::Json ec = jwk_of(keys.ec, "ec-1");
  const fhir::Json rsa = jwk_of(keys.rsa, "rsa-1");
  auto with = [](fhir::Json jwk, std::string_view name, fhir::Json value) {
    jwk.set(std::string(name), std::move(value));
    return jwk;
  };
  auto without = [](fhir::Json jwk, std::string_view name) {
    jwk.erase(name);
    return jwk;
  };
  auto s = [](std::string v) { return fhir::Json::string(std::move(v)); };

  std::string y = unb64(ec.string_at("y"));
  y.back() = static_cast<char>(y.back() ^ 1);
  std::string weak_n(128, '\xC3');  // 1024-bit odd modulus
  std::string even_n(256, '\xC2');  // 2048-bit even modulus
  fhir::Json many = fhir::Json::array();
  for (int i = 0; i < 101; ++i) many.push_back(with(ec, "kid", s(std::string("k").append(std::to_string(i)))));
  fhir::Json many_doc = fhir::Json::object();
  many_doc.set("keys", std::move(many));

  struct Case {
    const char* name;
    std::string doc;
    const char* expect;
  };
  const std::vector<Case> cases = {
      {"not JSON", "{keys:[]}", "not valid json"},
      {"not an object", "[]", "\"keys\" array"},
      {"keys not an array", R"({"keys":{}})", "\"keys\" array"},
      {"no keys", R"({"keys":[]})", "no keys"},
      {"more than 100 keys", fhir::to_json(many_doc), "more than 100"},
      {"key not an object", R"({"keys":["x"]})", "not a json object"},
      {"missing kid", jwks_of({without(ec, "kid")}), "no \"kid\""},
      {"kid not a string", jwks_of({with(ec, "kid", fhir::Json::integer(1))}), "no \"kid\""},
      {"kid with a slash", jwks_of({with(ec, "kid", s("a/b"))}), "1 to 128"},
      {"duplicate kid", jwks_of({ec, with(rsa, "kid", s("ec-1"))}), "duplicate"},
      {"private EC member d", jwks_of({with(ec, "d", s("AAAA"))}), "\"d\""},
      {"private RSA member p", jwks_of({with(rsa, "p", s("AAAA"))}), "\"p\""},
      {"symmetric key", jwks_of({with(with(without(ec, "crv"), "kty", s("oct")), "k", s("c2VjcmV0"))}), "\"k\""},
      {"use enc", jwks_of({with(ec, "use", s("enc"))}), "\"use\""},
      {"key_ops without verify", jwks_of({with(ec, "key_ops", fhir::Json::array())}), "key_ops"},
      {"EC with alg RS256", jwks_of({with(ec, "alg", s("RS256"))}), "\"alg\""},
      {"RSA with alg PS256", jwks_of({with(rsa, "alg", s("PS256"))}), "unsupported algorithm \"ps256\""},
      {"RSA with alg none", jwks_of({with(rsa, "alg", s("none"))}), "unsupported algorithm \"none\""},
      {"EC with alg HS256", jwks_of({with(ec, "alg", s("HS256"))}), "unsupported algorithm \"hs256\""},
      {"alg not a string", jwks_of({with(ec, "alg", fhir::Json::integer(256))}), "\"alg\" must be a string"},
      {"use neither sig nor enc", jwks_of({with(ec, "use", s("sign"))}), "\"use\" must be \"sig\""},
      {"key_ops not strings", jwks_of({with(ec, "key_ops", s("verify"))}), "array of strings"},
      {"unknown kty", jwks_of({with(ec, "kty", s("OKP"))}), "unsupported key type"},
      {"missing kty", jwks_of({without(ec, "kty")}), "unsupported key type"},
      {"curve P-384", jwks_of({with(ec, "crv", s("P-384"))}), "p-256"},
      {"EC point off the curve", jwks_of({with(ec, "y", s(b64(y)))}), "not on the p-256 curve"},
      {"EC x of 31 bytes", jwks_of({with(ec, "x", s(b64(unb64(ec.string_at("x")).substr(1))))}), "32 bytes"},
      {"EC y missing", jwks_of({without(ec, "y")}), "\"y\""},
      {"EC x not base64url", jwks_of({with(ec, "x", s(std::string(ec.string_at("x")) + "="))}), "base64url"},
      {"RSA 1024 bits", jwks_of({with(rsa, "n", s(b64(weak_n)))}), "at least 2048"},
      {"RSA even modulus", jwks_of({with(rsa, "n", s(b64(even_n)))}), "even"},
      {"RSA e = 1", jwks_of({with(rsa, "e", s("AQ"))}), "exponent"},
      {"RSA even e", jwks_of({with(rsa, "e", s("AQAA"))}), "exponent"},
      {"RSA n missing", jwks_of({without(rsa, "n")}), "\"n\""},
  };
  for (const Case& c : cases) {
    const std::string name = c.name;
    CAPTURE(name);
    auto r = KeySet::parse(c.doc);
    REQUIRE_FALSE(r.ok());
    CHECK_MESSAGE(lower(r.issue().diagnostics).find(c.expect) != std::string::npos, r.issue().diagnostics);
  }
  // The message names the offending key by index and kid.
  auto r = KeySet::parse(jwks_of({rsa, with(ec, "alg", s("RS256"))}));
  REQUIRE_FALSE(r.ok());
  CHECK(r.issue().diagnostics.find("JWKS key 1 (kid \"ec-1\")") != std::string::npos);
}

TEST_CASE("KeySet: keys that are not for verifying tokens are skipped, as long as one usable key remains") {
  const auto& keys = gw::test::shared_test_keys();
  auto with = [](fhir::Json jwk, std::string_view name, fhir::Json value) {
    jwk.set(std::string(name), std::move(value));
    return jwk;
  };
  auto s = [](std::string v) { return fhir::Json::string(std::move(v)); };
  // Keycloak's default realm keys: an RS256 signing key and an RSA-OAEP encryption key.
  fhir::Json sig = with(jwk_of(keys.rsa, "kc-sig"), "use", s("sig"));
  fhir::Json enc = with(with(jwk_of(keys.rsa, "kc-enc"), "use", s("enc")), "alg", s("RSA-OAEP"));
  fhir::Json oaep = with(jwk_of(keys.rsa, "no-use"), "alg", s("RSA-OAEP"));  // alg alone says so too
  oaep.erase("use");
  fhir::Json encrypt_ops = jwk_of(keys.ec, "ops-enc");
  fhir::Json ops = fhir::Json::array();
  ops.push_back(s("encrypt"));
  encrypt_ops.set("key_ops", std::move(ops));
  fhir::Json p384 = with(jwk_of(keys.ec, "ec-384"), "crv", s("P-384"));
  p384.erase("alg");
  fhir::Json ed25519 = fhir::Json::object();
  ed25519.set("kid", s("ed-1"));
  ed25519.set("kty", s("OKP"));
  ed25519.set("crv", s("Ed25519"));
  ed25519.set("x", s("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"));

  auto set = KeySet::parse(jwks_of({enc, sig, oaep, encrypt_ops, p384, ed25519}));
  REQUIRE_MESSAGE(set.ok(), set.issue().diagnostics);
  REQUIRE((*set)->keys().size() == 1);
  CHECK((*set)->find("kc-sig") != nullptr);
  CHECK((*set)->find("kc-enc") == nullptr);  // a token naming it is refused as an unknown kid
  const auto& skipped = (*set)->skipped();
  REQUIRE(skipped.size() == 5);
  CHECK(skipped[0].index == 0);
  CHECK(skipped[0].kid == "kc-enc");
  CHECK(skipped[0].reason.find("\"enc\"") != std::string::npos);
  CHECK(skipped[1].kid == "no-use");
  CHECK(skipped[1].reason.find("RSA-OAEP") != std::string::npos);
  CHECK(skipped[2].kid == "ops-enc");
  CHECK(skipped[2].reason.find("key_ops") != std::string::npos);
  CHECK(skipped[3].kid == "ec-384");
  CHECK(skipped[4].kid == "ed-1");
  CHECK(skipped[4].reason.find("OKP") != std::string::npos);

  // A skipped key does not hide a broken signing key beside it...
  fhir::Json weak = with(jwk_of(keys.rsa, "weak"), "n", s(b64(std::string(128, '\xC3'))));
  CHECK_FALSE(KeySet::parse(jwks_of({enc, weak})).ok());
  // ...and a set with nothing usable left is an error naming each key and why.
  auto none = KeySet::parse(jwks_of({enc, oaep}));
  REQUIRE_FALSE(none.ok());
  CHECK(none.issue().diagnostics.find("no key this gateway can verify") != std::string::npos);
  CHECK(none.issue().diagnostics.find("key 0 (kid \"kc-enc\")") != std::string::npos);
  CHECK(none.issue().diagnostics.find("key 1 (kid \"no-use\")") != std::string::npos);
}

TEST_CASE("KeySet: load_file reads a JWKS and refuses missing and oversized files") {
  const auto& keys = gw::test::shared_test_keys();
  auto dir = gw::test::temp_dir("jwks");
  {
    std::ofstream(dir / "ok.json") << keys.jwks_json;
    std::ofstream big(dir / "big.json");
    big << "{\"keys\":[],\"pad\":\"" << std::string(1024 * 1024, 'a') << "\"}";
  }
  auto ok = KeySet::load_file((dir / "ok.json").string());
  REQUIRE(ok.ok());
  CHECK((*ok)->keys().size() == 2);
  auto missing = KeySet::load_file((dir / "missing.json").string());
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.issue().diagnostics.find("cannot read") != std::string::npos);
  auto big = KeySet::load_file((dir / "big.json").string());
  REQUIRE_FALSE(big.ok());
  CHECK(big.issue().diagnostics.find("1 MiB") != std::string::npos);
}

// --- base64url ---

TEST_CASE("base64url: RFC 4648 vectors, round trips and strict decoding") {
  const std::vector<std::pair<std::string, std::string>> vectors = {
      {"", ""},           {"f", "Zg"},          {"fo", "Zm8"},          {"foo", "Zm9v"},
      {"foob", "Zm9vYg"}, {"fooba", "Zm9vYmE"}, {"foobar", "Zm9vYmFy"}, {"\xfb\xff", "-_8"}};
  for (const auto& vector : vectors) {
    const std::string& encoded = vector.second;
    CAPTURE(encoded);
    CHECK(gw::auth::base64url_encode(vector.first) == encoded);
    auto d = gw::auth::base64url_decode(encoded);
    REQUIRE(d.ok());
    CHECK(*d == vector.first);
  }
  std::string all;
  for (int i = 0; i < 256; ++i) all.push_back(static_cast<char>(i));
  for (std::size_t len = 0; len <= all.size(); len += 7) {
    auto d = gw::auth::base64url_decode(gw::auth::base64url_encode(all.substr(0, len)));
    REQUIRE(d.ok());
    CHECK(*d == all.substr(0, len));
  }
  for (std::string_view bad :
       {"Zg==", "Zg=", "Z", "Zm9vY", "Zh", "Zm9", "Zm+v", "Zm/v", "Zm v", "Zm9v\n", "Zm9v.", "Zm\x80v"}) {
    CAPTURE(bad);
    auto d = gw::auth::base64url_decode(bad);
    REQUIRE_FALSE(d.ok());
  }
  CHECK(gw::auth::base64url_decode("Zm9").ok() == false);  // "fo" is Zm8: trailing bits set in Zm9
  CHECK(gw::auth::base64url_decode("Zm8").ok());
}

// --- signatures ---

TEST_CASE("verify_signature: ES256 takes raw r||s only, with r and s in [1, n-1]") {
  const auto& keys = gw::test::shared_test_keys();
  const auto* ec = keys.keys->find(keys.ec_kid);
  REQUIRE(ec != nullptr);
  const std::string input = "aGVhZGVy.cGF5bG9hZA";
  auto sig = keys.ec.sign(input);
  REQUIRE(sig.ok());
  REQUIRE(sig->size() == 64);
  CHECK(gw::auth::verify_signature(*ec, input, *sig));
  CHECK_FALSE(gw::auth::verify_signature(*ec, "aGVhZGVy.cGF5bG9hZB", *sig));

  const std::string order = unb64("_____wAAAAD__________7zm-q2nF56E87nKwvxjJVE");  // P-256 group order n
  REQUIRE(order.size() == 32);
  std::string r_zero = std::string(32, '\0') + sig->substr(32);
  std::string s_zero = sig->substr(0, 32) + std::string(32, '\0');
  std::string s_is_n = sig->substr(0, 32) + order;
  std::string r_is_n = order + sig->substr(32);
  for (const std::string& bad :
       {r_zero, s_zero, s_is_n, r_is_n, std::string(64, '\0'), sig->substr(0, 63), *sig + "x", std::string()}) {
    CHECK_FALSE(gw::auth::verify_signature(*ec, input, bad));
  }
  // A Jwk whose algorithm field disagrees with its key is never used.
  gw::auth::Jwk lying = *ec;
  lying.alg = JwsAlgorithm::rs256;
  CHECK_FALSE(gw::auth::verify_signature(lying, input, *sig));
}

TEST_CASE("verify_signature: RS256 is PKCS#1 v1.5 over SHA-256 with a modulus-sized signature") {
  const auto& keys = gw::test::shared_test_keys();
  const auto* rsa = keys.keys->find(keys.rsa_kid);
  REQUIRE(rsa != nullptr);
  const std::string input = "aGVhZGVy.cGF5bG9hZA";
  auto sig = keys.rsa.sign(input);
  REQUIRE(sig.ok());
  CHECK(sig->size() == 256);
  CHECK(gw::auth::verify_signature(*rsa, input, *sig));
  CHECK_FALSE(gw::auth::verify_signature(*rsa, input + "x", *sig));
  CHECK_FALSE(gw::auth::verify_signature(*rsa, input, std::string(1, '\0') + *sig));
  CHECK_FALSE(gw::auth::verify_signature(*rsa, input, sig->substr(1)));
}

TEST_CASE("SigningKey: PEM keys sign tokens the validator accepts; unsuitable keys are refused") {
  const auto& keys = gw::test::shared_test_keys();
  EVP_PKEY* ec = EVP_EC_gen("P-256");
  EVP_PKEY* p384 = EVP_EC_gen("P-384");
  EVP_PKEY* rsa1024 = EVP_RSA_gen(1024);
  REQUIRE(ec != nullptr);
  REQUIRE(p384 != nullptr);
  REQUIRE(rsa1024 != nullptr);
  const std::string pkcs8 = private_pem(ec, false);
  const std::string sec1 = private_pem(ec, true);
  const std::string p384_pem = private_pem(p384, false);
  const std::string rsa1024_pem = private_pem(rsa1024, false);
  EVP_PKEY_free(ec);
  EVP_PKEY_free(p384);
  EVP_PKEY_free(rsa1024);
  CHECK(pkcs8.find("BEGIN PRIVATE KEY") != std::string::npos);
  CHECK(sec1.find("BEGIN EC PRIVATE KEY") != std::string::npos);

  for (const std::string& pem : {pkcs8, sec1}) {
    auto key = gw::auth::SigningKey::from_pem(pem);
    REQUIRE_MESSAGE(key.ok(), diagnostics_of(key));
    CHECK(key->algorithm() == JwsAlgorithm::es256);
    const std::string kid = key->default_kid();
    CHECK(kid.size() == 12);
    CHECK(kid.rfind("dev-", 0) == 0);
    CHECK(kid.find_first_not_of("0123456789abcdef", 4) == std::string::npos);
    auto set = KeySet::parse(key->jwks_json(kid));
    REQUIRE(set.ok());
    auto jwk = fhir::parse_json(key->public_jwk_json(kid));
    REQUIRE(jwk.ok());
    CHECK(jwk->string_at("use") == "sig");
    CHECK(jwk->string_at("alg") == "ES256");
    CHECK(jwk->string_at("kid") == kid);

    JwtValidator v(keys.config, *set);
    auto token = gw::auth::sign_jwt(*key, kid, gw::test::valid_claims(keys, kNow));
    REQUIRE(token.ok());
    auto r = v.validate(*token, kNow);
    CHECK_MESSAGE(r.ok(), diagnostics_of(r));
  }
  // Both encodings of one key give the same kid.
  CHECK(gw::auth::SigningKey::from_pem(pkcs8)->default_kid() == gw::auth::SigningKey::from_pem(sec1)->default_kid());

  auto p384_key = gw::auth::SigningKey::from_pem(p384_pem);
  REQUIRE_FALSE(p384_key.ok());
  CHECK(p384_key.issue().diagnostics.find("P-256") != std::string::npos);
  auto weak = gw::auth::SigningKey::from_pem(rsa1024_pem);
  REQUIRE_FALSE(weak.ok());
  CHECK(weak.issue().diagnostics.find("2048") != std::string::npos);
  auto garbage = gw::auth::SigningKey::from_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n");
  CHECK_FALSE(garbage.ok());
  auto pub = gw::auth::SigningKey::from_pem(keys.ec.public_key_pem());
  CHECK_FALSE(pub.ok());
  auto encrypted = gw::auth::SigningKey::from_pem(
      "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n"
      "-----END ENCRYPTED PRIVATE KEY-----\n");
  REQUIRE_FALSE(encrypted.ok());
  CHECK(encrypted.issue().diagnostics.find("encrypted") != std::string::npos);
  auto missing = gw::auth::SigningKey::load_pem_file((gw::test::temp_dir("jwtsign") / "none.pem").string());
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.issue().diagnostics.find("cannot read") != std::string::npos);

  // RS256 from a generated key: JWKS round trip and a validated token.
  auto set = KeySet::parse(keys.rsa.jwks_json("r1"));
  REQUIRE(set.ok());
  CHECK((*set)->find("r1")->alg == JwsAlgorithm::rs256);
  JwtValidator v(keys.config, *set);
  auto token = gw::auth::sign_jwt(keys.rsa, "r1", gw::test::valid_claims(keys, kNow));
  REQUIRE(token.ok());
  CHECK(v.validate(*token, kNow).ok());
}
