// SPDX-License-Identifier: Apache-2.0
// Signed checkpoints of the audit log's Merkle tree (see checkpoint.h): the signed-note text
// form (C2SP signed-note / tlog-checkpoint), a strict parser, and Ed25519 / ECDSA P-256
// signing and verification over OpenSSL 3 EVP.
#include "gateway/audit/checkpoint.h"
#include "gateway/crypto/openssl.h"

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <optional>
#include <span>
#include <stdexcept>

#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

namespace gw::audit {

namespace {

// ---------------------------------------------------------------------------------------------
// Limits and constants.

constexpr std::size_t kMaxNoteBytes = 4096;
constexpr std::size_t kMaxPemBytes = 64 * 1024;
constexpr std::size_t kMaxOriginBytes = 1024;
constexpr std::size_t kMaxKeyNameBytes = 256;
constexpr std::size_t kKeyIdBytes = 4;
constexpr std::size_t kEd25519SignatureBytes = 64;
constexpr std::size_t kMaxEcdsaSignatureBytes = 72;  // DER SEQUENCE of two 33-byte INTEGERs
constexpr std::int64_t kMsPerDay = 86'400'000;
// 9999-12-31T23:59:59.999Z, the last instant a four-digit RFC 3339 year can write.
constexpr std::int64_t kMaxTimeMs = 253'402'300'799'999;
// The signature line starts with U+2014 EM DASH and a space (C2SP signed-note).
constexpr std::string_view kSignaturePrefix = "\xE2\x80\x94 ";

// ---------------------------------------------------------------------------------------------
// OpenSSL ownership.

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

fhir::Issue invalid(std::string why) { return fhir::Issue::make(fhir::ErrorCode::invalid_value, std::move(why)); }

// ---------------------------------------------------------------------------------------------
// Base64 of variable length (RFC 4648 section 4, with padding), strict on decode.

constexpr std::string_view kBase64Alphabet =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

std::string base64_encode(std::span<const std::uint8_t> in) {
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  std::size_t i = 0;
  for (; i + 3 <= in.size(); i += 3) {
    const std::uint32_t v = (std::uint32_t{in[i]} << 16) | (std::uint32_t{in[i + 1]} << 8) | in[i + 2];
    for (int shift = 18; shift >= 0; shift -= 6) out.push_back(kBase64Alphabet[(v >> shift) & 63]);
  }
  const std::size_t rest = in.size() - i;
  if (rest > 0) {
    std::uint32_t v = std::uint32_t{in[i]} << 16;
    if (rest == 2) v |= std::uint32_t{in[i + 1]} << 8;
    out.push_back(kBase64Alphabet[(v >> 18) & 63]);
    out.push_back(kBase64Alphabet[(v >> 12) & 63]);
    out.push_back(rest == 2 ? kBase64Alphabet[(v >> 6) & 63] : '=');
    out.push_back('=');
  }
  return out;
}

// Rejects anything but the one canonical padded encoding: wrong length, characters outside
// the alphabet, padding other than at the end, non-zero unused bits.
std::optional<std::vector<std::uint8_t>> base64_decode(std::string_view text) {
  if (text.empty() || text.size() % 4 != 0) return std::nullopt;
  std::size_t pad = 0;
  if (text.back() == '=') pad = text[text.size() - 2] == '=' ? 2 : 1;
  std::vector<std::uint8_t> out;
  out.reserve(text.size() / 4 * 3);
  std::uint32_t acc = 0;
  const std::size_t data_chars = text.size() - pad;
  for (std::size_t i = 0; i < data_chars; ++i) {
    const auto d = kBase64Alphabet.find(text[i]);
    if (d == std::string_view::npos) return std::nullopt;
    acc = (acc << 6) | static_cast<std::uint32_t>(d);
    if (i % 4 == 3) {
      out.push_back(static_cast<std::uint8_t>(acc >> 16));
      out.push_back(static_cast<std::uint8_t>(acc >> 8));
      out.push_back(static_cast<std::uint8_t>(acc));
      acc = 0;
    }
  }
  if (pad == 2) {  // 2 characters: 12 bits, 1 byte, 4 unused bits
    if ((acc & 0xf) != 0) return std::nullopt;
    out.push_back(static_cast<std::uint8_t>(acc >> 4));
  } else if (pad == 1) {  // 3 characters: 18 bits, 2 bytes, 2 unused bits
    if ((acc & 0x3) != 0) return std::nullopt;
    out.push_back(static_cast<std::uint8_t>(acc >> 10));
    out.push_back(static_cast<std::uint8_t>(acc >> 2));
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Field rules.

// Well-formed UTF-8 (RFC 3629): no overlong forms, no surrogates, nothing above U+10FFFF.
bool is_utf8(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    std::size_t len = 0;
    std::uint32_t cp = 0;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xe0) == 0xc0) {
      len = 2;
      cp = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
      len = 3;
      cp = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
      len = 4;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (i + len > s.size()) return false;
    for (std::size_t j = 1; j < len; ++j) {
      const auto cc = static_cast<unsigned char>(s[i + j]);
      if ((cc & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3f);
    }
    static constexpr std::uint32_t kMinForLength[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < kMinForLength[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
    i += len;
  }
  return true;
}

bool has_control_bytes(std::string_view s) {
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (c < 0x20 || c == 0x7f) return true;
  }
  return false;
}

// The origin is one line of UTF-8 text. It may not begin like a signature line, so a note
// with a second signature cannot be read as the start of the next note.
std::optional<std::string> origin_problem(std::string_view origin) {
  if (origin.empty()) return "the origin line is empty";
  if (origin.size() > kMaxOriginBytes) return "the origin is longer than 1024 bytes";
  if (has_control_bytes(origin) || !is_utf8(origin)) return "the origin is not one line of UTF-8 text";
  if (origin.starts_with(kSignaturePrefix)) return "the origin line looks like a signature line";
  return std::nullopt;
}

// C2SP signed-note: key names are non-empty UTF-8 without spaces or '+'.
std::optional<std::string> key_name_problem(std::string_view name) {
  if (name.empty()) return "the key name is empty";
  if (name.size() > kMaxKeyNameBytes) return "the key name is longer than 256 bytes";
  for (char ch : name)
    if (ch == ' ' || ch == '+') return "the key name contains a space or '+'";
  if (has_control_bytes(name) || !is_utf8(name)) return "the key name is not UTF-8 text without spaces";
  return std::nullopt;
}

bool time_in_range(std::int64_t ms) { return ms >= 0 && ms <= kMaxTimeMs; }

// RFC 3339 UTC with exactly three fractional digits, e.g. 2026-11-23T14:05:09.123Z.
std::string format_time(std::int64_t ms) {
  using namespace std::chrono;
  const std::int64_t day = ms >= 0 ? ms / kMsPerDay : -((-ms + kMsPerDay - 1) / kMsPerDay);
  const std::int64_t in_day = ms - day * kMsPerDay;
  const year_month_day ymd{sys_days{days{day}}};
  const std::int64_t secs = in_day / 1000;
  std::array<char, 48> buf{};
  std::snprintf(buf.data(), buf.size(), "%04d-%02u-%02uT%02d:%02d:%02d.%03dZ", static_cast<int>(ymd.year()),
                static_cast<unsigned>(ymd.month()), static_cast<unsigned>(ymd.day()),
                static_cast<int>(secs / 3600), static_cast<int>(secs / 60 % 60), static_cast<int>(secs % 60),
                static_cast<int>(in_day % 1000));
  return buf.data();
}

std::optional<int> digits(std::string_view s) {
  int v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + (c - '0');
  }
  return v;
}

std::optional<std::int64_t> parse_time(std::string_view s) {
  using namespace std::chrono;
  // YYYY-MM-DDTHH:MM:SS.mmmZ, fixed width.
  if (s.size() != 24 || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':' ||
      s[19] != '.' || s[23] != 'Z')
    return std::nullopt;
  const auto y = digits(s.substr(0, 4));
  const auto mo = digits(s.substr(5, 2));
  const auto d = digits(s.substr(8, 2));
  const auto h = digits(s.substr(11, 2));
  const auto mi = digits(s.substr(14, 2));
  const auto sec = digits(s.substr(17, 2));
  const auto frac = digits(s.substr(20, 3));
  if (!y || !mo || !d || !h || !mi || !sec || !frac) return std::nullopt;
  if (*y < 1970 || *h > 23 || *mi > 59 || *sec > 59) return std::nullopt;  // no leap seconds
  const year_month_day ymd{year{*y}, month{static_cast<unsigned>(*mo)}, day{static_cast<unsigned>(*d)}};
  if (!ymd.ok()) return std::nullopt;
  const std::int64_t days_since_epoch = sys_days{ymd}.time_since_epoch().count();
  return days_since_epoch * kMsPerDay + ((std::int64_t{*h} * 60 + *mi) * 60 + *sec) * 1000 + *frac;
}

// Decimal without sign or leading zeros ("0" itself is allowed), within uint64.
std::optional<std::uint64_t> parse_size(std::string_view s) {
  if (s.empty() || s.size() > 20 || (s.size() > 1 && s[0] == '0')) return std::nullopt;
  std::uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    const std::uint64_t digit = static_cast<std::uint64_t>(c - '0');
    if (v > (UINT64_MAX - digit) / 10) return std::nullopt;
    v = v * 10 + digit;
  }
  return v;
}

// ---------------------------------------------------------------------------------------------
// Keys.

enum class KeyKind { ed25519, ecdsa_p256 };

using KeyId = std::array<std::uint8_t, kKeyIdBytes>;

struct KeyMaterial {
  PkeyPtr pkey;
  KeyKind kind = KeyKind::ed25519;
  KeyId id{};         // the C2SP key id, put on every new signature
  KeyId legacy_id{};  // the id notes carried before 2026-12-07, still accepted on verification
  std::string verifier_key;  // "<name>+<hex id>+<base64(type || public key)>"
};

fhir::Result<KeyKind> classify(EVP_PKEY* pkey) {
  if (EVP_PKEY_is_a(pkey, "ED25519")) return KeyKind::ed25519;
  if (EVP_PKEY_is_a(pkey, "EC")) {
    std::array<char, 64> group{};
    std::size_t len = 0;
    if (EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, group.data(), group.size(), &len) == 1 &&
        std::string_view(group.data(), len) == "prime256v1")
      return KeyKind::ecdsa_p256;
    return invalid("EC checkpoint keys must use curve P-256 (prime256v1)");
  }
  return invalid("unsupported checkpoint key type; use an Ed25519 or ECDSA P-256 key");
}

std::string spki_der(EVP_PKEY* pkey) {
  unsigned char* der = nullptr;
  const int len = i2d_PUBKEY(pkey, &der);
  if (len <= 0) return {};
  std::string out(reinterpret_cast<const char*>(der), static_cast<std::size_t>(len));
  OPENSSL_free(der);
  return out;
}

std::optional<KeyId> sha256_prefix(std::string_view input) {
  std::array<unsigned char, EVP_MAX_MD_SIZE> digest{};
  unsigned int len = 0;
  if (EVP_Digest(input.data(), input.size(), digest.data(), &len, EVP_sha256(), nullptr) != 1 || len != 32)
    return std::nullopt;
  KeyId id{};
  std::copy_n(digest.begin(), kKeyIdBytes, id.begin());
  return id;
}

// Signature type bytes of c2sp.org/signed-note ("Signature types").
constexpr std::uint8_t kSignatureTypeEd25519 = 0x01;
constexpr std::uint8_t kSignatureTypeEcdsa = 0x02;

// Key ids and the verifier key as c2sp.org/signed-note defines them, so that other signed-note
// verifiers (Go's golang.org/x/mod/sumdb/note, transparency-dev's note package, witnesses)
// accept the checkpoints given the verifier key string:
//   Ed25519 (type 0x01): SHA-256(key name || 0x0A || 0x01 || 32-byte public key)[:4];
//   ECDSA (type 0x02, as transparency-dev/witness and Sigstore Rekor sign):
//     SHA-256(DER SubjectPublicKeyInfo)[:4], the key name not included.
// The verifier key is "<key name>+<id as 8 hex digits>+<base64(type byte || public key)>", the
// public key being the 32 raw bytes for Ed25519 and the DER SubjectPublicKeyInfo for ECDSA.
// Notes signed before this form was adopted carry SHA-256(key name || 0x0A || DER SPKI)[:4]:
// that legacy id is still accepted on verification so existing logs keep verifying.
fhir::Result<KeyMaterial> key_material(PkeyPtr pkey, const std::string& key_name) {
  auto kind = classify(pkey.get());
  if (!kind) return std::move(kind).issue();
  const std::string der = spki_der(pkey.get());
  if (der.empty()) return invalid("cannot encode the public key");
  std::string typed_key;  // type byte || public key, as the verifier key carries it
  if (*kind == KeyKind::ed25519) {
    std::array<std::uint8_t, 32> raw{};
    std::size_t raw_len = raw.size();
    if (EVP_PKEY_get_raw_public_key(pkey.get(), raw.data(), &raw_len) != 1 || raw_len != raw.size())
      return invalid("cannot read the Ed25519 public key");
    typed_key.push_back(static_cast<char>(kSignatureTypeEd25519));
    typed_key.append(reinterpret_cast<const char*>(raw.data()), raw.size());
  } else {
    typed_key.push_back(static_cast<char>(kSignatureTypeEcdsa));
    typed_key.append(der);
  }
  const std::optional<KeyId> id =
      *kind == KeyKind::ed25519 ? sha256_prefix(key_name + '\n' + typed_key) : sha256_prefix(der);
  const std::optional<KeyId> legacy = sha256_prefix(key_name + '\n' + der);
  if (!id || !legacy) return invalid("cannot compute the key id");
  KeyMaterial km;
  km.pkey = std::move(pkey);
  km.kind = *kind;
  km.id = *id;
  km.legacy_id = *legacy;
  std::array<char, 2 * kKeyIdBytes + 1> hex{};
  std::snprintf(hex.data(), hex.size(), "%02x%02x%02x%02x", id->at(0), id->at(1), id->at(2), id->at(3));
  km.verifier_key = key_name + '+' + hex.data() + '+' +
                    base64_encode(std::span(reinterpret_cast<const std::uint8_t*>(typed_key.data()), typed_key.size()));
  return km;
}

fhir::Status check_pem(std::string_view pem) {
  if (pem.size() > kMaxPemBytes) return invalid("the PEM key is larger than 64 KiB");
  if (pem.find("ENCRYPTED") != std::string_view::npos)
    return invalid("encrypted PEM keys are not supported; store the checkpoint key unencrypted with tight file permissions");
  return fhir::Ok{};
}

BioPtr pem_bio(std::string_view pem) { return BioPtr(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()))); }

