// SPDX-License-Identifier: Apache-2.0
// gw-locator: offline administration of the record locator index (locator.db).
//   gw-locator import (--config FILE | --data DIR) [--source ODS] FILE|DIR...   bulk import of FHIR Bundles / NDJSON
//   gw-locator objection (--config FILE | --data DIR) --nhs-number N (--record | --withdraw)
//   gw-locator stats --data DIR                                index statistics
//   gw-locator conflicts --data DIR [--limit N]                recorded identity conflicts
// The writing commands (import, objection) hold the data directory's lock, so they refuse to
// run while a gateway does, and append a record of what they changed to the gateway's audit
// log (write_session.h).
// Import reads Patients (and DocumentReference pointers) from transaction/collection Bundles
// (e.g. Synthea, synthpop --format bundle) or NDJSON, resolves each identity exactly as ingest
// does, and reports what was created, matched (and of those, updated) and rejected, entry by
// entry. A pointer whose
// Patient is not in the same file is filed under the indexed patient its subject.identifier
// (e.g. an NHS number) names. A pointer keeps the DocumentReference.date its source gave (the
// time of indexing stands in only when there is none). A file may start with a UTF-8 byte order
// mark. A file or entry whose resourceType is no FHIR R4 type is rejected (a real type the
// locator does not hold is only counted as not indexed); a Bundle without entries is a warning.
// --source must be an ODS code and --pointer-base an https URL, checked before anything is
// written. stats and conflicts refuse a --data without a locator.db. An NHS number failing its
// check digit is loaded as untrusted, with a warning. Exit codes: 0 done, 1 runtime failure, no
// index, a data directory in use or an audit record not written, 2 usage, 3 import done but
// some entries rejected (reported; the rest is imported and audited).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include <CLI/CLI.hpp>

#include "fhir/datatypes.h"
#include "fhir/json.h"
#include "fhir/nhs_number.h"
#include "fhir/resource_types.h"
#include "gateway/config/config.h"
#include "gateway/locator/fhir_mapping.h"
#include "gateway/locator/sqlite_locator.h"
#include "gateway/objection_audit.h"
#include "tools/cli/parse.h"
#include "tools/locator_cli/write_session.h"

namespace fs = std::filesystem;
using gw::locator::ImportRecord;

namespace {

constexpr std::uintmax_t kMaxFileBytes = 512ull * 1024 * 1024;
constexpr std::size_t kMaxFiles = 1'000'000;
constexpr std::size_t kShownRejections = 50;
constexpr int kExitRejected = 3;  // import: done, but some entries were rejected
constexpr std::string_view kUtf8Bom = "\xEF\xBB\xBF";

struct Rejection {
  std::string where;  // file#entry (resource id)
  std::string why;
};

struct Tally {
  std::size_t files = 0, patients = 0, created = 0, matched_nhs = 0, matched_identifier = 0, matched_demographics = 0,
              updated = 0, rejected = 0, rejected_files = 0, pointers = 0, conflicts = 0, unlinked_pointers = 0;
  std::map<std::string, std::size_t> skipped;  // FHIR resource types the locator does not hold
  std::vector<Rejection> rejections;
  std::vector<Rejection> warnings;  // nothing refused, but likely not what was meant
};

// Why a resource whose resourceType is no FHIR R4 type (misspelt, or missing) is refused rather
// than counted as a type the locator does not hold: it is malformed, not merely out of scope.
std::string unknown_type_reason(std::string_view type) {
  if (type.empty()) return "no resourceType: not a FHIR resource";
  return "resourceType \"" + std::string(type.substr(0, 64)) +
         "\" is not a FHIR R4 resource type (expected Bundle, Patient or DocumentReference)";
}

// Pending records of the current batch with where each came from.
struct Batch {
  std::vector<ImportRecord> records;
  std::vector<std::string> where;
};

std::string read_file(const fs::path& p, std::string& error) {
  std::error_code ec;
  auto size = fs::file_size(p, ec);
  if (ec) {
    error = "cannot read: " + ec.message();
    return {};
  }
  if (size > kMaxFileBytes) {
    error = "file is larger than 512 MiB; split it";
    return {};
  }
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  if (!in && !in.eof()) error = "cannot read";
  return ss.str();
}

// Keys under which a DocumentReference's subject may name a patient of the same file.
std::vector<std::string> subject_keys(const fhir::Json& doc) {
  std::vector<std::string> keys;
  if (const fhir::Json* subject = doc.find("subject")) {
    if (std::string_view ref = subject->string_at("reference"); !ref.empty()) keys.emplace_back(ref);
    if (const fhir::Json* id = subject->find("identifier"))
      keys.push_back("id:" + std::string(id->string_at("system")) + "|" + std::string(id->string_at("value")));
  }
  return keys;
}

std::vector<std::string> patient_keys(const fhir::Json& patient, std::string_view full_url) {
  std::vector<std::string> keys;
  if (!full_url.empty()) keys.emplace_back(full_url);
  if (std::string_view id = patient.string_at("id"); !id.empty()) keys.push_back("Patient/" + std::string(id));
  if (const fhir::Json* ids = patient.find("identifier"); ids && ids->is_array())
    for (const auto& i : ids->items())
      keys.push_back("id:" + std::string(i.string_at("system")) + "|" + std::string(i.string_at("value")));
  return keys;
}

// The pointer --pointer-base adds for a file's one Patient: the DocumentReference its source
// would send, mapped as every imported one is, so that it meets the same rules (an https URL
// naming a host, the custodian's ODS code) rather than rules of its own.
fhir::Result<gw::locator::Pointer> summary_pointer(const std::string& source, const std::string& pointer_base,
                                                  const std::string& patient_id,
                                                  const std::set<std::string>& held_types) {
  using fhir::Json;
  Json doc = Json::object();
  doc.set("resourceType", Json::string("DocumentReference"));
  doc.set("id", Json::string(source + "-" + patient_id));  // stable: a re-import updates it
  doc.set("status", Json::string("current"));
  doc.set("type", fhir::codeable_concept(fhir::coding("http://snomed.info/sct", "824321000000109", "Summary record")));
  Json custodian = Json::object();
  custodian.set("identifier", fhir::identifier(gw::locator::kOdsOrganisationSystem, source));
  doc.set("custodian", std::move(custodian));
  Json attachment = Json::object();
  attachment.set("contentType", Json::string("application/fhir+json"));
  attachment.set("url", Json::string(pointer_base + "/Patient/" + patient_id + "/$everything"));
  Json content = Json::object();
  content.set("attachment", std::move(attachment));
  Json contents = Json::array();
  contents.push_back(std::move(content));
  doc.set("content", std::move(contents));
  Json extensions = Json::array();
  for (const auto& type : held_types) {
    Json e = Json::object();
    e.set("url", fhir::text(gw::locator::kResourceTypesExtension));
    e.set("valueCode", Json::string(type));
    extensions.push_back(std::move(e));
  }
  doc.set("extension", std::move(extensions));
  return gw::locator::pointer_from_document_reference(doc);
}

class Importer {
 public:
  // `pointer_base`: when set, a file (Bundle) holding exactly one Patient and other clinical
  // resources also gets one pointer saying the source holds those resource types, retrievable
  // at <pointer_base>/Patient/<source id>/$everything (e.g. a Synthea export).
  Importer(gw::locator::Locator& loc, std::string source, std::size_t batch_size, bool quiet, std::string pointer_base)
      : loc_(loc), source_(std::move(source)), batch_size_(batch_size), quiet_(quiet),
        pointer_base_(std::move(pointer_base)), start_(std::chrono::steady_clock::now()) {}

