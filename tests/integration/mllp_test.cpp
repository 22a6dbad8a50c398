// SPDX-License-Identifier: Apache-2.0
// Issue #4 over real sockets: the HL7 v2 MLLP listener of a running gateway (gw::App), its
// acknowledgements, the resulting FHIR resources, duplicates, and every bad-input path of
// item 8, with the listener serving other connections throughout.
#include <doctest/doctest.h>

#include <algorithm>
#include <thread>
#include <tuple>

#include "adapters/hl7v2/hl7v2_adapter.h"
#include "fhir/structure_check.h"
#include "gateway/audit/log.h"
#include "gateway/audit/record.h"
#include "gateway/observe/log.h"
#include "gateway/store/store.h"
#include "support/certs.h"
#include "support/https_client.h"
#include "support/responses.h"
#include "support/mllp_client.h"
#include "support/stderr_capture.h"
#include "support/test_server.h"
#include "support/tokens.h"

using namespace gw;
using namespace std::chrono_literals;

namespace {

constexpr const char* kSource = "cuh-pas";

std::unique_ptr<test::TestServer> mllp_server(std::vector<std::pair<std::string, std::string>> settings = {},
                                              bool tls = false) {
  return std::make_unique<test::TestServer>([&](config::Config& c) {
    config::SourceSystemConfig s;
    s.ods_code = "RGT01";
    s.name = kSource;
    s.adapter = "hl7v2";
    s.endpoint = "127.0.0.1:0";
    s.settings = settings;
    if (tls) s.settings.emplace_back("tls", "true");
    c.source_systems.push_back(s);
  });
}

hl7v2::Hl7v2Adapter& listener(test::TestServer& s) {
  auto* a = dynamic_cast<hl7v2::Hl7v2Adapter*>(s.app().adapter(kSource));
  REQUIRE(a != nullptr);
  return *a;
}

std::string msh(const std::string& type, const std::string& control, const std::string& extra = "") {
  return "MSH|^~\\&|PAS|RGT01|GW|GW|20261123101500||" + type + "|" + control + "|P|2.4" + extra + "\r";
}

std::string a01(const std::string& control, const std::string& nhs, const std::string& mrn,
                const std::string& visit = "V1", const std::string& msh_extra = "") {
  return msh("ADT^A01^ADT_A01", control, msh_extra) + "EVN|A01|20261123101500\r" + "PID|1||" + nhs +
         "^^^NHS^NH~" + mrn + "^^^RGT01^MR||SMITH^JOHN||19700101|M|||1 HIGH ST^^CAMBRIDGE^^CB2 0QQ\r" +
         "PV1|1|I|WARD1^BED2^^RGT01|||||||||||||||" + visit + "\r";
}

std::string oru(const std::string& control, const std::string& nhs, const std::string& mrn) {
  return msh("ORU^R01^ORU_R01", control) + "PID|1||" + nhs + "^^^NHS^NH~" + mrn + "^^^RGT01^MR||SMITH^JOHN||19700101|M\r" +
         "OBR|1|PL1|FL-" + control + "|24331-1^Lipid panel^LN|||20261123110000|||||||||||||||20261123111000|||F\r" +
         "OBX|1|NM|2093-3^Cholesterol^LN||5.2|mmol/L|3.0-5.0|H|||F|||20261123110000\r";
}

std::string ack_code(const std::string& ack) { return test::hl7_field(ack, "MSA", 1); }

// `ack` with its own MSH-7 (time) and MSH-10 (control id) emptied, so the rest can be
// compared byte for byte.
std::string without_time_and_id(const std::string& ack) {
  std::string out;
  std::size_t field = 0;
  const std::size_t eol = ack.find('\r');
  for (std::size_t i = 0; i < ack.size(); ++i) {
    if (i < eol && ack[i] == '|') ++field;
    else if (i < eol && (field == 6 || field == 9)) continue;
    out += ack[i];
  }
  return out;
}

test::TokenClaims trust_clinician() {
  test::TokenClaims c;
  c.sub = "dr-a";
  c.org = "RGT01";
  return c;
}

// A search as a clinician of the patient's trust (a legitimate relationship via the
// admission's encounter at RGT01).
test::HttpResponse clinical_search(test::TestServer& s, const std::string& path) {
  return test::get(s.port(), path, s.client(), test::test_tokens().header(trust_clinician()));
}

std::int64_t stored(test::TestServer& s, store::MessageStatus status) {
  store::MessageQuery q;
  q.status = status;
  q.limit = 1000;
  auto list = s.app().store().list_messages(q);
  REQUIRE(list.ok());
  return static_cast<std::int64_t>(list->size());
}

}  // namespace

TEST_CASE("MLLP: ADT A01 is acknowledged AA after commit and its Encounter is served over FHIR") {
  auto s = mllp_server();
  const auto acks = test::mllp_round_trip(listener(*s).port(), a01("C001", "9990000018", "MRN1"));
  REQUIRE(acks.size() == 1);
  CHECK(ack_code(acks[0]) == "AA");
  CHECK(test::hl7_field(acks[0], "MSA", 2) == "C001");         // MSA-2 echoes MSH-10
  CHECK(test::hl7_field(acks[0], "MSH", 3) == "GW");           // MSH-3..6 swapped
  CHECK(test::hl7_field(acks[0], "MSH", 5) == "PAS");
  CHECK(test::hl7_field(acks[0], "MSH", 6) == "RGT01");
  CHECK(test::hl7_field(acks[0], "MSH", 9) == "ACK^A01^ACK");  // v2.4+
  CHECK(test::hl7_field(acks[0], "MSH", 12) == "2.4");         // echoed
  // Committed before the ACK: visible at once.
  auto r = clinical_search(*s, "/Encounter?patient:identifier=https://fhir.nhs.uk/Id/nhs-number|9990000018");
  CHECK(r.status == 200);
  CHECK(r.body.find("\"total\":1") != std::string::npos);
  CHECK(r.body.find("\"resourceType\":\"Encounter\"") != std::string::npos);
  CHECK(stored(*s, store::MessageStatus::applied) == 1);
  // The ingest is audited with the patient's NHS number.
  audit::Query q;
  q.subtype = "ingest-applied";
  auto page = s->app().audit_log()->search(q);
  REQUIRE(page.ok());
  REQUIRE(page->records.size() == 1);
  CHECK(page->records[0].detail.patients == std::vector<std::string>{"9990000018"});
  CHECK(page->records[0].source == kSource);
  CHECK(page->records[0].kind == "ingest");
  // Served to IG officers as a structurally valid AuditEvent (DICOM "Import").
  const fhir::Json ev = audit::to_audit_event(page->records[0], "https://localhost");
  CHECK(fhir::check_structure(ev, "AuditEvent").empty());
  CHECK(fhir::to_json(ev).find("\"110107\"") != std::string::npos);
}

TEST_CASE("MLLP: ORU^R01 results are served by Observation and DiagnosticReport searches") {
  auto s = mllp_server();
  const auto acks = test::mllp_round_trip(listener(*s).port(), oru("R001", "9990000026", "MRN2"));
  REQUIRE(acks.size() == 1);
  CHECK(ack_code(acks[0]) == "AA");
  const std::string h = test::test_tokens().header(trust_clinician());
  // The ORU carried no visit, so record an encounter to give the clinician a relationship.
  auto pid = s->locator().lookup_identifier(locator::kNhsNumberSystem, "9990000026");
  REQUIRE(pid.ok());
  REQUIRE(pid->has_value());
  REQUIRE(s->locator().record_encounter("RGT01", **pid, "RGT01", 1790000000).ok());
  auto obs = test::get(s->port(),
                       "/Observation?patient=" + **pid + "&code=http://loinc.org|2093-3&date=ge2026-11-01", s->client(), h);
  CHECK(obs.status == 200);
  CHECK(obs.body.find("\"total\":1") != std::string::npos);
  CHECK(obs.body.find("\"valueQuantity\"") != std::string::npos);
  auto none = test::get(s->port(), "/Observation?patient=" + **pid + "&code=http://loinc.org|718-7", s->client(), h);
  CHECK(none.body.find("\"total\":0") != std::string::npos);
  auto dr = test::get(s->port(), "/DiagnosticReport?patient=" + **pid, s->client(), h);
  CHECK(dr.body.find("\"total\":1") != std::string::npos);
  // A clinician with no relationship sees nothing (an empty Bundle, as for an unknown patient).
  test::TokenClaims other;
  other.sub = "dr-b";
  other.org = "RXX99";
  auto hidden = test::get(s->port(), "/Observation?patient=" + **pid, s->client(), test::test_tokens().header(other));
  CHECK(hidden.status == 200);
  CHECK(hidden.body.find("\"total\":0") != std::string::npos);
  // No patient named: 400.
  auto bare = test::get(s->port(), "/Observation", s->client(), h);
  CHECK(bare.status == 400);

  // _summary=count: the total alone. _elements: the listed elements, tagged SUBSETTED (a
  // choice element by its base name). _summary=true is not served: 400 under strict handling,
  // left out (and out of the self link) under lenient.
  const std::string base = "/Observation?patient=" + **pid;
  fhir::Json counted = test::json_of(test::get(s->port(), base + "&_summary=count", s->client(), h));
  CHECK(counted.find("total")->as_int64() == 1);
  CHECK(counted.find("entry") == nullptr);
  fhir::Json cut = test::json_of(test::get(s->port(), base + "&_elements=code,value", s->client(), h));
  REQUIRE(cut.find("entry") != nullptr);
  const fhir::Json& o = *cut.find("entry")->items().at(0).find("resource");
  CHECK(o.find("code") != nullptr);
  CHECK(o.find("valueQuantity") != nullptr);
  CHECK(o.find("referenceRange") == nullptr);
  CHECK(o.find("subject") == nullptr);
  CHECK(o.find("meta")->find("tag")->items().at(0).string_at("code") == "SUBSETTED");
  const std::string strict = "Prefer: handling=strict\r\n";
  CHECK(test::get(s->port(), base + "&_summary=true", s->client(), h + strict).status == 400);
  auto lenient = test::get(s->port(), base + "&_summary=true", s->client(), h);
  REQUIRE(lenient.status == 200);
  CHECK(lenient.body.find("\"referenceRange\"") != std::string::npos);  // the whole resource
  CHECK(lenient.body.find("_summary") == std::string::npos);          // and the self link says so
}