fhir::Result<std::string> read_pem_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return invalid("cannot read the key file " + path);
  std::string text;
  std::array<char, 4096> buf{};
  while (in && text.size() <= kMaxPemBytes) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    text.append(buf.data(), static_cast<std::size_t>(in.gcount()));
  }
  if (in.bad()) return invalid("cannot read the key file " + path);
  return text;
}

template <class T>
fhir::Result<T> name_file(fhir::Result<T> r, const std::string& path) {
  if (r) return r;
  fhir::Issue issue = std::move(r).issue();
  std::string diagnostics = path;
  diagnostics.append(": ").append(issue.diagnostics);
  issue.diagnostics = std::move(diagnostics);
  return issue;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Text form.

std::string checkpoint_body(const Checkpoint& c) {
  std::string body;
  body.reserve(c.origin.size() + 96);
  body.append(c.origin).push_back('\n');
  body.append(std::to_string(c.size)).push_back('\n');
  body.append(merkle::to_base64(c.root)).push_back('\n');
  body.append(format_time(c.time_ms)).push_back('\n');
  return body;
}

std::string serialise(const Checkpoint& c) {
  std::string note = checkpoint_body(c);
  note.push_back('\n');
  note.append(kSignaturePrefix).append(c.key_name).push_back(' ');
  note.append(base64_encode(c.signature)).push_back('\n');
  return note;
}

fhir::Result<Checkpoint> parse_checkpoint(std::string_view text) {
  if (text.size() > kMaxNoteBytes) return invalid("checkpoint note is larger than 4 KiB");
  if (text.empty() || text.back() != '\n') return invalid("checkpoint note must end with a newline");
  const std::size_t blank = text.find("\n\n");
  if (blank == std::string_view::npos) return invalid("checkpoint note has no blank line before its signature");

  // Body: exactly origin, size, root, time.
  std::array<std::string_view, 4> lines;
  std::string_view body = text.substr(0, blank + 1);
  for (std::size_t i = 0; i < lines.size(); ++i) {
    const std::size_t nl = body.find('\n');
    if (nl == std::string_view::npos) return invalid("checkpoint body must have four lines: origin, size, root, time");
    lines[i] = body.substr(0, nl);
    body.remove_prefix(nl + 1);
  }
  if (!body.empty()) return invalid("checkpoint body must have four lines: origin, size, root, time");

  Checkpoint c;
  if (auto problem = origin_problem(lines[0])) return invalid("checkpoint note: " + *problem);
  c.origin = std::string(lines[0]);
  const auto size = parse_size(lines[1]);
  if (!size) return invalid("checkpoint tree size must be a decimal number without leading zeros");
  c.size = *size;
  const auto root = merkle::from_base64(lines[2]);
  if (!root) return invalid("checkpoint root must be the base64 encoding of 32 bytes");
  c.root = *root;
  const auto time = parse_time(lines[3]);
  if (!time) return invalid("checkpoint time must be RFC 3339 UTC with milliseconds, e.g. 2026-11-23T14:05:09.123Z");
  c.time_ms = *time;

  // Exactly one signature line: "— <key name> <base64(key id || signature)>".
  std::string_view sig = text.substr(blank + 2);
  if (sig.empty() || sig.find('\n') != sig.size() - 1) return invalid("checkpoint note must have exactly one signature line");
  sig.remove_suffix(1);
  if (!sig.starts_with(kSignaturePrefix)) return invalid("checkpoint signature line must start with an em dash and a space");
  sig.remove_prefix(kSignaturePrefix.size());
  const std::size_t space = sig.find(' ');
  if (space == std::string_view::npos) return invalid("checkpoint signature line must hold a key name and a signature");
  const std::string_view name = sig.substr(0, space);
  if (auto problem = key_name_problem(name)) return invalid("checkpoint signature: " + *problem);
  c.key_name = std::string(name);
  auto decoded = base64_decode(sig.substr(space + 1));
  if (!decoded) return invalid("checkpoint signature is not valid base64");
  if (decoded->size() <= kKeyIdBytes) return invalid("checkpoint signature is too short");
  c.signature = std::move(*decoded);
  return c;
}

namespace {

// parse_checkpoints() and parse_checkpoint_file(): with `torn_tail_allowed`, an incomplete last
// note no longer than a note may be is left out and measured instead of failing.
fhir::Result<CheckpointFile> parse_notes(std::string_view text, std::size_t max_notes, bool torn_tail_allowed) {
  CheckpointFile file;
  std::vector<Checkpoint>& out = file.notes;
  std::size_t pos = 0;
  while (pos < text.size()) {
    if (text[pos] == '\n') {  // blank lines between notes
      ++pos;
      continue;
    }
    const std::string number = std::to_string(out.size() + 1);
    if (out.size() == max_notes) {
      std::string why = "checkpoint file holds more than ";
      why.append(std::to_string(max_notes)).append(" notes");
      return invalid(std::move(why));
    }
    // A note ends with the line after its first blank line.
    const std::size_t blank = text.find("\n\n", pos);
    const std::size_t end = blank == std::string_view::npos ? blank : text.find('\n', blank + 2);
    if (end == std::string_view::npos) {
      // Nothing complete follows it, so it can only be the end of the file.
      if (torn_tail_allowed && text.size() - pos <= kMaxNoteBytes) {
        file.complete_bytes = pos;
        file.torn_bytes = text.size() - pos;
        return file;
      }
      return invalid("checkpoint note " + number + " is incomplete");
    }
    auto note = parse_checkpoint(text.substr(pos, end + 1 - pos));
    if (!note) {
      fhir::Issue issue = std::move(note).issue();
      std::string diagnostics = "checkpoint note ";
      diagnostics.append(number).append(": ").append(issue.diagnostics);
      issue.diagnostics = std::move(diagnostics);
      return issue;
    }
    out.push_back(std::move(*note));
    pos = end + 1;
  }
  file.complete_bytes = text.size();
  return file;
}

}  // namespace

fhir::Result<std::vector<Checkpoint>> parse_checkpoints(std::string_view text, std::size_t max_notes) {
  auto file = parse_notes(text, max_notes, false);
  if (!file) return std::move(file).issue();
  return std::move(file->notes);
}

fhir::Result<CheckpointFile> parse_checkpoint_file(std::string_view text, std::size_t max_notes) {
  return parse_notes(text, max_notes, true);
}

// ---------------------------------------------------------------------------------------------
// Signing.

struct CheckpointSigner::Impl {
  KeyMaterial key;
};

CheckpointSigner::CheckpointSigner(std::unique_ptr<Impl> impl, std::string key_name)
    : impl_(std::move(impl)), key_name_(std::move(key_name)) {}
CheckpointSigner::~CheckpointSigner() = default;
CheckpointSigner::CheckpointSigner(CheckpointSigner&&) noexcept = default;
CheckpointSigner& CheckpointSigner::operator=(CheckpointSigner&&) noexcept = default;

fhir::Result<CheckpointSigner> CheckpointSigner::from_pem(std::string_view pem, std::string key_name) {
  ErrorQueueGuard clear_errors;
  if (auto problem = key_name_problem(key_name)) return invalid("checkpoint key: " + *problem);
  if (auto ok = check_pem(pem); !ok) return std::move(ok).issue();
  BioPtr bio = pem_bio(pem);
  if (!bio) return invalid("out of memory reading the PEM key");
  PkeyPtr pkey(PEM_read_bio_PrivateKey(bio.get(), nullptr, no_passphrase, nullptr));
  if (!pkey) return invalid("not a PEM private key (expected PKCS#8 or SEC 1)");
  auto km = key_material(std::move(pkey), key_name);
  if (!km) return std::move(km).issue();
  auto impl = std::make_unique<Impl>();
  impl->key = std::move(*km);
  return CheckpointSigner(std::move(impl), std::move(key_name));
}

fhir::Result<CheckpointSigner> CheckpointSigner::from_pem_file(const std::string& path, std::string key_name) {
  auto text = read_pem_file(path);
  if (!text) return std::move(text).issue();
  return name_file(from_pem(*text, std::move(key_name)), path);
}

Checkpoint CheckpointSigner::sign(std::string origin, std::uint64_t size, const merkle::Hash& root,
                                  std::int64_t time_ms) const {
  // Bad arguments here come from configuration or a broken clock, not from a request.
  if (auto problem = origin_problem(origin)) throw std::invalid_argument("checkpoint: " + *problem);
  if (!time_in_range(time_ms)) throw std::invalid_argument("checkpoint: time outside 1970..9999");
  ErrorQueueGuard clear_errors;
  Checkpoint c;
  c.origin = std::move(origin);
  c.size = size;
  c.root = root;
  c.time_ms = time_ms;
  c.key_name = key_name_;
  const std::string body = checkpoint_body(c);

  // A fresh context per call keeps sign() safe to call from many threads on one key.
  MdCtxPtr ctx(EVP_MD_CTX_new());
  // Ed25519 signs the message itself (no digest); ECDSA signs SHA-256 of it, DER-encoded.
  const EVP_MD* md = impl_->key.kind == KeyKind::ed25519 ? nullptr : EVP_sha256();
  std::size_t len = 0;
  if (!ctx || EVP_DigestSignInit(ctx.get(), nullptr, md, nullptr, impl_->key.pkey.get()) != 1 ||
      EVP_DigestSign(ctx.get(), nullptr, &len, bytes(body), body.size()) != 1)
    throw std::runtime_error("checkpoint signing failed");
  std::vector<std::uint8_t> sig(len);
  if (EVP_DigestSign(ctx.get(), sig.data(), &len, bytes(body), body.size()) != 1)
    throw std::runtime_error("checkpoint signing failed");
  sig.resize(len);
  c.signature.assign(impl_->key.id.begin(), impl_->key.id.end());
  c.signature.insert(c.signature.end(), sig.begin(), sig.end());
  return c;
}

const std::string& CheckpointSigner::verifier_key() const { return impl_->key.verifier_key; }

std::string CheckpointSigner::public_key_pem() const {
  ErrorQueueGuard clear_errors;
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_PUBKEY(bio.get(), impl_->key.pkey.get()) != 1) return {};
  char* data = nullptr;
  const long len = BIO_get_mem_data(bio.get(), &data);
  return len > 0 ? std::string(data, static_cast<std::size_t>(len)) : std::string();
}

