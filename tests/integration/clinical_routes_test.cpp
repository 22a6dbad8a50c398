// SPDX-License-Identifier: Apache-2.0
// The clinical routes over store.db (gateway/http/clinical_routes.h) on a running gateway:
// sensitive entries withheld and reported, token searches with and without a system, how the
// patient is named, the break-glass label, conditional reads, and POST _search with page
// handles. Resources are written straight into store.db, as the ingest path files them.
#include <doctest/doctest.h>

#include <condition_variable>
#include <mutex>

#include "fhir/element_check.h"
#include "gateway/audit/log.h"
#include "gateway/store/store.h"
#include "support/audit_check.h"
#include "support/https_client.h"
#include "support/responses.h"
#include "support/seed.h"
#include "support/test_server.h"

using namespace gw;
using gw::test::HttpResponse;
using gw::test::json_of;
using gw::test::Seeded;
using gw::test::TestServer;
using gw::test::TokenClaims;

namespace {

constexpr const char* kSnomed = "http://snomed.info/sct";

fhir::Json parse(const std::string& text) {
  auto j = fhir::parse_json(text);
  REQUIRE_MESSAGE(j.ok(), text);
  return std::move(*j);
}

// Files `resources` (JSON texts, subject already set) in store.db for `patient_id`.
void file(TestServer& s, const std::string& patient_id, const std::vector<std::string>& resources) {
  static int key = 0;
  store::MessageWrite m;
  m.source = "test-lab";
  m.kind = "ORU^R01";
  m.dedupe_key = "K" + std::to_string(++key);
  m.raw = "message " + m.dedupe_key;
  m.patient_id = patient_id;
  std::vector<fhir::Json> rs;
  for (const auto& r : resources) rs.push_back(parse(r));
  std::mutex mu;
  std::condition_variable cv;
  std::optional<fhir::Result<store::ApplyResult>> out;
  s.app().store().apply(m, std::move(rs), [&](fhir::Result<store::ApplyResult> r) {
    std::lock_guard lock(mu);
    out.emplace(std::move(r));
    cv.notify_all();
  });
  std::unique_lock lock(mu);
  REQUIRE(cv.wait_for(lock, std::chrono::seconds(10), [&] { return out.has_value(); }));
  REQUIRE_MESSAGE(out->ok(), out->issue().diagnostics);
}

std::string subject(const std::string& patient_id) {
  return R"("subject":{"reference":"Patient/)" + patient_id + R"("})";
}

std::string coding(const std::string& system, const std::string& code) {
  return system.empty() ? R"({"code":")" + code + R"("})"
                        : R"({"system":")" + system + R"(","code":")" + code + R"("})";
}

std::string observation(const std::string& id, const std::string& patient_id, const std::string& code,
                        const std::string& value = {}) {
  return R"({"resourceType":"Observation","id":")" + id + R"(","status":"final","code":{"coding":[)" + code +
         "]}," + subject(patient_id) + R"(,"effectiveDateTime":"2026-11-01T10:00:00Z")" +
         (value.empty() ? "" : R"(,"valueCodeableConcept":{"coding":[)" + value + "]}") + "}";
}

// The demo record: a potassium result (LOINC, and once more without a system), an HIV result
// whose code is neutral but whose value is "HIV positive" (sexual-health), a depressive
// disorder finding (mental-health), an HIV report, and an Encounter whose reason is
// depressive disorder.
void file_record(TestServer& s, const std::string& pid) {
  file(s, pid,
       {observation("obs-k", pid, coding("http://loinc.org", "2823-3")),
        observation("obs-k-nosys", pid, coding("", "2823-3")),
        observation("obs-hiv", pid, coding("http://loinc.org", "7917-8"), coding(kSnomed, "165816005")),
        observation("obs-dep", pid, coding(kSnomed, "35489007")),
        R"({"resourceType":"DiagnosticReport","id":"dr-hiv","status":"final","code":{"coding":[)" +
            coding(kSnomed, "86406008") + "]}," + subject(pid) + R"(,"effectiveDateTime":"2026-11-01T10:00:00Z"})",
        R"({"resourceType":"Encounter","id":"enc-1","status":"finished","class":{"system":"http://terminology.hl7.org/CodeSystem/v3-ActCode","code":"AMB"},)" +
            subject(pid) + R"(,"period":{"start":"2026-11-01T09:00:00Z"},"reasonCode":[{"coding":[)" +
            coding(kSnomed, "35489007") + "]}]}",
        R"({"resourceType":"Encounter","id":"enc-2","status":"finished","class":{"system":"http://terminology.hl7.org/CodeSystem/v3-ActCode","code":"AMB"},)" +
            subject(pid) + R"(,"period":{"start":"2026-10-01T09:00:00Z"}})",
        R"({"resourceType":"Location","id":"ward-1","name":"Ward 1"})"});
}

std::string bearer(const TokenClaims& c) { return test::test_tokens().header(c); }

TokenClaims gp() {  // the patient's registered practice
  TokenClaims c;
  c.sub = "gp-1";
  c.org = "A81001";
  return c;
}

TokenClaims paramedic() {  // emergency purpose of use: a relationship with anyone
  TokenClaims c;
  c.sub = "medic-1";
  c.role = "paramedic";
  c.org = "RX6";
  c.purpose = "EMERGENCY";
  return c;
}

std::vector<std::string> match_ids(const fhir::Json& bundle) {
  std::vector<std::string> ids;
  if (const fhir::Json* entries = bundle.find("entry"))
    for (const auto& e : entries->items())
      if (e.find("search")->string_at("mode") == "match") ids.emplace_back(e.find("resource")->string_at("id"));
  std::sort(ids.begin(), ids.end());
  return ids;
}

// The diagnostics of every outcome entry of a searchset.
std::vector<std::string> outcomes(const fhir::Json& bundle) {
  std::vector<std::string> out;
  if (const fhir::Json* entries = bundle.find("entry"))
    for (const auto& e : entries->items())
      if (e.find("search")->string_at("mode") == "outcome")
        out.emplace_back(e.find("resource")->find("issue")->items().at(0).string_at("diagnostics"));
  return out;
}

std::string diagnostics_of(const HttpResponse& r) {
  const fhir::Json body = json_of(r);
  const fhir::Json* issues = body.find("issue");
  if (issues == nullptr || issues->items().empty()) return {};
  return std::string(issues->items().front().string_at("diagnostics"));
}

std::string link_target(const fhir::Json& bundle, const std::string& relation, const std::string& base) {
  for (const auto& l : bundle.find("link")->items())
    if (l.string_at("relation") == relation) return std::string(l.string_at("url")).substr(base.size());
  return {};
}

bool has_btg(const fhir::Json& resource) {
  const fhir::Json* meta = resource.find("meta");
  const fhir::Json* security = meta ? meta->find("security") : nullptr;
  if (security == nullptr) return false;
  return std::any_of(security->items().begin(), security->items().end(), [](const fhir::Json& c) {
    return c.string_at("system") == "http://terminology.hl7.org/CodeSystem/v3-ActCode" && c.string_at("code") == "BTG";
  });
}

}  // namespace