TEST_CASE("MLLP: WinPath OBRs sharing a filler number are two reports, searchable by the lab's own code system") {
  auto s = mllp_server();
  const std::string msg =
      msh("ORU^R01", "WP1") + "PID|||RD100001^^^RGT01^MR~9990000069^^^NHS^NH||TESTER^ALPHA^J||19700101|F\r" +
      "ORC|RE|PL-A|ACC-1|ACC-1|CM\r"
      "OBR|1|PL-A|ACC-1|FBC^FULL BLOOD COUNT^WinPath||202611230800|202611230800|||||||||||||||202611230900||H1|F\r"
      "OBX|1|NM|WCC^White cell count^Winpath||12.1|10*9/L|3.0-10.0|H|||F\r"
      "ORC|RE|PL-B|ACC-1|ACC-1|CM\r"
      "OBR|2|PL-B|ACC-1|CRP^C REACTIVE PROTEIN^WinPath||202611230800|202611230800|||||||||||||||202611230900||C1|F\r"
      "OBX|1|NM|CRP^C-reactive protein^Winpath||87|mg/L|0-5|H|||F\r";
  const auto acks = test::mllp_round_trip(listener(*s).port(), msg);
  REQUIRE(acks.size() == 1);
  CHECK(ack_code(acks[0]) == "AA");
  auto pid = s->locator().lookup_identifier(locator::kNhsNumberSystem, "9990000069");
  REQUIRE(pid.ok());
  REQUIRE(pid->has_value());
  REQUIRE(s->locator().record_encounter("RGT01", **pid, "RGT01", 1790000000).ok());
  fhir::Json reports = test::json_of(clinical_search(*s, "/DiagnosticReport?patient=" + **pid));
  CHECK(reports.find("total")->as_int64() == 2);
  // The lab's local code system is scoped to this source: code=system|CRP finds its CRP.
  const std::string system = "https://fhir.nhs.uk/Id/local/code-system/cuh-pas/winpath";
  fhir::Json crp = test::json_of(clinical_search(*s, "/Observation?patient=" + **pid + "&code=" + system + "|CRP"));
  REQUIRE(crp.find("total")->as_int64() == 1);
  CHECK(fhir::to_json(crp).find("\"value\":87") != std::string::npos);
  const std::string elsewhere = "https://fhir.nhs.uk/Id/local/code-system/another-lab/winpath";
  fhir::Json other = test::json_of(clinical_search(*s, "/Observation?patient=" + **pid + "&code=" + elsewhere + "|CRP"));
  CHECK(other.find("total")->as_int64() == 0);
}

TEST_CASE("MLLP: results are found by date= when they were taken (OBR-7, OBX-14), not when issued (OBR-22)") {
  auto s = mllp_server();
  // Collected on the 23rd and reported on the 24th; and a report with no collection time,
  // whose DiagnosticReport then has `issued` alone.
  auto result = [](const std::string& control, const std::string& obr7, const std::string& obx14) {
    return msh("ORU^R01^ORU_R01", control) + "PID|1||9990000085^^^NHS^NH||SMITH^JOHN||19700101|M\r" +
           "OBR|1|PL-" + control + "|FL-" + control + "|24331-1^Lipid panel^LN|||" + obr7 +
           "|||||||||||||||20261124090000|||F\r" + "OBX|1|NM|2093-3^Cholesterol^LN||5.2|mmol/L|3.0-5.0|H|||F|||" +
           obx14 + "\r";
  };
  const std::vector<std::string> messages{result("D1", "20261123110000", ""), result("D2", "", ""),
                                          result("D3", "20261123110000", "20261122233000")};
  for (const std::string& msg : messages) {
    const auto acks = test::mllp_round_trip(listener(*s).port(), msg);
    REQUIRE(acks.size() == 1);
    CHECK(ack_code(acks[0]) == "AA");
  }
  auto pid = s->locator().lookup_identifier(locator::kNhsNumberSystem, "9990000085");
  REQUIRE(pid.ok());
  REQUIRE(pid->has_value());
  REQUIRE(s->locator().record_encounter("RGT01", **pid, "RGT01", 1790000000).ok());
  auto total = [&](const std::string& query) {
    fhir::Json bundle = test::json_of(clinical_search(*s, "/" + query + "&patient=" + **pid));
    return bundle.find("total")->as_int64();
  };
  CHECK(total("DiagnosticReport?date=2026-11-24") == 0);
  CHECK(total("DiagnosticReport?date=2026-11-23") == 2);
  CHECK(total("DiagnosticReport?date=ge2026-01-01") == 2);
  CHECK(total("DiagnosticReport?_count=10") == 3);
  // An OBX without OBX-14 takes the report's OBR-7; OBX-14 wins over it.
  CHECK(total("Observation?date=2026-11-23") == 1);
  CHECK(total("Observation?date=2026-11-22") == 1);
  CHECK(total("Observation?date=2026-11-24") == 0);
  // Undated last: the report without OBR-7 comes after both dated ones.
  fhir::Json all = test::json_of(clinical_search(*s, "/DiagnosticReport?patient=" + **pid));
  const auto& entries = all.find("entry")->items();
  REQUIRE(entries.size() == 3);
  CHECK_FALSE(entries[0].find("resource")->string_at("effectiveDateTime").empty());
  CHECK_FALSE(entries[1].find("resource")->string_at("effectiveDateTime").empty());
  CHECK(entries[2].find("resource")->string_at("effectiveDateTime").empty());
  CHECK(entries[2].find("resource")->string_at("issued").substr(0, 19) == "2026-11-24T09:00:00");
}

TEST_CASE("MLLP: mapping warnings go back as ERR severity W, are kept with the message and counted") {
  auto s = mllp_server();
  // PID-7 is no date and OBX-2 "XX" is no HL7 value type: applied without the birth date and
  // with the value as text, and the sender is told both.
  const std::string msg = "MSH|^~\\&|LAB|RGT01|GW|GW|20261123101500||ORU^R01^ORU_R01|W1|P|2.5.1\r"
                          "PID|1||9990000077^^^NHS^NH||SMITH^JOHN||12312321|M\r"
                          "OBR|1||FL-W1|UE^U and E^LN|||20261123110000|||||||||||||||20261123111000|||F\r"
                          "OBX|1|XX|GLU^Glucose^L||4.2|mmol/L|3.5-5.5||||F\r";
  const auto acks = test::mllp_round_trip(listener(*s).port(), msg);
  REQUIRE(acks.size() == 1);
  CHECK(ack_code(acks[0]) == "AA");
  CHECK(acks[0].find("\rERR||PID^1^7|0^PID-7: not a valid HL7 date") != std::string::npos);
  CHECK(acks[0].find("\rERR||OBX^1^2|0^OBX[1]-2: value type XX is not mapped") != std::string::npos);
  CHECK(acks[0].find("|W|") != std::string::npos);
  // The row: applied, with the warnings; gw-messages shows them.
  store::MessageQuery q;
  q.status = store::MessageStatus::applied;
  auto rows = s->app().store().list_messages(q);
  REQUIRE(rows.ok());
  REQUIRE(rows->size() == 1);
  CHECK(rows->front().error_location == "PID-7");
  CHECK(rows->front().error.find("PID-7: not a valid HL7 date") == 0);
  CHECK(rows->front().error.find("\nOBX[1]-2: value type XX") != std::string::npos);
  const auto c = s->app().ingest().counters();
  CHECK(c.units_with_warnings == 1);
  CHECK(c.warnings == 2);
  test::HttpResponse m = test::get(s->port(), "/metrics", s->client());
  CHECK(m.body.find("\ngateway_ingest_warnings_total 2\n") != std::string::npos);
  // A resend gets the same acknowledgement, warnings included, and counts nothing again.
  const auto again = test::mllp_round_trip(listener(*s).port(), msg);
  REQUIRE(again.size() == 1);
  CHECK(again[0] == acks[0]);
  CHECK(s->app().ingest().counters().warnings == 2);
  // A message without warnings gets a plain AA.
  const auto clean = test::mllp_round_trip(listener(*s).port(), oru("W2", "9990000077", "MRN7"));
  REQUIRE(clean.size() == 1);
  CHECK(clean[0].find("\rERR") == std::string::npos);

  // Results for a second patient refuse the message (AE naming the second PID-3), stored as
  // an error: nothing of it is acknowledged and then lost.
  const std::string two = oru("W3", "9990000077", "MRN7") + "PID|2||MRN-OTHER^^^RGT01^MR\r"
                          "OBR|2||FL-W3B|UE^U and E^LN\rOBX|1|NM|K^Potassium^LN||6.9|mmol/L||HH|||F\r";
  const auto ae = test::mllp_round_trip(listener(*s).port(), two);
  REQUIRE(ae.size() == 1);
  CHECK(ack_code(ae[0]) == "AE");
  CHECK(ae[0].find("\rERR|PID^2^3^102&PID[2]-3 names another patient") != std::string::npos);
  CHECK(stored(*s, store::MessageStatus::error) == 1);
}

TEST_CASE("Clinical search: a bad patient parameter is a 400 OperationOutcome naming the parameter") {
  auto s = mllp_server();
  struct Case {
    std::string query, fragment;
  };
  const std::vector<Case> cases = {
      // Wrong check digit, too short, not digits.
      {"/Encounter?patient:identifier=https://fhir.nhs.uk/Id/nhs-number|9990000019", "check digit"},
      {"/Encounter?patient:identifier=https://fhir.nhs.uk/Id/nhs-number|999000001", "10 digits"},
      {"/Observation?subject:identifier=https://fhir.nhs.uk/Id/nhs-number|99900000AB", "digits only"},
      // Another identifier system, and two patients at once.
      {"/Encounter?patient:identifier=urn:oid:2.16.840.1.113883.2.1.4.1|9990000018", "nhs-number"},
      {"/DiagnosticReport?patient=abc&patient:identifier=https://fhir.nhs.uk/Id/nhs-number|9990000018",
       "exactly one patient"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.query);
    auto r = clinical_search(*s, c.query);
    CHECK(r.status == 400);
    CHECK(r.body.find("\"resourceType\":\"OperationOutcome\"") != std::string::npos);
    CHECK(r.body.find(c.fragment) != std::string::npos);
  }
}

