// SPDX-License-Identifier: Apache-2.0
// The offline audit verifier (see verify.h): the checks on one row, and the sequential checks
// over the chain, the tree and the checkpoints (verify_database.cpp reads audit.db).
//
// Where a problem is pinned (the "first bad index"), and why:
// - A record whose bytes do not hash to its stored leaf, or do not decode, was changed at its
//   own index.
// - A record whose own `seq` is not its position was moved: records before it were deleted
//   (seq > position) or inserted (seq < position); two records holding each other's positions
//   were swapped.
// - A chain break (record i names a predecessor hash other than record i-1's leaf hash) is
//   explained by whichever of i-1 and i is already known to be changed or moved. When both
//   are intact on their own (each hashes to its stored leaf), record i still carries the leaf
//   hash record i-1 had when i was written, so i-1 is what was replaced, its leaf and the nodes
//   above recomputed to match: "forged" at i-1. When record i names record i-2 instead, i-1
//   was inserted between them.
// - A checkpoint whose root differs is explained by a changed record below it and above the
//   largest checkpoint that verified; when there is none, the attacker rewrote the hashes
//   consistently, and the first record the verified checkpoints do not vouch for is reported.
// - A checkpoint larger than the tree: the records from the end of the data onwards were
//   removed ("truncated" when audit.db's own checkpoint table says so, "rolled-back" when only
//   a checkpoint kept outside it does: an older copy was restored).
#include "gateway/audit/verify.h"

#include <algorithm>
#include <array>
#include <charconv>
#include <cstring>
#include <random>
#include <thread>
#include <utility>

#include "gateway/audit/record.h"

namespace gw::audit {

using merkle::Hash;

namespace {

constexpr unsigned kMaxThreads = 64;

std::string num(std::uint64_t n) { return std::to_string(n); }

std::string records_text(std::uint64_t first, std::uint64_t last) {
  if (first == last) return "record " + num(first);
  std::string s = "records ";
  s.append(num(first)).append(" to ").append(num(last));
  return s;
}

std::string checkpoint_text(const Checkpoint& c) {
  std::string s = "the checkpoint of ";
  s.append(num(c.size)).append(" records signed ").append(format_time_ms(c.time_ms));
  return s;
}

// The `subtypes` column as the writer fills it (log_writer.cpp): " a b c ".
std::string subtype_column(const Record& r) {
  std::string out = " ";
  for (const auto& s : subtypes(r)) out.append(s).append(" ");
  return out;
}

// Process-wide random key for patient digests: 128 bits from the OS.
const std::string& digest_key() {
  static const std::string key = [] {
    std::random_device rd;
    std::string k(16, '\0');
    for (std::size_t i = 0; i < k.size(); i += 4) {
      const std::uint32_t v = rd();
      std::memcpy(&k[i], &v, 4);
    }
    return k;
  }();
  return key;
}

std::uint64_t one_patient_digest(std::string_view nhs) {
  std::string data = digest_key();
  data.append(nhs);
  const Hash h = merkle::leaf_hash(data);
  std::uint64_t v = 0;
  std::memcpy(&v, h.data(), sizeof v);
  return v;
}

// Reads encode()'s output in its common form, about ten times faster than decode() (which
// parses into a JSON tree and re-encodes to prove the bytes canonical). It accepts only what
// encode() writes for records whose strings are printable ASCII without '"' or '\\' (written
// verbatim by the JSON writer) and whose integers are in std::to_string form, so for every
// input it accepts, encode() of the result gives back the same bytes and decode() returns the
// same record. Anything else (escapes, non-ASCII text, an unknown record version) returns empty
// and the caller falls back to decode().
class CanonicalReader {
 public:
  explicit CanonicalReader(std::string_view s) : s_(s) {}

  std::optional<Record> read() {
    if (s_.size() > kMaxRecordBytes) return std::nullopt;
    Record r;
    std::int64_t version = 0, seq = 0, status = 0;
    Detail& d = r.detail;
    const bool ok =
        lit("{\"v\":") && integer(version) && version >= 1 && version <= kRecordVersion && lit(",\"seq\":") && integer(seq) && seq >= 0 &&
        lit(",\"prev\":") && str(r.prev) && lit(",\"time\":") && integer(r.time_ms) && lit(",\"kind\":") &&
        str(r.kind) && lit(",\"action\":") && str(r.action) && lit(",\"method\":") && str(r.method) &&
        lit(",\"target\":") && str(r.target) && lit(",\"route\":") && str(r.route) && lit(",\"status\":") &&
        integer(status) && status >= 0 && status <= 999 && lit(",\"outcome\":") && str(r.outcome_text) &&
        lit(",\"agentKind\":") && str(r.agent_kind) && lit(",\"user\":") && str(r.user) && lit(",\"role\":") &&
        str(r.role) && lit(",\"org\":") && str(r.organisation) && lit(",\"client\":") && str(r.client_id) &&
        lit(",\"tokenId\":") && str(r.token_id) && lit(",\"purpose\":") && str(r.purpose) &&
        lit(",\"address\":") && str(r.address) && lit(",\"clientCert\":") && str(r.client_certificate) &&
        lit(",\"requestId\":") && str(r.request_id) && lit(",\"correlationId\":") && str(r.correlation_id) &&
        lit(",\"source\":") && str(r.source) && lit(",\"patients\":") && list(d.patients) &&
        lit(",\"returned\":") && list(d.returned) && lit(",\"withheld\":") && list(d.withheld) &&
        lit(",\"basis\":") && str(d.basis) && lit(",\"breakGlass\":") && str(d.break_glass_reason) &&
        lit(",\"breakGlassText\":") && str(d.break_glass_justification) && lit(",\"failedSources\":") &&
        list(d.failed_sources) && lit(",\"operation\":") && str(d.operation) && lit(",\"note\":") && str(d.note) &&
        (version < 2 || (lit(",\"roleName\":") && str(r.role_name))) && lit("}") && at_ == s_.size();
    if (!ok) return std::nullopt;
    r.version = version;
    r.seq = static_cast<std::uint64_t>(seq);
    r.status = static_cast<int>(status);
    return r;
  }