TEST_CASE("Clinical routes: entries in a sensitive category the role may not see are withheld, reported and audited") {
  TestServer s;
  const Seeded a = test::add_patient(s.locator(), 301, "Sensitive", "A81001");
  file_record(s, a.id);

  // The GP (clinician: mental-health, not sexual-health): the HIV result and report withheld,
  // not counted, reported in one warning; the depressive disorder finding shown.
  HttpResponse r = test::get(s.port(), "/Observation?patient=" + a.id, s.client(), bearer(gp()));
  REQUIRE_MESSAGE(r.status == 200, r.body);
  fhir::Json b = json_of(r);
  CHECK(b.find("total")->as_int64() == 3);
  CHECK(match_ids(b) == std::vector<std::string>{"obs-dep", "obs-k", "obs-k-nosys"});
  CHECK(outcomes(b) == std::vector<std::string>{"1 Observation(s) for this patient are withheld under the sensitivity "
                                                "policy for your role; they are not counted in total"});
  CHECK(r.body.find("165816005") == std::string::npos);
  CHECK(test::audit_record_of(s, r).detail.withheld == std::vector<std::string>{"Observation/obs-hiv"});
  fhir::Json reports = json_of(test::get(s.port(), "/DiagnosticReport?patient=" + a.id, s.client(), bearer(gp())));
  CHECK(reports.find("total")->as_int64() == 0);
  CHECK(outcomes(reports).size() == 1);
  fhir::Json encounters = json_of(test::get(s.port(), "/Encounter?patient=" + a.id, s.client(), bearer(gp())));
  CHECK(match_ids(encounters) == std::vector<std::string>{"enc-1", "enc-2"});
  CHECK(outcomes(encounters).empty());

  // The paramedic (no sensitive category): the mental-health entries go too, wherever the
  // code is (Observation.code, Encounter.reasonCode); paging counts only what is shown.
  HttpResponse p = test::get(s.port(), "/Observation?patient=" + a.id + "&_count=1", s.client(), bearer(paramedic()));
  REQUIRE_MESSAGE(p.status == 200, p.body);
  fhir::Json pb = json_of(p);
  CHECK(pb.find("total")->as_int64() == 2);
  CHECK(outcomes(pb).at(0).rfind("2 Observation(s) for this patient are withheld", 0) == 0);
  const audit::Record pr = test::audit_record_of(s, p);
  CHECK(pr.detail.withheld.size() == 2);
  CHECK(std::find(pr.detail.withheld.begin(), pr.detail.withheld.end(), "Observation/obs-dep") != pr.detail.withheld.end());
  fhir::Json pe = json_of(test::get(s.port(), "/Encounter?patient=" + a.id, s.client(), bearer(paramedic())));
  CHECK(match_ids(pe) == std::vector<std::string>{"enc-2"});
  CHECK(outcomes(pe).size() == 1);
  // _summary=count: the total of what may be shown, and the warning still.
  fhir::Json counted =
      json_of(test::get(s.port(), "/Observation?patient=" + a.id + "&_summary=count", s.client(), bearer(paramedic())));
  CHECK(counted.find("total")->as_int64() == 2);
  CHECK(outcomes(counted).size() == 1);

  // Reads: 403 naming the sensitivity policy, audited as withheld; what the role may see reads.
  HttpResponse hiv = test::get(s.port(), "/Observation/obs-hiv", s.client(), bearer(gp()));
  CHECK(hiv.status == 403);
  CHECK(diagnostics_of(hiv) == "this Observation is withheld under the sensitivity policy for your role");
  CHECK(hiv.body.find("165816005") == std::string::npos);
  CHECK(test::audit_record_of(s, hiv).detail.withheld == std::vector<std::string>{"Observation/obs-hiv"});
  CHECK(test::get(s.port(), "/DiagnosticReport/dr-hiv", s.client(), bearer(gp())).status == 403);
  CHECK(test::get(s.port(), "/Observation/obs-dep", s.client(), bearer(gp())).status == 200);
  CHECK(test::get(s.port(), "/Observation/obs-dep", s.client(), bearer(paramedic())).status == 403);
  CHECK(test::get(s.port(), "/Encounter/enc-1", s.client(), bearer(paramedic())).status == 403);
  CHECK(test::get(s.port(), "/Encounter/enc-2", s.client(), bearer(paramedic())).status == 200);
}

