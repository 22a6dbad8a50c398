// SPDX-License-Identifier: Apache-2.0
// mint-token: signs a development bearer token (ES256 or RS256, by the key type) with a local
// private key, or prints the key's public JWKS (--jwks) for the gateway to trust. For
// development and tests only; production tokens come from the organisation's identity provider.
// Bad flags or an unusable key: exit 2.
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <openssl/rand.h>

#include "fhir/json.h"
#include "fhir/structure_check.h"
#include "gateway/auth/jwt.h"
#include "gateway/auth/jwt_sign.h"
#include "tools/cli/parse.h"

namespace {

constexpr int kExitUsage = 2;
constexpr std::int64_t kMaxTtlSeconds = 86400;

int usage_error(const std::string& what) {
  std::fprintf(stderr, "mint-token: %s\nRun with --help for usage.\n", what.c_str());
  return kExitUsage;
}

bool is_alnum_text(const std::string& s, std::size_t max) {
  if (s.empty() || s.size() > max) return false;
  for (char c : s)
    if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))) return false;
  return true;
}

bool has_control_characters(const std::string& s) {
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7F) return true;
  }
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  const gw::auth::JwtConfig defaults;
  std::string key_path;
  std::string sub;
  std::string role;
  std::string org;
  std::string scope;
  std::string purpose;
  std::string patient;
  std::string iss = "https://localhost:8443/dev-idp";
  std::string aud = "https://localhost:8443";
  std::string kid;
  std::string client_id;
  std::string jti;
  std::string fhir_user;
  std::int64_t ttl = 3600;
  bool jwks = false;

  CLI::App app{
      "mint-token: sign a development bearer token for fhir-gateway with a local key\n"
      "(EC P-256 -> ES256, RSA >= 2048 bits -> RS256). Prints the token alone on stdout.\n"
      "With --jwks, prints the key's public JWKS instead, for the gateway's trusted keys.\n"
      "Development and tests only."};
  app.add_option("--key", key_path, "PEM private key (PKCS#8, SEC 1 or PKCS#1), e.g. certs/token-key.pem")->required();
  app.add_option("--sub", sub, "subject: the user's identifier (required unless --jwks)");
  app.add_option("--role", role, "role claim '" + defaults.role_claim + "', e.g. an NHS role id");
  app.add_option("--org", org, "organisation claim '" + defaults.organisation_claim + "': ODS code, e.g. RX809");
  app.add_option("--scope", scope, "SMART scopes, space-separated, e.g. 'user/Patient.rs user/Observation.rs'");
  app.add_option("--purpose", purpose, "purpose-of-use claim '" + defaults.purpose_claim + "'");
  app.add_option("--patient", patient,
                 "patient claim '" + defaults.patient_claim +
                     "': the launch-context Patient id (of the gateway) that patient/ scopes are bound to");
  app.add_option("--ttl", ttl, "lifetime in seconds (1..86400)")->capture_default_str();
  app.add_option("--iss", iss, "issuer")->capture_default_str();
  app.add_option("--aud", aud, "audience")->capture_default_str();
  app.add_option("--kid", kid, "key id (default: dev- and 8 hex digits of the public key's SHA-256)");
  app.add_option("--client-id", client_id, "client_id claim");
  app.add_option("--fhir-user", fhir_user, "fhirUser claim, e.g. Practitioner/123");
  app.add_option("--jti", jti, "token id (default: 128 random bits, hex)");
  app.add_flag("--jwks", jwks, "print the public JWKS for --key (same kid) instead of a token");

  try {
    gw::tools::parse(app, argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    return usage_error(e.what());
  }

  auto key = gw::auth::SigningKey::load_pem_file(key_path);
  if (!key) return usage_error(key.issue().diagnostics);
  if (kid.empty()) kid = key->default_kid();
  for (char c : kid)
    if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
          c == '-'))
      return usage_error("--kid must use only A-Z a-z 0-9 . _ -");
  if (kid.size() > 128) return usage_error("--kid must be at most 128 characters");

  if (jwks) {
    std::printf("%s\n", key->jwks_json(kid).c_str());
    return 0;
  }

  if (sub.empty()) return usage_error("--sub is required");
  if (ttl < 1 || ttl > kMaxTtlSeconds) return usage_error("--ttl must be between 1 and 86400 seconds");
  if (jti.size() > 256) return usage_error("--jti must be at most 256 characters");
  if (!org.empty() && !is_alnum_text(org, 10))
    return usage_error("--org must be an ODS code: 1 to 10 letters and digits");
  // Checked as the gateway checks the claim: a token it would refuse is of no use.
  if (!patient.empty() && !fhir::is_valid_id(patient))
    return usage_error("--patient must be a Patient id: 1 to 64 letters, digits, '-' or '.'");
  for (const std::string* v :
       {&sub, &role, &org, &scope, &purpose, &patient, &iss, &aud, &client_id, &jti, &fhir_user})
    if (has_control_characters(*v)) return usage_error("values must not contain control characters");
  if (jti.empty()) {
    unsigned char random[16];
    if (RAND_bytes(random, sizeof random) != 1) return usage_error("no random bytes for --jti");
    jti = gw::auth::hex_encode(std::string_view(reinterpret_cast<const char*>(random), sizeof random));
  }

  const std::int64_t now =
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
  fhir::Json claims = fhir::Json::object();
  auto set_if = [&claims](const std::string& name, const std::string& value) {
    if (!value.empty()) claims.set(name, fhir::Json::string(value));
  };
  set_if("iss", iss);
  set_if("sub", sub);
  set_if("aud", aud);
  claims.set("iat", fhir::Json::integer(now));
  claims.set("nbf", fhir::Json::integer(now));
  claims.set("exp", fhir::Json::integer(now + ttl));
  set_if("jti", jti);
  set_if("client_id", client_id);
  set_if("scope", scope);
  set_if("fhirUser", fhir_user);
  set_if(defaults.role_claim, role);
  set_if(defaults.organisation_claim, org);
  set_if(defaults.purpose_claim, purpose);
  set_if(defaults.patient_claim, patient);

  auto token = gw::auth::sign_jwt(*key, kid, claims);
  if (!token) return usage_error(token.issue().diagnostics);
  std::printf("%s\n", token->c_str());
  return 0;
}
