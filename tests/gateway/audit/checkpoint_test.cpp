// SPDX-License-Identifier: Apache-2.0
// Tests for signed checkpoints (gateway/audit/checkpoint.h): the exact note format, the
// strict parser, and Ed25519 / ECDSA P-256 signing and verification with keys generated here.
#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "gateway/audit/checkpoint.h"
#include "support/paths.h"

namespace {

using gw::audit::Checkpoint;
using gw::audit::CheckpointSigner;
using gw::audit::CheckpointVerifier;
namespace merkle = gw::audit::merkle;

constexpr std::int64_t kTime = 1795442709123;  // 2026-11-23T14:05:09.123Z
const std::string kEmDash = "\xE2\x80\x94";

struct PkeyFree {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;

PkeyPtr generate(const char* type) {
  if (std::string_view(type) == "EC") return PkeyPtr(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
  return PkeyPtr(EVP_PKEY_Q_keygen(nullptr, nullptr, type));
}

PkeyPtr generate_ec(const char* curve) { return PkeyPtr(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", curve)); }

std::string bio_text(BIO* bio) {
  char* data = nullptr;
  const long len = BIO_get_mem_data(bio, &data);
  return std::string(data, static_cast<std::size_t>(len));
}

std::string private_pem(EVP_PKEY* key) {
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new(BIO_s_mem()), &BIO_free);
  REQUIRE(PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr) == 1);
  return bio_text(bio.get());
}

std::string encrypted_pem(EVP_PKEY* key) {
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new(BIO_s_mem()), &BIO_free);
  char pass[] = "secret";
  REQUIRE(PEM_write_bio_PKCS8PrivateKey(bio.get(), key, EVP_aes_256_cbc(), pass, 6, nullptr, nullptr) == 1);
  return bio_text(bio.get());
}

std::string public_pem(EVP_PKEY* key) {
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new(BIO_s_mem()), &BIO_free);
  REQUIRE(PEM_write_bio_PUBKEY(bio.get(), key) == 1);
  return bio_text(bio.get());
}

std::string spki(EVP_PKEY* key) {
  unsigned char* der = nullptr;
  const int len = i2d_PUBKEY(key, &der);
  REQUIRE(len > 0);
  std::string out(reinterpret_cast<const char*>(der), static_cast<std::size_t>(len));
  OPENSSL_free(der);
  return out;
}

std::vector<std::uint8_t> sha256_prefix(const std::string& input) {
  std::array<unsigned char, 32> digest{};
  unsigned int dlen = 0;
  REQUIRE(EVP_Digest(input.data(), input.size(), digest.data(), &dlen, EVP_sha256(), nullptr) == 1);
  return {digest.begin(), digest.begin() + 4};
}

// The C2SP signed-note key id (c2sp.org/signed-note): Ed25519, SHA-256(name || 0x0A || 0x01 ||
// raw public key); ECDSA, SHA-256(DER SPKI), without the name.
std::vector<std::uint8_t> expected_key_id(EVP_PKEY* key, const std::string& name) {
  if (EVP_PKEY_is_a(key, "EC")) return sha256_prefix(spki(key));
  std::array<unsigned char, 32> raw{};
  std::size_t raw_len = raw.size();
  REQUIRE(EVP_PKEY_get_raw_public_key(key, raw.data(), &raw_len) == 1);
  return sha256_prefix(name + "\n\x01" + std::string(reinterpret_cast<const char*>(raw.data()), raw_len));
}

// The id notes carried before the C2SP form: SHA-256(name || "\n" || DER SPKI).
std::vector<std::uint8_t> legacy_key_id(EVP_PKEY* key, const std::string& name) {
  return sha256_prefix(name + "\n" + spki(key));
}

std::vector<unsigned char> base64_bytes(const std::string& text) {
  std::vector<unsigned char> out(text.size());
  const int n = EVP_DecodeBlock(out.data(), reinterpret_cast<const unsigned char*>(text.data()),
                                static_cast<int>(text.size()));
  REQUIRE(n >= 0);
  out.resize(static_cast<std::size_t>(n) - static_cast<std::size_t>(std::count(text.begin(), text.end(), '=')));
  return out;
}

struct KeyPair {
  PkeyPtr key;
  CheckpointSigner signer;
  CheckpointVerifier verifier;
};

KeyPair make_keys(const char* type, const std::string& name) {
  PkeyPtr key = generate(type);
  REQUIRE(key);
  auto signer = CheckpointSigner::from_pem(private_pem(key.get()), name);
  REQUIRE(signer.ok());
  auto verifier = CheckpointVerifier::from_pem(public_pem(key.get()), name);
  REQUIRE(verifier.ok());
  return KeyPair{std::move(key), std::move(signer).value(), std::move(verifier).value()};
}

bool same(const Checkpoint& a, const Checkpoint& b) {
  return a.origin == b.origin && a.size == b.size && a.root == b.root && a.time_ms == b.time_ms &&
         a.key_name == b.key_name && a.signature == b.signature;
}

Checkpoint sample() {
  Checkpoint c;
  c.origin = "fhir-gateway/audit/host1";
  c.size = 12345;
  c.root = merkle::leaf_hash("x");
  c.time_ms = kTime;
  c.key_name = "audit-key";
  c.signature = {1, 2, 3, 4, 5, 6, 7, 8, 9};
  return c;
}

// A well-formed note with one line replaced, for the parser's rejection table.
std::string note_with(int line, const std::string& replacement) {
  std::vector<std::string> lines = {"fhir-gateway/audit/host1", "12345", merkle::to_base64(merkle::leaf_hash("x")),
                                    "2026-11-23T14:05:09.123Z", "", kEmDash + " audit-key AQIDBAUGBwgJ"};
  lines[static_cast<std::size_t>(line)] = replacement;
  std::string out;
  for (const auto& l : lines) out.append(l).push_back('\n');
  return out;
}

}  // namespace