TEST_CASE("Clinical routes: break-glass responses carry meta.security BTG and still withhold sensitive entries") {
  TestServer s;
  const Seeded a = test::add_patient(s.locator(), 302, "Glass", "A81001");
  file_record(s, a.id);
  const std::string bg = "X-Break-Glass-Reason: " + s.app().policy().config().break_glass_reasons.front() +
                         "\r\nX-Break-Glass-Justification: unconscious patient in ED, no history available\r\n";
  TokenClaims er;  // a clinician with no relationship to the patient
  er.sub = "dr-er";
  er.org = "RX9";
  HttpResponse r = test::get(s.port(), "/Observation?patient=" + a.id, s.client(), bearer(er) + bg);
  REQUIRE_MESSAGE(r.status == 200, r.body);
  CHECK(r.header("x-emergency-access") == "break-glass");
  fhir::Json b = json_of(r);
  CHECK(match_ids(b) == std::vector<std::string>{"obs-dep", "obs-k", "obs-k-nosys"});  // not the HIV result
  for (const auto& e : b.find("entry")->items())
    if (e.find("search")->string_at("mode") == "match") CHECK(has_btg(*e.find("resource")));
  // The grant holds for later requests: a search and a read, both labelled.
  fhir::Json enc = json_of(test::get(s.port(), "/Encounter?patient=" + a.id + "&_elements=status", s.client(), bearer(er)));
  CHECK(match_ids(enc) == std::vector<std::string>{"enc-1", "enc-2"});
  for (const auto& e : enc.find("entry")->items()) CHECK(has_btg(*e.find("resource")));
  HttpResponse read = test::get(s.port(), "/Encounter/enc-2", s.client(), bearer(er));
  REQUIRE(read.status == 200);
  CHECK(read.header("x-emergency-access") == "break-glass");
  CHECK(has_btg(json_of(read)));
  CHECK(test::get(s.port(), "/DiagnosticReport/dr-hiv", s.client(), bearer(er)).status == 403);
  // Without a grant, the same resources carry no label.
  HttpResponse plain = test::get(s.port(), "/Encounter/enc-2", s.client(), bearer(gp()));
  REQUIRE(plain.status == 200);
  CHECK_FALSE(has_btg(json_of(plain)));
  CHECK(plain.header("x-emergency-access").empty());
}