TEST_CASE("MLLP: a resend gets the original ACK and is not applied twice; a reused control id is a new message") {
  auto s = mllp_server();
  const std::uint16_t port = listener(*s).port();
  const std::string msg = a01("DUP1", "9990000034", "MRN3");
  const auto first = test::mllp_round_trip(port, msg);
  const auto again = test::mllp_round_trip(port, msg);
  REQUIRE(first.size() == 1);
  REQUIRE(again.size() == 1);
  CHECK(again[0] == first[0]);  // byte for byte, including the ACK's own control id
  CHECK(stored(*s, store::MessageStatus::applied) == 1);
  CHECK(s->app().ingest().counters().duplicates == 1);
  // Same MSH-3/4/10, different content: applied, and counted as a sender fault.
  const auto reused = test::mllp_round_trip(port, a01("DUP1", "9990000034", "MRN3", "V2"));
  REQUIRE(reused.size() == 1);
  CHECK(ack_code(reused[0]) == "AA");
  CHECK(stored(*s, store::MessageStatus::applied) == 2);
  CHECK(s->app().ingest().counters().reused_keys == 1);
}

TEST_CASE("MLLP: A40 merges; an A40 for an unknown patient is AE with an ERR segment and stored as an error") {
  auto s = mllp_server();
  const std::uint16_t port = listener(*s).port();
  REQUIRE(ack_code(test::mllp_round_trip(port, a01("M1", "9990000042", "MRN-A"))[0]) == "AA");
  // A second record for the same person, known only by a local identifier.
  const std::string local_only = msh("ADT^A04^ADT_A01", "M2") + "PID|1||MRN-B^^^RGT01^MR||SMITH^JOHN||19700101|M\r";
  REQUIRE(ack_code(test::mllp_round_trip(port, local_only)[0]) == "AA");
  const std::string merge = msh("ADT^A40^ADT_A39", "M3") + "EVN|A40|20261123120000\r" +
                            "PID|1||9990000042^^^NHS^NH~MRN-A^^^RGT01^MR||SMITH^JOHN||19700101|M\r" +
                            "MRG|MRN-B^^^RGT01^MR\r";
  REQUIRE(ack_code(test::mllp_round_trip(port, merge)[0]) == "AA");
  auto survivor = s->locator().lookup_identifier(locator::kNhsNumberSystem, "9990000042");
  REQUIRE(survivor.ok());
  REQUIRE(survivor->has_value());
  auto rec = s->locator().read_patient(**survivor);
  REQUIRE(rec.ok());
  CHECK((*rec)->merged_from.size() == 1);

  const std::string unknown = msh("ADT^A40^ADT_A39", "M4") + "EVN|A40|20261123120000\r" +
                              "PID|1||9990000042^^^NHS^NH||SMITH^JOHN||19700101|M\r" + "MRG|NOBODY-9^^^RGT01^MR\r";
  const auto ae = test::mllp_round_trip(port, unknown);
  REQUIRE(ae.size() == 1);
  CHECK(ack_code(ae[0]) == "AE");
  CHECK(test::hl7_field(ae[0], "MSA", 2) == "M4");
  CHECK(ae[0].find("\rERR|") != std::string::npos);
  CHECK(stored(*s, store::MessageStatus::error) == 1);

  // Enhanced mode: the message is committed (stored as an error, replayable), so the accept
  // ACK is CA (HL7 table 0008); the AE is the application ACK, sent when MSH-16 asks for it.
  const std::string unknown_enhanced = msh("ADT^A40^ADT_A39", "M5", "|||AL|NE") + "EVN|A40|20261123120000\r" +
                                       "PID|1||9990000042^^^NHS^NH||SMITH^JOHN||19700101|M\r" + "MRG|NOBODY-8^^^RGT01^MR\r";
  auto acks = test::mllp_round_trip(port, unknown_enhanced, 2, 1500ms);
  REQUIRE(acks.size() == 1);
  CHECK(ack_code(acks[0]) == "CA");
  CHECK(acks[0].find("\rERR|") == std::string::npos);
  std::string both = unknown_enhanced;
  both.replace(both.find("|M5|"), 4, "|M6|").replace(both.find("|AL|NE"), 6, "|AL|AL");
  acks = test::mllp_round_trip(port, both, 2);
  REQUIRE(acks.size() == 2);
  CHECK(ack_code(acks[0]) == "CA");
  CHECK(ack_code(acks[1]) == "AE");
  CHECK(test::hl7_field(acks[1], "MSA", 2) == "M6");
  CHECK(acks[1].find("^204&") != std::string::npos);  // ERR-1 (v2.4 ELD): unknown key identifier
  CHECK(stored(*s, store::MessageStatus::error) == 3);
}

TEST_CASE("MLLP: an A31 without PV1 after an A01 leaves the source's DocumentReference reading the Encounters") {
  auto s = mllp_server();
  const std::uint16_t port = listener(*s).port();
  REQUIRE(ack_code(test::mllp_round_trip(port, a01("U1", "9990000018", "MRN-U"))[0]) == "AA");
  auto found = s->locator().lookup_identifier(locator::kNhsNumberSystem, "9990000018");
  REQUIRE(found.ok());
  REQUIRE(found->has_value());
  const std::string patient = **found;
  auto pointers = s->locator().pointers_for(patient);
  REQUIRE(pointers.ok());
  REQUIRE(pointers->size() == 1);
  const std::string path = "/DocumentReference/" + pointers->front().id;
  const auto attachment_url = [&s, &path]() {
    const test::HttpResponse r = clinical_search(*s, path);
    REQUIRE_MESSAGE(r.status == 200, r.body);
    const fhir::Json doc = test::json_of(r);
    return std::string(doc.find("content")->items().at(0).find("attachment")->string_at("url"));
  };
  const std::string encounters = "/Encounter?patient=" + patient;
  const std::string admitted = attachment_url();
  REQUIRE(admitted.size() > encounters.size());
  CHECK(admitted.compare(admitted.size() - encounters.size(), encounters.size(), encounters) == 0);

  // An A31 (update patient information) without PV1: the unit holds the Patient alone.
  const std::string a31 = msh("ADT^A31^ADT_A05", "U2") + "EVN|A31|20261124090000\r" +
                          "PID|1||9990000018^^^NHS^NH~MRN-U^^^RGT01^MR||SMITH^JOHN||19700101|M|||"
                          "2 LOW ST^^CAMBRIDGE^^CB2 1AA\r";
  REQUIRE(ack_code(test::mllp_round_trip(port, a31)[0]) == "AA");
  CHECK(s->locator().pointers_for(patient)->size() == 1);
  CHECK(attachment_url() == admitted);  // still the Encounters, which the pointer says it holds
}

TEST_CASE("MLLP: a message naming only an MRN an A40 retired is filed under the survivor without replacing its "
          "demographics, and the AA says so") {
  auto s = mllp_server();
  const std::uint16_t port = listener(*s).port();
  // Two records of one person at the PAS, known by local identifiers only.
  const auto admit = [](const std::string& control, const std::string& mrn, const std::string& name,
                        const std::string& visit) {
    return msh("ADT^A01^ADT_A01", control) + "EVN|A01|20261123101500\r" + "PID|1||" + mrn + "^^^RGT01^MR||" + name +
           "||19700101|F|||1 HIGH ST^^CAMBRIDGE^^CB2 0QQ\r" + "PV1|1|I|WARD1^BED2^^RGT01|||||||||||||||" + visit + "\r";
  };
  REQUIRE(ack_code(test::mllp_round_trip(port, admit("S1", "MRN-1", "ALPHA^ANN", "V1"))[0]) == "AA");
  REQUIRE(ack_code(test::mllp_round_trip(port, admit("S2", "MRN-2", "BRAVO^ANN", "V2"))[0]) == "AA");
  const std::string mrn_system = "https://fhir.nhs.uk/Id/local/rgt01";
  auto first = s->locator().lookup_identifier(mrn_system, "MRN-1");
  auto second = s->locator().lookup_identifier(mrn_system, "MRN-2");
  REQUIRE(first.ok());
  REQUIRE(second.ok());
  REQUIRE(first->has_value());
  REQUIRE(second->has_value());
  const std::string survivor = **first;
  REQUIRE(**second != survivor);
  const std::string merge = msh("ADT^A40^ADT_A39", "S3") + "EVN|A40|20261123120000\r" +
                            "PID|1||MRN-1^^^RGT01^MR||ALPHA^ANN||19700101|F\r" + "MRG|MRN-2^^^RGT01^MR\r";
  REQUIRE(ack_code(test::mllp_round_trip(port, merge)[0]) == "AA");
  REQUIRE(*s->locator().lookup_identifier(mrn_system, "MRN-2") == survivor);
  const auto served = [&s, &survivor]() {
    const test::HttpResponse r = clinical_search(*s, "/Patient/" + survivor);
    REQUIRE_MESSAGE(r.status == 200, r.body);
    return r.body;
  };
  CHECK(served().find("ALPHA") != std::string::npos);

  // The PAS has not caught up: an A08 (v2.5, so its ERR carries a severity) naming the retired
  // MRN alone, with another name. Filed under the survivor (AA), whose name stays.
  const auto update = [](const std::string& control, const std::string& mrn, const std::string& name) {
    return "MSH|^~\\&|PAS|RGT01|GW|GW|20261124101500||ADT^A08^ADT_A01|" + control + "|P|2.5\r" +
           "EVN|A08|20261124101500\r" + "PID|1||" + mrn + "^^^RGT01^MR||" + name + "||19700101|F\r";
  };
  const auto stale = test::mllp_round_trip(port, update("S4", "MRN-2", "CHARLIE^ANN"));
  REQUIRE(stale.size() == 1);
  CHECK(ack_code(stale[0]) == "AA");
  CHECK(stale[0].find("\rERR||PID^1^3|0^PID-3: identifier retired by a merge: ") != std::string::npos);
  CHECK(test::hl7_field(stale[0], "ERR", 4) == "W");
  CHECK(stale[0].find("filed under the surviving record") != std::string::npos);
  CHECK(stale[0].find("ALPHA") == std::string::npos);  // nothing of the survivor the sender did not send
  CHECK(stale[0].find(survivor) == std::string::npos);
  const std::string after_stale = served();
  CHECK(after_stale.find("ALPHA") != std::string::npos);
  CHECK(after_stale.find("CHARLIE") == std::string::npos);
  CHECK(stored(*s, store::MessageStatus::applied) == 4);

  // Naming the surviving MRN, the most recent update wins as ever, with no such warning (only
  // the mapping's, for the missing PV1).
  const auto current = test::mllp_round_trip(port, update("S5", "MRN-1", "DELTA^ANN"));
  REQUIRE(current.size() == 1);
  CHECK(ack_code(current[0]) == "AA");
  CHECK(current[0].find("retired by a merge") == std::string::npos);
  const std::string after_current = served();
  CHECK(after_current.find("DELTA") != std::string::npos);
  CHECK(after_current.find("ALPHA") == std::string::npos);
}