TEST_CASE("Checkpoint: body and note have the exact signed-note form") {
  const Checkpoint c = sample();
  CHECK(gw::audit::checkpoint_body(c) ==
        "fhir-gateway/audit/host1\n12345\nPH6byTDck/AfppmF7yQtn56GHzxTVaokzl70tLinDMs=\n2026-11-23T14:05:09.123Z\n");
  CHECK(gw::audit::serialise(c) ==
        "fhir-gateway/audit/host1\n12345\nPH6byTDck/AfppmF7yQtn56GHzxTVaokzl70tLinDMs=\n2026-11-23T14:05:09.123Z\n"
        "\n\xE2\x80\x94 audit-key AQIDBAUGBwgJ\n");
  auto parsed = gw::audit::parse_checkpoint(gw::audit::serialise(c));
  REQUIRE(parsed.ok());
  CHECK(same(*parsed, c));

  // Time edges: the epoch, a leap day, the last four-digit instant; each round-trips.
  for (const auto& [ms, text] : std::vector<std::pair<std::int64_t, std::string>>{
           {0, "1970-01-01T00:00:00.000Z"},
           {1709251199999, "2024-02-29T23:59:59.999Z"},
           {253402300799999, "9999-12-31T23:59:59.999Z"}}) {
    Checkpoint t = sample();
    t.time_ms = ms;
    const std::string body = gw::audit::checkpoint_body(t);
    CHECK(body.find("\n" + text + "\n") != std::string::npos);
    auto back = gw::audit::parse_checkpoint(gw::audit::serialise(t));
    REQUIRE(back.ok());
    CHECK(back->time_ms == ms);
  }
  Checkpoint zero = sample();
  zero.size = 0;
  auto z = gw::audit::parse_checkpoint(gw::audit::serialise(zero));
  REQUIRE(z.ok());
  CHECK(z->size == 0);
  Checkpoint max = sample();
  max.size = ~std::uint64_t{0};
  auto m = gw::audit::parse_checkpoint(gw::audit::serialise(max));
  REQUIRE(m.ok());
  CHECK(m->size == ~std::uint64_t{0});
}