TEST_CASE("Clinical routes: code=|value matches only codings without a system") {
  TestServer s;
  const Seeded a = test::add_patient(s.locator(), 303, "Tokens", "A81001");
  file_record(s, a.id);
  auto ids = [&](const std::string& code) {
    HttpResponse r = test::get(s.port(), "/Observation?patient=" + a.id + "&code=" + code, s.client(), bearer(gp()));
    REQUIRE_MESSAGE(r.status == 200, r.body);
    return match_ids(json_of(r));
  };
  CHECK(ids("%7C2823-3") == std::vector<std::string>{"obs-k-nosys"});
  CHECK(ids("2823-3") == std::vector<std::string>{"obs-k", "obs-k-nosys"});
  CHECK(ids("http://loinc.org%7C2823-3") == std::vector<std::string>{"obs-k"});
  CHECK(ids("%7C2823-3,http://loinc.org%7C2823-3") == std::vector<std::string>{"obs-k", "obs-k-nosys"});
}

TEST_CASE("Clinical routes: code=system| matches any code in that system, and no other") {
  TestServer s;
  const Seeded a = test::add_patient(s.locator(), 309, "Systems", "A81001");
  const std::string local = "https://fhir.nhs.uk/Id/local/code-system/lab/winpath";
  file(s, a.id,
       {observation("obs-na", a.id, coding("http://loinc.org", "2951-2")),
        observation("obs-k", a.id, coding("http://loinc.org", "2823-3")),
        observation("obs-glu", a.id, coding(local, "GLU")),
        observation("obs-nosys", a.id, coding("", "2823-3"))});
  auto ids = [&](const std::string& type, const std::string& code) {
    HttpResponse r = test::get(s.port(), "/" + type + "?patient=" + a.id + "&code=" + code, s.client(), bearer(gp()));
    REQUIRE_MESSAGE(r.status == 200, r.body);
    return match_ids(json_of(r));
  };
  CHECK(ids("Observation", "http://loinc.org%7C") == std::vector<std::string>{"obs-k", "obs-na"});
  CHECK(ids("Observation", local + "%7C") == std::vector<std::string>{"obs-glu"});
  CHECK(ids("Observation", "http://snomed.info/sct%7C").empty());
  // ORed with the other forms, and ANDed when repeated.
  CHECK(ids("Observation", local + "%7C,%7C2823-3") == std::vector<std::string>{"obs-glu", "obs-nosys"});
  CHECK(ids("Observation", "http://loinc.org%7C&code=2823-3") == std::vector<std::string>{"obs-k"});
  CHECK(ids("DiagnosticReport", "http://loinc.org%7C").empty());
}

