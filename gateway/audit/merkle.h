// SPDX-License-Identifier: Apache-2.0
// RFC 6962 / RFC 9162 Merkle tree over SHA-256: leaf and node hashes, roots of ranges,
// inclusion and consistency proofs (generation and verification), and the subtree variants
// (proofs relative to the subtree [start, end) of a larger tree). The audit log's leaves are
// the canonical encodings of audit records; the sequence number is the leaf index.
//
// Hashing: leaf = SHA-256(0x00 || data); node = SHA-256(0x01 || left || right); the root of
// the empty tree is SHA-256("").
//
// Proof generation reads hashes of *perfect* subtrees through a NodeSource callback, so the
// caller decides where nodes live (the audit store keeps them in audit.db; tests keep them in
// memory). Verification never throws and accepts exactly the proofs RFC 9162 section 2.1.3 /
// 2.1.4 accept: any extra, missing or altered component is a rejection.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace gw::audit::merkle {

using Hash = std::array<std::uint8_t, 32>;

Hash leaf_hash(std::string_view data);
Hash node_hash(const Hash& left, const Hash& right);
Hash empty_root();

std::string to_hex(const Hash& h);
std::string to_base64(const Hash& h);
// Strict: exactly 32 bytes of standard base64 (with padding) / 64 hex digits, else nullopt.
std::optional<Hash> from_base64(std::string_view text);
std::optional<Hash> from_hex(std::string_view text);

// Root of the tree whose leaf hashes are `leaves` (MTH of RFC 6962 section 2.1).
Hash root_of(std::span<const Hash> leaves);

// Hash of the perfect subtree at `level` (0 = leaf) and `index`, i.e. the node covering
// leaves [index << level, (index + 1) << level). Called only for subtrees that are complete
// within the tree the proof is for.
using NodeSource = std::function<Hash(unsigned level, std::uint64_t index)>;

// MTH of leaves [begin, end) built from perfect subtrees (end <= tree size known to `nodes`).
Hash range_hash(std::uint64_t begin, std::uint64_t end, const NodeSource& nodes);

// Audit path for leaf `index` in the tree of `size` leaves (index < size).
std::vector<Hash> inclusion_proof(std::uint64_t index, std::uint64_t size, const NodeSource& nodes);
// Consistency proof between the trees of `size1` and `size2` leaves (0 < size1 <= size2).
std::vector<Hash> consistency_proof(std::uint64_t size1, std::uint64_t size2, const NodeSource& nodes);

bool verify_inclusion(std::uint64_t index, std::uint64_t size, const Hash& leaf,
                      std::span<const Hash> proof, const Hash& root);
bool verify_consistency(std::uint64_t size1, std::uint64_t size2, const Hash& root1,
                        const Hash& root2, std::span<const Hash> proof);

// Subtree variants (as in transparency-dev/merkle testdata subtreeinclusion /
// subtreeconsistency): proofs about the subtree covering leaves [start, end).
bool verify_subtree_inclusion(std::uint64_t index, std::uint64_t start, std::uint64_t end,
                              const Hash& leaf, std::span<const Hash> proof, const Hash& root);
bool verify_subtree_consistency(std::uint64_t start, std::uint64_t end, std::uint64_t size,
                                const Hash& subtree_root, const Hash& root,
                                std::span<const Hash> proof);

// The same two checks with roots as received from outside (any byte string). RFC 9162
// compares roots as values, so where the algorithm never hashes a root (equal tree sizes, an
// empty subtree, a subtree that is the whole tree) a root of any length is compared byte for
// byte; everywhere else a root that is not 32 bytes fails.
bool verify_consistency(std::uint64_t size1, std::uint64_t size2, std::string_view root1,
                        std::string_view root2, std::span<const Hash> proof);
bool verify_subtree_consistency(std::uint64_t start, std::uint64_t end, std::uint64_t size,
                                std::string_view subtree_root, std::string_view root,
                                std::span<const Hash> proof);

// Append-only frontier ("compact range"): the roots of the perfect subtrees covering
// [0, size), largest first. Appending reports every perfect subtree it completes so the caller
// can store it.
class CompactRange {
 public:
  struct Node {
    unsigned level;
    std::uint64_t index;
    Hash hash;
  };
  CompactRange() = default;
  // Rebuilds the frontier for a tree of `size` leaves from stored perfect subtrees.
  static CompactRange for_size(std::uint64_t size, const NodeSource& nodes);

  // Appends one leaf hash; `completed` receives the leaf (level 0) and each parent it
  // completes, bottom-up.
  void append(const Hash& leaf, const std::function<void(const Node&)>& completed);
  std::uint64_t size() const { return size_; }
  Hash root() const;

 private:
  std::uint64_t size_ = 0;
  std::vector<Hash> frontier_;  // largest subtree first
};

}  // namespace gw::audit::merkle