TEST_CASE("Checkpoint: the parser rejects every malformed note") {
  REQUIRE(gw::audit::parse_checkpoint(note_with(1, "12345")).ok());  // the template itself is fine
  const std::vector<std::pair<int, std::string>> bad_lines = {
      {0, ""},                                   // empty origin
      {0, "tab\there"},                          // control character
      {0, "bad \xff utf8"},                      // not UTF-8
      {0, "\xc0\xaf overlong"},                  // overlong UTF-8
      {0, kEmDash + " looks like a signature"},  // origin that reads as a signature line
      {1, "012"},                                // leading zero
      {1, "-1"},
      {1, "+1"},
      {1, "1 "},
      {1, ""},
      {1, "18446744073709551616"},  // 2^64
      {1, "1e3"},
      {2, merkle::to_base64(merkle::leaf_hash("x")).substr(0, 43)},  // no padding
      {2, "ZG9uJ3QgY2FyZSAx"},                                      // 12 bytes
      {2, std::string(42, 'A') + "B="},                             // non-canonical
      {2, merkle::to_hex(merkle::leaf_hash("x"))},                  // hex is not base64
      {3, "2026-11-23T14:05:09Z"},                                  // no milliseconds
      {3, "2026-11-23T14:05:09.12Z"},
      {3, "2026-11-23T14:05:09.1234Z"},
      {3, "2026-11-23T14:05:09.123z"},
      {3, "2026-11-23t14:05:09.123Z"},
      {3, "2026-11-23 14:05:09.123Z"},
      {3, "2026-11-23T14:05:09.123+00:00"},
      {3, "2026-02-29T14:05:09.123Z"},  // not a leap year
      {3, "2026-13-01T14:05:09.123Z"},
      {3, "2026-00-01T14:05:09.123Z"},
      {3, "2026-11-00T14:05:09.123Z"},
      {3, "2026-11-23T24:00:00.000Z"},
      {3, "2026-11-23T14:60:09.123Z"},
      {3, "2026-11-23T14:05:60.123Z"},  // no leap seconds
      {3, "1969-12-31T23:59:59.999Z"},
      {3, "+2026-11-23T14:05:09.123Z"},
      {4, "not blank"},
      {5, "- audit-key AQIDBAUGBwgJ"},                     // hyphen, not an em dash
      {5, kEmDash + "audit-key AQIDBAUGBwgJ"},             // no space after the dash
      {5, kEmDash + " audit-key"},                         // no signature
      {5, kEmDash + " audit-key AQIDBAUGBwgJ extra"},      // trailing field
      {5, kEmDash + " audit-key AQIDBA=="},                // 4 bytes: key id only
      {5, kEmDash + " audit-key AQIDBAUGBwgJ="},           // bad padding
      {5, kEmDash + " audit-key AQIDBAUGBwg*"},            // outside the alphabet
      {5, kEmDash + "  AQIDBAUGBwgJ"},                     // empty key name
      {5, kEmDash + " key+name AQIDBAUGBwgJ"},             // '+' in the key name
  };
  for (const auto& bad : bad_lines) {
    const int line = bad.first;
    const std::string& text = bad.second;
    CAPTURE(line);
    CAPTURE(text);
    CHECK_FALSE(gw::audit::parse_checkpoint(note_with(line, text)).ok());
  }
  const std::string good = note_with(1, "12345");
  CHECK_FALSE(gw::audit::parse_checkpoint(good.substr(0, good.size() - 1)).ok());  // no final newline
  CHECK_FALSE(gw::audit::parse_checkpoint(good + kEmDash + " other AQIDBAUGBwgJ\n").ok());  // two signatures
  CHECK_FALSE(gw::audit::parse_checkpoint(good + "\n").ok());
  CHECK_FALSE(gw::audit::parse_checkpoint("extra line\n" + good).ok());  // five body lines
  CHECK_FALSE(gw::audit::parse_checkpoint(good.substr(good.find('\n') + 1)).ok());  // three body lines
  CHECK_FALSE(gw::audit::parse_checkpoint(good.substr(0, good.find("\n\n") + 2)).ok());  // no signature line
  std::string crlf;
  for (char ch : good) {
    if (ch == '\n') crlf.push_back('\r');
    crlf.push_back(ch);
  }
  CHECK_FALSE(gw::audit::parse_checkpoint(crlf).ok());
  CHECK_FALSE(gw::audit::parse_checkpoint("").ok());
  CHECK_FALSE(gw::audit::parse_checkpoint("\n\n").ok());
  CHECK_FALSE(gw::audit::parse_checkpoint(std::string(5000, 'a')).ok());
  CHECK_FALSE(gw::audit::parse_checkpoint(note_with(0, std::string(4100, 'o'))).ok());  // over 4 KiB
  auto issue = gw::audit::parse_checkpoint(note_with(1, "012"));
  REQUIRE_FALSE(issue.ok());
  CHECK(issue.issue().code == fhir::ErrorCode::invalid_value);
  CHECK(issue.issue().diagnostics.find("size") != std::string::npos);
}