TEST_CASE("Clinical routes: date= compares effective[x] as R4 defines it; issued alone matches no date") {
  TestServer s;
  const Seeded a = test::add_patient(s.locator(), 311, "Dates", "A81001");
  const std::string head = R"({"resourceType":"Observation","status":"final","code":{"coding":[)" +
                           coding("http://loinc.org", "2823-3") + "]}," + subject(a.id);
  file(s, a.id,
       {head + R"(,"id":"obs-issued","issued":"2026-11-02T09:00:00Z"})",
        head + R"(,"id":"obs-night","effectivePeriod":{"start":"2026-11-01T22:00:00Z","end":"2026-11-02T02:00:00Z"}})",
        head + R"(,"id":"obs-noon","effectiveDateTime":"2026-11-02T12:00:00Z","issued":"2026-11-03T09:00:00Z"})"});
  auto ids = [&](const std::string& dates) {
    HttpResponse r = test::get(s.port(), "/Observation?patient=" + a.id + dates, s.client(), bearer(gp()));
    REQUIRE_MESSAGE(r.status == 200, r.body);
    return match_ids(json_of(r));
  };
  // The night's Period overlaps the 2nd without lying inside it: not eq, but lt (it began
  // before the day) and le; with gt the day before and lt the day after, it overlaps the day.
  CHECK(ids("&date=2026-11-02") == std::vector<std::string>{"obs-noon"});
  CHECK(ids("&date=le2026-11-02") == std::vector<std::string>{"obs-night", "obs-noon"});
  CHECK(ids("&date=lt2026-11-02") == std::vector<std::string>{"obs-night"});
  CHECK(ids("&date=gt2026-11-01&date=lt2026-11-03") == std::vector<std::string>{"obs-night", "obs-noon"});
  CHECK(ids("&date=ge2026-11-02") == std::vector<std::string>{"obs-noon"});
  CHECK(ids("&date=2026-11-03").empty());  // obs-noon's issued is not its date
  // Without a date, everything, the undated last.
  HttpResponse all = test::get(s.port(), "/Observation?patient=" + a.id, s.client(), bearer(gp()));
  REQUIRE(all.status == 200);
  const fhir::Json bundle = json_of(all);
  const auto& entries = bundle.find("entry")->items();
  REQUIRE(entries.size() == 3);
  CHECK(entries[0].find("resource")->string_at("id") == "obs-noon");
  CHECK(entries[1].find("resource")->string_at("id") == "obs-night");
  CHECK(entries[2].find("resource")->string_at("id") == "obs-issued");
}

TEST_CASE("Clinical routes: _elements keeps each type's mandatory elements, so a cut resource is valid R4") {
  TestServer s;
  const Seeded a = test::add_patient(s.locator(), 310, "Elements", "A81001");
  file_record(s, a.id);
  file(s, a.id,
       {R"({"resourceType":"DiagnosticReport","id":"dr-fbc","status":"final","code":{"coding":[)" +
        coding("http://loinc.org", "58410-2") + "]}," + subject(a.id) + R"(,"effectiveDateTime":"2026-11-02T10:00:00Z"})"});
  const std::string h = bearer(gp());
  auto first = [&](const std::string& query) {
    HttpResponse r = test::get(s.port(), query, s.client(), h);
    REQUIRE_MESSAGE(r.status == 200, r.body);
    fhir::Json b = json_of(r);
    REQUIRE(b.find("entry") != nullptr);
    return *b.find("entry")->items().at(0).find("resource");
  };
  // Observation: status and code (1..1) stay, whatever _elements lists; the rest goes.
  fhir::Json obs = first("/Observation?patient=" + a.id + "&code=http://loinc.org%7C2823-3&_elements=subject");
  CHECK(obs.find("subject") != nullptr);
  CHECK(obs.string_at("status") == "final");
  CHECK(obs.find("code") != nullptr);
  CHECK(obs.find("effectiveDateTime") == nullptr);
  CHECK(obs.find("meta")->find("tag")->items().at(0).string_at("code") == "SUBSETTED");
  CHECK(fhir::check_structure_and_elements(obs, "Observation").empty());
  // Encounter: status and class; DiagnosticReport: status and code.
  fhir::Json enc = first("/Encounter?patient=" + a.id + "&_elements=period");
  CHECK(enc.string_at("status") == "finished");
  CHECK(enc.find("class") != nullptr);
  CHECK(enc.find("subject") == nullptr);
  CHECK(fhir::check_structure_and_elements(enc, "Encounter").empty());
  fhir::Json dr = first("/DiagnosticReport?patient=" + a.id + "&code=http://loinc.org%7C58410-2&_elements=effective");
  CHECK(dr.string_at("status") == "final");
  CHECK(dr.find("code") != nullptr);
  CHECK(dr.find("effectiveDateTime") != nullptr);
  CHECK(dr.find("subject") == nullptr);
}

