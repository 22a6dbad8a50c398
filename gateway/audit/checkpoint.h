// SPDX-License-Identifier: Apache-2.0
// Signed checkpoints of the audit log's Merkle tree (tree size, root hash, time), in the
// signed-note text form used by transparency logs (C2SP tlog-checkpoint): a body of lines
//   <origin>\n<tree size>\n<base64 root>\n<time: RFC 3339 UTC, millisecond precision>\n
// then a blank line and one signature line
//   "\u2014 <key name> <base64(4-byte key id || signature)>\n".
// Keys are Ed25519 (preferred) or ECDSA P-256 (signature over SHA-256, DER), read from PEM.
// Key ids follow c2sp.org/signed-note, so other signed-note verifiers accept the notes given
// verifier_key(); see key_material() in checkpoint.cpp.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "fhir/result.h"
#include "gateway/audit/merkle.h"

namespace gw::audit {

struct Checkpoint {
  std::string origin;        // log identity, e.g. "fhir-gateway/audit/<host>"
  std::uint64_t size = 0;    // tree size (number of leaves)
  merkle::Hash root{};       // root hash at that size
  std::int64_t time_ms = 0;  // Unix time in milliseconds (UTC)
  std::string key_name;      // signer's key name
  std::vector<std::uint8_t> signature;  // 4-byte key id followed by the raw signature bytes
};

// The signed body (the four lines, each ending in '\n').
std::string checkpoint_body(const Checkpoint& c);
// Full signed-note text: body, blank line, signature line.
std::string serialise(const Checkpoint& c);
// Parses one signed note; rejects anything malformed (limits: 4 KiB, one signature line).
fhir::Result<Checkpoint> parse_checkpoint(std::string_view text);
// Parses a file holding many notes one after another (as the checkpoint file appends them),
// separated by blank lines. Limit: `max_notes`.
fhir::Result<std::vector<Checkpoint>> parse_checkpoints(std::string_view text,
                                                         std::size_t max_notes = 10'000'000);

// A checkpoint file as the gateway appends to it. A crash or a full disk during an append, or a
// copy cut short, leaves the last note incomplete: that torn tail (at most 4 KiB, no complete
// note after it) is told apart from damage anywhere else, which is an error as in
// parse_checkpoints().
struct CheckpointFile {
  std::vector<Checkpoint> notes;     // the complete notes
  std::size_t complete_bytes = 0;    // where the torn tail begins (the text's size when none)
  std::size_t torn_bytes = 0;        // the torn tail's length (0: the file ends with a whole note)
  // The largest tree size a note vouches for (0 when none): how many records audit.db must hold.
  std::uint64_t newest_size() const {
    std::uint64_t n = 0;
    for (const auto& c : notes) n = c.size > n ? c.size : n;
    return n;
  }
};
fhir::Result<CheckpointFile> parse_checkpoint_file(std::string_view text, std::size_t max_notes = 10'000'000);

class CheckpointSigner {
 public:
  // Loads a PEM private key (Ed25519 or EC P-256). Errors name the file and the reason.
  static fhir::Result<CheckpointSigner> from_pem_file(const std::string& path, std::string key_name);
  static fhir::Result<CheckpointSigner> from_pem(std::string_view pem, std::string key_name);
  ~CheckpointSigner();
  CheckpointSigner(CheckpointSigner&&) noexcept;
  CheckpointSigner& operator=(CheckpointSigner&&) noexcept;

  // Fills key_name and signature. Thread-safe.
  Checkpoint sign(std::string origin, std::uint64_t size, const merkle::Hash& root,
                  std::int64_t time_ms) const;
  std::string public_key_pem() const;
  // The signed-note verifier key, "<key name>+<8 hex digit key id>+<base64(type || public key)>",
  // which Go's golang.org/x/mod/sumdb/note and other C2SP signed-note tools take.
  const std::string& verifier_key() const;
  const std::string& key_name() const { return key_name_; }

 private:
  struct Impl;
  explicit CheckpointSigner(std::unique_ptr<Impl> impl, std::string key_name);
  std::unique_ptr<Impl> impl_;
  std::string key_name_;
};

class CheckpointVerifier {
 public:
  // PEM public key (SubjectPublicKeyInfo) or a private key PEM (its public half is used).
  static fhir::Result<CheckpointVerifier> from_pem_file(const std::string& path, std::string key_name);
  static fhir::Result<CheckpointVerifier> from_pem(std::string_view pem, std::string key_name);
  ~CheckpointVerifier();
  CheckpointVerifier(CheckpointVerifier&&) noexcept;
  CheckpointVerifier& operator=(CheckpointVerifier&&) noexcept;

  // True when the signature is by this key over this checkpoint's body and the key name and
  // id match (the C2SP id, or the id notes carried before it was adopted).
  bool verify(const Checkpoint& c) const;
  // As CheckpointSigner::verifier_key().
  const std::string& verifier_key() const;

 private:
  struct Impl;
  explicit CheckpointVerifier(std::unique_ptr<Impl> impl, std::string key_name);
  std::unique_ptr<Impl> impl_;
  std::string key_name_;
};

}  // namespace gw::audit
