// SPDX-License-Identifier: Apache-2.0
// Tests for the audit log's Merkle tree (gateway/audit/merkle.h): known answers, every proof
// of every small tree against reference implementations written straight from the RFC 9162
// and Merkle Tree Certificates definitions, tampering, the transparency-dev vectors, and the
// compact range.
#include <doctest/doctest.h>

#include <algorithm>
#include <bit>
#include <cctype>
#include <cstdint>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "fhir/json.h"
#include "gateway/audit/merkle.h"
#include "support/paths.h"

namespace {

using namespace gw::audit::merkle;

// ---------------------------------------------------------------------------------------------
// An in-memory tree: every perfect subtree, level by level.

struct MemTree {
  std::vector<std::vector<Hash>> levels;  // levels[0] are the leaf hashes

  explicit MemTree(std::vector<Hash> leaves) {
    levels.push_back(std::move(leaves));
    while (levels.back().size() > 1) {
      const auto& below = levels.back();
      std::vector<Hash> above;
      for (std::size_t i = 0; i + 1 < below.size(); i += 2) above.push_back(node_hash(below[i], below[i + 1]));
      levels.push_back(std::move(above));
    }
  }
  const std::vector<Hash>& leaves() const { return levels[0]; }
};

// Counts NodeSource calls and any request for a node that is not a perfect subtree of the
// tree of `size` leaves (the contract says that never happens).
struct Probe {
  std::uint64_t calls = 0;
  std::uint64_t improper = 0;
};

NodeSource source(const MemTree& t, std::uint64_t size, Probe& probe) {
  return [&t, size, &probe](unsigned level, std::uint64_t index) {
    ++probe.calls;
    if (level >= t.levels.size() || index >= t.levels[level].size() || ((index + 1) << level) > size) {
      ++probe.improper;
      return Hash{};
    }
    return t.levels[level][index];
  };
}

std::vector<Hash> make_leaves(std::size_t n, std::string_view tag = "leaf") {
  std::vector<Hash> out;
  for (std::size_t i = 0; i < n; ++i) {
    std::string data(tag);
    data.append(" ").append(std::to_string(i));
    out.push_back(leaf_hash(data));
  }
  return out;
}

Hash flip(Hash h, std::size_t bit) {
  h[bit / 8] = static_cast<std::uint8_t>(h[bit / 8] ^ (1u << (bit % 8)));
  return h;
}

// ---------------------------------------------------------------------------------------------
// Reference implementations, recursive and literal. Each proof step records which side the
// sibling sits on, so tests can tell which parameter changes leave the hashing unchanged.

std::size_t split(std::size_t n) {  // largest power of two < n
  std::size_t k = 1;
  while (k * 2 < n) k *= 2;
  return k;
}

Hash ref_mth(std::span<const Hash> d) {  // RFC 9162 2.1.1
  if (d.empty()) return empty_root();
  if (d.size() == 1) return d[0];
  const std::size_t k = split(d.size());
  return node_hash(ref_mth(d.first(k)), ref_mth(d.subspan(k)));
}

std::vector<Hash> ref_path(std::size_t m, std::span<const Hash> d) {  // RFC 9162 2.1.3.1
  if (d.size() <= 1) return {};
  const std::size_t k = split(d.size());
  std::vector<Hash> r;
  if (m < k) {
    r = ref_path(m, d.first(k));
    r.push_back(ref_mth(d.subspan(k)));
  } else {
    r = ref_path(m - k, d.subspan(k));
    r.push_back(ref_mth(d.first(k)));
  }
  return r;
}

// Sibling sides of PATH(m, n): 'R' right, 'L' left.
std::string path_shape(std::uint64_t m, std::uint64_t n) {
  if (n <= 1) return {};
  const std::uint64_t k = std::bit_floor(n - 1);
  return m < k ? path_shape(m, k) + 'R' : path_shape(m - k, n - k) + 'L';
}

std::vector<Hash> ref_subproof(std::size_t m, std::span<const Hash> d, bool b) {  // RFC 9162 2.1.4.1
  if (m == d.size()) return b ? std::vector<Hash>{} : std::vector<Hash>{ref_mth(d)};
  const std::size_t k = split(d.size());
  std::vector<Hash> r;
  if (m <= k) {
    r = ref_subproof(m, d.first(k), b);
    r.push_back(ref_mth(d.subspan(k)));
  } else {
    r = ref_subproof(m - k, d.subspan(k), false);
    r.push_back(ref_mth(d.first(k)));
  }
  return r;
}

// Shape of SUBPROOF(m, n, b): 'S' the seed node, 'R' a right sibling, 'L' a left sibling.
std::string subproof_shape(std::uint64_t m, std::uint64_t n, bool b) {
  if (m == n) return b ? "" : "S";
  const std::uint64_t k = std::bit_floor(n - 1);
  return m <= k ? subproof_shape(m, k, b) + 'R' : subproof_shape(m - k, n - k, false) + 'L';
}

// SUBTREE_SUBPROOF of the Merkle Tree Certificates draft (section 4.4.1).
std::vector<Hash> ref_subtree_subproof(std::size_t start, std::size_t end, std::span<const Hash> d, bool b) {
  if (start == 0 && end == d.size()) return b ? std::vector<Hash>{} : std::vector<Hash>{ref_mth(d)};
  const std::size_t k = split(d.size());
  std::vector<Hash> r;
  if (end <= k) {
    r = ref_subtree_subproof(start, end, d.first(k), b);
    r.push_back(ref_mth(d.subspan(k)));
  } else if (start >= k) {
    r = ref_subtree_subproof(start - k, end - k, d.subspan(k), b);
    r.push_back(ref_mth(d.first(k)));
  } else {
    REQUIRE(start == 0);  // a valid subtree straddles the split only from the left edge
    r = ref_subtree_subproof(0, end - k, d.subspan(k), false);
    r.push_back(ref_mth(d.first(k)));
  }
  return r;
}

bool valid_subtree(std::uint64_t start, std::uint64_t end) {
  return start < end && start % std::bit_ceil(end - start) == 0;
}

// Every proof tampering that must fail: each listed bit of each component flipped, each
// component dropped, an extra component at each position. Returns how many were accepted.
template <class Verify>
int accepted_tamperings(const std::vector<Hash>& proof, const Hash& extra, bool every_bit, Verify verify) {
  int accepted = 0;
  for (std::size_t c = 0; c < proof.size(); ++c) {
    for (std::size_t bit = 0; bit < 256; bit += every_bit ? 1 : 85) {
      auto p = proof;
      p[c] = flip(p[c], bit);
      accepted += verify(p) ? 1 : 0;
    }
    auto dropped = proof;
    dropped.erase(dropped.begin() + static_cast<std::ptrdiff_t>(c));
    accepted += verify(dropped) ? 1 : 0;
  }
  for (std::size_t pos = 0; pos <= proof.size(); ++pos) {
    auto longer = proof;
    longer.insert(longer.begin() + static_cast<std::ptrdiff_t>(pos), extra);
    accepted += verify(longer) ? 1 : 0;
    if (!proof.empty()) {
      auto dup = proof;
      dup.insert(dup.begin() + static_cast<std::ptrdiff_t>(pos), proof[std::min(pos, proof.size() - 1)]);
      accepted += verify(dup) ? 1 : 0;
    }
  }
  return accepted;
}

constexpr std::size_t kMaxSize = 70;
constexpr std::size_t kEveryBitUpTo = 20;  // sizes up to this get all 256 bits flipped

}  // namespace