TEST_CASE("Clinical routes: a read takes _elements and _summary as a search does") {
  TestServer s;
  const Seeded a = test::add_patient(s.locator(), 312, "ReadCut", "A81001");
  file_record(s, a.id);
  const std::string h = bearer(gp());
  HttpResponse cut = test::get(s.port(), "/Observation/obs-k?_elements=subject", s.client(), h);
  REQUIRE_MESSAGE(cut.status == 200, cut.body);
  const fhir::Json o = json_of(cut);
  CHECK(o.find("subject") != nullptr);
  CHECK(o.string_at("status") == "final");  // mandatory: kept
  CHECK(o.find("effectiveDateTime") == nullptr);
  const fhir::Json* tag = o.find("meta")->find("tag");
  REQUIRE(tag != nullptr);
  CHECK(tag->items().at(0).string_at("code") == "SUBSETTED");
  CHECK_FALSE(cut.header("etag").empty());
  // Without them, the whole resource, untagged.
  HttpResponse whole = test::get(s.port(), "/Observation/obs-k", s.client(), h);
  REQUIRE(whole.status == 200);
  CHECK(json_of(whole).find("effectiveDateTime") != nullptr);
  CHECK(json_of(whole).find("meta")->find("tag") == nullptr);
  // A resource without a patient (Location) too.
  const fhir::Json loc = json_of(test::get(s.port(), "/Location/ward-1?_elements=id", s.client(), h));
  CHECK(loc.find("name") == nullptr);
  CHECK(loc.string_at("id") == "ward-1");
  // _summary=count is a search's; _summary=true is not served here: 400 under strict, else ignored.
  CHECK(test::get(s.port(), "/Observation/obs-k?_summary=count", s.client(), h).status == 400);
  CHECK(test::get(s.port(), "/Observation/obs-k?_elements=Bad%20Name", s.client(), h).status == 400);
  CHECK(test::get(s.port(), "/Observation/obs-k?_summary=true", s.client(), h + "Prefer: handling=strict\r\n").status ==
        400);
  HttpResponse lenient = test::get(s.port(), "/Observation/obs-k?_summary=true", s.client(), h);
  REQUIRE(lenient.status == 200);
  CHECK(json_of(lenient).find("effectiveDateTime") != nullptr);
}

TEST_CASE("Clinical routes: an unsupported _sort is ignored under lenient handling, refused under strict") {
  TestServer s;
  const Seeded a = test::add_patient(s.locator(), 311, "Sorted", "A81001");
  file_record(s, a.id);
  const std::string h = bearer(gp());
  const std::string strict = "Prefer: handling=strict\r\n";
  for (const std::string& type : {std::string("Encounter"), std::string("Observation"), std::string("DocumentReference"),
                                  std::string("Patient")}) {
    CAPTURE(type);
    const std::string q = type == "Patient" ? "/Patient?family=Sorted&_sort=-_lastUpdated"
                                            : "/" + type + "?patient=" + a.id + "&_sort=-date";
    HttpResponse lenient = test::get(s.port(), q, s.client(), h);
    REQUIRE_MESSAGE(lenient.status == 200, lenient.body);
    // The self link names what was applied: not _sort.
    const fhir::Json b = json_of(lenient);
    CHECK(b.find("link")->items().at(0).string_at("url").find("_sort") == std::string::npos);
    CHECK(test::get(s.port(), q, s.client(), h + strict).status == 400);
    // _include and _revinclude are refused whatever the handling.
    CHECK(test::get(s.port(), q + "&_include=" + type + ":subject", s.client(), h).status == 400);
  }
  // The same search without _sort: the same matches.
  fhir::Json plain = json_of(test::get(s.port(), "/Encounter?patient=" + a.id, s.client(), h));
  fhir::Json sorted = json_of(test::get(s.port(), "/Encounter?patient=" + a.id + "&_sort=date", s.client(), h));
  CHECK(match_ids(sorted) == match_ids(plain));
  CHECK(match_ids(plain).size() == 2);
}