TEST_CASE("Checkpoint: parse_checkpoints reads notes appended one after another") {
  std::vector<Checkpoint> notes;
  for (int i = 0; i < 3; ++i) {
    Checkpoint c = sample();
    c.size = static_cast<std::uint64_t>(100 + i);
    c.time_ms = kTime + i;
    notes.push_back(c);
  }
  std::string back_to_back;
  std::string with_blank_lines;
  for (const auto& c : notes) {
    back_to_back += gw::audit::serialise(c);
    with_blank_lines += gw::audit::serialise(c) + "\n";
  }
  for (const std::string* text : {&back_to_back, &with_blank_lines}) {
    auto parsed = gw::audit::parse_checkpoints(*text);
    REQUIRE(parsed.ok());
    REQUIRE(parsed->size() == 3);
    for (std::size_t i = 0; i < 3; ++i) CHECK(same((*parsed)[i], notes[i]));
  }
  auto empty = gw::audit::parse_checkpoints("");
  REQUIRE(empty.ok());
  CHECK(empty->empty());

  auto limited = gw::audit::parse_checkpoints(back_to_back, 2);
  CHECK_FALSE(limited.ok());
  CHECK(gw::audit::parse_checkpoints(back_to_back, 3).ok());

  // A bad second note is named.
  std::string broken = gw::audit::serialise(notes[0]) + note_with(1, "012") + gw::audit::serialise(notes[2]);
  auto bad = gw::audit::parse_checkpoints(broken);
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.issue().diagnostics.find("note 2") != std::string::npos);
  // A note with two signature lines cannot pass as two notes.
  std::string doubled = gw::audit::serialise(notes[0]);
  doubled += kEmDash + " other AQIDBAUGBwgJ\n";
  doubled += gw::audit::serialise(notes[1]);
  CHECK_FALSE(gw::audit::parse_checkpoints(doubled).ok());
  CHECK_FALSE(gw::audit::parse_checkpoints(back_to_back + "trailing\n").ok());
  CHECK_FALSE(gw::audit::parse_checkpoints(back_to_back.substr(0, back_to_back.size() - 10)).ok());
}