  // One file's resources: (resource, fullUrl, position label).
  struct Item {
    fhir::Json resource;
    std::string full_url;
    std::string where;
  };

  bool add_file(const fs::path& file) {
    ++tally_.files;
    std::string error;
    std::string text = read_file(file, error);
    if (!error.empty()) {
      reject_file(file.string(), error);
      return true;
    }
    // A UTF-8 byte order mark, as Windows editors and some exporters write, is skipped: RFC
    // 8259 section 8.1 lets a parser ignore it, and it is no part of the first resource.
    if (text.rfind(kUtf8Bom, 0) == 0) text.erase(0, kUtf8Bom.size());
    std::vector<Item> items;
    const bool ndjson = file.extension() == ".ndjson";
    fhir::JsonLimits limits;
    limits.max_bytes = kMaxFileBytes;
    if (ndjson) {
      std::size_t line_no = 0, pos = 0;
      while (pos < text.size()) {
        std::size_t nl = text.find('\n', pos);
        if (nl == std::string::npos) nl = text.size();
        std::string_view line(text.data() + pos, nl - pos);
        ++line_no;
        pos = nl + 1;
        if (line.empty() || line == "\r") continue;
        auto j = fhir::parse_json(line, limits);
        const std::string where = file.string() + ":" + std::to_string(line_no);
        if (!j) {
          reject(where, j.issue().diagnostics);
          continue;
        }
        if (!j->is_object()) {
          reject(where, "a line must hold one FHIR resource (a JSON object)");
          continue;
        }
        if (j->string_at("resourceType") == "Bundle") {
          collect_bundle(*j, where, items);
        } else {
          items.push_back({std::move(*j), {}, where});
        }
      }
    } else {
      auto j = fhir::parse_json(text, limits);
      if (!j) {
        reject_file(file.string(), j.issue().diagnostics);
        return true;
      }
      const std::string_view type = j->is_object() ? j->string_at("resourceType") : std::string_view();
      if (type == "Bundle") collect_bundle(*j, file.string(), items);
      else if (!j->is_object()) reject_file(file.string(), "not a FHIR resource or Bundle");
      else if (!fhir::is_r4_resource_type(type)) reject_file(file.string(), unknown_type_reason(type));
      else items.push_back({std::move(*j), {}, file.string()});
    }
    return add_items(std::move(items));
  }

  bool finish() { return flush(); }
  const Tally& tally() const { return tally_; }

 private:
  void reject(std::string where, std::string why) {
    ++tally_.rejected;
    if (!quiet_ && tally_.rejections.size() < kShownRejections)
      std::fprintf(stderr, "rejected %s: %s\n", where.c_str(), why.c_str());
    tally_.rejections.push_back({std::move(where), std::move(why)});
  }