TEST_CASE("MLLP: unreadable, unsupported and wrongly encoded messages are AR, stored as rejected") {
  auto s = mllp_server();
  const std::uint16_t port = listener(*s).port();
  const auto garbage = test::mllp_round_trip(port, "this is not HL7 at all");
  REQUIRE(garbage.size() == 1);
  CHECK(ack_code(garbage[0]) == "AR");
  CHECK(garbage[0].find("\rERR|") != std::string::npos);

  const auto siu = test::mllp_round_trip(port, msh("SIU^S12^SIU_S12", "U1") + "SCH|1\r");
  REQUIRE(siu.size() == 1);
  CHECK(ack_code(siu[0]) == "AR");
  CHECK(test::hl7_field(siu[0], "MSA", 2) == "U1");
  CHECK(siu[0].find("^200&") != std::string::npos);  // ERR-1 (v2.4 ELD), table 0357: unsupported message type

  // Duplicate encoding characters in MSH-2.
  const auto bad_enc = test::mllp_round_trip(port, "MSH|^^\\&|PAS|RGT01|GW|GW|20261123||ADT^A01|E1|P|2.4\rPID|1||X^^^RGT01^MR\r");
  REQUIRE(bad_enc.size() == 1);
  CHECK(ack_code(bad_enc[0]) == "AR");
  CHECK(stored(*s, store::MessageStatus::rejected) == 3);
  CHECK(stored(*s, store::MessageStatus::applied) == 0);
}

TEST_CASE("MLLP: with unmapped = \"filter\" a type or event not mapped is AA with a warning, kept as filtered, "
          "and applies nothing") {
  auto s = mllp_server({{"unmapped", "filter"}});
  const std::uint16_t port = listener(*s).port();
  const std::string pid = "PID|1||9990000050^^^NHS^NH~MRN-F^^^RGT01^MR||SMITH^ANN\r";
  const std::string a60 = msh("ADT^A60^ADT_A60", "F1") + "EVN|A60|20261123\r" + pid + "IAM|1||^PENICILLIN\r";
  const std::string siu = msh("SIU^S12^SIU_S12", "F2") + "SCH|1\r";
  for (const std::string* m : {&a60, &siu}) {
    const auto acks = test::mllp_round_trip(port, *m);
    REQUIRE(acks.size() == 1);
    CHECK(ack_code(acks[0]) == "AA");
    // v2.4: the warning as an ERR-1 ELD with code 0 (accepted), naming what was not mapped.
    CHECK(test::hl7_field(acks[0], "ERR", 1).rfind("MSH^1^9^0&", 0) == 0);
    CHECK(acks[0].find("is not mapped") != std::string::npos);
    CHECK(acks[0].find("stored as filtered, not applied") != std::string::npos);
  }
  CHECK(test::hl7_field(test::mllp_round_trip(port, a60)[0], "MSA", 1) == "AA");  // a resend: the same answer
  // Enhanced mode: CA (committed to safe storage), then AA, each with the warning; under ER/ER
  // (acknowledge errors only) nothing, as for an applied message.
  const auto enhanced = test::mllp_round_trip(port, msh("SIU^S12^SIU_S12", "F5", "|||AL|AL") + "SCH|1\r", 2);
  REQUIRE(enhanced.size() == 2);
  CHECK(ack_code(enhanced[0]) == "CA");
  CHECK(ack_code(enhanced[1]) == "AA");
  for (const auto& ack : enhanced) CHECK(ack.find("stored as filtered, not applied") != std::string::npos);
  CHECK(test::mllp_round_trip(port, msh("SIU^S12^SIU_S12", "F6", "|||ER|ER") + "SCH|1\r", 1, 1500ms).empty());
  // Nothing applied: the patient the A60 names is not in the record locator.
  auto found = s->locator().lookup_identifier(locator::kNhsNumberSystem, "9990000050");
  REQUIRE(found.ok());
  CHECK_FALSE(found->has_value());
  // Kept, one row per message (the resend updated its row), with the reply sent.
  CHECK(stored(*s, store::MessageStatus::filtered) == 4);
  CHECK(stored(*s, store::MessageStatus::rejected) == 0);
  CHECK(stored(*s, store::MessageStatus::applied) == 0);
  store::MessageQuery mq;
  mq.status = store::MessageStatus::filtered;
  auto rows = s->app().store().list_messages(mq);
  REQUIRE(rows.ok());
  REQUIRE(rows->size() == 4);
  for (const auto& row : *rows) {
    if (row.dedupe_key.find("|F6") != std::string::npos) continue;  // ER/ER: no reply was sent
    CHECK(row.reply.find("MSA|AA|F") != std::string::npos);
    CHECK(row.error.find("is not mapped") != std::string::npos);
  }
  // Audited as received and kept (three attempts), the A60 naming its patient.
  audit::Query q;
  q.subtype = "ingest-filtered";
  auto page = s->app().audit_log()->search(q);
  REQUIRE(page.ok());
  REQUIRE(page->records.size() == 5);
  CHECK(page->records[0].status == 202);
  audit::Query by_patient;
  by_patient.patient = "9990000050";
  CHECK(s->app().audit_log()->search(by_patient)->records.size() == 2);
  CHECK(listener(*s).stats().filtered == 5);
  CHECK(listener(*s).stats().rejected == 0);
  // Only what is not mapped is filtered: a mapped type that cannot be taken is refused as before,
  // and a mapped type is applied.
  std::string training = msh("ADT^A04^ADT_A01", "F3") + pid;
  training.replace(training.find("|P|2.4"), 6, "|T|2.4");
  CHECK(ack_code(test::mllp_round_trip(port, training)[0]) == "AR");
  CHECK(ack_code(test::mllp_round_trip(port, "this is not HL7 at all")[0]) == "AR");
  CHECK(stored(*s, store::MessageStatus::rejected) == 2);
  // Events that merge, re-key or delete patients, or cancel an applied event, are never
  // filtered: an AA would leave the record wrong while the sender moves on.
  int n = 0;
  for (const char* type : {"ADT^A34^ADT_A30", "ADT^A47^ADT_A30", "ADT^A12^ADT_A12", "ADT^A29^ADT_A21"}) {
    CAPTURE(type);
    std::string control = "K";
    control += std::to_string(++n);
    const auto kept = test::mllp_round_trip(port, msh(type, control) + "EVN|X\r" + pid);
    REQUIRE(kept.size() == 1);
    CHECK(ack_code(kept[0]) == "AR");
    CHECK(test::hl7_field(kept[0], "ERR", 1).rfind("MSH^1^9^201&", 0) == 0);
    CHECK(kept[0].find("never filtered") != std::string::npos);
  }
  CHECK(stored(*s, store::MessageStatus::rejected) == 6);
  const auto a04 = test::mllp_round_trip(port, msh("ADT^A04^ADT_A01", "F4") + pid);
  CHECK(ack_code(a04[0]) == "AA");
  CHECK(a04[0].find("filtered") == std::string::npos);  // (its ERR: a warning that PV1 is missing)
  CHECK(stored(*s, store::MessageStatus::applied) == 1);
}

TEST_CASE("MLLP: two messages in one frame are refused whole (AR naming the second MSH), nothing applied") {
  auto s = mllp_server();
  const std::uint16_t port = listener(*s).port();
  const std::uint64_t violations = listener(*s).stats().protocol_violations;
  const auto acks = test::mllp_round_trip(port, a01("TWO1", "9990000018", "MRN-21") + a01("TWO2", "9990000026", "MRN-22"));
  REQUIRE(acks.size() == 1);  // one frame, one answer
  CHECK(ack_code(acks[0]) == "AR");
  CHECK(test::hl7_field(acks[0], "MSA", 2) == "TWO1");
  // v2.4 ERR-1: the second MSH (segment 5 of the frame), a segment sequence error.
  CHECK(acks[0].find("\rERR|MSH^2^^100&segment 5 is a second MSH segment") != std::string::npos);
  CHECK(acks[0].find("one message per MLLP frame") != std::string::npos);
  CHECK(stored(*s, store::MessageStatus::applied) == 0);
  CHECK(stored(*s, store::MessageStatus::rejected) == 1);
  CHECK(listener(*s).stats().protocol_violations == violations + 1);
  auto second = s->locator().lookup_identifier(locator::kNhsNumberSystem, "9990000026");
  REQUIRE(second.ok());
  CHECK_FALSE(second->has_value());
}

