// SPDX-License-Identifier: Apache-2.0
// audit-verify: offline check that audit.db is complete and unaltered (issue #6), for IG
// officers. Reads the database read-only together with the checkpoint file(s) kept outside
// it, and reports the first record that is not what the gateway wrote.
// Exit codes: 0 verified, 1 tampering or inconsistency found (or --strict's failures), 2 usage
// or I/O error (including an audit.db SQLite reports as damaged).
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <optional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "fhir/json.h"
#include "gateway/audit/checkpoint.h"
#include "gateway/audit/record.h"
#include "gateway/audit/verify.h"
#include "tools/cli/parse.h"

namespace {

constexpr int kExitVerified = 0;
constexpr int kExitTampered = 1;
constexpr int kExitUsage = 2;
constexpr std::uintmax_t kMaxCheckpointFileBytes = 1024ull * 1024 * 1024;
constexpr std::uint64_t kProgressEvery = 100'000;

int usage_error(const std::string& what) {
  std::fprintf(stderr, "audit-verify: %s\nRun with --help for usage.\n", what.c_str());
  return kExitUsage;
}

bool read_file(const std::string& path, std::string& out, std::string& error) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    error = "cannot open checkpoint file " + path;
    return false;
  }
  in.seekg(0, std::ios::end);
  const auto size = in.tellg();
  if (size < 0 || static_cast<std::uintmax_t>(size) > kMaxCheckpointFileBytes) {
    error = "checkpoint file " + path + " is larger than 1 GiB";
    return false;
  }
  in.seekg(0, std::ios::beg);
  out.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  return true;
}

std::string where(const gw::audit::Problem& p) {
  return p.index ? "record " + std::to_string(*p.index) : std::string("audit log");
}

// What --strict turns from a warning into a failure: records a running gateway has not yet
// checkpointed (the next checkpoint covers them), or a checkpoint file behind audit.db or cut
// short. Grounds for a failed check, not evidence that a record was altered.
bool strict_only(const std::string& kind) {
  return kind == "uncovered-tail" || kind == "checkpoint-file-behind" || kind == "checkpoint-file-torn";
}

// The first line of a failed report. TAMPERED only for a problem that shows an alteration,
// named by its record (the first bad one when that is such a problem); otherwise the failure is
// --strict's, said in its own words.
std::string failure_headline(const gw::audit::VerifyReport& r) {
  const gw::audit::Problem* first = nullptr;
  for (const auto& p : r.problems) {
    if (strict_only(p.kind)) continue;
    if (r.first_bad_index && p.index && *p.index == *r.first_bad_index) {
      first = &p;
      break;
    }
    if (!first) first = &p;
  }
  if (first)
    return "TAMPERED: " + (first->index ? "first bad record " + std::to_string(*first->index) + ": " : std::string()) +
           first->text;
  if (r.problems.empty()) return "NOT VERIFIED";
  bool only_uncovered = true;
  for (const auto& p : r.problems) only_uncovered = only_uncovered && p.kind == "uncovered-tail";
  if (only_uncovered)
    return "NOT YET COVERED by a checkpoint: " + r.problems.front().text +
           " (--strict counts this as a failure; on a running gateway the next checkpoint covers them)";
  return "NOT VERIFIED (--strict): " + r.problems.front().text;
}

void print_text(const gw::audit::VerifyReport& r) {
  using gw::audit::format_time_ms;
  if (r.ok) {
    std::string line = "OK: " + std::to_string(r.records) + " records";
    if (r.covering) {
      line += ", covered by the checkpoint at size " + std::to_string(r.covering->size) + " signed " +
              format_time_ms(r.covering->time_ms);
    }
    if (r.tree_size > r.covered)
      line += "; " + std::to_string(r.tree_size - r.covered) + " records after it are not yet covered";
    std::printf("%s\n", line.c_str());
    if (r.pruned > 0)
      std::printf("  %llu older records had their content removed by retention; their hashes still verify.\n",
                  static_cast<unsigned long long>(r.pruned));
  } else {
    std::printf("%s\n", failure_headline(r).c_str());
    std::printf("Problems found (%llu records examined):\n", static_cast<unsigned long long>(r.records));
    for (const auto& p : r.problems)
      std::printf("  %s [%s]: %s\n", where(p).c_str(), p.kind.c_str(), p.text.c_str());
    if (r.unlisted_problems > 0)
      std::printf("  ... and %llu more problems not listed\n", static_cast<unsigned long long>(r.unlisted_problems));
  }
  for (const auto& w : r.warnings) std::printf("Warning: %s\n", w.text.c_str());
  std::printf("Checkpoints: %llu examined, %llu verified%s.\n", static_cast<unsigned long long>(r.checkpoints),
              static_cast<unsigned long long>(r.checkpoints_verified),
              r.signatures_checked ? ", signatures checked" : ", signatures NOT checked (no --key)");
}