  // A whole file refused: counted among the rejected entries and as a file of its own.
  void reject_file(std::string where, std::string why) {
    ++tally_.rejected_files;
    reject(std::move(where), std::move(why));
  }

  void warn(std::string where, std::string why) {
    if (!quiet_ && tally_.warnings.size() < kShownRejections)
      std::fprintf(stderr, "warning %s: %s\n", where.c_str(), why.c_str());
    tally_.warnings.push_back({std::move(where), std::move(why)});
  }

  void collect_bundle(fhir::Json& bundle, const std::string& where, std::vector<Item>& items) {
    fhir::Json* entries = bundle.find("entry");
    if (entries && !entries->is_array()) {
      reject(where, "Bundle.entry must be an array");
      return;
    }
    // Valid FHIR (R4 bundle.html: entry 0..*), but an export that holds nothing is more often
    // a failed export than an intended one: said, not refused.
    if (!entries || entries->items().empty()) {
      warn(where, "the Bundle has no entry: nothing imported from it");
      return;
    }
    std::size_t n = 0;
    for (auto& e : entries->items()) {
      const std::string at = where + "#entry[" + std::to_string(n++) + "]";
      fhir::Json* res = e.is_object() ? e.find("resource") : nullptr;
      if (!res || !res->is_object()) {
        reject(at, "entry has no resource");
        continue;
      }
      items.push_back({std::move(*res), std::string(e.string_at("fullUrl")), at});
    }
  }

  bool add_items(std::vector<Item> items) {
    // Patients first, then attach pointers by subject (reference, fullUrl or identifier); a
    // pointer whose patient is not in the file is looked up in the index by that identifier.
    std::map<std::string, std::size_t> by_key;  // key -> index into batch_.records
    std::vector<Elsewhere> elsewhere;
    std::size_t patients_here = 0;
    std::string only_patient_id;
    std::set<std::string> held_types;
    for (auto& it : items) {
      std::string_view type = it.resource.string_at("resourceType");
      if (type != "Patient") continue;
      ++tally_.patients;
      auto claim = gw::locator::identity_from_patient(it.resource, source_);
      std::string label = it.where + " (Patient/" + std::string(it.resource.string_at("id")).substr(0, 64) + ")";
      if (!claim) {
        const auto& i = claim.issue();
        reject(label, i.diagnostics + (i.expression.empty() ? "" : " [" + i.expression + "]"));
        continue;
      }
      // An NHS number failing its check is loaded as an untrusted identifier (never matched
      // on), as the HL7 path keeps one: said, as the HL7 path says it.
      if (const fhir::Json* ids = it.resource.find("identifier"); ids && ids->is_array())
        for (const fhir::Json& id : ids->items()) {
          if (!id.is_object() || id.string_at("system") != fhir::kNhsNumberSystem) continue;
          const std::string value(id.string_at("value"));
          if (value.empty() || fhir::is_valid_nhs_number(value)) continue;
          const bool ten_digits =
              value.size() == 10 && std::all_of(value.begin(), value.end(), [](char c) { return c >= '0' && c <= '9'; });
          warn(label, std::string(ten_digits ? "NHS number fails its Modulus 11 check digit"
                                             : "NHS number is not 10 digits") +
                          ": loaded as an untrusted identifier, never used to match the patient; correct it at "
                          "the source");
        }
      for (auto& k : patient_keys(it.resource, it.full_url)) by_key[k] = batch_.records.size();
      batch_.records.push_back(ImportRecord{std::move(*claim), {}});
      batch_.where.push_back(std::move(label));
    }
    for (auto& it : items) {
      std::string type(it.resource.string_at("resourceType"));
      if (type == "Patient") {
        ++patients_here;
        only_patient_id = std::string(it.resource.string_at("id")).substr(0, 64);
        continue;
      }
      if (type != "DocumentReference") {
        if (!fhir::is_r4_resource_type(type)) {
          reject(it.where, unknown_type_reason(type));
          continue;
        }
        ++tally_.skipped[type.substr(0, 64)];
        if (type != "Organization" && type != "Practitioner" &&
            type != "PractitionerRole" && type != "Location" && type != "Claim" && type != "ExplanationOfBenefit")
          held_types.insert(type);
        continue;
      }
      // Inside a Bundle the subject is often the Patient's fullUrl (urn:uuid:...): the link is
      // made below by key, so the mapping sees only what a pointer keeps.
      std::vector<std::string> keys = subject_keys(it.resource);
      if (fhir::Json* subject = it.resource.find("subject"))
        if (subject->string_at("reference").substr(0, 4) == "urn:") subject->erase("reference");
      auto ptr = gw::locator::pointer_from_document_reference(it.resource);
      if (!ptr) {
        reject(it.where + " (DocumentReference)", ptr.issue().diagnostics);
        continue;
      }
      std::size_t target = SIZE_MAX;
      for (const auto& k : keys) {
        auto f = by_key.find(k);
        if (f != by_key.end()) target = f->second;
      }
      if (target != SIZE_MAX) {
        batch_.records[target].pointers.push_back(std::move(*ptr));
      } else if (auto id = gw::locator::subject_identifier(it.resource)) {
        // A pointer for a patient indexed earlier (another file, an earlier import): found by
        // its subject's identifier once the patients before it are committed.
        elsewhere.push_back({std::move(*ptr), std::move(*id), it.where});
      } else {
        ++tally_.unlinked_pointers;
        reject(it.where + " (DocumentReference)",
               "its subject is not a Patient in the same file and carries no identifier to find one by");
      }
    }
    if (!pointer_base_.empty() && patients_here == 1 && !held_types.empty() && !only_patient_id.empty() &&
        !batch_.records.empty() && batch_.where.back().find("(Patient/" + only_patient_id + ")") != std::string::npos) {
      auto p = summary_pointer(source_, pointer_base_, only_patient_id, held_types);
      if (p)
        batch_.records.back().pointers.push_back(std::move(*p));
      else
        reject(batch_.where.back() + " (summary pointer)",
               p.issue().diagnostics + (p.issue().expression.empty() ? "" : " [" + p.issue().expression + "]"));
    }
    if (!elsewhere.empty()) return flush() && put_elsewhere(elsewhere);
    return batch_.records.size() >= batch_size_ ? flush() : true;
  }