TEST_CASE("MLLP: an FHS/BHS batch applies each message and is answered by one batch acknowledgement") {
  auto s = mllp_server();
  const std::uint16_t port = listener(*s).port();
  const std::string batch = "FHS|^~\\&|PAS|RGT01|GW|GW|20261123101500||||F-1\rBHS|^~\\&|PAS|RGT01|GW|GW|20261123101500||||B-1\r" +
                            a01("BAT1", "9990000018", "MRN-B1") + "MSH|^~\\&|PAS|RGT01|GW|GW|20261123101500||SIU^S12|BAT2|P|2.4\rSCH|1\r" +
                            oru("BAT3", "9990000026", "MRN-B3") + "BTS|3\rFTS|1\r";
  auto acks = test::mllp_round_trip(port, batch);
  REQUIRE(acks.size() == 1);
  const std::string& ack = acks[0];
  CHECK(ack.rfind("FHS|^~\\&|GW|GW|PAS|RGT01|", 0) == 0);
  CHECK(ack.find("|F-1\rBHS|^~\\&|GW|GW|PAS|RGT01|") != std::string::npos);
  CHECK(ack.find("|B-1\rMSH|") != std::string::npos);
  // One ACK message per message, in order, each for itself.
  CHECK(ack.find("\rMSA|AA|BAT1\r") != std::string::npos);
  CHECK(ack.find("\rMSA|AR|BAT2|") != std::string::npos);
  CHECK(ack.find("\rMSA|AA|BAT3\r") != std::string::npos);
  CHECK(ack.find("BAT1") < ack.find("BAT2"));
  CHECK(ack.find("BAT2") < ack.find("BAT3"));
  CHECK(ack.find("\rBTS|3\rFTS|1\r") != std::string::npos);
  CHECK(stored(*s, store::MessageStatus::applied) == 2);
  CHECK(stored(*s, store::MessageStatus::rejected) == 1);
  // The same batch again (an ACK lost on the way): nothing is applied twice, and each
  // message gets its original acknowledgement.
  acks = test::mllp_round_trip(port, batch);
  REQUIRE(acks.size() == 1);
  CHECK(acks[0].find("\rMSA|AA|BAT1\r") != std::string::npos);
  CHECK(acks[0].find("\rMSA|AA|BAT3\r") != std::string::npos);
  CHECK(stored(*s, store::MessageStatus::applied) == 2);
  CHECK(s->app().ingest().counters().duplicates == 2);

  // A batch whose BTS-1 does not count its messages is refused whole: nothing applied, the
  // answer names the first message's control id.
  const std::string short_count = "BHS|^~\\&|PAS|RGT01|GW|GW\r" + a01("BAT4", "9990000034", "MRN-B4") +
                                  a01("BAT5", "9990000042", "MRN-B5") + "BTS|3\r";
  acks = test::mllp_round_trip(port, short_count);
  REQUIRE(acks.size() == 1);
  CHECK(ack_code(acks[0]) == "AR");
  CHECK(test::hl7_field(acks[0], "MSA", 2) == "BAT4");
  CHECK(acks[0].find("BTS-1 counts '3' messages but the batch holds 2") != std::string::npos);
  CHECK(stored(*s, store::MessageStatus::applied) == 2);
}

TEST_CASE("MLLP: a message without MSH-10 is refused (AR 101 at MSH-10), and a resend is not applied") {
  auto s = mllp_server();
  const std::uint16_t port = listener(*s).port();
  for (int i = 0; i < 2; ++i) {
    const auto acks = test::mllp_round_trip(port, a01("", "9990000018", "MRN-NC"));
    REQUIRE(acks.size() == 1);
    CHECK(ack_code(acks[0]) == "AR");
    CHECK(acks[0].find("\rERR|MSH^1^10^101&MSH-10 (message control id) is required") != std::string::npos);
  }
  CHECK(stored(*s, store::MessageStatus::applied) == 0);
  auto none = s->locator().lookup_identifier(locator::kNhsNumberSystem, "9990000018");
  REQUIRE(none.ok());
  CHECK_FALSE(none->has_value());
}

TEST_CASE("MLLP: MSH-9 without a trigger or padded with spaces is read as older senders mean it") {
  auto s = mllp_server();
  const std::uint16_t port = listener(*s).port();
  const auto with_type = [](std::string type, const std::string& control, const std::string& version) {
    std::string m = a01(control, "9990000018", "MRN-T9", control);
    m.replace(m.find("ADT^A01^ADT_A01"), 15, type);
    m.replace(m.find("|P|2.4\r"), 7, "|P|" + version + "\r");
    return m;
  };
  // v2.3 ADT with the event in EVN-1 only; a trailing space after the trigger.
  // (A plain loop variable, not a structured binding: clang 14 cannot capture one in CAPTURE.)
  for (const auto& c : std::vector<std::tuple<std::string, std::string, std::string>>{
           {"ADT", "T9-1", "2.3"}, {"ADT^A01 ", "T9-2", "2.4"}, {"ADT^", "T9-3", "2.2"}, {"ADT^A01^ADT_A01", "T9-4", "2.5"}}) {
    const std::string& type = std::get<0>(c);
    CAPTURE(type);
    const auto acks = test::mllp_round_trip(port, with_type(type, std::get<1>(c), std::get<2>(c)));
    REQUIRE(acks.size() == 1);
    CHECK(ack_code(acks[0]) == "AA");
    // The ACK names the trigger the message was read as, wherever it was found.
    CHECK(test::hl7_field(acks[0], "MSH", 9) == std::string(std::get<2>(c) >= "2.4" ? "ACK^A01^ACK" : "ACK^A01"));
  }
  // An ORU without a trigger is an ORU^R01.
  std::string oru_bare = oru("T9-5", "9990000026", "MRN-T95");
  oru_bare.replace(oru_bare.find("ORU^R01^ORU_R01"), 15, "ORU");
  const auto oru_acks = test::mllp_round_trip(port, oru_bare);
  REQUIRE(oru_acks.size() == 1);
  CHECK(ack_code(oru_acks[0]) == "AA");
  CHECK(test::hl7_field(oru_acks[0], "MSH", 9) == "ACK^R01^ACK");
  CHECK(stored(*s, store::MessageStatus::applied) == 5);
  // No trigger anywhere: AR 201 (unsupported event), the text naming what was received.
  std::string bare = with_type("ADT", "T9-6", "2.3");
  bare.replace(bare.find("EVN|A01|"), 8, "EVN||");
  const auto ar = test::mllp_round_trip(port, bare);
  REQUIRE(ar.size() == 1);
  CHECK(ack_code(ar[0]) == "AR");
  CHECK(test::hl7_field(ar[0], "MSH", 9) == "ACK");  // no trigger to name
  CHECK(ar[0].find("\rERR|MSH^1^9^201&MSH-9 'ADT' with no trigger event (MSH-9.2 and EVN-1 are empty) is not mapped") !=
        std::string::npos);
}

TEST_CASE("MLLP: an invalid NHS number is never trusted for matching") {
  auto s = mllp_server();
  const auto acks = test::mllp_round_trip(listener(*s).port(), a01("N1", "9990000019", "MRN-N"));
  REQUIRE(acks.size() == 1);
  CHECK(ack_code(acks[0]) == "AA");  // the local identifier still files the message
  auto by_nhs = s->locator().lookup_identifier(locator::kNhsNumberSystem, "9990000019");
  REQUIRE(by_nhs.ok());
  CHECK_FALSE(by_nhs->has_value());
  // Another patient sent with the same mistyped number stays another record: the number is
  // kept on each as received, untrusted, and is no key to match on.
  std::string other = a01("N2", "9990000019", "MRN-M");
  other.replace(other.find("SMITH^JOHN||19700101|M"), 22, "JONES^MARY||19800202|F");
  const auto second = test::mllp_round_trip(listener(*s).port(), other);
  REQUIRE(second.size() == 1);
  CHECK(ack_code(second[0]) == "AA");
  const std::string local = "https://fhir.nhs.uk/Id/local/rgt01";
  auto john = s->locator().lookup_identifier(local, "MRN-N");
  auto mary = s->locator().lookup_identifier(local, "MRN-M");
  REQUIRE(john.ok());
  REQUIRE(mary.ok());
  REQUIRE(john->has_value());
  REQUIRE(mary->has_value());
  CHECK(**john != **mary);
  for (const std::string& id : {**john, **mary}) {
    auto p = s->locator().read_patient(id);
    REQUIRE(p.ok());
    REQUIRE(p->has_value());
    CHECK((*p)->demographics.nhs_number == "9990000019");
    CHECK_FALSE((*p)->nhs_number_trusted);
    CHECK((*p)->identifiers.size() == 1);  // the MRN only: the number is not an identifier key
  }
}

TEST_CASE("MLLP: a local identifier sent with another valid NHS number is filed apart, and the AA says so") {
  auto s = mllp_server();
  const auto first = test::mllp_round_trip(listener(*s).port(), a01("K1", "9990000026", "MRN-K", "VK1"));
  REQUIRE(first.size() == 1);
  CHECK(ack_code(first[0]) == "AA");
  CHECK(first[0].find("identity conflict") == std::string::npos);
  // The same MRN with a different valid NHS number: never merged, a record of its own, the
  // conflict on record, and the sender told in a warning at PID-3.
  const std::string msg = a01("K2", "9990000034", "MRN-K", "VK2");
  const auto second = test::mllp_round_trip(listener(*s).port(), msg);
  REQUIRE(second.size() == 1);
  CHECK(ack_code(second[0]) == "AA");
  CHECK(second[0].find("PID^1^3^0&PID-3: identity conflict: the patient's identifiers or demographics name a record "
                       "holding a different valid NHS number; filed as a patient of its own") != std::string::npos);
  auto k1 = s->locator().lookup_identifier(locator::kNhsNumberSystem, "9990000026");
  auto k2 = s->locator().lookup_identifier(locator::kNhsNumberSystem, "9990000034");
  REQUIRE(k1.ok());
  REQUIRE(k2.ok());
  REQUIRE(k1->has_value());
  REQUIRE(k2->has_value());
  CHECK(**k1 != **k2);
  auto conflicts = s->locator().conflicts(10, 0);
  REQUIRE(conflicts.ok());
  REQUIRE(conflicts->size() == 1);
  CHECK((*conflicts)[0].kind == "nhs-number-mismatch");
  // Kept with the message's row, and a resend gets the same ACK.
  store::MessageQuery q;
  q.status = store::MessageStatus::applied;
  auto rows = s->app().store().list_messages(q);
  REQUIRE(rows.ok());
  REQUIRE(rows->size() == 2);
  bool kept = false;
  for (const auto& r : *rows) kept = kept || r.error.find("\nPID-3: identity conflict: the patient's") != std::string::npos;
  CHECK(kept);
  const auto again = test::mllp_round_trip(listener(*s).port(), msg);
  REQUIRE(again.size() == 1);
  CHECK(again[0] == second[0]);
  // A later message for the second patient (matched by its NHS number) still names the MRN
  // the first holds: filed under the record it matched, which the warning says.
  const auto third = test::mllp_round_trip(listener(*s).port(), a01("K3", "9990000034", "MRN-K", "VK3"));
  REQUIRE(third.size() == 1);
  CHECK(ack_code(third[0]) == "AA");
  CHECK(third[0].find("PID-3: identity conflict: a local identifier belongs to a record holding a different valid NHS "
                      "number and was left there; filed under the record the message matched by its NHS number") !=
        std::string::npos);
  CHECK(third[0].find("filed as a patient of its own") == std::string::npos);
  auto k2_after = s->locator().lookup_identifier(locator::kNhsNumberSystem, "9990000034");
  REQUIRE(k2_after.ok());
  REQUIRE(k2_after->has_value());
  CHECK(**k2_after == **k2);
}