// ---------------------------------------------------------------------------------------------

TEST_CASE("Merkle: hashes match RFC 6962 known answers") {
  CHECK(to_hex(empty_root()) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(to_hex(leaf_hash("")) == "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d");
  CHECK(to_base64(leaf_hash("x")) == "PH6byTDck/AfppmF7yQtn56GHzxTVaokzl70tLinDMs=");
  // The eight leaves of the Certificate Transparency reference tests and the roots of each
  // prefix (the roots the transparency-dev vectors use).
  const std::vector<std::string> data = {
      "", std::string(1, '\0'), "\x10", "\x20\x21", "\x30\x31", "\x40\x41\x42\x43",
      "\x50\x51\x52\x53\x54\x55\x56\x57", "\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f"};
  const std::vector<std::string> roots = {
      "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
      "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
      "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
      "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
      "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
      "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
      "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
      "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"};
  std::vector<Hash> leaves;
  for (const auto& d : data) leaves.push_back(leaf_hash(d));
  for (std::size_t n = 1; n <= 8; ++n) {
    CAPTURE(n);
    CHECK(to_hex(root_of(std::span<const Hash>(leaves).first(n))) == roots[n - 1]);
  }
  CHECK(root_of({}) == empty_root());
  // Domain separation: the leaf holding two hashes is not the node over them.
  const Hash a = leaf_hash("a");
  const Hash b = leaf_hash("b");
  std::string both(a.begin(), a.end());
  both.append(b.begin(), b.end());
  CHECK(leaf_hash(both) != node_hash(a, b));
  CHECK(node_hash(a, b) != node_hash(b, a));
}

TEST_CASE("Merkle: hex and base64 decoders are strict") {
  const Hash h = leaf_hash("strict");
  CHECK(from_hex(to_hex(h)) == h);
  CHECK(from_base64(to_base64(h)) == h);
  std::string upper = to_hex(h);
  std::transform(upper.begin(), upper.end(), upper.begin(), [](char c) { return static_cast<char>(std::toupper(c)); });
  CHECK(from_hex(upper) == h);  // hex digits in either case
  CHECK_FALSE(from_hex(to_hex(h).substr(1)));
  CHECK_FALSE(from_hex(to_hex(h) + "0"));
  CHECK_FALSE(from_hex(std::string(63, '0') + "g"));
  std::string spaced_hex = to_hex(h);
  spaced_hex[0] = ' ';
  CHECK_FALSE(from_hex(spaced_hex));
  CHECK_FALSE(from_hex(""));

  const std::string b64 = to_base64(h);
  REQUIRE(b64.size() == 44);
  CHECK_FALSE(from_base64(b64.substr(0, 43)));  // padding missing
  CHECK_FALSE(from_base64(b64 + "="));
  CHECK_FALSE(from_base64(b64.substr(0, 40) + "AAA"));  // 33 bytes' worth
  CHECK_FALSE(from_base64(""));
  CHECK_FALSE(from_base64("ZG9uJ3QgY2FyZSAx"));  // 12 bytes
  CHECK_FALSE(from_base64(std::string(43, 'A') + "A"));  // no padding, 33 bytes
  CHECK_FALSE(from_base64(std::string(42, 'A') + "=="));  // 31 bytes
  std::string url_safe = std::string(42, '-') + "A=";
  CHECK_FALSE(from_base64(url_safe));
  std::string spaced = b64;
  spaced[10] = ' ';
  CHECK_FALSE(from_base64(spaced));
  // The character before '=' carries two unused bits; only zero bits are canonical.
  CHECK(from_base64(std::string(42, 'A') + "A="));
  CHECK_FALSE(from_base64(std::string(42, 'A') + "B="));
  CHECK_FALSE(from_base64(std::string(42, 'A') + "D="));
  CHECK(from_base64(std::string(42, 'A') + "E="));
}

TEST_CASE("Merkle: root_of and range_hash agree with the RFC definition for every range") {
  const MemTree tree(make_leaves(kMaxSize));
  const auto& leaves = tree.leaves();
  for (std::size_t n = 0; n <= kMaxSize; ++n) {
    CAPTURE(n);
    const auto prefix = std::span<const Hash>(leaves).first(n);
    CHECK(root_of(prefix) == ref_mth(prefix));
  }
  int mismatches = 0;
  std::uint64_t improper = 0;
  for (std::size_t begin = 0; begin <= kMaxSize; ++begin) {
    for (std::size_t end = begin; end <= kMaxSize; ++end) {
      Probe probe;
      const Hash got = range_hash(begin, end, source(tree, kMaxSize, probe));
      if (got != ref_mth(std::span<const Hash>(leaves).subspan(begin, end - begin))) ++mismatches;
      improper += probe.improper;
      // A range that is a subtree costs one call per perfect subtree it is made of.
      if (valid_subtree(begin, end) && probe.calls != static_cast<std::uint64_t>(std::popcount(end - begin))) ++mismatches;
    }
  }
  CHECK(mismatches == 0);
  CHECK(improper == 0);
}

TEST_CASE("Merkle: inclusion proofs for every index of every size up to 70 verify, and tampering fails") {
  const MemTree tree(make_leaves(kMaxSize));
  const auto& leaves = tree.leaves();
  int tampered_accepted = 0;
  int changed_params = 0;
  int changed_params_rejected = 0;
  for (std::size_t n = 1; n <= kMaxSize; ++n) {
    const auto d = std::span<const Hash>(leaves).first(n);
    const Hash root = root_of(d);
    for (std::size_t i = 0; i < n; ++i) {
      CAPTURE(n);
      CAPTURE(i);
      Probe probe;
      const auto proof = inclusion_proof(i, n, source(tree, n, probe));
      REQUIRE(proof == ref_path(i, d));
      CHECK(probe.improper == 0);
      CHECK(probe.calls <= 2 * std::bit_width(n));  // O(log n)
      REQUIRE(verify_inclusion(i, n, d[i], proof, root));

      tampered_accepted += accepted_tamperings(proof, root, n <= kEveryBitUpTo,
          [&](const std::vector<Hash>& p) { return verify_inclusion(i, n, d[i], p, root); });
      for (std::size_t bit = 0; bit < 256; bit += 51) {
        tampered_accepted += verify_inclusion(i, n, flip(d[i], bit), proof, root) ? 1 : 0;
        tampered_accepted += verify_inclusion(i, n, d[i], proof, flip(root, bit)) ? 1 : 0;
      }
      tampered_accepted += verify_inclusion(i, n, d[(i + 1) % n], proof, root) && n > 1 ? 1 : 0;

      // Other index or size: rejected unless the audit path has exactly the same shape (then
      // the hashing is identical, which RFC 9162 cannot tell apart; the signed size can).
      const std::pair<std::uint64_t, std::uint64_t> others[] = {
          {i + 1, n}, {i - 1, n}, {i ^ 2, n}, {i, n + 1}, {i, n - 1}, {i, 2 * n}, {i, n / 2}, {n, n}, {i, 0}};
      for (const auto& [i2, n2] : others) {
        if (i2 == i && n2 == n) continue;
        const bool expected = i2 < n2 && path_shape(i2, n2) == path_shape(i, n);
        CHECK(verify_inclusion(i2, n2, d[i], proof, root) == expected);
        ++changed_params;
        changed_params_rejected += expected ? 0 : 1;
      }
    }
  }
  CHECK(tampered_accepted == 0);
  CHECK(changed_params_rejected > changed_params * 3 / 4);
}

TEST_CASE("Merkle: consistency proofs for every size pair up to 70 verify, and tampering fails") {
  const MemTree tree(make_leaves(kMaxSize));
  const auto& leaves = tree.leaves();
  std::vector<Hash> roots;
  for (std::size_t n = 0; n <= kMaxSize; ++n) roots.push_back(root_of(std::span<const Hash>(leaves).first(n)));
  int tampered_accepted = 0;
  int changed_params = 0;
  int changed_params_rejected = 0;
  for (std::size_t n = 1; n <= kMaxSize; ++n) {
    const auto d = std::span<const Hash>(leaves).first(n);
    for (std::size_t m = 1; m <= n; ++m) {
      CAPTURE(m);
      CAPTURE(n);
      Probe probe;
      const auto proof = consistency_proof(m, n, source(tree, n, probe));
      REQUIRE(proof == ref_subproof(m, d, true));
      CHECK(probe.improper == 0);
      CHECK(probe.calls <= 2 * std::bit_width(n) + 1);
      REQUIRE(verify_consistency(m, n, roots[m], roots[n], proof));

      if (m < n) {
        tampered_accepted += accepted_tamperings(proof, roots[n], n <= kEveryBitUpTo,
            [&](const std::vector<Hash>& p) { return verify_consistency(m, n, roots[m], roots[n], p); });
        for (std::size_t bit = 0; bit < 256; bit += 51) {
          tampered_accepted += verify_consistency(m, n, flip(roots[m], bit), roots[n], proof) ? 1 : 0;
          tampered_accepted += verify_consistency(m, n, roots[m], flip(roots[n], bit), proof) ? 1 : 0;
        }
        tampered_accepted += verify_consistency(m, n, roots[n], roots[m], proof) ? 1 : 0;  // swapped
        tampered_accepted += verify_consistency(m, n, roots[m - 1], roots[n], proof) ? 1 : 0;
        tampered_accepted += verify_consistency(m, n, roots[m], roots[n], {}) ? 1 : 0;
      } else {
        tampered_accepted += verify_consistency(m, n, roots[m], roots[m - 1], proof) ? 1 : 0;
        tampered_accepted += verify_consistency(m, n, roots[m], roots[m], std::vector<Hash>{roots[m]}) ? 1 : 0;
      }

      const std::pair<std::uint64_t, std::uint64_t> others[] = {
          {m + 1, n}, {m - 1, n}, {m ^ 2, n}, {m, n + 1}, {m, n - 1}, {2 * m, n}, {m / 2, n}, {m, 2 * n}, {m, n / 2}, {n, m}};
      for (const auto& [m2, n2] : others) {
        if (m2 == m && n2 == n) continue;
        bool expected = false;
        if (m2 == 0 || m2 > n2) expected = false;
        else if (m2 == n2) expected = proof.empty() && roots[m] == roots[n];
        else expected = subproof_shape(m2, n2, true) == subproof_shape(m, n, true);
        CHECK(verify_consistency(m2, n2, roots[m], roots[n], proof) == expected);
        ++changed_params;
        changed_params_rejected += expected ? 0 : 1;
      }
    }
  }
  CHECK(tampered_accepted == 0);
  CHECK(changed_params_rejected > changed_params * 3 / 4);
  // Nothing is proved about the empty tree.
  CHECK_FALSE(verify_consistency(0, 0, empty_root(), empty_root(), {}));
  CHECK_FALSE(verify_consistency(0, 5, empty_root(), roots[5], {}));
  CHECK_FALSE(verify_consistency(6, 5, roots[6], roots[5], {}));
  CHECK_THROWS_AS((void)consistency_proof(0, 5, [](unsigned, std::uint64_t) { return Hash{}; }), std::invalid_argument);
  CHECK_THROWS_AS((void)inclusion_proof(5, 5, [](unsigned, std::uint64_t) { return Hash{}; }), std::invalid_argument);
}

TEST_CASE("Merkle: subtree inclusion and consistency proofs match the Merkle Tree Certificates definitions") {
  constexpr std::size_t kSubtreeMax = 40;
  const MemTree tree(make_leaves(kSubtreeMax));
  const auto& leaves = tree.leaves();
  int checked = 0;
  int tampered_accepted = 0;
  for (std::size_t n = 1; n <= kSubtreeMax; ++n) {
    const auto d = std::span<const Hash>(leaves).first(n);
    const Hash root = root_of(d);
    for (std::size_t start = 0; start < n; ++start) {
      for (std::size_t end = start + 1; end <= n; ++end) {
        CAPTURE(n);
        CAPTURE(start);
        CAPTURE(end);
        const Hash sub = ref_mth(d.subspan(start, end - start));
        if (!valid_subtree(start, end)) {
          CHECK_FALSE(verify_subtree_consistency(start, end, n, sub, root, ref_subproof(end, d, true)));
          CHECK_FALSE(verify_subtree_inclusion(start, start, end, d[start], {}, sub));
          continue;
        }
        ++checked;
        const auto proof = ref_subtree_subproof(start, end, d, true);
        REQUIRE(verify_subtree_consistency(start, end, n, sub, root, proof));
        if (start == 0) {  // SUBTREE_PROOF(0, end, D_n) = PROOF(end, D_n)
          Probe probe;
          CHECK(consistency_proof(end, n, source(tree, n, probe)) == proof);
        }
        tampered_accepted += accepted_tamperings(proof, root, false,
            [&](const std::vector<Hash>& p) { return verify_subtree_consistency(start, end, n, sub, root, p); });
        tampered_accepted += verify_subtree_consistency(start, end, n, flip(sub, 7), root, proof) ? 1 : 0;
        tampered_accepted += verify_subtree_consistency(start, end, n, sub, flip(root, 7), proof) ? 1 : 0;

        // Inclusion in the subtree: the RFC audit path within [start, end), generated from
        // the stored nodes of the big tree (a subtree's perfect nodes are the big tree's).
        for (std::size_t i = start; i < end; ++i) {
          Probe probe;
          const NodeSource inner = source(tree, n, probe);
          const NodeSource shifted = [&inner, start](unsigned level, std::uint64_t index) {
            return inner(level, index + (start >> level));
          };
          const auto path = inclusion_proof(i - start, end - start, shifted);
          REQUIRE(path == ref_path(i - start, d.subspan(start, end - start)));
          CHECK(probe.improper == 0);
          REQUIRE(verify_subtree_inclusion(i, start, end, d[i], path, sub));
          tampered_accepted += verify_subtree_inclusion(i, start, end, d[i], path, root) && sub != root ? 1 : 0;
          tampered_accepted += verify_subtree_inclusion(i, start, end, flip(d[i], 3), path, sub) ? 1 : 0;
          if (end + 1 <= n && valid_subtree(start, end + 1) && path_shape(i - start, end - start) != path_shape(i - start, end + 1 - start))
            tampered_accepted += verify_subtree_inclusion(i, start, end + 1, d[i], path, sub) ? 1 : 0;
        }
        CHECK_FALSE(verify_subtree_inclusion(end, start, end, d[start], {}, sub));
        if (start > 0) CHECK_FALSE(verify_subtree_inclusion(start - 1, start, end, d[start - 1], {}, sub));
      }
    }
  }
  CHECK(checked > 300);
  CHECK(tampered_accepted == 0);

  // The draft's worked examples (tree of 14): [4, 8) and [8, 13).
  const auto d = std::span<const Hash>(leaves).first(14);
  const Hash root14 = root_of(d);
  const auto mth = [&](std::size_t b, std::size_t e) { return ref_mth(d.subspan(b, e - b)); };
  CHECK(verify_subtree_consistency(4, 8, 14, mth(4, 8), root14, std::vector<Hash>{mth(0, 4), mth(8, 14)}));
  CHECK(verify_subtree_consistency(8, 13, 14, mth(8, 13), root14,
                                   std::vector<Hash>{mth(12, 13), mth(13, 14), mth(8, 12), mth(0, 8)}));
  CHECK_FALSE(verify_subtree_consistency(8, 13, 14, mth(8, 13), root14,
                                         std::vector<Hash>{mth(13, 14), mth(12, 13), mth(8, 12), mth(0, 8)}));

  // Empty subtrees: nothing to prove, but the subtree hash must be the empty tree's.
  CHECK(verify_subtree_consistency(3, 3, 5, empty_root(), root14, {}));
  CHECK_FALSE(verify_subtree_consistency(3, 3, 5, mth(0, 1), root14, {}));
  CHECK_FALSE(verify_subtree_consistency(3, 3, 5, empty_root(), root14, std::vector<Hash>{empty_root()}));
  CHECK_FALSE(verify_subtree_consistency(6, 6, 5, empty_root(), root14, {}));
  // Invalid intervals, including one whose BIT_CEIL would overflow 64 bits.
  const std::uint64_t huge = (std::uint64_t{1} << 63) + 2;
  CHECK_FALSE(verify_subtree_inclusion(1, 1, huge, d[1], {}, d[1]));
  CHECK_FALSE(verify_subtree_consistency(1, huge, huge, d[1], d[1], {}));
  CHECK_FALSE(verify_subtree_inclusion(0, 2, 1, d[0], {}, d[0]));
  CHECK_FALSE(verify_subtree_consistency(2, 1, 5, d[0], root14, {}));
}

TEST_CASE("Merkle: proofs in a tree of 2^40 and of 2^64 - 1 leaves cost O(log n) node reads") {
  // All leaves equal, so every perfect subtree at a level has the same hash and a consistent
  // NodeSource needs no storage.
  std::vector<Hash> level_hash{leaf_hash("same")};
  for (int l = 1; l < 64; ++l) level_hash.push_back(node_hash(level_hash.back(), level_hash.back()));
  std::uint64_t calls = 0;
  const NodeSource nodes = [&](unsigned level, std::uint64_t) {
    ++calls;
    return level_hash.at(level);
  };
  for (const std::uint64_t n : {(std::uint64_t{1} << 40) + 12345, ~std::uint64_t{0}}) {
    CAPTURE(n);
    const Hash root = range_hash(0, n, nodes);
    for (const std::uint64_t i : {std::uint64_t{0}, n / 3, n - 2, n - 1}) {
      calls = 0;
      const auto proof = inclusion_proof(i, n, nodes);
      CHECK(calls <= 2 * 64);
      CHECK(verify_inclusion(i, n, level_hash[0], proof, root));
      CHECK_FALSE(verify_inclusion(i, n, leaf_hash("other"), proof, root));
    }
    for (const std::uint64_t m : {std::uint64_t{1}, n / 2 + 7, n - 1}) {
      calls = 0;
      const auto proof = consistency_proof(m, n, nodes);
      CHECK(calls <= 2 * 64 + 1);
      CHECK(verify_consistency(m, n, range_hash(0, m, nodes), root, proof));
    }
  }
}

TEST_CASE("Merkle: transparency-dev vectors: the verifiers accept exactly the wantErr=false files") {
  auto data = gw::test::shared_data_dir();
  if (!data) {
    MESSAGE("skipped: shared data (merkle-vectors) not found next to the checkout");
    return;
  }
  const auto dir = *data / "merkle-vectors";
  if (!std::filesystem::exists(dir)) {
    MESSAGE("skipped: " << dir.string() << " not found");
    return;
  }

  const auto u64 = [](const fhir::Json* j) -> std::optional<std::uint64_t> {
    if (j == nullptr || !j->is_number() || j->text().empty() || j->text().size() > 20) return std::nullopt;
    std::uint64_t v = 0;
    for (char c : j->text()) {
      if (c < '0' || c > '9') return std::nullopt;
      const std::uint64_t digit = static_cast<std::uint64_t>(c - '0');
      if (v > (~std::uint64_t{0} - digit) / 10) return std::nullopt;
      v = v * 10 + digit;
    }
    return v;
  };
  // A field that does not decode to 32 bytes cannot reach the verifier: counted as rejected.
  struct Decoded {
    bool ok = true;
    Hash hash(const fhir::Json& doc, std::string_view key) {
      const auto h = from_base64(doc.string_at(key));
      if (!h) ok = false;
      return h.value_or(Hash{});
    }
    std::vector<Hash> proof(const fhir::Json& doc) {
      std::vector<Hash> out;
      const fhir::Json* p = doc.find("proof");
      if (p == nullptr || p->is_null()) return out;
      if (!p->is_array()) {
        ok = false;
        return out;
      }
      for (const auto& item : p->items()) {
        const auto h = from_base64(item.is_string() ? std::string_view(item.text()) : std::string_view());
        if (!h) ok = false;
        out.push_back(h.value_or(Hash{}));
      }
      return out;
    }
  };

  // Roots of the consistency vectors are passed as raw bytes (any length): four positive
  // vectors give a root as the 12-byte text "don't care 1/2" where RFC 9162 only compares
  // roots as values (equal sizes, empty subtree), and the byte-string overloads accept them.
  const auto raw = [](std::string_view b64) -> std::optional<std::string> {
    static constexpr std::string_view kAlphabet =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    if (b64.size() % 4 != 0) return std::nullopt;
    std::string out;
    std::uint32_t acc = 0;
    int bits = 0;
    for (std::size_t i = 0; i < b64.size(); ++i) {
      if (b64[i] == '=') {
        if (i + 2 < b64.size()) return std::nullopt;
        break;
      }
      const auto v = kAlphabet.find(b64[i]);
      if (v == std::string_view::npos) return std::nullopt;
      acc = (acc << 6) | static_cast<std::uint32_t>(v);
      bits += 6;
      if (bits >= 8) {
        bits -= 8;
        out.push_back(static_cast<char>((acc >> bits) & 0xFF));
      }
    }
    return out;
  };

  std::map<std::string, int> per_folder;
  std::set<std::string> divergences;
  int processed = 0;
  int accepted = 0;
  for (const std::string_view folder_name : {"inclusion", "consistency", "subtreeinclusion", "subtreeconsistency"}) {
    const std::string folder(folder_name);
    for (const auto& entry : std::filesystem::recursive_directory_iterator(dir / folder)) {
      if (!entry.is_regular_file() || entry.path().extension() != ".json") continue;
      const std::string rel = std::filesystem::relative(entry.path(), dir).generic_string();
      CAPTURE(rel);
      auto doc = fhir::parse_json(gw::test::read_file(entry.path()));
      REQUIRE(doc.ok());
      const fhir::Json* want_err = doc->find("wantErr");
      REQUIRE((want_err != nullptr && want_err->is_bool()));

      Decoded dec;
      bool verdict = false;
      const auto proof = dec.proof(*doc);
      if (folder == "inclusion") {
        const auto index = u64(doc->find("leafIdx"));
        const auto size = u64(doc->find("treeSize"));
        const Hash leaf = dec.hash(*doc, "leafHash");
        const Hash root = dec.hash(*doc, "root");
        verdict = dec.ok && index && size && verify_inclusion(*index, *size, leaf, proof, root);
      } else if (folder == "consistency") {
        const auto size1 = u64(doc->find("size1"));
        const auto size2 = u64(doc->find("size2"));
        const auto root1 = raw(doc->string_at("root1"));
        const auto root2 = raw(doc->string_at("root2"));
        verdict = dec.ok && size1 && size2 && root1 && root2 &&
                  verify_consistency(*size1, *size2, std::string_view(*root1), std::string_view(*root2), proof);
      } else if (folder == "subtreeinclusion") {
        const auto index = u64(doc->find("leafIdx"));
        const auto start = u64(doc->find("start"));
        const auto end = u64(doc->find("end"));
        const Hash leaf = dec.hash(*doc, "leafHash");
        const Hash root = dec.hash(*doc, "root");
        verdict = dec.ok && index && start && end && verify_subtree_inclusion(*index, *start, *end, leaf, proof, root);
      } else {
        const auto start = u64(doc->find("start"));
        const auto end = u64(doc->find("end"));
        const auto size = u64(doc->find("size"));
        const auto root1 = raw(doc->string_at("root1"));
        const auto root2 = raw(doc->string_at("root2"));
        verdict = dec.ok && start && end && size && root1 && root2 &&
                  verify_subtree_consistency(*start, *end, *size, std::string_view(*root1), std::string_view(*root2), proof);
      }

      ++processed;
      ++per_folder[folder];
      accepted += verdict ? 1 : 0;
      const bool want_accept = !want_err->as_bool();
      if (verdict != want_accept) divergences.insert(rel);
      CHECK(verdict == want_accept);
    }
  }
  REQUIRE(processed > 500);
  CHECK(per_folder["inclusion"] == 98);
  CHECK(per_folder["consistency"] == 98);
  CHECK(per_folder["subtreeinclusion"] == 204);
  CHECK(per_folder["subtreeconsistency"] == 118);
  CHECK(divergences.empty());
  CHECK(accepted > 30);
  MESSAGE("merkle vectors: " << processed << " files, " << accepted << " accepted, " << divergences.size()
                             << " disagreements");
}

TEST_CASE("CompactRange: roots equal root_of for sizes 0..300 and completed reports exactly the perfect subtrees") {
  constexpr std::size_t kN = 300;
  const MemTree tree(make_leaves(kN));
  const auto& leaves = tree.leaves();
  CompactRange range;
  CHECK(range.size() == 0);
  CHECK(range.root() == empty_root());
  std::map<std::pair<unsigned, std::uint64_t>, Hash> reported;
  int duplicates = 0;
  int order_errors = 0;
  for (std::size_t n = 0; n < kN; ++n) {
    std::vector<CompactRange::Node> this_append;
    range.append(leaves[n], [&](const CompactRange::Node& node) { this_append.push_back(node); });
    // Bottom-up: the leaf first, then each parent it completes, one level at a time.
    REQUIRE(!this_append.empty());
    if (this_append[0].level != 0 || this_append[0].index != n) ++order_errors;
    for (std::size_t j = 1; j < this_append.size(); ++j)
      if (this_append[j].level != this_append[j - 1].level + 1 || this_append[j].index != this_append[j - 1].index / 2)
        ++order_errors;
    // Appending leaf n completes one node per trailing one bit of n.
    CHECK(this_append.size() == 1 + static_cast<std::size_t>(std::countr_one(n)));
    for (const auto& node : this_append)
      if (!reported.emplace(std::make_pair(node.level, node.index), node.hash).second) ++duplicates;
    CHECK(range.size() == n + 1);
    CHECK(range.root() == root_of(std::span<const Hash>(leaves).first(n + 1)));
  }
  CHECK(duplicates == 0);
  CHECK(order_errors == 0);
  // Exactly the perfect subtrees of the final tree, with their hashes.
  std::size_t perfect = 0;
  int wrong_hash = 0;
  for (unsigned level = 0; level < tree.levels.size(); ++level) {
    for (std::uint64_t index = 0; ((index + 1) << level) <= kN; ++index) {
      ++perfect;
      const auto it = reported.find({level, index});
      if (it == reported.end() || it->second != tree.levels[level][index]) ++wrong_hash;
    }
  }
  CHECK(wrong_hash == 0);
  CHECK(reported.size() == perfect);

  CompactRange no_callback;
  no_callback.append(leaves[0], {});
  CHECK(no_callback.root() == leaves[0]);
}

TEST_CASE("CompactRange: for_size rebuilds the frontier from stored nodes and appending continues") {
  constexpr std::size_t kN = 300;
  const MemTree tree(make_leaves(kN));
  const auto& leaves = tree.leaves();
  int mismatches = 0;
  std::uint64_t improper = 0;
  for (std::size_t n = 0; n <= kN; ++n) {
    Probe probe;
    CompactRange range = CompactRange::for_size(n, source(tree, n, probe));
    improper += probe.improper;
    if (probe.calls != static_cast<std::uint64_t>(std::popcount(n))) ++mismatches;
    if (range.size() != n || range.root() != root_of(std::span<const Hash>(leaves).first(n))) ++mismatches;
    // Continue to a later size and compare with the tree built in one go.
    const std::size_t target = std::min(kN, n + 37);
    for (std::size_t i = n; i < target; ++i)
      range.append(leaves[i], [&](const CompactRange::Node& node) {
        if (tree.levels[node.level][node.index] != node.hash) ++mismatches;
      });
    if (range.root() != root_of(std::span<const Hash>(leaves).first(target))) ++mismatches;
  }
  CHECK(mismatches == 0);
  CHECK(improper == 0);
}

TEST_CASE("Merkle: roots given as byte strings are compared as values only where RFC 9162 never hashes them") {
  using std::string_view;
  const std::vector<Hash> none;
  CHECK(verify_consistency(1, 1, string_view("don't care"), string_view("don't care"), none));
  CHECK_FALSE(verify_consistency(1, 1, string_view("don't care"), string_view("don't carE"), none));
  CHECK_FALSE(verify_consistency(0, 0, string_view("x"), string_view("x"), none));
  CHECK_FALSE(verify_consistency(1, 2, string_view("short"), string_view("short"), std::vector<Hash>{empty_root()}));
  const Hash e = empty_root();
  const string_view empty_bytes(reinterpret_cast<const char*>(e.data()), e.size());
  CHECK(verify_subtree_consistency(1, 1, 1, empty_bytes, string_view("anything"), none));
  CHECK_FALSE(verify_subtree_consistency(1, 1, 1, string_view("short"), string_view("anything"), none));
  CHECK(verify_subtree_consistency(0, 1, 1, string_view("same"), string_view("same"), none));
  CHECK_FALSE(verify_subtree_consistency(0, 1, 2, string_view("same"), string_view("same"), none));
  // 32-byte roots take the full algorithm.
  const Hash a = leaf_hash("a");
  const string_view a_bytes(reinterpret_cast<const char*>(a.data()), a.size());
  CHECK(verify_consistency(1, 1, a_bytes, a_bytes, none));
  CHECK_FALSE(verify_consistency(1, 2, a_bytes, a_bytes, none));
}