  // A pointer whose subject is not in its own file, with the identifier that names it.
  struct Elsewhere {
    gw::locator::Pointer pointer;
    gw::locator::Identifier subject;
    std::string where;
  };

  // Each pointer under the indexed patient its subject identifier names (after flush(), so
  // patients of earlier files count), as its custodian would put it.
  bool put_elsewhere(std::vector<Elsewhere>& pending) {
    for (auto& e : pending) {
      const std::string where = e.where + " (DocumentReference)";
      auto found = loc_.lookup_identifier(e.subject.system, e.subject.value);
      if (!found) {
        std::fprintf(stderr, "gw-locator: import failed: %s\n", found.issue().diagnostics.c_str());
        return false;
      }
      if (!*found) {
        ++tally_.unlinked_pointers;
        reject(where, "its subject is neither a Patient in the same file nor an indexed patient with that identifier");
        continue;
      }
      e.pointer.patient_id = **found;
      const std::string acting = e.pointer.source_ods;
      auto put = loc_.put_pointer(acting, std::move(e.pointer), {});
      if (!put) {
        const auto& issue = put.issue();
        reject(where, issue.diagnostics + (issue.expression.empty() ? "" : " [" + issue.expression + "]"));
        continue;
      }
      ++tally_.pointers;
    }
    return true;
  }

  bool flush() {
    if (batch_.records.empty()) return true;
    auto result = loc_.import(batch_.records);
    if (!result) {
      std::fprintf(stderr, "gw-locator: import failed: %s\n", result.issue().diagnostics.c_str());
      return false;
    }
    for (std::size_t i = 0; i < result->records.size(); ++i) {
      const auto& r = result->records[i];
      if (!r) {
        const auto& issue = r.issue();
        reject(batch_.where[i], issue.diagnostics + (issue.expression.empty() ? "" : " [" + issue.expression + "]"));
        continue;
      }
      tally_.pointers += batch_.records[i].pointers.size();
      tally_.conflicts += r->conflicts.size();
      if (!r->updated_fields.empty()) ++tally_.updated;
      switch (r->outcome) {
        case gw::locator::MatchOutcome::created: ++tally_.created; break;
        case gw::locator::MatchOutcome::matched_nhs_number: ++tally_.matched_nhs; break;
        case gw::locator::MatchOutcome::matched_identifier:
        case gw::locator::MatchOutcome::matched_retired_identifier: ++tally_.matched_identifier; break;
        case gw::locator::MatchOutcome::matched_demographics: ++tally_.matched_demographics; break;
      }
    }
    done_ += batch_.records.size();
    batch_ = {};
    if (!quiet_) {
      double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
      std::fprintf(stderr, "progress: %zu patients indexed from %zu files (%.0f/s)\n", done_, tally_.files,
                   secs > 0 ? done_ / secs : 0.0);
    }
    return true;
  }