 private:
  static constexpr std::size_t kMaxRecordBytes = 256 * 1024;  // as decode()
  static constexpr std::size_t kMaxListItems = 4096;          // as decode()

  bool lit(std::string_view text) {
    if (s_.substr(at_, text.size()) != text) return false;
    at_ += text.size();
    return true;
  }
  bool str(std::string& out) {
    if (at_ >= s_.size() || s_[at_] != '"') return false;
    const std::size_t begin = ++at_;
    for (; at_ < s_.size(); ++at_) {
      const auto c = static_cast<unsigned char>(s_[at_]);
      if (c == '"') break;
      if (c < 0x20 || c > 0x7E || c == '\\') return false;
    }
    if (at_ >= s_.size()) return false;
    out.assign(s_.data() + begin, at_ - begin);
    ++at_;
    return true;
  }
  // -?(0|[1-9][0-9]*) within int64: exactly what std::to_string writes ("-0" never).
  bool integer(std::int64_t& out) {
    const std::size_t begin = at_;
    if (at_ < s_.size() && s_[at_] == '-') ++at_;
    const std::size_t digits = at_;
    while (at_ < s_.size() && s_[at_] >= '0' && s_[at_] <= '9') ++at_;
    const std::size_t n = at_ - digits;
    if (n == 0 || n > 19 || (s_[digits] == '0' && (n > 1 || digits > begin))) return false;
    auto [p, ec] = std::from_chars(s_.data() + begin, s_.data() + at_, out);
    return ec == std::errc() && p == s_.data() + at_;
  }
  bool list(std::vector<std::string>& out) {
    if (!lit("[")) return false;
    if (lit("]")) return true;
    for (;;) {
      if (out.size() == kMaxListItems) return false;
      out.emplace_back();
      if (!str(out.back())) return false;
      if (lit("]")) return true;
      if (!lit(",")) return false;
    }
  }