fhir::Json problem_json(const gw::audit::Problem& p) {
  fhir::Json o = fhir::Json::object();
  o.set("index", p.index ? fhir::Json::integer(static_cast<std::int64_t>(*p.index)) : fhir::Json::null());
  o.set("kind", fhir::Json::string(p.kind));
  o.set("text", fhir::Json::string(p.text));
  return o;
}

std::string report_json(const gw::audit::VerifyReport& r, const gw::audit::CheckpointVerifier* key) {
  auto n = [](std::uint64_t v) { return fhir::Json::integer(static_cast<std::int64_t>(v)); };
  fhir::Json o = fhir::Json::object();
  o.set("ok", fhir::Json::boolean(r.ok));
  o.set("records", n(r.records));
  o.set("pruned", n(r.pruned));
  o.set("treeSize", n(r.tree_size));
  o.set("covered", n(r.covered));
  if (r.covering) {
    fhir::Json c = fhir::Json::object();
    c.set("size", n(r.covering->size));
    c.set("root", fhir::Json::string(gw::audit::merkle::to_base64(r.covering->root)));
    c.set("time", fhir::Json::string(gw::audit::format_time_ms(r.covering->time_ms)));
    c.set("origin", fhir::Json::string(r.covering->origin));
    o.set("coveringCheckpoint", std::move(c));
  }
  o.set("checkpoints", n(r.checkpoints));
  o.set("checkpointsVerified", n(r.checkpoints_verified));
  o.set("signaturesChecked", fhir::Json::boolean(r.signatures_checked));
  if (key) o.set("verifierKey", fhir::Json::string(key->verifier_key()));
  o.set("firstBadIndex", r.first_bad_index ? n(*r.first_bad_index) : fhir::Json::null());
  fhir::Json problems = fhir::Json::array();
  for (const auto& p : r.problems) problems.push_back(problem_json(p));
  o.set("problems", std::move(problems));
  o.set("unlistedProblems", n(r.unlisted_problems));
  fhir::Json warnings = fhir::Json::array();
  for (const auto& w : r.warnings) warnings.push_back(problem_json(w));
  o.set("warnings", std::move(warnings));
  return fhir::to_json(o, true);
}

}  // namespace