// ---------------------------------------------------------------------------------------------
// Verification.

struct CheckpointVerifier::Impl {
  KeyMaterial key;
};

CheckpointVerifier::CheckpointVerifier(std::unique_ptr<Impl> impl, std::string key_name)
    : impl_(std::move(impl)), key_name_(std::move(key_name)) {}
CheckpointVerifier::~CheckpointVerifier() = default;
CheckpointVerifier::CheckpointVerifier(CheckpointVerifier&&) noexcept = default;
CheckpointVerifier& CheckpointVerifier::operator=(CheckpointVerifier&&) noexcept = default;

fhir::Result<CheckpointVerifier> CheckpointVerifier::from_pem(std::string_view pem, std::string key_name) {
  ErrorQueueGuard clear_errors;
  if (auto problem = key_name_problem(key_name)) return invalid("checkpoint key: " + *problem);
  if (auto ok = check_pem(pem); !ok) return std::move(ok).issue();
  BioPtr bio = pem_bio(pem);
  if (!bio) return invalid("out of memory reading the PEM key");
  PkeyPtr pkey(PEM_read_bio_PUBKEY(bio.get(), nullptr, no_passphrase, nullptr));
  if (!pkey) {
    // A private key: keep only its public half, so the verifier never holds signing material.
    BioPtr again = pem_bio(pem);
    PkeyPtr priv(again ? PEM_read_bio_PrivateKey(again.get(), nullptr, no_passphrase, nullptr) : nullptr);
    if (!priv) return invalid("not a PEM public key (SubjectPublicKeyInfo) or private key");
    const std::string der = spki_der(priv.get());
    const auto* p = reinterpret_cast<const unsigned char*>(der.data());
    pkey.reset(der.empty() ? nullptr : d2i_PUBKEY(nullptr, &p, static_cast<long>(der.size())));
    if (!pkey) return invalid("cannot take the public half of the private key");
  }
  auto km = key_material(std::move(pkey), key_name);
  if (!km) return std::move(km).issue();
  auto impl = std::make_unique<Impl>();
  impl->key = std::move(*km);
  return CheckpointVerifier(std::move(impl), std::move(key_name));
}