  std::string_view s_;
  std::size_t at_ = 0;
};

// 64 lowercase hex digits, as merkle::to_hex writes a hash; anything else is no hash.
std::optional<Hash> lower_hex_hash(std::string_view text) {
  Hash h{};
  if (text.size() != 2 * h.size()) return std::nullopt;
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  for (std::size_t i = 0; i < h.size(); ++i) {
    const int hi = nibble(text[2 * i]), lo = nibble(text[2 * i + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    h[i] = static_cast<std::uint8_t>(hi << 4 | lo);
  }
  return h;
}

bool same_patients(std::vector<std::string> a, std::vector<std::string> b) {
  std::sort(a.begin(), a.end());
  a.erase(std::unique(a.begin(), a.end()), a.end());
  std::sort(b.begin(), b.end());
  b.erase(std::unique(b.begin(), b.end()), b.end());
  return a == b;
}

// Runs fn(i) for i in [0, n) on `threads` threads (striped), the caller's thread included.
template <class Fn>
void parallel_for(std::size_t n, unsigned threads, Fn fn) {
  threads = std::clamp(threads, 1u, kMaxThreads);
  if (threads == 1 || n < 2) {
    for (std::size_t i = 0; i < n; ++i) fn(i);
    return;
  }
  std::vector<std::thread> pool;
  for (unsigned t = 1; t < threads; ++t)
    pool.emplace_back([&fn, n, t, threads] {
      for (std::size_t i = t; i < n; i += threads) fn(i);
    });
  for (std::size_t i = 0; i < n; i += threads) fn(i);
  for (auto& th : pool) th.join();
}

// How the agent and time index rows naming `row` differ from those the writer's index merge
// (log.cpp, merge_indexes) gives a record with this agent and time: exactly one row each
// ((seq >> 16, agent), none for an empty agent; time_ms) once indexed_below has passed it,
// none before. "" when they agree.
std::string index_mismatch(const StoredRow& row, const std::string& agent, std::int64_t time_ms) {
  std::string out;
  auto says = [&out](const char* what) {
    if (!out.empty()) out += ", ";
    out += what;
  };
  const bool wants_agent = row.indexed && !agent.empty();
  if (row.agent_index.empty()) {
    if (wants_agent) says("agent index: no row");
  } else if (!wants_agent) {
    says(row.indexed ? "agent index: a row for a record without a user" : "agent index: a row beyond indexed_below");
  } else if (row.agent_index.size() > 1) {
    says("agent index: extra rows");
  } else if (row.agent_index[0] != std::pair<std::int64_t, std::string>(row.seq >> 16, agent)) {
    says("agent index: wrong user");
  }
  if (row.time_index.empty()) {
    if (row.indexed) says("time index: no row");
  } else if (!row.indexed) {
    says("time index: a row beyond indexed_below");
  } else if (row.time_index.size() > 1) {
    says("time index: extra rows");
  } else if (row.time_index[0] != time_ms) {
    says("time index: wrong time");
  }
  return out;
}

// The route an IG officer reviews an alert on (gateway/http/audit_routes.cpp), and the note
// its record carries when the review was made: "alert 12 reviewed: referred - note".
constexpr std::string_view kReviewRoute = "/audit/alerts/{id}/review";

std::optional<AlertReview> review_of(const Record& r) {
  if (r.route != kReviewRoute || r.status < 200 || r.status > 299) return std::nullopt;
  std::string_view note = r.detail.note;
  if (note.substr(0, 6) != "alert ") return std::nullopt;
  note.remove_prefix(6);
  AlertReview out;
  auto [p, ec] = std::from_chars(note.data(), note.data() + note.size(), out.alert);
  if (ec != std::errc() || out.alert < 1) return std::nullopt;
  note.remove_prefix(static_cast<std::size_t>(p - note.data()));
  if (note.substr(0, 11) != " reviewed: ") return std::nullopt;
  out.review = std::string(note.substr(11));
  out.reviewer = r.user;
  return out;
}

// The route IG officers flag and unflag a record on, and the notes its records carry when
// the change was made.
constexpr std::string_view kFlagRoute = "/audit/flagged-patients/{nhs}";
constexpr std::string_view kFlaggedNote = "record flagged for access alerts: ";
constexpr std::string_view kUnflaggedNote = "record unflagged: ";

std::optional<FlagChange> flag_of(const Record& r) {
  if (r.route != kFlagRoute || r.status < 200 || r.status > 299 || r.detail.patients.size() != 1) return std::nullopt;
  const std::string& note = r.detail.note;
  FlagChange out;
  out.nhs_number = r.detail.patients[0];
  out.by = r.user;
  if (r.method == "PUT" && note.rfind(kFlaggedNote, 0) == 0) {
    out.flagged = true;
    out.reason = note.substr(kFlaggedNote.size());
    return out;
  }
  if (r.method == "DELETE" && note.rfind(kUnflaggedNote, 0) == 0) return out;
  return std::nullopt;
}

std::string quoted(const std::string& s) { return "\"" + s + "\""; }

}  // namespace

std::uint64_t patient_digest(const std::vector<std::string>& nhs_numbers) {
  std::vector<std::string> set = nhs_numbers;
  std::sort(set.begin(), set.end());
  set.erase(std::unique(set.begin(), set.end()), set.end());
  std::uint64_t d = 0;
  for (const auto& n : set) d ^= one_patient_digest(n);
  return d;
}

std::uint64_t patient_digest(std::string_view nhs_number) { return one_patient_digest(nhs_number); }

RowCheck check_row(const StoredRow& row) {
  RowCheck c;
  if (!row.record) {
    // Retention emptied the agent column with the content; the time column stays.
    c.pruned = true;
    c.column_mismatch = index_mismatch(row, row.agent, row.time_ms);
    return c;
  }
  const std::string& bytes = *row.record;
  c.leaf = merkle::leaf_hash(bytes);
  std::optional<Record> rec = CanonicalReader(bytes).read();
  if (!rec) {
    auto decoded = decode(bytes);
    if (!decoded) {
      c.error = decoded.issue().diagnostics;
      return c;
    }
    rec.emplace(std::move(*decoded));
  }
  c.decoded = true;
  c.seq = rec->seq;
  if (rec->prev.empty()) c.prev_empty = true;
  else c.prev = lower_hex_hash(rec->prev);

  std::string mismatch;
  auto differs = [&mismatch](const char* column) {
    if (!mismatch.empty()) mismatch += ", ";
    mismatch += column;
  };
  if (row.time_ms != rec->time_ms) differs("time");
  if (row.agent != rec->user) differs("agent");
  if (row.outcome != outcome_code(rec->status)) differs("outcome");
  if (row.subtypes != subtype_column(*rec)) differs("subtype");
  const bool patients_match = row.patients_digest ? *row.patients_digest == patient_digest(rec->detail.patients)
                                                  : same_patients(row.patients, rec->detail.patients);
  if (!patients_match) differs("patient index");
  if (std::string index = index_mismatch(row, rec->user, rec->time_ms); !index.empty()) {
    if (!mismatch.empty()) mismatch += ", ";
    mismatch += index;
  }
  c.column_mismatch = std::move(mismatch);
  if (rec->action == "retention-prune") c.prunes = prune_range(rec->detail.note);
  c.review = review_of(*rec);
  c.flag = flag_of(*rec);
  return c;
}

// ---------------------------------------------------------------------------------------------
// LogVerifier.

LogVerifier::LogVerifier(const VerifyOptions& options, std::vector<Checkpoint> database_checkpoints,
                         StoredNodes nodes, std::optional<std::string> log_origin)
    : options_(options), nodes_(std::move(nodes)) {
  options_.checkpoints.clear();  // copied into cps_ below; keeps copies of a verifier cheap
  std::vector<Cp> all;
  for (auto& c : database_checkpoints) all.push_back(Cp{std::move(c), true, false});
  for (const auto& c : options.checkpoints) all.push_back(Cp{c, false, true});
  // One entry per distinct note (audit.db and the file normally hold the same ones).
  std::vector<std::pair<std::string, std::size_t>> keys;
  keys.reserve(all.size());
  for (std::size_t i = 0; i < all.size(); ++i) keys.emplace_back(serialise(all[i].c), i);
  std::sort(keys.begin(), keys.end());
  std::vector<Cp> distinct;
  for (std::size_t i = 0; i < keys.size(); ++i) {
    Cp& cp = all[keys[i].second];
    if (i > 0 && keys[i].first == keys[i - 1].first) {
      distinct.back().in_database |= cp.in_database;
      distinct.back().in_file |= cp.in_file;
      continue;
    }
    distinct.push_back(std::move(cp));
  }

  checkpoints_total_ = distinct.size();
  // Every checkpoint must be for this log. audit.db keeps the origin its log was created with
  // (every checkpoint signs it, so an edited one fails them all); an older database is named
  // by its oldest checkpoint, as the gateway adopts it (log_open.cpp).
  const bool origin_stored = log_origin.has_value();
  std::string origin = log_origin.value_or(std::string());
  if (!origin_stored) {
    const Cp* oldest = nullptr;
    for (const auto& cp : distinct)
      if (cp.in_database && (!oldest || cp.c.size < oldest->c.size ||
                             (cp.c.size == oldest->c.size && cp.c.time_ms < oldest->c.time_ms)))
        oldest = &cp;
    if (!oldest)
      for (const auto& cp : distinct)
        if (!oldest || cp.c.size < oldest->c.size ||
            (cp.c.size == oldest->c.size && cp.c.time_ms < oldest->c.time_ms))
          oldest = &cp;
    if (oldest) origin = oldest->c.origin;
  }

  if (options.key) {
    parallel_for(distinct.size(), options.threads,
                 [&](std::size_t i) { distinct[i].signature_ok = options.key->verify(distinct[i].c); });
  } else if (!distinct.empty()) {
    warnings_.push_back(Problem{std::nullopt, "signatures-unchecked",
                                "no checkpoint key was given, so nobody's signature vouches for the checkpoints: "
                                "anyone able to edit audit.db could have rewritten them too"});
  }
  // A torn last note is what a crash or a full disk during an append leaves (and what the
  // gateway cuts off at its next start): the complete notes before it still count.
  for (const auto& [file, bytes] : options.torn_checkpoint_files) {
    std::string text = "the checkpoint file " + file + " ends in an incomplete checkpoint note (" + num(bytes) +
                       " bytes): an append cut short by a crash or a full disk, or a copy cut short. It vouches for "
                       "nothing; the complete checkpoints before it were used";
    if (options.strict) note(std::nullopt, "checkpoint-file-torn", std::move(text), false);
    else warnings_.push_back(Problem{std::nullopt, "checkpoint-file-torn", std::move(text)});
  }
  for (auto& cp : distinct) {
    const char* where = cp.in_file ? "the checkpoint file" : "audit.db";
    if (cp.c.origin != origin) {
      std::string text = checkpoint_text(cp.c) + " in " + where + " is for another log (\"" + cp.c.origin +
                         "\"), not this one (\"" + origin + "\"";
      text += origin_stored ? ", as audit.db names it" : ", as audit.db's oldest checkpoint names it";
      text += !cp.in_database ? "); it was not used. Was the right checkpoint file given?"
                         : "); it was not used. A log keeps its origin whatever the configuration says later, so "
                           "audit.db's own checkpoints, or the origin it keeps, were edited";
      note(std::nullopt, "bad-checkpoint", std::move(text), false);
      continue;
    }
    if (options.key && !cp.signature_ok) {
      note(std::nullopt, "bad-signature",
           checkpoint_text(cp.c) + " in " + where +
               " is not signed by the given key: it was forged or altered, or was signed by another key. "
               "It was not used.",
           false);
      continue;
    }
    cps_.push_back(std::move(cp));
  }
  std::stable_sort(cps_.begin(), cps_.end(), [](const Cp& a, const Cp& b) { return a.c.size < b.c.size; });
  evaluate_checkpoints_at_size();
}

void LogVerifier::note(std::optional<std::uint64_t> index, std::string kind, std::string text, bool locates,
                       bool first_of_index) {
  if (index) {
    if (!min_index_ || *index < *min_index_) {
      min_index_ = index;
      min_locates_ = locates;
    } else if (*index == *min_index_ && locates) {
      min_locates_ = true;
    }
    if (locates) locating_.push_back(*index);
  }
  Problem p{index, std::move(kind), std::move(text)};
  // finish() sorts by index, keeping the order of equal ones: the front is ahead of its index.
  auto place = [this, first_of_index](Problem&& q) {
    if (first_of_index) problems_.insert(problems_.begin(), std::move(q));
    else problems_.push_back(std::move(q));
  };
  if (problems_.size() < std::max<std::size_t>(options_.max_problems, 1)) {
    place(std::move(p));
    return;
  }
  // Full: keep the lowest indexes listed (the first bad record must always be).
  ++unlisted_;
  auto highest = problems_.end();
  for (auto it = problems_.begin(); it != problems_.end(); ++it)
    if (it->index && (highest == problems_.end() || *it->index > *highest->index)) highest = it;
  if (index && highest != problems_.end() && (*highest->index > *index || (first_of_index && *highest->index == *index))) {
    problems_.erase(highest);
    place(std::move(p));
  }
}

void LogVerifier::add_problem(std::optional<std::uint64_t> index, std::string kind, std::string text) {
  const bool locates = kind == "changed" || kind == "inserted" || kind == "reordered" || kind == "forged";
  note(index, std::move(kind), std::move(text), locates);
}

void LogVerifier::evaluate_checkpoints_at_size() {
  while (next_cp_ < cps_.size() && cps_[next_cp_].c.size <= tree_.size()) {
    Cp& cp = cps_[next_cp_++];
    if (cp.c.size == tree_.size()) cp.root = tree_.root() == cp.c.root ? Cp::Root::match : Cp::Root::mismatch;
  }
}

void LogVerifier::check_index_state(std::optional<std::int64_t> indexed_below) {
  if (settled()) return;
  if (!indexed_below) {
    note(std::nullopt, "column-mismatch",
         "audit.db's audit_index_state has no indexed_below row, so nothing says which records the agent and time "
         "indexes hold: the row was deleted (the gateway's next start rebuilds both indexes from the records and "
         "writes an index-rebuild record saying so)",
         false);
    return;
  }
  // The searches read the records from indexed_below on from audit_record itself, the rest
  // from the indexes only: a value beyond the log leaves every record written after it out.
  if (*indexed_below < 0) {
    note(0, "column-mismatch",
         "audit_index_state says the agent and time indexes hold the records below " + std::to_string(*indexed_below) +
             ", but the log has " + num(next_) +
             ": it was edited, which hides records from agent and date searches and the export",
         false);
  } else if (static_cast<std::uint64_t>(*indexed_below) > next_) {
    // The records the indexes never held (all of a young log's: the writer indexes in batches)
    // are each reported as missing their rows; this edit is why, so it comes first.
    const std::uint64_t from = unindexed_tail_.value_or(next_);
    std::string text = "indexed_below in audit_index_state is " + std::to_string(*indexed_below) +
                       ", beyond the end of the log (" + num(next_) + " records): it was moved forward, so the agent " +
                       "and date searches and the export look for ";
    text += from < next_ ? records_text(from, next_ - 1) + " in the indexes, which do not hold them, and miss them"
                         : "the records written from now on in the indexes, and would miss them";
    note(from, "column-mismatch", std::move(text), false, true);
  }
}

void LogVerifier::check_alerts(const std::vector<StoredAlert>& alerts) {
  if (settled()) return;
  auto pruned = [this](std::int64_t seq) {
    for (const auto& run : pruned_runs_)
      if (seq >= 0 && static_cast<std::uint64_t>(seq) >= run.first && static_cast<std::uint64_t>(seq) <= run.second)
        return true;
    return false;
  };
  const std::string hides = ": the review queue was edited in audit.db";
  std::int64_t expected = 1;  // the gateway numbers alerts 1, 2, ... and never deletes one
  for (const auto& a : alerts) {
    const std::string alert = "alert " + std::to_string(a.id);
    if (a.id > expected)
      note(std::nullopt, "alert-mismatch",
           (a.id == expected + 1 ? "alert " + std::to_string(expected) + " is"
                                 : "alerts " + std::to_string(expected) + " to " + std::to_string(a.id - 1) + " are") +
               " missing from the review queue (audit_alert holds " + alert +
               "; the gateway never deletes an alert)" + hides + ", which hides accesses from the IG officers",
           false);
    expected = std::max(expected, a.id + 1);
    if (a.seq < 0 || static_cast<std::uint64_t>(a.seq) >= next_)
      note(std::nullopt, "alert-mismatch",
           alert + " was raised by record " + std::to_string(a.seq) + ", which audit.db does not hold: records were " +
               "deleted from the end of the log (the alerts they raised were left behind), or the review queue was " +
               "edited",
           false);
    auto it = reviews_.find(a.id);
    // Retention replaces a reviewed alert's detail and review note with one placeholder once
    // the record that raised it is pruned (Log::prune_before), in the prune's own commit. The
    // placeholder anywhere else was written into audit.db: it hides what the alert was about.
    const bool redacted = is_retention_redaction(a.detail);
    const bool note_redacted = is_retention_redaction(a.note);
    if (redacted || (note_redacted && it == reviews_.end())) {
      std::string why;
      if (!pruned(a.seq))
        why = "record " + std::to_string(a.seq) + ", which raised it, was not pruned";
      else if (a.status != "reviewed")
        why = "the alert is " + quoted(a.status) + ", and retention keeps an open alert's detail";
      else if (!redacted || a.note != a.detail)
        why = "retention replaces the detail and the review note together, with the same text";
      if (!why.empty())
        note(std::nullopt, "alert-mismatch",
             alert + "'s " + (redacted ? "detail" : "review note") + " says " +
                 quoted(redacted ? a.detail : a.note) + ", but " + why + hides + ", which hides what it was about",
             false);
    }
    if (a.status == "reviewed") {
      const std::string said = a.outcome + (a.note.empty() ? "" : " - " + a.note);
      // What the review's record says of a redacted review: its outcome, and perhaps a note
      // ("outcome - note"), which retention removed from the queue.
      const auto same_review = [&a, redacted, &said](const std::string& recorded) {
        if (!redacted) return recorded == said;
        return recorded == a.outcome || recorded.rfind(a.outcome + " - ", 0) == 0;
      };
      if (it == reviews_.end()) {
        // Its review came after the record that raised it: when retention removed that record's
        // content, it may have removed the review's too.
        if (!pruned(a.seq))
          note(std::nullopt, "alert-mismatch",
               alert + " is marked reviewed by " + quoted(a.reviewer) + " (" + quoted(said) +
                   "), but no audit record of that review exists: the review was written into audit.db directly "
                   "(the gateway commits a review and its record together; before December 2026 it "
                   "committed the review first, so in an older log a review whose record failed with 503 "
                   "also shows so)",
               false);
      } else if (it->second.second.reviewer != a.reviewer || !same_review(it->second.second.review)) {
        note(it->second.first, "alert-mismatch",
             alert + "'s review was changed after it was made: the review queue says " + quoted(a.reviewer) +
                 " decided " + quoted(said) + ", but record " + num(it->second.first) + ", the review itself, says " +
                 quoted(it->second.second.reviewer) + " decided " + quoted(it->second.second.review),
             false);
      }
    } else if (it != reviews_.end()) {
      note(it->second.first, "alert-mismatch",
           alert + " is " + quoted(a.status) + " in the review queue, but record " + num(it->second.first) +
               " says " + quoted(it->second.second.reviewer) + " reviewed it (" + quoted(it->second.second.review) +
               "): the review was undone in audit.db",
           false);
    }
    if (it != reviews_.end()) reviews_.erase(it);
  }
  for (const auto& [id, review] : reviews_)
    note(review.first, "alert-mismatch",
         "record " + num(review.first) + " says " + quoted(review.second.reviewer) + " reviewed alert " +
             std::to_string(id) + " (" + quoted(review.second.review) + "), but the review queue has no alert " +
             std::to_string(id) + hides,
         false);
  reviews_.clear();
}

void LogVerifier::check_flags(const std::vector<StoredFlag>& flags) {
  if (settled()) return;
  // The gateway commits a flag or unflag together with its record, and the reader sees one
  // snapshot: a table that disagrees with the records was edited, whenever it was read.
  const std::string together =
      " (the gateway commits a flag or unflag together with its record; before December 2026 it committed "
      "the change first, so in an older log a change whose record failed with 503 also shows so)";
  std::map<std::string, const StoredFlag*> table;
  for (const auto& f : flags) table[f.nhs_number] = &f;
  for (const auto& [nhs, change] : flag_changes_) {
    const std::uint64_t seq = change.first;
    const FlagChange& said = change.second;
    auto it = table.find(nhs);
    if (said.flagged && it == table.end()) {
      note(seq, "flag-mismatch",
           "record " + num(seq) + " says " + quoted(said.by) + " flagged NHS number " + nhs +
               " for access alerts, and no later record unflagged it, but audit_flagged_patient no longer holds it: "
               "the flag was removed in audit.db, so accesses to that record raise no alert" + together,
           false);
    } else if (said.flagged && (it->second->reason != said.reason || it->second->flagged_by != said.by)) {
      note(seq, "flag-mismatch",
           "audit_flagged_patient says NHS number " + nhs + " was flagged by " + quoted(it->second->flagged_by) +
               " (" + quoted(it->second->reason) + "), but record " + num(seq) + ", the flag itself, says " +
               quoted(said.by) + " (" + quoted(said.reason) + "): the flag was edited in audit.db" + together,
           false);
    } else if (!said.flagged && it != table.end()) {
      note(seq, "flag-mismatch",
           "record " + num(seq) + " says " + quoted(said.by) + " unflagged NHS number " + nhs +
               ", but audit_flagged_patient holds it again with no record of a new flag: it was edited in audit.db" + together,
           false);
    }
    if (it != table.end()) table.erase(it);
  }
  // The flag's own record may have been among those whose content retention removed.
  if (pruned_ > 0) return;
  for (const auto& [nhs, f] : table)
    note(std::nullopt, "flag-mismatch",
         "audit_flagged_patient flags NHS number " + nhs + " (by " + quoted(f->flagged_by) +
             "), but no audit record says anyone flagged it: it was written into audit.db directly" + together,
         false);
}

bool LogVerifier::settled() const {
  return options_.stop_at_first_bad && min_index_ && min_locates_ && next_ >= *min_index_ + 2;
}

void LogVerifier::add(std::uint64_t index, const StoredRow* row, const RowCheck* check,
                      const std::optional<Hash>& stored_leaf) {
  if (settled()) return;
  if (index < next_) {
    note(index, "reordered", "audit.db lists record " + num(index) + " twice or out of order", true);
    return;
  }
  if (!row && !stored_leaf) return;
  if (index > next_) {
    // Neither the records nor their leaf hashes are there: the tree cannot be recomputed past
    // this point, so checkpoints above it cannot be checked (the gap explains them).
    note(next_, "missing",
         records_text(next_, index - 1) + " are missing from audit.db, and so are their leaf hashes in the tree",
         true);
    tree_broken_ = true;
    prev_leaf_.reset();
    prev_prev_leaf_.reset();
    prev_self_ok_ = false;
    prev_shift_ = 0;
    prev_row_seq_.reset();
    next_ = index;
  }

  std::optional<Hash> leaf;  // the leaf this index contributes to the recomputed tree
  bool self_ok = true;       // the record at this index is intact on its own evidence
  std::int64_t shift = 0;
  std::optional<std::uint64_t> row_seq;
  if (!row) {
    // A leaf hash without its record: the record was deleted (retention never deletes rows).
    if (!trailing_missing_) {
      trailing_missing_ = index;
      note(index, "missing", "record " + num(index) + " was deleted from audit.db (its leaf hash is still in the tree)",
           false);
    }
    leaf = stored_leaf;
    self_ok = false;
  } else {
    // Said to be indexed (below indexed_below) without a time index row, which every indexed
    // record has: the start of such a run at the end of the log is where an indexed_below moved
    // forward began to hide records.
    if (row->indexed && row->time_index.empty()) {
      if (!unindexed_tail_) unindexed_tail_ = index;
    } else {
      unindexed_tail_.reset();
    }
    if (trailing_missing_ && *trailing_missing_ + 1 < index) {
      for (auto& p : problems_)
        if (p.index && *p.index == *trailing_missing_ && p.kind == "missing")
          p.text = records_text(*trailing_missing_, index - 1) +
                   " were deleted from audit.db (their leaf hashes are still in the tree)";
    }
    trailing_missing_.reset();
    last_row_ = index;
    ++records_;
    if (check->pruned) {
      ++pruned_;
      if (!pruned_runs_.empty() && pruned_runs_.back().second + 1 == index) pruned_runs_.back().second = index;
      else pruned_runs_.emplace_back(index, index);
      if (seen_content_)
        note(index, "changed",
             "the content of record " + num(index) +
                 " was removed, but retention only removes the oldest records, never one after a kept record",
             true);
      leaf = stored_leaf;
      if (!leaf) {
        note(index, "missing", "record " + num(index) + " has no content and no leaf hash", true);
        self_ok = false;
      }
      if (!check->column_mismatch.empty())
        note(index, "column-mismatch",
             "the search index rows of record " + num(index) + " (content removed by retention) disagree with its " +
                 "kept columns (" + check->column_mismatch + "): the index IG searches use was edited",
             false);
    } else {
      seen_content_ = true;
      leaf = check->leaf;
      std::string what;
      if (!check->decoded) what = "it is not a valid audit record (" + check->error + ")";
      if (!stored_leaf) {
        note(std::nullopt, "damaged-tree", "the leaf hash of record " + num(index) + " is missing from the tree", false);
        last_leaf_mismatch_ = index;
      } else if (*stored_leaf != check->leaf) {
        if (!what.empty()) what += "; ";
        what += "its bytes do not match the leaf hash stored for it";
        last_leaf_mismatch_ = index;
      }
      if (check->decoded && check->seq != index) {
        self_ok = false;
        row_seq = check->seq;
        shift = static_cast<std::int64_t>(check->seq - index);
        const bool swapped = prev_row_seq_ && *prev_row_seq_ == index && check->seq + 1 == index;
        if (swapped) {
          for (auto& p : problems_)
            if (p.index && *p.index == index - 1 && p.kind == "missing") {
              p.kind = "reordered";
              p.text = "records " + num(index - 1) + " and " + num(index) + " were swapped";
            }
          note(index, "reordered", "records " + num(index - 1) + " and " + num(index) + " were swapped", true);
        } else if (shift != prev_shift_) {
          std::string text = "position " + num(index) + " holds the record numbered " + num(check->seq) + ": ";
          text += shift > 0 ? "the record(s) before it were deleted and the rest renumbered"
                            : "record(s) were inserted before it, or it was moved";
          note(index, shift > 0 ? "missing" : "inserted", std::move(text), true);
        }
      } else if (!what.empty()) {
        note(index, "changed", "record " + num(index) + " was altered: " + what, true);
      }
      if (!what.empty()) self_ok = false;

      if (check->decoded) {
        bool linked = true;
        if (index == 0) linked = check->prev_empty;
        else if (prev_leaf_) linked = check->prev && *check->prev == *prev_leaf_;
        if (!linked) {
          if (index >= 2 && prev_prev_leaf_ && check->prev && *check->prev == *prev_prev_leaf_ && prev_self_ok_) {
            note(index - 1, "inserted",
                 "record " + num(index - 1) + " was inserted: record " + num(index) + " was chained directly to record " +
                     num(index - 2),
                 true);
          } else if (index == 0 && self_ok) {
            note(index, "forged", "record 0 names a predecessor: it was replaced and its hashes recomputed", true);
          } else if (index > 0 && self_ok && prev_self_ok_) {
            note(index - 1, "forged",
                 "record " + num(index - 1) + " is not the record that record " + num(index) +
                     " was chained to: it was replaced (or removed and another put in its place) and its hashes "
                     "recomputed to hide it",
                 true);
          }
          // Otherwise the break is explained by the change already reported at index or index-1.
        }
      }
      if (check->decoded && !check->column_mismatch.empty())
        note(index, "column-mismatch",
             "record " + num(index) + "'s search columns disagree with the record itself (" + check->column_mismatch +
                 "): the index IG searches use was edited, which can hide an access from a search",
             false);
      if (check->prunes && check->prunes->second < index) prune_claims_.push_back(*check->prunes);
      if (check->review) reviews_.try_emplace(check->review->alert, index, *check->review);
      if (check->flag) flag_changes_[check->flag->nhs_number] = {index, *check->flag};
    }
  }

  if (!tree_broken_) {
    if (!leaf) {
      tree_broken_ = true;
    } else {
      tree_.append(*leaf, [this](const merkle::CompactRange::Node& n) {
        if (n.level == 0 || !nodes_) return;
        const std::uint64_t first = n.index << n.level;
        // A node above a changed leaf differs because of that change (already reported).
        if (last_leaf_mismatch_ && *last_leaf_mismatch_ >= first) return;
        const std::uint64_t last = first + (std::uint64_t{1} << n.level) - 1;
        auto stored = nodes_(n.level, n.index);
        if (!stored || *stored != n.hash)
          note(std::nullopt, "damaged-tree",
               "the stored tree node over " + records_text(first, last) + " (level " + std::to_string(n.level) + ") " +
                   (stored ? "does not match" : "is missing") +
                   "; the records themselves are checked against their leaf hashes and the checkpoints",
               false);
      });
      evaluate_checkpoints_at_size();
    }
  }
  prev_prev_leaf_ = prev_leaf_;
  prev_leaf_ = leaf;
  prev_self_ok_ = self_ok;
  prev_shift_ = shift;
  prev_row_seq_ = row_seq;
  next_ = index + 1;
}

VerifyReport LogVerifier::finish() {
  VerifyReport rep;
  const bool partial = settled();
  rep.records = records_;
  rep.pruned = pruned_;
  rep.tree_size = next_;
  rep.signatures_checked = options_.key != nullptr;

  // Checkpoints beyond the data.
  const std::uint64_t data_end = trailing_missing_ ? *trailing_missing_ : next_;
  const Cp* beyond_db = nullptr;
  const Cp* beyond_file = nullptr;
  for (auto& cp : cps_) {
    if (cp.root != Cp::Root::unchecked) continue;
    if (cp.c.size <= next_ || partial) {
      cp.root = Cp::Root::unavailable;
      continue;
    }
    if (cp.in_database) beyond_db = &cp;
    else beyond_file = &cp;
  }
  if (beyond_db) {
    note(data_end, "truncated",
         "audit.db's own checkpoint table holds " + checkpoint_text(beyond_db->c) + ", but audit.db now holds only " +
             num(data_end) + " records: records " + num(data_end) + " onwards were deleted",
         true);
  } else if (beyond_file) {
    note(data_end, "rolled-back",
         checkpoint_text(beyond_file->c) + " (kept outside audit.db) covers more than the " + num(data_end) +
             " records audit.db holds: an older copy of audit.db was restored, or its newest records were deleted "
             "together with their checkpoints",
         true);
  }
  if (!partial && trailing_missing_ && *trailing_missing_ + 1 < next_) {
    for (auto& p : problems_)
      if (p.index && *p.index == *trailing_missing_ && p.kind == "missing") {
        p.kind = "truncated";
        p.text = records_text(*trailing_missing_, next_ - 1) +
                 " were deleted from the end of audit.db (their leaf hashes are still in the tree)";
      }
  }

  // Verified checkpoints, and mismatches nothing located explains.
  std::sort(locating_.begin(), locating_.end());
  std::uint64_t covered = 0;
  const Cp* covering = nullptr;
  for (const auto& cp : cps_) {
    if (cp.root == Cp::Root::match) {
      ++rep.checkpoints_verified;
      if (!covering || cp.c.size >= covered) {
        covered = cp.c.size;
        covering = &cp;
      }
      continue;
    }
    if (cp.root != Cp::Root::mismatch) continue;
    const bool fork = std::any_of(cps_.begin(), cps_.end(), [&cp](const Cp& other) {
      return other.root == Cp::Root::match && other.c.size == cp.c.size;
    });
    if (fork) {
      // The records match another checkpoint of the same size: this one describes a different
      // log history, signed with the same key.
      note(std::nullopt, "bad-checkpoint",
           checkpoint_text(cp.c) + " contradicts another valid checkpoint of the same size that audit.db matches: "
               "the signing key signed two different histories (key misuse, or a rewritten log re-signed)",
           false);
      continue;
    }
    std::uint64_t lo = 0;
    for (const auto& other : cps_)
      if (other.root == Cp::Root::match && other.c.size < cp.c.size) lo = std::max(lo, other.c.size);
    auto it = std::lower_bound(locating_.begin(), locating_.end(), lo);
    if (it != locating_.end() && *it < cp.c.size) continue;
    note(lo, "forged",
         "audit.db does not match " + checkpoint_text(cp.c) + ": at least one of " +
             records_text(lo, cp.c.size - 1) + " was altered after it was signed and its hashes rewritten to hide it",
         false);
    locating_.insert(std::lower_bound(locating_.begin(), locating_.end(), lo), lo);
  }
  rep.covered = covered;
  if (covering) rep.covering = covering->c;
  rep.checkpoints = checkpoints_total_;

  // A checkpoint file that was given but lacks audit.db's newest checkpoint cannot show a
  // tail deleted from audit.db together with its checkpoints: emptied, cut, an older copy, or
  // not this gateway's.
  if (options_.checkpoint_files_given) {
    const Cp* db_latest = nullptr;
    const Cp* file_latest = nullptr;
    std::uint64_t in_db = 0;
    for (const auto& cp : cps_) {  // sorted by size
      if (cp.in_database) {
        ++in_db;
        if (!db_latest || cp.c.size > db_latest->c.size ||
            (cp.c.size == db_latest->c.size && cp.c.time_ms > db_latest->c.time_ms))
          db_latest = &cp;
      }
      if (cp.in_file && (!file_latest || cp.c.size >= file_latest->c.size)) file_latest = &cp;
    }
    if (db_latest && !db_latest->in_file && (!file_latest || file_latest->c.size <= db_latest->c.size)) {
      std::string text = file_latest ? "the newest checkpoint in the checkpoint file(s) given is " +
                                           checkpoint_text(file_latest->c) + ", but audit.db holds " +
                                           checkpoint_text(db_latest->c)
                                     : "the checkpoint file(s) given hold no checkpoint, but audit.db holds " +
                                           num(in_db) + ", the newest " + checkpoint_text(db_latest->c);
      text += ": the file is behind audit.db (emptied, cut, replaced by an older copy, or not this gateway's), so it "
              "cannot reveal records deleted from the end of audit.db together with their checkpoints. Give the "
              "copy the gateway writes to, or one kept elsewhere";
      if (options_.strict) note(std::nullopt, "checkpoint-file-behind", std::move(text), false);
      else warnings_.push_back(Problem{std::nullopt, "checkpoint-file-behind", std::move(text)});
    }
  }

  if (!partial) {
    // Pruned content must be accounted for by retention-prune records.
    std::sort(prune_claims_.begin(), prune_claims_.end());
    for (const auto& [first, last] : pruned_runs_) {
      std::uint64_t at = first;
      for (const auto& [a, b] : prune_claims_)
        if (a <= at && b >= at) at = b + 1;
      if (at <= last)
        note(at, "unexplained-prune",
             "the content of " + records_text(at, last) + " was removed, but no retention-prune record says so",
             false);
    }
    // The tail no checkpoint speaks for (records under a mismatching one are reported above).
    std::uint64_t checked = 0;
    for (const auto& cp : cps_)
      if (cp.root == Cp::Root::match || cp.root == Cp::Root::mismatch) checked = std::max(checked, cp.c.size);
    if (next_ > checked) {
      std::string text = records_text(checked, next_ - 1) +
                         (checked > 0 ? " came after the last checkpoint; no signed checkpoint vouches for them yet"
                                      : " are not covered by any checkpoint");
      if (options_.strict) note(checked, "uncovered-tail", std::move(text), false);
      else warnings_.push_back(Problem{checked, "uncovered-tail", std::move(text)});
    }
  }

  std::stable_sort(problems_.begin(), problems_.end(), [](const Problem& a, const Problem& b) {
    if (a.index && b.index) return *a.index < *b.index;
    return a.index.has_value() && !b.index.has_value();
  });
  rep.first_bad_index = min_index_;
  rep.unlisted_problems = unlisted_;
  rep.problems = problems_;
  rep.warnings = warnings_;
  rep.ok = problems_.empty();
  return rep;
}

}  // namespace gw::audit