  gw::locator::Locator& loc_;
  std::string source_;
  std::size_t batch_size_;
  bool quiet_;
  std::string pointer_base_;
  std::chrono::steady_clock::time_point start_;
  Batch batch_;
  Tally tally_;
  std::size_t done_ = 0;
};

fhir::Result<std::vector<fs::path>> list_inputs(const std::vector<std::string>& inputs) {
  std::vector<fs::path> files;
  for (const auto& in : inputs) {
    std::error_code ec;
    if (fs::is_directory(in, ec)) {
      std::vector<fs::path> found;
      for (auto it = fs::recursive_directory_iterator(in, ec); !ec && it != fs::recursive_directory_iterator();
           it.increment(ec)) {
        if (!it->is_regular_file()) continue;
        auto ext = it->path().extension();
        if (ext == ".json" || ext == ".ndjson") found.push_back(it->path());
        if (found.size() > kMaxFiles) return fhir::Issue::make(fhir::ErrorCode::invalid_value, "more than 1,000,000 files under " + in);
      }
      if (ec) return fhir::Issue::make(fhir::ErrorCode::invalid_value, "cannot list " + in + ": " + ec.message());
      std::sort(found.begin(), found.end());
      files.insert(files.end(), found.begin(), found.end());
    } else if (fs::is_regular_file(in, ec)) {
      files.emplace_back(in);
    } else {
      return fhir::Issue::make(fhir::ErrorCode::invalid_value, in + ": no such file or directory");
    }
  }
  return files;
}

// `create`: import makes the index when there is none; the read-only commands refuse, so that a
// mistyped --data is an error rather than the statistics of a new, empty index.
std::unique_ptr<gw::locator::Locator> open_locator(const std::string& data_dir, bool create,
                                                   const gw::locator::DemographicRule& rule = {}) {
  const fs::path file = fs::path(data_dir) / "locator.db";
  std::error_code ec;
  if (!create && !fs::is_regular_file(file, ec)) {
    std::fprintf(stderr, "gw-locator: no locator index at %s; --data names the gateway's data directory\n",
                 file.string().c_str());
    return nullptr;
  }
  if (create) fs::create_directories(data_dir, ec);
  gw::locator::SqliteLocatorOptions options;
  options.rule = rule;
  auto loc = gw::locator::open_sqlite_locator(file.string(), options);
  if (!loc) {
    std::fprintf(stderr, "gw-locator: %s\n", loc.issue().diagnostics.c_str());
    return nullptr;
  }
  return std::move(*loc);
}

// The writing session, or null after saying why on stderr (exit code in `code`).
std::unique_ptr<gw::tools::WriteSession> open_session(const gw::tools::WriteTarget& target, int& code) {
  gw::tools::WriteRefusal refusal;
  auto session = gw::tools::WriteSession::open(target, refusal);
  if (!session) {
    std::fprintf(stderr, "gw-locator: %s\n", refusal.message.c_str());
    code = refusal.exit_code;
    return nullptr;
  }
  if (!session->unaudited_reason().empty())
    std::fprintf(stderr, "gw-locator: %s\n", session->unaudited_reason().c_str());
  return session;
}

// Appends `r` through `session`; false (said on stderr) when the change stands unrecorded.
bool audit_change(gw::tools::WriteSession& session, gw::audit::Record r) {
  if (auto st = session.record(std::move(r)); !st) {
    std::fprintf(stderr,
                 "gw-locator: the change was made but its audit record could not be written (%s): tell the IG "
                 "officer what was run, and fix the audit log before the gateway starts\n",
                 st.issue().diagnostics.c_str());
    return false;
  }
  return true;
}

// "gw-locator import --source X a.json dir/" as the audit record's target (at most 4,096
// characters: the file list can be long).
std::string import_target(const std::string& source, const std::vector<std::string>& inputs) {
  std::string t = "gw-locator import --source " + source;
  for (const auto& in : inputs) t += " " + in;
  if (t.size() > 4096) t = t.substr(0, 4093) + "...";
  return t;
}

int run_import(const gw::tools::WriteTarget& target, const std::string& source, const std::string& source_name,
               const std::vector<std::string>& inputs, std::size_t batch, const std::string& report, bool quiet,
               const std::string& pointer_base, const gw::locator::DemographicRule& rule) {
  auto files = list_inputs(inputs);
  if (!files) {
    std::fprintf(stderr, "gw-locator: %s\n", files.issue().diagnostics.c_str());
    return 2;
  }
  int code = 0;
  auto session = open_session(target, code);
  if (!session) return code;
  auto loc = open_locator(target.data_dir, true, rule);
  if (!loc) return 1;
  auto reg = loc->upsert_source_system({source, source_name.empty() ? source : source_name, "import", ""});
  if (!reg) {
    std::fprintf(stderr, "gw-locator: %s\n", reg.issue().diagnostics.c_str());
    return 1;
  }
  Importer imp(*loc, source, batch, quiet, pointer_base);
  const auto start = std::chrono::steady_clock::now();
  bool completed = true;
  for (const auto& f : *files)
    if (!imp.add_file(f)) {
      completed = false;
      break;
    }
  completed = completed && imp.finish();
  {
    // What an IG officer needs of a bulk change to identities and pointers: who ran it, on
    // what, and what it did (committed batches stay committed when a later one fails).
    const Tally& t = imp.tally();
    gw::audit::Record r;
    r.kind = "ingest";
    r.action = "locator-import";
    r.source = source;
    r.organisation = source;
    r.target = import_target(source, inputs);
    r.status = completed ? 200 : 500;
    if (!completed) r.outcome_text = "the import stopped on a database error; the batches before it are committed";
    r.detail.note = "gw-locator import run by OS user " + gw::tools::WriteSession::os_user() + ": files read " +
                    std::to_string(t.files) + ", patients seen " + std::to_string(t.patients) + ", created " +
                    std::to_string(t.created) + ", matched " +
                    std::to_string(t.matched_nhs + t.matched_identifier + t.matched_demographics) +
                    " (NHS number " + std::to_string(t.matched_nhs) + ", identifier " +
                    std::to_string(t.matched_identifier) + ", demographics " +
                    std::to_string(t.matched_demographics) + "), of which updated " + std::to_string(t.updated) +
                    ", pointers indexed " + std::to_string(t.pointers) + ", conflicts recorded " +
                    std::to_string(t.conflicts) + ", rejected entries " + std::to_string(t.rejected);
    if (!audit_change(*session, std::move(r))) return 1;
  }
  if (!completed) return 1;
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const Tally& t = imp.tally();
  std::printf("files read:            %zu\n", t.files);
  std::printf("patients seen:         %zu\n", t.patients);
  std::printf("  created:             %zu\n", t.created);
  std::printf("  matched NHS number:  %zu\n", t.matched_nhs);
  std::printf("  matched identifier:  %zu\n", t.matched_identifier);
  std::printf("  matched demographics:%zu\n", t.matched_demographics);
  std::printf("  of which updated:    %zu\n", t.updated);
  std::printf("pointers indexed:      %zu\n", t.pointers);
  std::printf("conflicts recorded:    %zu\n", t.conflicts);
  std::printf("rejected entries:      %zu%s\n", t.rejected,
              t.rejected > kShownRejections && report.empty() ? " (first 50 shown; --report FILE for all)" : "");
  if (t.rejected_files > 0) std::printf("  whole files:         %zu\n", t.rejected_files);
  if (!t.warnings.empty()) std::printf("warnings:              %zu\n", t.warnings.size());
  if (!t.skipped.empty()) {
    std::printf("not indexed (resource types the locator does not hold):\n");
    for (const auto& [type, n] : t.skipped) std::printf("  %-28s %zu\n", type.c_str(), n);
  }
  std::printf("time:                  %.1f s\n", secs);
  if (!report.empty()) {
    std::ofstream out(report);
    const auto write = [&out](const Rejection& r, const char* key) {
      fhir::Json line = fhir::Json::object();
      line.set("where", fhir::Json::string(r.where));
      line.set(key, fhir::Json::string(r.why));
      out << fhir::to_json(line) << "\n";
    };
    for (const auto& r : t.rejections) write(r, "reason");
    for (const auto& w : t.warnings) write(w, "warning");
    if (!out) {
      std::fprintf(stderr, "gw-locator: cannot write %s\n", report.c_str());
      return 1;
    }
  }
  // What was imported is committed and audited; a script must still see that some was not.
  return t.rejected > 0 ? kExitRejected : 0;
}

// Records or withdraws a patient's objection to sharing (docs/access-policy.md "Objection"):
// the patient the NHS number names (merges followed), audited with that NHS number.
int run_objection(const gw::tools::WriteTarget& target, const std::string& nhs_number, bool object,
                  const std::string& note) {
  {
    std::error_code ec;
    if (!fs::is_regular_file(fs::path(target.data_dir) / "locator.db", ec)) {
      std::fprintf(stderr, "gw-locator: no locator index at %s; the data directory is the gateway's data_dir\n",
                   (fs::path(target.data_dir) / "locator.db").string().c_str());
      return 1;
    }
  }
  int code = 0;
  auto session = open_session(target, code);
  if (!session) return code;
  auto loc = open_locator(target.data_dir, false);
  if (!loc) return 1;
  auto id = loc->lookup_identifier(gw::locator::kNhsNumberSystem, nhs_number);
  if (!id) {
    std::fprintf(stderr, "gw-locator: %s\n", id.issue().diagnostics.c_str());
    return 1;
  }
  if (!*id) {
    std::fprintf(stderr, "gw-locator: no patient with NHS number %s in the index; nothing recorded\n",
                 nhs_number.c_str());
    return 1;
  }
  auto before = loc->read_patient(**id);
  if (!before || !*before) {
    std::fprintf(stderr, "gw-locator: cannot read patient %s\n", (**id).c_str());
    return 1;
  }
  // As the gateway's objection changes (gateway/objection_audit.h): the change commits with a
  // row awaiting its record, removed once the record is committed; what an earlier run (or the
  // gateway) left without its record is audited first.
  std::optional<gw::ObjectionAudit> changes;
  if (gw::audit::Log* log = session->log()) {
    changes.emplace(*loc, *log, "gw-locator");
    if (auto earlier = changes->recover("recovered by gw-locator objection"); !earlier) {
      std::fprintf(stderr,
                   "gw-locator: objection changes left without their audit record could not be audited (%s); "
                   "nothing changed\n",
                   earlier.issue().diagnostics.c_str());
      return 1;
    } else if (earlier->audited > 0) {
      std::fprintf(stderr, "gw-locator: %zu earlier objection change(s) without their audit record audited now\n",
                   earlier->audited);
    }
  }
  gw::locator::ObjectionChange c;
  c.id = changes ? changes->begin_change() : gw::locator::new_objection_change_id();
  c.patient_id = **id;
  c.nhs_number = nhs_number;
  c.objection = object;
  c.by = "OS user " + gw::tools::WriteSession::os_user();
  c.note = note;
  c.time_ms = gw::audit::now_ms();
  // Unaudited (no audit log yet: the initial load), the plain change, with no row to audit.
  fhir::Result<bool> changed = false;
  if (changes) changed = loc->change_objection(c);
  else if (auto st = loc->set_objection(**id, object); !st) changed = std::move(st).issue();
  else changed = (*before)->objection != object;
  if (!changed) {
    std::fprintf(stderr, "gw-locator: %s\n", changed.issue().diagnostics.c_str());
    return 1;
  }
  gw::audit::Record r;
  r.kind = "system";
  r.action = object ? "objection-recorded" : "objection-withdrawn";
  r.target = std::string("gw-locator objection ") + (object ? "--record" : "--withdraw") + " Patient/" + **id;
  r.status = 200;
  r.detail.patients = {nhs_number};
  r.detail.returned = {"Patient/" + **id};
  r.detail.note = (*changed ? gw::objection_change_note(c)
                            : std::string(object ? "objection to sharing recorded" : "objection to sharing withdrawn") +
                                  " (it already was)") +
                  " by " + c.by + (note.empty() ? std::string() : ": " + note);
  if (auto st = session->record(std::move(r)); !st) {
    std::fprintf(stderr,
                 "gw-locator: the change was made but its audit record could not be written (%s)%s\n",
                 st.issue().diagnostics.c_str(),
                 *changed ? ": it is kept in locator.db and audited when the gateway next starts (or by the next "
                            "gw-locator objection) once the audit log can be written; fix the audit log"
                          : "");
    return 1;
  }
  if (changes && *changed) {
    changes->audited(c.id, true);
    // The record is committed: the row goes now, or with the next recovery should this fail.
    if (auto done = changes->recover("recovered by gw-locator objection"); !done)
      std::fprintf(stderr, "gw-locator: warning: %s (the audit record is written)\n",
                   done.issue().diagnostics.c_str());
  }
  std::printf("%s for NHS number %s (Patient/%s)%s: %s\n", object ? "objection recorded" : "objection withdrawn",
              nhs_number.c_str(), (**id).c_str(), *changed ? "" : ", as it already was",
              object ? "the shared record is hidden from every user; only a break-glass grant opens it"
                     : "the shared record is visible again to users with a legitimate relationship");
  return 0;
}

int run_stats(const std::string& data_dir) {
  auto loc = open_locator(data_dir, false);
  if (!loc) return 1;
  auto s = loc->stats();
  if (!s) {
    std::fprintf(stderr, "gw-locator: %s\n", s.issue().diagnostics.c_str());
    return 1;
  }
  std::printf("patients:               %lld\n", static_cast<long long>(s->patients));
  std::printf("  retired (merged):     %lld\n", static_cast<long long>(s->retired));
  std::printf("  untrusted NHS number: %lld\n", static_cast<long long>(s->nhs_numbers_untrusted));
  std::printf("local identifiers:      %lld\n", static_cast<long long>(s->identifiers));
  std::printf("pointers:               %lld\n", static_cast<long long>(s->pointers));
  std::printf("source systems:         %lld\n", static_cast<long long>(s->source_systems));
  std::printf("identity conflicts:     %lld\n", static_cast<long long>(s->conflicts));
  std::printf("database size:          %.1f MB\n", static_cast<double>(s->database_bytes) / 1e6);
  return 0;
}

int run_conflicts(const std::string& data_dir, std::size_t limit) {
  auto loc = open_locator(data_dir, false);
  if (!loc) return 1;
  auto c = loc->conflicts(limit, 0);
  if (!c) {
    std::fprintf(stderr, "gw-locator: %s\n", c.issue().diagnostics.c_str());
    return 1;
  }
  for (const auto& x : *c)
    std::printf("%s  %-22s source %-8s patient %s  %s\n", x.recorded_at.c_str(), x.kind.c_str(), x.source_ods.c_str(),
                x.patient_id.c_str(), x.detail.c_str());
  std::printf("%zu conflict(s) shown\n", c->size());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"gw-locator: administer the record locator index (locator.db) of fhir-gateway"};
  app.require_subcommand(1);
  std::string data_dir = "data";
  std::string source = "IMPORT", source_name, report, pointer_base;
  std::vector<std::string> inputs;
  std::size_t batch = 5000, limit = 100;
  bool quiet = false;