fhir::Result<CheckpointVerifier> CheckpointVerifier::from_pem_file(const std::string& path, std::string key_name) {
  auto text = read_pem_file(path);
  if (!text) return std::move(text).issue();
  return name_file(from_pem(*text, std::move(key_name)), path);
}

const std::string& CheckpointVerifier::verifier_key() const { return impl_->key.verifier_key; }

bool CheckpointVerifier::verify(const Checkpoint& c) const {
  // Only a checkpoint that serialises to a well-formed note can verify: the body is what was
  // signed, and a body with a stray newline would say something other than its fields.
  if (c.key_name != key_name_ || origin_problem(c.origin) || !time_in_range(c.time_ms)) return false;
  if (c.signature.size() <= kKeyIdBytes) return false;
  const auto carries = [&](const KeyId& id) { return std::equal(id.begin(), id.end(), c.signature.begin()); };
  if (!carries(impl_->key.id) && !carries(impl_->key.legacy_id)) return false;
  const std::span<const std::uint8_t> sig(c.signature.data() + kKeyIdBytes, c.signature.size() - kKeyIdBytes);
  const bool ed25519 = impl_->key.kind == KeyKind::ed25519;
  if (ed25519 ? sig.size() != kEd25519SignatureBytes : sig.size() > kMaxEcdsaSignatureBytes) return false;

  ErrorQueueGuard clear_errors;
  const std::string body = checkpoint_body(c);
  MdCtxPtr ctx(EVP_MD_CTX_new());
  const EVP_MD* md = ed25519 ? nullptr : EVP_sha256();
  return ctx && EVP_DigestVerifyInit(ctx.get(), nullptr, md, nullptr, impl_->key.pkey.get()) == 1 &&
         EVP_DigestVerify(ctx.get(), sig.data(), sig.size(), bytes(body), body.size()) == 1;
}

}  // namespace gw::audit
