// SPDX-License-Identifier: Apache-2.0
// RFC 6962 / RFC 9162 Merkle tree over SHA-256 (see merkle.h): hashing, roots built from
// perfect subtrees, proof generation and verification, and the compact range of an
// append-only log.
#include "gateway/audit/merkle.h"
#include "gateway/crypto/openssl.h"

#include <cstring>

#include <algorithm>
#include <bit>
#include <memory>
#include <stdexcept>

#include <openssl/evp.h>


namespace gw::audit::merkle {

namespace {

// ---------------------------------------------------------------------------------------------
// SHA-256. The digest is fetched once; each thread reuses one context, so hashing a million
// nodes costs no allocation per hash.

const EVP_MD* sha256() {
  // Never freed: it must outlive every thread-local context, and OpenSSL reclaims it at exit.
  static const EVP_MD* md = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  if (md == nullptr) throw std::runtime_error("SHA-256 is not available from OpenSSL");
  return md;
}

EVP_MD_CTX* thread_ctx() {
  thread_local crypto::MdCtxPtr ctx(EVP_MD_CTX_new());
  if (!ctx) throw std::bad_alloc();
  return ctx.get();
}

// Hashes the concatenation of `a` and `b`. A failure here is a broken environment, not bad
// input, so it throws (STYLE.md "Errors").
Hash sha256_of(std::span<const std::uint8_t> a, std::span<const std::uint8_t> b) {
  EVP_MD_CTX* ctx = thread_ctx();
  Hash out{};
  unsigned int len = 0;
  if (EVP_DigestInit_ex2(ctx, sha256(), nullptr) != 1 ||
      (!a.empty() && EVP_DigestUpdate(ctx, a.data(), a.size()) != 1) ||
      (!b.empty() && EVP_DigestUpdate(ctx, b.data(), b.size()) != 1) ||
      EVP_DigestFinal_ex(ctx, out.data(), &len) != 1 || len != out.size())
    throw std::runtime_error("SHA-256 computation failed");
  return out;
}

// ---------------------------------------------------------------------------------------------
// Tree geometry.

// Largest power of two strictly less than n (n >= 2): the split point k of RFC 9162 2.1.1.
std::uint64_t split_point(std::uint64_t n) { return std::bit_floor(n - 1); }

unsigned level_of(std::uint64_t power_of_two) { return static_cast<unsigned>(std::countr_zero(power_of_two)); }

// [start, end) is a subtree in the sense of the Merkle Tree Certificates draft (section 4.1):
// start < end and start is a multiple of BIT_CEIL(end - start). Sizes above 2^63 would need
// BIT_CEIL = 2^64, which only start 0 is a multiple of.
bool is_subtree(std::uint64_t start, std::uint64_t end) {
  if (start >= end) return false;
  const std::uint64_t size = end - start;
  if (size > (std::uint64_t{1} << 63)) return start == 0;
  return start % std::bit_ceil(size) == 0;
}

// MTH of [begin, end) when that range is a subtree: its perfect subtrees, largest first, folded
// from the right (the shape RFC 9162 2.1.1 gives a tree whose size is not a power of two).
// popcount(end - begin) NodeSource calls.
Hash subtree_hash(std::uint64_t begin, std::uint64_t end, const NodeSource& nodes) {
  std::array<Hash, 64> parts;
  std::size_t count = 0;
  const std::uint64_t size = end - begin;
  std::uint64_t pos = begin;
  for (int level = 63; level >= 0; --level) {
    const std::uint64_t width = std::uint64_t{1} << level;
    if ((size & width) == 0) continue;
    parts[count++] = nodes(static_cast<unsigned>(level), pos >> level);
    pos += width;
  }
  Hash h = parts[count - 1];
  for (std::size_t i = count - 1; i-- > 0;) h = node_hash(parts[i], h);
  return h;
}

// MTH of any range. Ranges that are subtrees take the fast path; others follow the RFC split
// until they are (recursion depth is at most 64: each step halves the range).
Hash range_mth(std::uint64_t begin, std::uint64_t end, const NodeSource& nodes) {
  if (begin == end) return empty_root();
  if (is_subtree(begin, end)) return subtree_hash(begin, end, nodes);
  const std::uint64_t k = split_point(end - begin);
  return node_hash(range_mth(begin, begin + k, nodes), range_mth(begin + k, end, nodes));
}

Hash perfect_hash(std::uint64_t begin, std::uint64_t width, const NodeSource& nodes) {
  const unsigned level = level_of(width);
  return nodes(level, begin >> level);
}

// The 4-bit alphabet, lower case (RFC 4648 section 8).
constexpr std::string_view kHexDigits = "0123456789abcdef";
constexpr std::string_view kBase64Alphabet =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

int base64_value(char c) {
  const auto pos = kBase64Alphabet.find(c);
  return pos == std::string_view::npos ? -1 : static_cast<int>(pos);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Hashes and encodings.

Hash leaf_hash(std::string_view data) {
  static constexpr std::uint8_t kLeafPrefix[1] = {0x00};  // RFC 9162 2.1.1
  return sha256_of(kLeafPrefix, {reinterpret_cast<const std::uint8_t*>(data.data()), data.size()});
}

Hash node_hash(const Hash& left, const Hash& right) {
  std::array<std::uint8_t, 65> buf;  // 0x01 || left || right, RFC 9162 2.1.1
  buf[0] = 0x01;
  std::copy(left.begin(), left.end(), buf.begin() + 1);
  std::copy(right.begin(), right.end(), buf.begin() + 33);
  return sha256_of(buf, {});
}

Hash empty_root() {
  static const Hash h = sha256_of({}, {});
  return h;
}

std::string to_hex(const Hash& h) {
  std::string out;
  out.reserve(64);
  for (std::uint8_t b : h) {
    out.push_back(kHexDigits[b >> 4]);
    out.push_back(kHexDigits[b & 0x0f]);
  }
  return out;
}

std::string to_base64(const Hash& h) {
  std::string out;
  out.reserve(44);
  std::size_t i = 0;
  for (; i + 3 <= h.size(); i += 3) {
    const std::uint32_t v = (std::uint32_t{h[i]} << 16) | (std::uint32_t{h[i + 1]} << 8) | h[i + 2];
    out.push_back(kBase64Alphabet[(v >> 18) & 63]);
    out.push_back(kBase64Alphabet[(v >> 12) & 63]);
    out.push_back(kBase64Alphabet[(v >> 6) & 63]);
    out.push_back(kBase64Alphabet[v & 63]);
  }
  // 32 = 3 * 10 + 2: two trailing bytes become three characters and one '='.
  const std::uint32_t v = (std::uint32_t{h[i]} << 16) | (std::uint32_t{h[i + 1]} << 8);
  out.push_back(kBase64Alphabet[(v >> 18) & 63]);
  out.push_back(kBase64Alphabet[(v >> 12) & 63]);
  out.push_back(kBase64Alphabet[(v >> 6) & 63]);
  out.push_back('=');
  return out;
}

std::optional<Hash> from_base64(std::string_view text) {
  // 32 bytes are exactly 44 characters ending in one '='. The last character before the
  // padding carries two unused bits that must be zero, so every hash has one encoding.
  if (text.size() != 44 || text[43] != '=') return std::nullopt;
  Hash out{};
  std::size_t o = 0;
  for (std::size_t i = 0; i < 44; i += 4) {
    std::uint32_t v = 0;
    const std::size_t chars = i == 40 ? 3 : 4;
    for (std::size_t j = 0; j < chars; ++j) {
      const int d = base64_value(text[i + j]);
      if (d < 0) return std::nullopt;
      v = (v << 6) | static_cast<std::uint32_t>(d);
    }
    if (chars == 4) {
      out[o++] = static_cast<std::uint8_t>(v >> 16);
      out[o++] = static_cast<std::uint8_t>(v >> 8);
      out[o++] = static_cast<std::uint8_t>(v);
    } else {
      if ((v & 0x3) != 0) return std::nullopt;  // non-canonical trailing bits
      out[o++] = static_cast<std::uint8_t>(v >> 10);
      out[o++] = static_cast<std::uint8_t>(v >> 2);
    }
  }
  return out;
}

std::optional<Hash> from_hex(std::string_view text) {
  if (text.size() != 64) return std::nullopt;
  Hash out{};
  for (std::size_t i = 0; i < 32; ++i) {
    const int hi = hex_value(text[2 * i]);
    const int lo = hex_value(text[2 * i + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out[i] = static_cast<std::uint8_t>((hi << 4) | lo);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Roots.

Hash root_of(std::span<const Hash> leaves) {
  if (leaves.empty()) return empty_root();
  // The frontier of perfect subtrees (one per set bit of the count so far), merged as leaves
  // arrive: iterative, O(log n) memory.
  std::array<Hash, 64> frontier;
  std::size_t top = 0;
  std::uint64_t count = 0;
  for (const Hash& leaf : leaves) {
    Hash h = leaf;
    for (std::uint64_t m = count; (m & 1) != 0; m >>= 1) h = node_hash(frontier[--top], h);
    frontier[top++] = h;
    ++count;
  }
  Hash h = frontier[top - 1];
  for (std::size_t i = top - 1; i-- > 0;) h = node_hash(frontier[i], h);
  return h;
}

Hash range_hash(std::uint64_t begin, std::uint64_t end, const NodeSource& nodes) {
  if (begin > end) throw std::invalid_argument("range_hash: begin > end");
  return range_mth(begin, end, nodes);
}

// ---------------------------------------------------------------------------------------------
// Proof generation. Both walk the RFC 9162 recursion top-down over leaf ranges and reverse at
// the end (proofs list the lowest sibling first). Only the first right-hand sibling met in the
// ragged part of the tree can be imperfect; it costs popcount calls, every other sibling one.

std::vector<Hash> inclusion_proof(std::uint64_t index, std::uint64_t size, const NodeSource& nodes) {
  if (index >= size) throw std::invalid_argument("inclusion_proof: index must be below the tree size");
  // PATH(m, D[n]), RFC 9162 2.1.3.1.
  std::vector<Hash> proof;
  std::uint64_t lo = 0;
  std::uint64_t hi = size;
  while (hi - lo > 1) {
    const std::uint64_t k = split_point(hi - lo);
    if (index < lo + k) {
      proof.push_back(subtree_hash(lo + k, hi, nodes));  // MTH(D[k:n])
      hi = lo + k;
    } else {
      proof.push_back(perfect_hash(lo, k, nodes));  // MTH(D[0:k])
      lo += k;
    }
  }
  std::reverse(proof.begin(), proof.end());
  return proof;
}

std::vector<Hash> consistency_proof(std::uint64_t size1, std::uint64_t size2, const NodeSource& nodes) {
  if (size1 == 0 || size1 > size2)
    throw std::invalid_argument("consistency_proof: sizes must satisfy 0 < size1 <= size2");
  // PROOF(m, D[n]) = SUBPROOF(m, D[n], true), RFC 9162 2.1.4.1.
  std::vector<Hash> proof;
  std::uint64_t lo = 0;
  std::uint64_t hi = size2;
  bool known = true;  // the SUBPROOF flag b: the node at m is the verifier's old root
  while (size1 != hi) {
    const std::uint64_t k = split_point(hi - lo);
    if (size1 <= lo + k) {
      proof.push_back(subtree_hash(lo + k, hi, nodes));  // MTH(D[k:n])
      hi = lo + k;
    } else {
      proof.push_back(perfect_hash(lo, k, nodes));  // MTH(D[0:k])
      lo += k;
      known = false;
    }
  }
  if (!known) proof.push_back(subtree_hash(lo, hi, nodes));  // {MTH(D[m])} when b is false
  std::reverse(proof.begin(), proof.end());
  return proof;
}

// ---------------------------------------------------------------------------------------------
// Verification.

bool verify_inclusion(std::uint64_t index, std::uint64_t size, const Hash& leaf,
                      std::span<const Hash> proof, const Hash& root) {
  // RFC 9162 2.1.3.2, step by step.
  if (index >= size) return false;
  std::uint64_t fn = index;
  std::uint64_t sn = size - 1;
  Hash r = leaf;
  for (const Hash& p : proof) {
    if (sn == 0) return false;
    if ((fn & 1) != 0 || fn == sn) {
      r = node_hash(p, r);
      if ((fn & 1) == 0) {
        while ((fn & 1) == 0 && fn != 0) {
          fn >>= 1;
          sn >>= 1;
        }
      }
    } else {
      r = node_hash(r, p);
    }
    fn >>= 1;
    sn >>= 1;
  }
  return sn == 0 && r == root;
}

bool verify_consistency(std::uint64_t size1, std::uint64_t size2, const Hash& root1,
                        const Hash& root2, std::span<const Hash> proof) {
  if (size1 > size2) return false;
  // RFC 9162 2.1.4.1 defines proofs for 0 < first only; a consistency claim about the empty
  // tree carries no information and is rejected.
  if (size1 == 0) return false;
  // Equal sizes: the empty proof, and the roots must agree.
  if (size1 == size2) return proof.empty() && root1 == root2;

  // RFC 9162 2.1.4.2, step by step.
  if (proof.empty()) return false;  // step 1
  const bool prepend = std::has_single_bit(size1);  // step 2: first_hash starts the path
  std::size_t next = 0;
  Hash fr = prepend ? root1 : proof[next++];  // step 5 (on the possibly prepended path)
  Hash sr = fr;
  std::uint64_t fn = size1 - 1;  // step 3
  std::uint64_t sn = size2 - 1;
  while ((fn & 1) != 0) {  // step 4
    fn >>= 1;
    sn >>= 1;
  }
  for (; next < proof.size(); ++next) {  // step 6
    const Hash& c = proof[next];
    if (sn == 0) return false;
    if ((fn & 1) != 0 || fn == sn) {
      fr = node_hash(c, fr);
      sr = node_hash(c, sr);
      if ((fn & 1) == 0) {
        while ((fn & 1) == 0 && fn != 0) {
          fn >>= 1;
          sn >>= 1;
        }
      }
    } else {
      sr = node_hash(sr, c);
    }
    fn >>= 1;
    sn >>= 1;
  }
  return fr == root1 && sr == root2 && sn == 0;  // step 7
}

bool verify_subtree_inclusion(std::uint64_t index, std::uint64_t start, std::uint64_t end,
                              const Hash& leaf, std::span<const Hash> proof, const Hash& root) {
  // Merkle Tree Certificates draft, subtree inclusion proof: the subtree [start, end) is a tree
  // of its own, so the proof is the RFC 9162 audit path of index - start among end - start.
  if (!is_subtree(start, end) || index < start || index >= end) return false;
  return verify_inclusion(index - start, end - start, leaf, proof, root);
}

bool verify_subtree_consistency(std::uint64_t start, std::uint64_t end, std::uint64_t size,
                                const Hash& subtree_root, const Hash& root,
                                std::span<const Hash> proof) {
  if (start > end || end > size) return false;
  // An empty subtree is trivially contained in any tree; its hash is that of the empty tree
  // and nothing needs proving (the behaviour the transparency-dev vectors pin down).
  if (start == end) return proof.empty() && subtree_root == empty_root();
  if (!is_subtree(start, end)) return false;

  // Merkle Tree Certificates draft, SUBTREE_PROOF(start, end, D_n): walk the recursion from
  // the root to find which sibling each proof hash is, then fold bottom-up. At each node
  // [lo, hi) split at mid, the subtree lies left (end <= mid, sibling MTH(D[mid:hi]) on the
  // right), right (start >= mid, sibling MTH(D[lo:mid]) on the left), or straddles mid; a
  // valid subtree can only straddle when it starts at lo, and then the recursion continues
  // with [mid, end), whose hash is not a node the verifier knows (the SUBPROOF flag turns
  // false and the proof starts with it).
  enum class Step : std::uint8_t { left, right, straddle };
  std::array<Step, 64> steps;
  std::size_t depth = 0;
  std::uint64_t lo = 0;
  std::uint64_t hi = size;
  std::uint64_t cur = start;
  bool known = true;
  while (!(lo == cur && hi == end)) {
    // Cannot happen for a valid subtree inside the tree; kept so no input can loop or overrun.
    if (hi - lo < 2 || depth == steps.size()) return false;
    const std::uint64_t mid = lo + split_point(hi - lo);
    if (end <= mid) {
      steps[depth++] = Step::left;
      hi = mid;
    } else if (cur >= mid) {
      steps[depth++] = Step::right;
      lo = mid;
    } else {
      steps[depth++] = Step::straddle;
      lo = mid;
      cur = mid;
      known = false;
    }
  }
  if (proof.size() != depth + (known ? 0 : 1)) return false;

  std::size_t next = 0;
  Hash sub = known ? subtree_root : proof[next++];
  Hash tree = sub;
  while (depth > 0) {
    const Hash& c = proof[next++];
    switch (steps[--depth]) {
      case Step::left:
        tree = node_hash(tree, c);
        break;
      case Step::right:
        tree = node_hash(c, tree);
        break;
      case Step::straddle:
        sub = node_hash(c, sub);
        tree = node_hash(c, tree);
        break;
    }
  }
  return sub == subtree_root && tree == root;
}

namespace {
std::optional<Hash> raw_hash(std::string_view bytes) {
  if (bytes.size() != Hash{}.size()) return std::nullopt;
  Hash h{};
  std::memcpy(h.data(), bytes.data(), h.size());
  return h;
}
}  // namespace

bool verify_consistency(std::uint64_t size1, std::uint64_t size2, std::string_view root1,
                        std::string_view root2, std::span<const Hash> proof) {
  const auto h1 = raw_hash(root1);
  const auto h2 = raw_hash(root2);
  if (h1 && h2) return verify_consistency(size1, size2, *h1, *h2, proof);
  return size1 != 0 && size1 == size2 && proof.empty() && root1 == root2;
}

bool verify_subtree_consistency(std::uint64_t start, std::uint64_t end, std::uint64_t size,
                                std::string_view subtree_root, std::string_view root,
                                std::span<const Hash> proof) {
  const auto sub = raw_hash(subtree_root);
  const auto whole = raw_hash(root);
  if (sub && whole) return verify_subtree_consistency(start, end, size, *sub, *whole, proof);
  if (start > end || end > size || !proof.empty()) return false;
  if (start == end) return sub && *sub == empty_root();  // the tree's root is never looked at
  return start == 0 && end == size && subtree_root == root;
}

// ---------------------------------------------------------------------------------------------
// Compact range.

CompactRange CompactRange::for_size(std::uint64_t size, const NodeSource& nodes) {
  CompactRange range;
  std::uint64_t pos = 0;
  for (int level = 63; level >= 0; --level) {
    const std::uint64_t width = std::uint64_t{1} << level;
    if ((size & width) == 0) continue;
    range.frontier_.push_back(nodes(static_cast<unsigned>(level), pos >> level));
    pos += width;
  }
  range.size_ = size;
  return range;
}

void CompactRange::append(const Hash& leaf, const std::function<void(const Node&)>& completed) {
  std::uint64_t index = size_;
  unsigned level = 0;
  Hash h = leaf;
  if (completed) completed(Node{level, index, h});
  // Each trailing one bit of the old size is a left sibling that the new leaf completes.
  while ((index & 1) != 0) {
    h = node_hash(frontier_.back(), h);
    frontier_.pop_back();
    index >>= 1;
    ++level;
    if (completed) completed(Node{level, index, h});
  }
  frontier_.push_back(h);
  ++size_;
}

Hash CompactRange::root() const {
  if (frontier_.empty()) return empty_root();
  Hash h = frontier_.back();
  for (std::size_t i = frontier_.size() - 1; i-- > 0;) h = node_hash(frontier_[i], h);
  return h;
}

}  // namespace gw::audit::merkle