  std::string config_file;
  const std::string config_help =
      "the gateway's configuration file: the data directory is its data_dir, and what is changed is recorded in "
      "its audit log (audit.db), signed with its key; required once the directory has an audit log";
  const std::string write_data_help =
      "gateway data directory holding locator.db, for a directory without an audit log yet (before the gateway's "
      "first start); otherwise give --config";

  auto* imp = app.add_subcommand("import", "bulk import Patients and DocumentReference pointers from FHIR Bundles "
                                           "(.json) or NDJSON (.ndjson), files or folders (UTF-8; a leading byte "
                                           "order mark is skipped); a pointer keeps its DocumentReference.date. "
                                           "Refused while a gateway runs on the data directory; audited. "
                                           "Exit 3 when entries were rejected (the rest is imported)");
  auto* imp_data = imp->add_option("--data", data_dir, write_data_help)->capture_default_str();
  imp->add_option("--config", config_file, config_help)->excludes(imp_data);
  imp->add_option("--source", source, "ODS code of the source system the records come from (letters and digits)")
      ->capture_default_str();
  imp->add_option("--source-name", source_name, "display name for the source system");
  imp->add_option("--batch", batch, "patients per transaction (1..100000)")->check(CLI::Range(1, 100000))->capture_default_str();
  imp->add_option("--report", report,
                  "write every rejected entry ({\"where\",\"reason\"}) and warning ({\"where\",\"warning\"}) as NDJSON "
                  "to this file");
  imp->add_option("--pointer-base", pointer_base,
                  "https FHIR base URL of the source: a Bundle with one Patient and clinical resources also gets a "
                  "pointer to <base>/Patient/<id>/$everything listing the resource types held");
  std::string rule_text = "family,given,birthdate,gender,postcode";
  imp->add_option("--demographic-rule", rule_text,
                  "fields a claim without a known NHS number or local identifier must equal on exactly one record "
                  "to match it, comma-separated, at least family and birthdate; \"off\": never match on demographics "
                  "(use the gateway's storage.demographic_rule)")
      ->capture_default_str();
  imp->add_flag("--quiet", quiet, "no progress or per-entry messages on stderr");
  imp->add_option("inputs", inputs, "files or folders to import")->required();