TEST_CASE("MLLP: protocol violations close only the offending connection; others keep being served") {
  auto s = mllp_server({{"max_message_bytes", "2048"}, {"frame_timeout_s", "1"}});
  const std::uint16_t port = listener(*s).port();

  // A frame over the size cap is read to its end and refused: AR, ERR 207, MSA-2 its
  // MSH-10, so the sender stops resending it; a row (rejected) keeps its head and its size.
  // The connection stays usable.
  test::MllpConnection big(port);
  REQUIRE(big.ok());
  const std::string big_message = a01("BIG", "9990000050", "MRN-BIG") + "NTE|1||" + std::string(4000, 'x') + "\r";
  big.send(big_message);
  auto refused = big.read_frames(1, 5s);
  REQUIRE(refused.size() == 1);
  CHECK(ack_code(refused[0]) == "AR");
  CHECK(test::hl7_field(refused[0], "MSA", 2) == "BIG");
  CHECK(refused[0].find("\rERR|^^^207&") != std::string::npos);  // v2.4 ELD, table 0357
  CHECK(refused[0].find(std::to_string(big_message.size()) + " bytes") != std::string::npos);
  {
    store::MessageQuery q;
    q.status = store::MessageStatus::rejected;
    auto rows = s->app().store().list_messages(q);
    REQUIRE(rows.ok());
    REQUIRE(rows->size() == 1);
    CHECK((*rows)[0].dedupe_key == "PAS|RGT01|BIG");
    CHECK((*rows)[0].kind == "ADT^A01");
    CHECK((*rows)[0].error.find(std::to_string(big_message.size()) + " bytes") != std::string::npos);
    auto row = s->app().store().message((*rows)[0].id);
    REQUIRE(row.ok());
    REQUIRE(row->has_value());
    CHECK((*row)->raw == big_message.substr(0, 2048));  // the head only (here the whole limit)
  }
  big.send(a01("AFTER-BIG", "9990000050", "MRN-BIG"));
  auto after = big.read_frames(1, 5s);
  REQUIRE(after.size() == 1);
  CHECK(ack_code(after[0]) == "AA");

  // Binary garbage with no start block: skipped, then the connection is closed.
  test::MllpConnection noise(port);
  REQUIRE(noise.ok());
  std::string junk;
  for (int i = 0; i < 6000; ++i) junk += static_cast<char>((i * 37 + 11) % 251 == 0x0B ? 0x20 : (i * 37 + 11) % 251);
  noise.send_raw(junk);
  CHECK(noise.closed_by_peer(5s));

  // A truncated frame with the socket held open: the frame timeout closes it.
  test::MllpConnection stuck(port);
  REQUIRE(stuck.ok());
  const std::string half = a01("HALF", "9990000050", "MRN-H");
  stuck.send_raw("\x0b" + half.substr(0, half.size() / 2));
  // Meanwhile another sender is served normally.
  const auto ok = test::mllp_round_trip(port, a01("OK1", "9990000069", "MRN-OK"));
  REQUIRE(ok.size() == 1);
  CHECK(ack_code(ok[0]) == "AA");
  CHECK(stuck.closed_by_peer(5s));

  // A disconnect before the ACK is read: the message is committed all the same, and the
  // sender's resend gets the original acknowledgement.
  const std::string gone = a01("GONE", "9990000050", "MRN-G");
  {
    test::MllpConnection c(port);
    REQUIRE(c.ok());
    c.send(gone);
  }  // closed at once
  std::vector<std::string> resend;
  for (int i = 0; i < 50 && resend.empty(); ++i) {
    resend = test::mllp_round_trip(port, gone);
    if (resend.empty()) std::this_thread::sleep_for(100ms);
  }
  REQUIRE(resend.size() == 1);
  CHECK(ack_code(resend[0]) == "AA");
  store::MessageQuery q;
  q.status = store::MessageStatus::applied;
  auto list = s->app().store().list_messages(q);
  REQUIRE(list.ok());
  CHECK(std::count_if(list->begin(), list->end(), [](const store::StoredMessage& m) {
          return m.dedupe_key == "PAS|RGT01|GONE";
        }) == 1);
  CHECK(std::none_of(list->begin(), list->end(), [](const store::StoredMessage& m) { return m.kind.empty(); }));
  CHECK(listener(*s).stats().protocol_violations >= 3);
}

TEST_CASE("MLLP: the frame timeout runs from the start block, not from each read") {
  auto s = mllp_server({{"frame_timeout_s", "1"}});
  const std::uint16_t port = listener(*s).port();
  const std::uint64_t violations = listener(*s).stats().protocol_violations;

  // A frame begun, then one byte every 300 ms: each read used to re-arm the timeout, so the
  // connection stayed open for as long as the sender kept trickling.
  test::MllpConnection slow(port);
  REQUIRE(slow.ok());
  const auto begun = std::chrono::steady_clock::now();
  REQUIRE(slow.send_raw("\x0bMSH|^~\\&|A"));
  bool closed = false;
  for (int i = 0; i < 12 && !closed; ++i) {
    if (slow.closed_by_peer(300ms) || !slow.send_raw("X")) closed = true;
  }
  CHECK(closed);
  CHECK(std::chrono::steady_clock::now() - begun < 2500ms);
  CHECK(listener(*s).stats().protocol_violations > violations);

  // A frame sent in pieces that ends within the timeout is served, and so is the next one
  // on the same connection (its deadline starts with its own start block).
  const std::string first = a01("SLOW1", "9990000018", "MRN-S1");
  const std::string second = a01("SLOW2", "9990000018", "MRN-S1", "V2");
  test::MllpConnection pieces(port);
  REQUIRE(pieces.ok());
  REQUIRE(pieces.send_raw("\x0b" + first.substr(0, 20)));
  std::this_thread::sleep_for(400ms);
  REQUIRE(pieces.send_raw(first.substr(20) + "\x1c\r\x0b" + second.substr(0, 20)));
  auto acks = pieces.read_frames(1, 5s);
  REQUIRE(acks.size() == 1);
  CHECK(ack_code(acks[0]) == "AA");
  std::this_thread::sleep_for(400ms);
  REQUIRE(pieces.send_raw(second.substr(20) + "\x1c\r"));
  acks = pieces.read_frames(1, 5s);
  REQUIRE(acks.size() == 1);
  CHECK(ack_code(acks[0]) == "AA");
}

TEST_CASE("MLLP: enhanced acknowledgement mode follows MSH-15 and MSH-16") {
  auto s = mllp_server();
  const std::uint16_t port = listener(*s).port();
  // MSH-15 = AL, MSH-16 = NE: the commit acknowledgement only.
  auto acks = test::mllp_round_trip(port, a01("E1", "9990000018", "MRN-E", "V1", "|||AL|NE"), 2, 2s);
  REQUIRE(acks.size() == 1);
  CHECK(ack_code(acks[0]) == "CA");
  // AL/AL: CA, then the application acknowledgement AA.
  acks = test::mllp_round_trip(port, a01("E2", "9990000018", "MRN-E", "V2", "|||AL|AL"), 2);
  REQUIRE(acks.size() == 2);
  CHECK(ack_code(acks[0]) == "CA");
  CHECK(ack_code(acks[1]) == "AA");
  // NE/NE: nothing is sent, but the message is applied.
  acks = test::mllp_round_trip(port, a01("E3", "9990000018", "MRN-E", "V3", "|||NE|NE"), 1, 1500ms);
  CHECK(acks.empty());
  // ER/ER on success: nothing; on failure: CR then AR.
  acks = test::mllp_round_trip(port, msh("SIU^S12^SIU_S12", "E4", "|||ER|ER") + "SCH|1\r", 2);
  REQUIRE(acks.size() == 2);
  CHECK(ack_code(acks[0]) == "CR");
  CHECK(ack_code(acks[1]) == "AR");
  CHECK(stored(*s, store::MessageStatus::applied) == 3);
}

TEST_CASE("MLLP: when the store cannot commit, the sender is told to resend (AR) and nothing is stored") {
  auto s = mllp_server();
  const std::uint16_t port = listener(*s).port();
  s->app().store().inject_commit_failure(true);
  const auto acks = test::mllp_round_trip(port, a01("F1", "9990000026", "MRN-F"));
  REQUIRE(acks.size() == 1);
  CHECK(ack_code(acks[0]) == "AR");
  CHECK(acks[0].find("^207&") != std::string::npos);  // ERR-1 (v2.4 ELD): application internal error
  // Enhanced mode: not accepted, CE (HL7 table 0008; CR is for an unsupported type, version
  // or processing id), then the AR when MSH-16 asks for it.
  const auto enhanced = test::mllp_round_trip(port, a01("F2", "9990000026", "MRN-F", "V1", "|||AL|AL"), 2);
  REQUIRE(enhanced.size() == 2);
  CHECK(ack_code(enhanced[0]) == "CE");
  CHECK(ack_code(enhanced[1]) == "AR");
  s->app().store().inject_commit_failure(false);
  CHECK(stored(*s, store::MessageStatus::applied) == 0);
  // The resend after recovery is applied.
  const auto later = test::mllp_round_trip(port, a01("F1", "9990000026", "MRN-F"));
  REQUIRE(later.size() == 1);
  CHECK(ack_code(later[0]) == "AA");
  CHECK(stored(*s, store::MessageStatus::applied) == 1);
}