TEST_CASE("Clinical routes: the patient is named once; an absolute reference to this server names it") {
  TestServer s;
  const Seeded a = test::add_patient(s.locator(), 304, "Named", "A81001");
  file_record(s, a.id);
  const std::string h = bearer(gp());
  // Repeated: refused, whichever comes last, and whether or not they agree.
  for (const std::string& q : {"/Encounter?patient=nope&patient=" + a.id, "/Encounter?patient=" + a.id + "&patient=nope",
                               "/Encounter?patient=" + a.id + "&subject=Patient/" + a.id}) {
    CAPTURE(q);
    HttpResponse r = test::get(s.port(), q, s.client(), h);
    CHECK(r.status == 400);
    CHECK(diagnostics_of(r).rfind("patient: name the patient once", 0) == 0);
  }
  // [base]/Patient/{id} of this server is the patient; another server's is a clear 400.
  HttpResponse own = test::get(s.port(), "/Encounter?patient=" + s.cfg.public_base_url + "/Patient/" + a.id, s.client(), h);
  REQUIRE_MESSAGE(own.status == 200, own.body);
  CHECK(json_of(own).find("total")->as_int64() == 2);
  HttpResponse own_subject =
      test::get(s.port(), "/Observation?subject=" + s.cfg.public_base_url + "/Patient/" + a.id, s.client(), h);
  CHECK(json_of(own_subject).find("total")->as_int64() == 3);
  HttpResponse other = test::get(s.port(), "/Encounter?patient=https://elsewhere.example.org/fhir/Patient/" + a.id,
                                 s.client(), h);
  CHECK(other.status == 400);
  CHECK(diagnostics_of(other) == "patient: an absolute reference must name a Patient on this server: " +
                                     s.cfg.public_base_url + "/Patient/{id}; patients of other servers are not held here");
  CHECK(test::get(s.port(), "/Encounter?patient=" + s.cfg.public_base_url + "/Encounter/enc-1", s.client(), h).status ==
        400);
  // The NHS number alone, as DocumentReference takes it.
  HttpResponse bare = test::get(s.port(), "/Encounter?patient:identifier=" + a.nhs_number, s.client(), h);
  REQUIRE_MESSAGE(bare.status == 200, bare.body);
  CHECK(json_of(bare).find("total")->as_int64() == 2);
}

TEST_CASE("Clinical routes: reads send Last-Modified and answer If-None-Match and If-Modified-Since with 304") {
  TestServer s;
  const Seeded a = test::add_patient(s.locator(), 305, "Cached", "A81001");
  file_record(s, a.id);
  const std::string h = bearer(gp());
  for (const std::string path : {"/Encounter/enc-2", "/Observation/obs-k", "/Location/ward-1"}) {
    CAPTURE(path);
    HttpResponse r = test::get(s.port(), path, s.client(), h);
    REQUIRE(r.status == 200);
    CHECK(r.header("etag") == "W/\"1\"");
    const std::string modified = r.header("last-modified");
    CHECK(modified.find(" GMT") != std::string::npos);
    HttpResponse same = test::get(s.port(), path, s.client(), h + "If-None-Match: W/\"1\"\r\n");
    CHECK(same.status == 304);
    CHECK(same.body.empty());
    CHECK(same.header("etag") == "W/\"1\"");
    CHECK(test::get(s.port(), path, s.client(), h + "If-None-Match: W/\"2\"\r\n").status == 200);
    CHECK(test::get(s.port(), path, s.client(), h + "If-Modified-Since: " + modified + "\r\n").status == 304);
  }
  // A 304 is no way round access: a caller without a relationship still gets 404.
  TokenClaims stranger = gp();
  stranger.org = "B99999";
  CHECK(test::get(s.port(), "/Encounter/enc-2", s.client(), bearer(stranger) + "If-None-Match: *\r\n").status == 404);
  // The CapabilityStatement says so for every type read this way.
  fhir::Json cs = json_of(test::get(s.port(), "/metadata", s.client()));
  int declared = 0;
  for (const auto& rc : cs.find("rest")->items().at(0).find("resource")->items()) {
    const std::string type(rc.string_at("type"));
    if (type == "Encounter" || type == "Observation" || type == "DiagnosticReport" || type == "Location" ||
        type == "Practitioner" || type == "Patient" || type == "DocumentReference") {
      CAPTURE(type);
      CHECK(rc.string_at("conditionalRead") == "full-support");
      ++declared;
    }
  }
  CHECK(declared == 7);
}