int main(int argc, char** argv) {
  std::string db_path;
  std::vector<std::string> checkpoint_files;
  std::string key_path;
  std::string key_name;  // default: the name the checkpoints carry
  bool strict = false;
  bool json = false;
  unsigned threads = 2;

  CLI::App app{
      "audit-verify: prove that the gateway's audit log (audit.db) is complete and unaltered.\n"
      "\n"
      "It re-reads every audit record, recomputes its hash, the chain linking each record to the one\n"
      "before it and the Merkle tree over all of them, and compares the result with the signed\n"
      "checkpoints: those in audit.db and those in the checkpoint file(s) the gateway keeps outside\n"
      "it (give those with --checkpoints: they are what reveals a deleted tail or an older copy of\n"
      "audit.db put back). It reports the first record that is not what the gateway wrote: a changed\n"
      "byte, a deleted, inserted or reordered record, a truncated tail, a rolled-back database, or\n"
      "an edited search index. audit.db is opened read-only and never changed. A copy, or the log of a\n"
      "stopped gateway (no audit.db-wal beside it), is read as it is, creating nothing, so a user who\n"
      "may not write to its folder can verify it; a live log (with its -wal) is read through SQLite's\n"
      "-shm file, which needs the gateway's user.\n"
      "\n"
      "Exit codes: 0 verified; 1 tampering or an inconsistency was found, or what --strict counts as a\n"
      "failure (details on stdout);\n"
      "2 usage error, or a file could not be read (audit.db damaged: SQLite's own error is shown).\n"
      "\n"
      "Example: audit-verify --db data/audit.db --checkpoints data/audit-checkpoints.log \\\n"
      "           --key certs/audit-key.pub.pem"};
  app.add_option("--db", db_path, "the audit database, e.g. data/audit.db")->required();
  app.add_option("--checkpoints", checkpoint_files,
                 "checkpoint file kept outside audit.db, e.g. data/audit-checkpoints.log (repeatable: add "
                 "copies kept elsewhere, e.g. on another host)");
  app.add_option("--key", key_path,
                 "the checkpoint signing key's public key (PEM), e.g. certs/audit-key.pub.pem. Without it "
                 "signatures are not checked (reported as a warning)");
  app.add_option("--key-name", key_name,
                 "the key's name, as in the gateway's [audit] key_name setting (default: the name the checkpoint "
                 "file's checkpoints carry, else fhir-gateway-audit)");
  app.add_flag("--strict", strict,
               "records after the last verified checkpoint, a --checkpoints file that lacks audit.db's newest "
               "checkpoint (emptied, cut, an older copy), and one that ends in an incomplete note (an append cut "
               "short), count as a failure (exit 1) instead of a warning; reported as NOT YET COVERED or NOT "
               "VERIFIED, never as TAMPERED");
  app.add_flag("--json", json, "print the report as JSON instead of text");
  app.add_option("--threads", threads, "threads decoding and hashing records (1..64)")->capture_default_str();

  try {
    gw::tools::parse(app, argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    return usage_error(e.what());
  }
  if (threads < 1 || threads > 64) return usage_error("--threads must be between 1 and 64");

  gw::audit::VerifyOptions options;
  options.strict = strict;
  options.threads = threads;
  options.checkpoint_files_given = !checkpoint_files.empty();
  for (const auto& path : checkpoint_files) {
    std::string text, error;
    if (!read_file(path, text, error)) return usage_error(error);
    // A torn last note (an append cut short) is reported in the findings; damage anywhere
    // else makes the file unreadable.
    auto file = gw::audit::parse_checkpoint_file(text);
    if (!file) return usage_error("checkpoint file " + path + " is not readable: " + file.issue().diagnostics);
    if (file->torn_bytes > 0) options.torn_checkpoint_files.emplace_back(path, file->torn_bytes);
    for (auto& c : file->notes) options.checkpoints.push_back(std::move(c));
  }
  std::optional<gw::audit::CheckpointVerifier> key;
  if (!key_path.empty()) {
    // The key name only labels the key (the key id binds it to the key): by default take the
    // one the checkpoints carry.
    if (key_name.empty()) key_name = options.checkpoints.empty() ? "fhir-gateway-audit" : options.checkpoints.front().key_name;
    auto k = gw::audit::CheckpointVerifier::from_pem_file(key_path, key_name);
    if (!k) return usage_error(k.issue().diagnostics);
    key.emplace(std::move(*k));
    options.key = &*key;
  }
  std::uint64_t next_progress = kProgressEvery;
  options.progress = [&next_progress](std::uint64_t done, std::uint64_t total) {
    if (done < next_progress || total < 2 * kProgressEvery) return;
    std::fprintf(stderr, "audit-verify: %llu of %llu records checked\n", static_cast<unsigned long long>(done),
                 static_cast<unsigned long long>(total));
    while (next_progress <= done) next_progress += kProgressEvery;
  };

  auto report = gw::audit::verify_database(db_path, options);
  if (!report) return usage_error(report.issue().diagnostics);
  if (json) {
    std::printf("%s\n", report_json(*report, options.key).c_str());
  } else {
    print_text(*report);
    // The same key as other signed-note tools take it (C2SP signed-note verifier key), so the
    // checkpoints can also be checked with software other than this gateway's.
    if (options.key) std::printf("Checkpoint key (signed-note verifier key): %s\n", options.key->verifier_key().c_str());
  }
  if (checkpoint_files.empty() && !json)
    std::printf("Note: no --checkpoints file was given; a deleted tail or an older copy of audit.db can only be "
                "detected against checkpoints kept outside it.\n");
  return report->ok ? kExitVerified : kExitTampered;
}