TEST_CASE("MLLP: when the audit log cannot be written, the sender is told to resend, and the resend gets AA and the "
          "missing ingest-applied record; the metrics agree") {
  auto s = mllp_server();
  const std::uint16_t port = listener(*s).port();
  const std::string msg = a01("G1", "9990000026", "MRN-G");
  s->app().audit_log()->inject_write_failure(true);
  const auto acks = test::mllp_round_trip(port, msg);
  REQUIRE(acks.size() == 1);
  CHECK(ack_code(acks[0]) == "AR");  // HL7 v2.5 ch. 2.9.2: the receiving system is down, resend
  CHECK(acks[0].find("^207&") != std::string::npos);
  // Enhanced mode: CE (not accepted: resend), then the AR.
  const auto enhanced = test::mllp_round_trip(port, a01("G2", "9990000026", "MRN-G", "V2", "|||AL|AL"), 2);
  REQUIRE(enhanced.size() == 2);
  CHECK(ack_code(enhanced[0]) == "CE");
  CHECK(ack_code(enhanced[1]) == "AR");
  s->app().audit_log()->inject_write_failure(false);
  const auto before = s->app().audit_log()->stats().size;
  // Both messages' data was committed but neither is acknowledged: each resend completes its
  // message with the ingest-applied record it lacked, and gets AA (CA, AA).
  const auto later = test::mllp_round_trip(port, msg);
  REQUIRE(later.size() == 1);
  CHECK(ack_code(later[0]) == "AA");
  const auto later2 = test::mllp_round_trip(port, a01("G2", "9990000026", "MRN-G", "V2", "|||AL|AL"), 2);
  REQUIRE(later2.size() == 2);
  CHECK(ack_code(later2[0]) == "CA");
  CHECK(ack_code(later2[1]) == "AA");
  CHECK(stored(*s, store::MessageStatus::applied) == 2);
  audit::Query q;
  q.count = 100;
  q.newest_first = false;
  auto page = s->app().audit_log()->search(q);
  REQUIRE(page.ok());
  std::vector<std::string> actions;
  for (const auto& r : page->records)
    if (r.seq >= before && r.route == "ingest") actions.push_back(r.action + " " + r.target);
  CHECK(actions == std::vector<std::string>{"ingest-applied ADT^A01 PAS|RGT01|G1", "ingest-applied ADT^A01 PAS|RGT01|G2"});
  const auto m = test::get(s->port(), "/metrics", s->client());
  CHECK(m.body.find("gateway_mllp_applied_total{source=\"cuh-pas\"} 2") != std::string::npos);
  CHECK(m.body.find("gateway_mllp_retry_later_total{source=\"cuh-pas\"} 2") != std::string::npos);
  CHECK(m.body.find("gateway_ingest_units_total{outcome=\"applied\"} 2") != std::string::npos);
  CHECK(m.body.find("gateway_ingest_units_total{outcome=\"failed\"} 2") != std::string::npos);
  CHECK(m.body.find("gateway_ingest_units_total{outcome=\"duplicate\"} 0") != std::string::npos);
}

TEST_CASE("MLLP over TLS: the listener uses the gateway's certificate") {
  auto s = mllp_server({}, true);
  test::MllpConnection c(listener(*s).port(), s->client().ca_file);
  REQUIRE(c.ok());
  REQUIRE(c.send(a01("T1", "9990000034", "MRN-T")));
  const auto acks = c.read_frames(1, 10s);
  REQUIRE(acks.size() == 1);
  CHECK(ack_code(acks[0]) == "AA");
  // Plain TCP to the TLS listener gets no acknowledgement.
  const auto plain = test::mllp_round_trip(listener(*s).port(), a01("T2", "9990000034", "MRN-T"), 1, 2s);
  CHECK(plain.empty());
}

TEST_CASE("MLLP over TLS: a source's client_certificate_subject is required of whoever sends as it") {
  const auto& certs = test::dev_certs();
  const auto server = [&](const std::string& subject) {
    return std::make_unique<test::TestServer>([&](config::Config& c) {
      c.https.client_ca = certs.ca;  // the HTTPS listener itself still asks for no certificate
      config::SourceSystemConfig s;
      s.ods_code = "RGT01";
      s.name = kSource;
      s.adapter = "hl7v2";
      s.endpoint = "127.0.0.1:0";
      s.client_certificate_subject = subject;
      s.settings = {{"tls", "true"}};
      c.source_systems.push_back(s);
    });
  };
  // Sends one A01 and returns its acknowledgements (none when the listener refused the sender).
  const auto send = [&](test::TestServer& s, const std::string& control, bool with_certificate) {
    test::MllpConnection c(listener(s).port(), certs.ca, with_certificate ? certs.client_cert : std::string(),
                           with_certificate ? certs.client_key : std::string());
    if (!c.ok() || !c.send(a01(control, "9990000042", "MRN-C"))) return std::vector<std::string>{};
    return c.read_frames(1, 3s);
  };
  const auto violations_reach = [&](test::TestServer& s, std::uint64_t n) {
    for (int i = 0; i < 200 && listener(s).stats().protocol_violations < n; ++i) std::this_thread::sleep_for(10ms);
    return listener(s).stats().protocol_violations >= n;
  };

  // The development client certificate is CN=dev-client,O=Development Trust.
  auto trust = server("CN=epr.example.nhs.uk,O=Example Trust");
  CHECK(send(*trust, "C1", true).empty());   // a certificate from the same CA, another subject
  CHECK(send(*trust, "C2", false).empty());  // no certificate at all
  CHECK(violations_reach(*trust, 2));
  CHECK(listener(*trust).stats().frames == 0);  // refused before a byte of HL7 was read
  CHECK(stored(*trust, store::MessageStatus::applied) == 0);

  auto dev = server("CN=dev-client,O=Development Trust");
  const auto acks = send(*dev, "C3", true);
  REQUIRE(acks.size() == 1);
  CHECK(ack_code(acks[0]) == "AA");
  CHECK(send(*dev, "C4", false).empty());
  CHECK(violations_reach(*dev, 1));
  CHECK(stored(*dev, store::MessageStatus::applied) == 1);
}

#ifdef GW_EXAMPLE_PLUGIN
TEST_CASE("Plug-in source: a vendor library configured as a source ingests through the same path") {
  test::TestServer s([](config::Config& c) {
    config::SourceSystemConfig src;
    src.ods_code = "RXP01";
    src.name = "vendor-example";
    src.adapter = "plugin";
    src.plugin = GW_EXAMPLE_PLUGIN;
    src.settings = {{"ingest_on_start", "true"}};
    c.source_systems.push_back(src);
  });
  // The plug-in pushes one batch (a Patient identity and an Observation) when it starts; it
  // is committed to the locator and store.db like an HL7 message.
  std::optional<std::string> pid;
  for (int i = 0; i < 100 && !pid; ++i) {
    auto found = s.locator().lookup_identifier(locator::kNhsNumberSystem, "9000000009");
    REQUIRE(found.ok());
    if (*found) pid = **found;
    else std::this_thread::sleep_for(50ms);
  }
  REQUIRE(pid.has_value());
  std::optional<store::StoredResource> obs;
  for (int i = 0; i < 100 && !obs; ++i) {
    auto r = s.app().store().read("Observation", "example-ingest-1");
    REQUIRE(r.ok());
    if (*r) obs = **r;
    else std::this_thread::sleep_for(50ms);
  }
  REQUIRE(obs.has_value());
  CHECK(obs->patient_id == *pid);
  CHECK(obs->source == "vendor-example");
  CHECK(obs->json.find("\"reference\":\"Patient/" + *pid + "\"") != std::string::npos);  // subject set by the gateway
  auto pointers = s.locator().pointers_for(*pid);
  REQUIRE(pointers.ok());
  REQUIRE(pointers->size() == 1);
  CHECK((*pointers)[0].source_ods == "RXP01");
}
#endif

TEST_CASE("MLLP: ingest audit records say where a message came from, and a refused one names its patient") {
  auto s = mllp_server();
  const std::uint16_t port = listener(*s).port();
  const auto applied = test::mllp_round_trip(port, a01("W1", "9990000018", "MRN-W1"));
  REQUIRE(applied.size() == 1);
  REQUIRE(ack_code(applied[0]) == "AA");
  // A readable message of an event this adapter does not map: refused (AR), but it named a
  // patient, and IG officers asking who sent what about that person must see it.
  const auto refused = test::mllp_round_trip(
      port, msh("ADT^A60^ADT_A60", "W2") + "EVN|A60|20261123101500\rPID|1||9990000026^^^NHS^NH~MRN-W2^^^RGT01^MR||SMITH^ANN\r");
  REQUIRE(refused.size() == 1);
  REQUIRE(ack_code(refused[0]) == "AR");
  REQUIRE(s->app().audit_log() != nullptr);
  const auto records_about = [&](const std::string& nhs) {
    audit::Query q;
    q.patient = nhs;
    auto page = s->app().audit_log()->search(q);
    REQUIRE(page.ok());
    return page->records;
  };
  const auto applied_records = records_about("9990000018");
  REQUIRE(applied_records.size() == 1);
  CHECK(applied_records[0].action == "ingest-applied");
  CHECK(applied_records[0].address.rfind("127.0.0.1:", 0) == 0);
  const auto refused_records = records_about("9990000026");
  REQUIRE(refused_records.size() == 1);
  CHECK(refused_records[0].action == "ingest-rejected");
  CHECK(refused_records[0].address.rfind("127.0.0.1:", 0) == 0);
}

TEST_CASE("MLLP: an ISO 8859-1 message is answered in ISO 8859-1 (MSH-3..6, MSA-2 byte for byte), its resend too") {
  auto s = mllp_server();
  const std::uint16_t port = listener(*s).port();
  // MSH-4 "HôPITAL", MSH-10 "CTLé1" and the names as Latin-1 bytes, declared by MSH-18.
  const std::string message =
      "MSH|^~\\&|PAS|H\xF4PITAL|GW|GW|20261123101500||ADT^A01^ADT_A01|CTL\xE9" "1|P|2.4||||||8859/1\r"
      "EVN|A01|20261123101500\r"
      "PID|1||9990000018^^^NHS^NH~MRN-L^^^RGT01^MR||M\xDCLLER^J\xC9R\xD4ME||19700101|M\r"
      "PV1|1|I|WARD1^BED2^^RGT01||||||||||||||||V1\r";
  const std::string expected =
      "MSH|^~\\&|GW|GW|PAS|H\xF4PITAL|||ACK^A01^ACK||P|2.4||||||8859/1\rMSA|AA|CTL\xE9" "1\r";
  const auto first = test::mllp_round_trip(port, message);
  REQUIRE(first.size() == 1);
  CHECK(without_time_and_id(first[0]) == expected);
  // A resend is answered with the ACK stored at the first commit: the same bytes.
  const auto resend = test::mllp_round_trip(port, message);
  REQUIRE(resend.size() == 1);
  CHECK(resend[0] == first[0]);
  CHECK(listener(*s).stats().duplicates == 1);
  CHECK(stored(*s, store::MessageStatus::applied) == 1);
}