TEST_CASE("Checkpoint: Ed25519 and ECDSA P-256 sign, verify and reject every tampering") {
  for (const char* type : {"ED25519", "EC"}) {
    CAPTURE(type);
    KeyPair pair = make_keys(type, "audit-key");
    const merkle::Hash root = merkle::leaf_hash("root");
    const Checkpoint c = pair.signer.sign("fhir-gateway/audit/host1", 42, root, kTime);
    CHECK(c.key_name == "audit-key");
    CHECK(pair.signer.key_name() == "audit-key");
    REQUIRE(c.signature.size() > 4);
    CHECK(std::vector<std::uint8_t>(c.signature.begin(), c.signature.begin() + 4) == expected_key_id(pair.key.get(), "audit-key"));
    if (std::string_view(type) == "ED25519") {
      CHECK(c.signature.size() == 4 + 64);
      // Ed25519 is deterministic: the same body gives the same signature.
      CHECK(pair.signer.sign("fhir-gateway/audit/host1", 42, root, kTime).signature == c.signature);
    } else {
      CHECK(c.signature[4] == 0x30);  // DER SEQUENCE
    }
    REQUIRE(pair.verifier.verify(c));

    // Through the text form and back.
    auto parsed = gw::audit::parse_checkpoint(gw::audit::serialise(c));
    REQUIRE(parsed.ok());
    CHECK(same(*parsed, c));
    CHECK(pair.verifier.verify(*parsed));

    // Each body field changed.
    Checkpoint t = c;
    t.size = 43;
    CHECK_FALSE(pair.verifier.verify(t));
    t = c;
    t.root[31] ^= 1;
    CHECK_FALSE(pair.verifier.verify(t));
    t = c;
    t.time_ms += 1;
    CHECK_FALSE(pair.verifier.verify(t));
    t = c;
    t.origin = "fhir-gateway/audit/host2";
    CHECK_FALSE(pair.verifier.verify(t));
    t = c;
    t.origin += "\n";  // would make a different note
    CHECK_FALSE(pair.verifier.verify(t));
    // The signature: truncated, extended, a bit flipped anywhere, the key id changed, garbage.
    t = c;
    t.signature.pop_back();
    CHECK_FALSE(pair.verifier.verify(t));
    t = c;
    t.signature.push_back(0);
    CHECK_FALSE(pair.verifier.verify(t));
    int flips_accepted = 0;
    for (std::size_t bit = 0; bit < c.signature.size() * 8; ++bit) {
      t = c;
      t.signature[bit / 8] = static_cast<std::uint8_t>(t.signature[bit / 8] ^ (1u << (bit % 8)));
      flips_accepted += pair.verifier.verify(t) ? 1 : 0;
    }
    CHECK(flips_accepted == 0);
    t = c;
    t.signature.assign(c.signature.size(), 0xab);
    CHECK_FALSE(pair.verifier.verify(t));
    t = c;
    t.signature.assign(c.signature.begin(), c.signature.begin() + 4);
    CHECK_FALSE(pair.verifier.verify(t));
    t = c;
    t.signature.clear();
    CHECK_FALSE(pair.verifier.verify(t));
    // The key name in the note.
    t = c;
    t.key_name = "other-key";
    CHECK_FALSE(pair.verifier.verify(t));
    // Tampered text: a digit of the size changed in the serialised note.
    std::string text = gw::audit::serialise(c);
    text.replace(text.find("\n42\n"), 4, "\n24\n");
    auto tampered = gw::audit::parse_checkpoint(text);
    REQUIRE(tampered.ok());
    CHECK_FALSE(pair.verifier.verify(*tampered));

    // Wrong key (same name), and the right key under a different name.
    KeyPair other = make_keys(type, "audit-key");
    CHECK_FALSE(other.verifier.verify(c));
    auto renamed = CheckpointVerifier::from_pem(public_pem(pair.key.get()), "another-name");
    REQUIRE(renamed.ok());
    CHECK_FALSE(renamed->verify(c));
    // The right key under a different name, with the note's name changed to match. An Ed25519
    // key id binds the name, so this fails. A C2SP ECDSA key id is the key's alone: a verifier
    // configured with this key under that name accepts it (the signed text is the body).
    t = c;
    t.key_name = "another-name";
    CHECK(renamed->verify(t) == (std::string_view(type) == "EC"));

    // Notes signed before the C2SP key ids carry the legacy id: still verified, as long as it
    // is that key's (a legacy id for another name is refused).
    t = c;
    const std::vector<std::uint8_t> legacy = legacy_key_id(pair.key.get(), "audit-key");
    REQUIRE(legacy != expected_key_id(pair.key.get(), "audit-key"));
    std::copy(legacy.begin(), legacy.end(), t.signature.begin());
    CHECK(pair.verifier.verify(t));
    const std::vector<std::uint8_t> legacy_other = legacy_key_id(pair.key.get(), "other");
    std::copy(legacy_other.begin(), legacy_other.end(), t.signature.begin());
    CHECK_FALSE(pair.verifier.verify(t));

    // A private key PEM given to the verifier, and the signer's own public PEM.
    auto from_private = CheckpointVerifier::from_pem(private_pem(pair.key.get()), "audit-key");
    REQUIRE(from_private.ok());
    CHECK(from_private->verify(c));
    auto from_signer = CheckpointVerifier::from_pem(pair.signer.public_key_pem(), "audit-key");
    REQUIRE(from_signer.ok());
    CHECK(from_signer->verify(c));
    CHECK(pair.signer.public_key_pem() == public_pem(pair.key.get()));
  }
  // The two key types do not accept each other's signatures.
  KeyPair ed = make_keys("ED25519", "k");
  KeyPair ec = make_keys("EC", "k");
  const Checkpoint by_ed = ed.signer.sign("o", 1, merkle::empty_root(), kTime);
  const Checkpoint by_ec = ec.signer.sign("o", 1, merkle::empty_root(), kTime);
  CHECK(ed.verifier.verify(by_ed));
  CHECK(ec.verifier.verify(by_ec));
  CHECK_FALSE(ed.verifier.verify(by_ec));
  CHECK_FALSE(ec.verifier.verify(by_ed));
}