TEST_CASE("Clinical routes: POST _search keeps the NHS number out of the URL and of every page link") {
  TestServer s;
  const Seeded a = test::add_patient(s.locator(), 306, "Posted", "A81001");
  file_record(s, a.id);
  const std::string h = bearer(gp());
  const std::string base = s.cfg.public_base_url;
  const std::string form = "application/x-www-form-urlencoded";
  HttpResponse r = test::request(s, "POST", "/Observation/_search", h,
                                 "patient:identifier=https%3A%2F%2Ffhir.nhs.uk%2FId%2Fnhs-number%7C" + a.nhs_number +
                                     "&_count=2",
                                 form);
  REQUIRE_MESSAGE(r.status == 200, r.body);
  fhir::Json b = json_of(r);
  CHECK(b.find("total")->as_int64() == 3);
  std::vector<std::string> seen = match_ids(b);
  for (const auto& l : b.find("link")->items()) {
    const std::string url(l.string_at("url"));
    CAPTURE(url);
    CHECK(url.find(a.nhs_number) == std::string::npos);
    CHECK(url.find("identifier") == std::string::npos);
    CHECK(url.rfind(base + "/Observation?_getpages=", 0) == 0);
  }
  // The next page by its handle, as the same user.
  const std::string next = link_target(b, "next", base);
  HttpResponse more = test::get(s.port(), next, s.client(), h);
  REQUIRE_MESSAGE(more.status == 200, more.body);
  for (const auto& id : match_ids(json_of(more))) seen.push_back(id);
  std::sort(seen.begin(), seen.end());
  CHECK(seen == std::vector<std::string>{"obs-dep", "obs-k", "obs-k-nosys"});
  // Nobody else's, and not another type's; no criteria beside the handle.
  TokenClaims other = gp();
  other.sub = "gp-2";
  CHECK(test::get(s.port(), next, s.client(), bearer(other)).status == 403);
  CHECK(test::get(s.port(), "/Encounter" + next.substr(next.find('?')), s.client(), h).status == 410);
  CHECK(test::get(s.port(), next + "&code=x", s.client(), h).status == 400);
  // Encounter and DiagnosticReport take it too; the body must be a form.
  HttpResponse enc = test::request(s, "POST", "/Encounter/_search", h, "patient=" + a.id, form);
  REQUIRE_MESSAGE(enc.status == 200, enc.body);
  CHECK(json_of(enc).find("total")->as_int64() == 2);
  HttpResponse dr = test::request(s, "POST", "/DiagnosticReport/_search", h, "patient=" + a.id, form);
  CHECK(dr.status == 200);
  CHECK(test::request(s, "POST", "/Encounter/_search", h, "{}", "application/json").status == 415);
  // An empty POST without Content-Type searches by the URL's parameters, as GET does.
  auto ex = test::exchange(s.port(),
                           "POST /Encounter/_search?patient=" + a.id + " HTTP/1.1\r\nHost: localhost\r\n" + h +
                               "Content-Length: 0\r\nConnection: close\r\n\r\n",
                           1, s.client());
  REQUIRE_MESSAGE(ex.responses.size() == 1, ex.error);
  REQUIRE_MESSAGE(ex.responses[0].status == 200, ex.responses[0].body);
  CHECK(json_of(ex.responses[0]).find("total")->as_int64() == 2);
}