  std::string nhs_number, note;
  bool record = false, withdraw = false;
  auto* obj = app.add_subcommand("objection",
                                 "record (or withdraw) a patient's objection to sharing: the shared record is then "
                                 "hidden from every user, only break-glass opens it (docs/access-policy.md). Refused "
                                 "while a gateway runs on the data directory; audited");
  auto* obj_data = obj->add_option("--data", data_dir, write_data_help)->capture_default_str();
  obj->add_option("--config", config_file, config_help)->excludes(obj_data);
  obj->add_option("--nhs-number", nhs_number, "the patient's NHS number (10 digits)")->required();
  auto* obj_record = obj->add_flag("--record", record, "record the objection");
  obj->add_flag("--withdraw", withdraw, "withdraw a recorded objection")->excludes(obj_record);
  obj->add_option("--note", note, "kept in the audit record, e.g. the reference of the patient's request (at most 500 "
                                  "characters)");

  auto* st = app.add_subcommand("stats", "print index statistics");
  st->add_option("--data", data_dir, "gateway data directory holding locator.db")->capture_default_str();

  auto* cf = app.add_subcommand("conflicts", "list recorded identity conflicts (newest first)");
  cf->add_option("--data", data_dir, "gateway data directory holding locator.db")->capture_default_str();
  cf->add_option("--limit", limit, "at most this many (1..10000)")->check(CLI::Range(1, 10000))->capture_default_str();