// Known answers from outside this project, so the key ids and verifier keys are the ones other
// signed-note tools compute, not only self-consistent:
// - Ed25519: the key pair of golang.org/x/mod/sumdb/note's tests and documentation (signer key
//   "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEK...", verifier key "PeterNeumann+c74f20a3+ARpc...");
// - ECDSA: the Pixel transparency log's verifier key in transparency-dev/formats' note tests
//   ("pixel6_transparency_log+91c16e30+AjBZ...": type 0x02, then the DER SubjectPublicKeyInfo).
TEST_CASE("Checkpoint: key ids and verifier keys are those of C2SP signed-note tools") {
  // The signer key's base64 is 0x01 (Ed25519) followed by the 32-byte seed.
  const std::vector<unsigned char> skey = base64_bytes("AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz");
  REQUIRE(skey.size() == 33);
  REQUIRE(skey[0] == 0x01);
  PkeyPtr peter(EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, nullptr, skey.data() + 1, 32));
  REQUIRE(peter);
  auto signer = CheckpointSigner::from_pem(private_pem(peter.get()), "PeterNeumann");
  REQUIRE(signer.ok());
  CHECK(signer->verifier_key() == "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW");
  const Checkpoint c = signer->sign("fhir-gateway/audit/host1", 7, merkle::leaf_hash("x"), kTime);
  CHECK(std::vector<std::uint8_t>(c.signature.begin(), c.signature.begin() + 4) ==
        std::vector<std::uint8_t>{0xc7, 0x4f, 0x20, 0xa3});
  auto verifier = CheckpointVerifier::from_pem(public_pem(peter.get()), "PeterNeumann");
  REQUIRE(verifier.ok());
  CHECK(verifier->verifier_key() == signer->verifier_key());
  CHECK(verifier->verify(c));

  const std::string pixel_material =
      "AjBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABN+4x0Jk1yTwvLFI9A4NDdGZcX0aiWVdWM5XJVy0M4VWD3AvyW5Q6Hs9A0mcDkpUoYgn+KKPNz"
      "FC0H3nN3q6JQ8=";
  const std::vector<unsigned char> typed = base64_bytes(pixel_material);
  REQUIRE(typed.size() > 1);
  REQUIRE(typed[0] == 0x02);
  const unsigned char* der = typed.data() + 1;
  PkeyPtr pixel(d2i_PUBKEY(nullptr, &der, static_cast<long>(typed.size() - 1)));
  REQUIRE(pixel);
  auto pixel_verifier = CheckpointVerifier::from_pem(public_pem(pixel.get()), "pixel6_transparency_log");
  REQUIRE(pixel_verifier.ok());
  CHECK(pixel_verifier->verifier_key() == "pixel6_transparency_log+91c16e30+" + pixel_material);
}