TEST_CASE("MLLP: an idle connection closed by idle_timeout is not a protocol violation; violations name the sender") {
  auto s = mllp_server({{"idle_timeout_s", "1"}});
  const std::uint16_t port = listener(*s).port();
  const auto before = listener(*s).stats();
  observe::set_level(observe::Level::info);  // TestServer writes warnings only
  test::StderrCapture capture;
  {
    test::MllpConnection quiet(port);
    REQUIRE(quiet.ok());
    CHECK(quiet.closed_by_peer(5s));
  }
  // A real violation: bytes before the start block.
  {
    test::MllpConnection noisy(port);
    REQUIRE(noisy.ok());
    noisy.send_raw("junk");
    noisy.send(a01("IDLE1", "9990000018", "MRN-I"));
    REQUIRE(noisy.read_frames(1, 5s).size() == 1);
  }
  const std::string log = capture.text();
  observe::set_level(observe::Level::warn);
  const auto after = listener(*s).stats();
  CHECK(after.idle_closes == before.idle_closes + 1);
  CHECK(after.protocol_violations == before.protocol_violations + 1);  // the stray bytes only
  const std::string idle = test::log_line(log, "mllp connection closed: idle");
  CHECK_MESSAGE(idle.find("\"level\":\"info\"") != std::string::npos, log);
  CHECK(idle.find("\"peer\":\"127.0.0.1:") != std::string::npos);
  const std::string violation = test::log_line(log, "mllp protocol violation");
  CHECK_MESSAGE(violation.find("\"event\":\"stray_bytes_skipped\"") != std::string::npos, log);
  CHECK(violation.find("\"peer\":\"127.0.0.1:") != std::string::npos);
  // Counted apart on /metrics.
  const auto metrics = test::get(s->port(), "/metrics", s->client());
  CHECK(metrics.body.find("gateway_mllp_idle_closes_total{source=\"cuh-pas\"} 1") != std::string::npos);
}

TEST_CASE("MLLP: a visit or order number that names another patient's record is refused (AE at PV1-19, OBR-3)") {
  auto s = mllp_server();
  const std::uint16_t port = listener(*s).port();
  // a01() puts its visit in PV1-18; here it is PV1-19, the visit number.
  const auto a01 = [](const std::string& control, const std::string& nhs, const std::string& mrn,
                      const std::string& visit) {
    return msh("ADT^A01^ADT_A01", control) + "EVN|A01|20261123101500\r" + "PID|1||" + nhs + "^^^NHS^NH~" + mrn +
           "^^^RGT01^MR||SMITH^JOHN||19700101|M\r" + "PV1|1|I|WARD1^BED2^^RGT01||||||||||||||||" + visit + "\r";
  };
  REQUIRE(ack_code(test::mllp_round_trip(port, a01("V1", "9990000018", "MRN-A", "V77"))[0]) == "AA");
  auto owner = s->locator().lookup_identifier(locator::kNhsNumberSystem, "9990000018");
  REQUIRE(owner.ok());
  REQUIRE(owner->has_value());
  const std::string patient_a = **owner;
  const auto encounter_of_a = [&]() {
    store::ResourceQuery q;
    q.patient_ids = {patient_a};
    q.type = "Encounter";
    auto page = s->app().store().search(q);
    REQUIRE(page.ok());
    return page->total;
  };
  REQUIRE(encounter_of_a() == 1);

  // Another patient's admission reusing the visit number: AE with ERR at PV1-19, code 205
  // (duplicate key identifier); nothing of it applied: patient B is not even created.
  const auto ae = test::mllp_round_trip(port, a01("V2", "9990000026", "MRN-B", "V77"));
  REQUIRE(ae.size() == 1);
  CHECK(ack_code(ae[0]) == "AE");
  CHECK(test::hl7_field(ae[0], "ERR", 1).rfind("PV1^1^19^205&", 0) == 0);  // v2.4 ELD
  CHECK(encounter_of_a() == 1);
  auto b = s->locator().lookup_identifier(locator::kNhsNumberSystem, "9990000026");
  REQUIRE(b.ok());
  CHECK_FALSE(b->has_value());
  store::MessageQuery q;
  q.status = store::MessageStatus::error;
  auto errs = s->app().store().list_messages(q);
  REQUIRE(errs.ok());
  REQUIRE(errs->size() == 1);
  CHECK((*errs)[0].error_location == "PV1-19");
  CHECK((*errs)[0].reply == ae[0]);  // the AE sent, kept with the row
  audit::Query aq;
  aq.subtype = "ingest-error";
  auto audited = s->app().audit_log()->search(aq);
  REQUIRE(audited.ok());
  CHECK(audited->records.size() == 1);

  // The same patient updating the visit (here known by the local identifier alone) is applied.
  const std::string transfer = msh("ADT^A02^ADT_A02", "V3") + "EVN|A02|20261123120000\r" +
                               "PID|1||MRN-A^^^RGT01^MR||SMITH^JOHN||19700101|M\r" +
                               "PV1|1|I|WARD2^BED1^^RGT01||||||||||||||||V77\r";
  CHECK(ack_code(test::mllp_round_trip(port, transfer)[0]) == "AA");

  // A merge explains the move: a record known by a local identifier alone (D), with its own
  // visit, merged into C's; C's discharge from that visit updates it.
  REQUIRE(ack_code(test::mllp_round_trip(port, a01("V4", "9990000034", "MRN-C", "V88"))[0]) == "AA");
  const std::string local_only = msh("ADT^A04^ADT_A01", "V6") + "PID|1||MRN-D^^^RGT01^MR||SMITH^JOHN||19700101|M\r" +
                                 "PV1|1|O|CLINIC^^^RGT01||||||||||||||||V99\r";
  REQUIRE(ack_code(test::mllp_round_trip(port, local_only)[0]) == "AA");
  const std::string merge_d = msh("ADT^A40^ADT_A39", "V7") + "EVN|A40|20261123120000\r" +
                              "PID|1||9990000034^^^NHS^NH~MRN-C^^^RGT01^MR||SMITH^JOHN||19700101|M\r" +
                              "MRG|MRN-D^^^RGT01^MR\r";
  REQUIRE(ack_code(test::mllp_round_trip(port, merge_d)[0]) == "AA");
  const std::string discharge = msh("ADT^A03^ADT_A03", "V8") + "EVN|A03|20261123150000\r" +
                                "PID|1||9990000034^^^NHS^NH~MRN-C^^^RGT01^MR||SMITH^JOHN||19700101|M\r" +
                                "PV1|1|O|CLINIC^^^RGT01||||||||||||||||V99\r";
  CHECK(ack_code(test::mllp_round_trip(port, discharge)[0]) == "AA");

  // Results: another patient's ORU reusing a filler order number is refused at OBR-3.
  const auto oru_with = [](const std::string& control, const std::string& nhs, const std::string& mrn) {
    return msh("ORU^R01^ORU_R01", control) + "PID|1||" + nhs + "^^^NHS^NH~" + mrn +
           "^^^RGT01^MR||SMITH^JOHN||19700101|M\r" +
           "OBR|1|PL9|FL-SHARED|24331-1^Lipid panel^LN|||20261123110000|||||||||||||||20261123111000|||F\r" +
           "OBX|1|NM|2093-3^Cholesterol^LN||5.2|mmol/L|3.0-5.0|H|||F|||20261123110000\r";
  };
  CHECK(ack_code(test::mllp_round_trip(port, oru_with("R1", "9990000018", "MRN-A"))[0]) == "AA");
  const auto refused = test::mllp_round_trip(port, oru_with("R2", "9990000042", "MRN-E"));
  REQUIRE(refused.size() == 1);
  CHECK(ack_code(refused[0]) == "AE");
  CHECK(test::hl7_field(refused[0], "ERR", 1).rfind("OBR^1^3^205&", 0) == 0);
  store::ResourceQuery rq;
  rq.patient_ids = {patient_a};
  rq.type = "DiagnosticReport";
  auto reports = s->app().store().search(rq);
  REQUIRE(reports.ok());
  CHECK(reports->total == 1);
}

TEST_CASE("MLLP: training and debugging messages (MSH-11 T, D) are refused AR 202 unless the source lists them") {
  const auto with_id = [](const std::string& control, const std::string& id) {
    std::string m = msh("ADT^A04^ADT_A01", control) + "PID|1||9990000050^^^NHS^NH~MRN-T^^^RGT01^MR||SMITH^ANN\r";
    m.replace(m.find("|P|2.4"), 6, "|" + id + "|2.4");
    return m;
  };
  {
    auto s = mllp_server();
    const std::uint16_t port = listener(*s).port();
    for (const char* id : {"T", "D"}) {
      const auto acks = test::mllp_round_trip(port, with_id(std::string("T-") + id, id));
      REQUIRE(acks.size() == 1);
      CHECK(ack_code(acks[0]) == "AR");
      CHECK(test::hl7_field(acks[0], "MSH", 11) == id);  // echoed
      CHECK(test::hl7_field(acks[0], "ERR", 1).rfind("MSH^1^11^202&", 0) == 0);
    }
    // Nothing applied: the patient is not in the record locator; both are stored and audited.
    auto found = s->locator().lookup_identifier(locator::kNhsNumberSystem, "9990000050");
    REQUIRE(found.ok());
    CHECK_FALSE(found->has_value());
    CHECK(stored(*s, store::MessageStatus::rejected) == 2);
    store::MessageQuery rq;
    rq.status = store::MessageStatus::rejected;
    auto rows = s->app().store().list_messages(rq);
    REQUIRE(rows.ok());
    REQUIRE(rows->size() == 2);
    CHECK(rows->at(0).reply.find("MSA|AR|T-") != std::string::npos);  // the AR sent, kept with the row
    audit::Query q;
    q.subtype = "ingest-rejected";
    auto page = s->app().audit_log()->search(q);
    REQUIRE(page.ok());
    CHECK(page->records.size() == 2);
    CHECK(ack_code(test::mllp_round_trip(port, with_id("T-P", "P"))[0]) == "AA");
  }
  auto s = mllp_server({{"processing_ids", "P,T"}});
  const std::uint16_t port = listener(*s).port();
  CHECK(ack_code(test::mllp_round_trip(port, with_id("L-T", "T"))[0]) == "AA");
  CHECK(ack_code(test::mllp_round_trip(port, with_id("L-D", "D"))[0]) == "AR");
}