  try {
    gw::tools::parse(app, argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  // The writing commands' target: --data, or the data directory of the gateway's configuration.
  gw::tools::WriteTarget target{data_dir, std::nullopt};
  if ((*imp || *obj) && !config_file.empty()) {
    try {
      target.config = gw::config::load_config(config_file);
    } catch (const gw::config::ConfigError& e) {
      std::fprintf(stderr, "gw-locator: configuration error: %s\n", e.what());
      return 2;
    }
    target.data_dir = target.config->data_dir;
  }
  if (*obj) {
    if (record == withdraw) {
      std::fprintf(stderr, "gw-locator: objection needs --record or --withdraw\nRun with --help for usage.\n");
      return 2;
    }
    if (auto valid = fhir::validate_nhs_number(nhs_number); !valid) {
      std::fprintf(stderr, "gw-locator: --nhs-number: %s\nRun with --help for usage.\n",
                   valid.issue().diagnostics.c_str());
      return 2;
    }
    if (note.size() > 500) {
      std::fprintf(stderr, "gw-locator: --note is longer than 500 characters\nRun with --help for usage.\n");
      return 2;
    }
    return run_objection(target, nhs_number, record, note);
  }
  if (*imp) {
    std::vector<std::string> fields;
    if (rule_text != "off") {
      std::size_t start = 0;
      for (;;) {
        const std::size_t comma = rule_text.find(',', start);
        fields.push_back(rule_text.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
        if (comma == std::string::npos) break;
        start = comma + 1;
      }
    }
    auto rule = gw::locator::demographic_rule_from(fields);
    if (!rule) {
      std::fprintf(stderr, "gw-locator: --demographic-rule: %s\nRun with --help for usage.\n", rule.issue().diagnostics.c_str());
      return 2;
    }
    // Checked before anything is read or written, by the rules the index applies to every
    // source and pointer: a bad value would otherwise be stored (--source) or fail entry by entry.
    if (auto ods = gw::locator::check_ods(source, "--source"); !ods) {
      std::fprintf(stderr, "gw-locator: %s\nRun with --help for usage.\n", ods.issue().diagnostics.c_str());
      return 2;
    }
    if (!pointer_base.empty()) {
      if (auto probe = summary_pointer(source, pointer_base, "example", {"Encounter"}); !probe) {
        std::fprintf(stderr,
                     "gw-locator: --pointer-base must be an https:// base URL naming a host; the pointers it makes "
                     "would be refused: %s\nRun with --help for usage.\n",
                     probe.issue().diagnostics.c_str());
        return 2;
      }
    }
    return run_import(target, source, source_name, inputs, batch, report, quiet, pointer_base, *rule);
  }
  if (*st) return run_stats(data_dir);
  return run_conflicts(data_dir, limit);
}