TEST_CASE("Checkpoint: sign() is safe to call from several threads on one signer") {
  KeyPair pair = make_keys("EC", "audit-key");
  std::atomic<int> good{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&pair, &good, t] {
      for (int i = 0; i < 25; ++i) {
        const std::uint64_t size = static_cast<std::uint64_t>(t * 100 + i);
        const Checkpoint c = pair.signer.sign("origin", size, merkle::leaf_hash(std::to_string(size)), kTime + i);
        if (pair.verifier.verify(c) && c.size == size) ++good;
      }
    });
  }
  for (auto& th : threads) th.join();
  CHECK(good.load() == 100);
}

TEST_CASE("Checkpoint: keys are loaded strictly") {
  PkeyPtr ed = generate("ED25519");
  REQUIRE(ed);
  const std::string pem = private_pem(ed.get());
  CHECK(CheckpointSigner::from_pem(pem, "name").ok());
  CHECK_FALSE(CheckpointSigner::from_pem(pem, "").ok());
  CHECK_FALSE(CheckpointSigner::from_pem(pem, "has space").ok());
  CHECK_FALSE(CheckpointSigner::from_pem(pem, "has+plus").ok());
  CHECK_FALSE(CheckpointVerifier::from_pem(public_pem(ed.get()), "has space").ok());
  CHECK_FALSE(CheckpointSigner::from_pem(public_pem(ed.get()), "name").ok());  // a public key cannot sign
  CHECK_FALSE(CheckpointSigner::from_pem("garbage", "name").ok());
  CHECK_FALSE(CheckpointVerifier::from_pem("garbage", "name").ok());
  CHECK_FALSE(CheckpointSigner::from_pem(encrypted_pem(ed.get()), "name").ok());
  CHECK_FALSE(CheckpointSigner::from_pem(std::string(70 * 1024, 'A'), "name").ok());
  // Unsupported key types: another curve, a key-agreement key.
  PkeyPtr p384 = generate_ec("P-384");
  REQUIRE(p384);
  CHECK_FALSE(CheckpointSigner::from_pem(private_pem(p384.get()), "name").ok());
  CHECK_FALSE(CheckpointVerifier::from_pem(public_pem(p384.get()), "name").ok());
  PkeyPtr x25519 = generate("X25519");
  REQUIRE(x25519);
  auto unsupported = CheckpointSigner::from_pem(private_pem(x25519.get()), "name");
  REQUIRE_FALSE(unsupported.ok());
  CHECK(unsupported.issue().diagnostics.find("Ed25519") != std::string::npos);

  // From files; errors name the file.
  const auto dir = gw::test::temp_dir("checkpoint-keys");
  const std::string key_file = (dir / "audit.key").string();
  const std::string pub_file = (dir / "audit.pub").string();
  std::ofstream(key_file, std::ios::binary) << pem;
  std::ofstream(pub_file, std::ios::binary) << public_pem(ed.get());
  auto signer = CheckpointSigner::from_pem_file(key_file, "name");
  REQUIRE(signer.ok());
  auto verifier = CheckpointVerifier::from_pem_file(pub_file, "name");
  REQUIRE(verifier.ok());
  CHECK(verifier->verify(signer->sign("o", 7, merkle::empty_root(), kTime)));
  const std::string missing = (dir / "missing.key").string();
  auto absent = CheckpointSigner::from_pem_file(missing, "name");
  REQUIRE_FALSE(absent.ok());
  CHECK(absent.issue().diagnostics.find(missing) != std::string::npos);
  auto wrong = CheckpointVerifier::from_pem_file(pub_file, "bad name");
  REQUIRE_FALSE(wrong.ok());
  CHECK(wrong.issue().diagnostics.find(pub_file) != std::string::npos);

  // Bad sign() arguments are programming errors.
  CHECK_THROWS_AS((void)signer->sign("", 1, merkle::empty_root(), kTime), std::invalid_argument);
  CHECK_THROWS_AS((void)signer->sign("two\nlines", 1, merkle::empty_root(), kTime), std::invalid_argument);
  CHECK_THROWS_AS((void)signer->sign("o", 1, merkle::empty_root(), -1), std::invalid_argument);
}
