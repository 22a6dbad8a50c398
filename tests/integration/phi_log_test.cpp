// SPDX-License-Identifier: Apache-2.0
// "No PHI in operational logs: the audit store is the only place it goes", end to end. The real
// fhir-gateway binary runs at log level debug with its whole stderr captured; HL7 v2 over MLLP
// and the FHIR, IG and locator routes are driven (success, refusal and error paths) with
// distinctive patient data; then no PHI value, nor a usual transformation of one (the NHS
// number spaced, the birth date as HL7 writes it, the family name upper-cased), may appear in
// the log, while the log holds the lines an operator needs for those paths and the audit store
// holds the PHI the log must not.
#include <doctest/doctest.h>

#include <signal.h>
#include <sys/wait.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "fhir/json.h"
#include "gateway/audit/log.h"
#include "support/certs.h"
#include "support/https_client.h"
#include "support/mllp_client.h"
#include "support/paths.h"
#include "support/process.h"
#include "support/tokens.h"

using namespace gw;
using namespace std::chrono_literals;

namespace {

constexpr const char* kNhsSystem = "https://fhir.nhs.uk/Id/nhs-number";
constexpr const char* kMrnSystem = "https://fhir.nhs.uk/Id/local/RGT01";

// The patient's data: values rare enough that finding one in the log can only be a leak.
struct Phi {
  std::string nhs = test::test_nhs_number(73519);  // 999 range, valid check digit
  std::string nhs_bad_check;                      // the same with a wrong check digit
  std::string family = "Quixwellington";
  std::string given = "Zephyrine";
  std::string birth = "1953-07-29";
  std::string postcode = "ZE2 9QX";
  std::string street = "14 Orchardvale Way";
  std::string phone = "07700 900461";
  std::string mrn = "MRNQX774411";
  std::string visit = "VNQX55821";
  // A second patient, merged into the first by an A40.
  std::string family2 = "Vantreblick";
  std::string given2 = "Orsolyanne";
  std::string birth2 = "1948-02-11";
  std::string mrn2 = "MRNVT330912";
  std::string mrn_unknown = "MRNGHOST6610";
  std::string mrn_bad = "MRNBADCD4417";
  // Free text IG staff and clinicians type.
  std::string justification = "Quixwellington collapsed at Ambergrove bus stop 7731";
  std::string objection_note = "objection letter Pelloquin ref 3381";
  std::string withdrawal_note = "withdrawal letter Pelloquin ref 3382";
  std::string review_note = "reviewed with Dr Harrowgate 5529";
  std::string flag_reason = "staff member Tamsworthy 1188";
  Phi() {
    nhs_bad_check = nhs.substr(0, 9) + static_cast<char>('0' + (nhs[9] - '0' + 1) % 10);
  }
};

std::string upper(std::string s) {
  for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}
std::string hl7_date(const std::string& fhir_date) {
  std::string d = fhir_date;
  d.erase(std::remove(d.begin(), d.end(), '-'), d.end());
  return d;
}
std::string spaced_nhs(const std::string& n) { return n.substr(0, 3) + " " + n.substr(3, 3) + " " + n.substr(6); }

// Every string the log must never hold, each with what it is.
std::vector<std::pair<std::string, std::string>> forbidden(const Phi& p) {
  return {{"NHS number", p.nhs},
          {"NHS number spaced", spaced_nhs(p.nhs)},
          {"NHS number with a bad check digit", p.nhs_bad_check},
          {"family name", p.family},
          {"family name upper-cased", upper(p.family)},
          {"given name", p.given},
          {"given name upper-cased", upper(p.given)},
          {"birth date", p.birth},
          {"birth date HL7", hl7_date(p.birth)},
          {"postcode", p.postcode},
          {"postcode upper-cased without space", "ZE29QX"},
          {"postcode in a query", "ZE2%209QX"},
          {"street", upper(p.street)},
          {"phone", p.phone},
          {"MRN", p.mrn},
          {"visit number", p.visit},
          {"second family name", upper(p.family2)},
          {"second given name", upper(p.given2)},
          {"second birth date HL7", hl7_date(p.birth2)},
          {"second birth date", p.birth2},
          {"second MRN", p.mrn2},
          {"unknown MRN", p.mrn_unknown},
          {"MRN of the bad check digit patient", p.mrn_bad},
          {"break-glass justification", p.justification},
          {"justification word", "Ambergrove"},
          {"objection note", "Pelloquin"},
          {"review note", "Harrowgate"},
          {"flag reason", "Tamsworthy"},
          {"NHS number of the example plug-in's batch", "9000000009"}};
}

std::string msh(const std::string& type, const std::string& control) {
  return "MSH|^~\\&|PAS|RGT01|GW|GW|20261123101500||" + type + "|" + control + "|P|2.4\r";
}
std::string pid(const Phi& p) {
  return "PID|1||" + p.nhs + "^^^NHS^NH~" + p.mrn + "^^^RGT01^MR||" + upper(p.family) + "^" + upper(p.given) + "||" +
         hl7_date(p.birth) + "|F|||" + upper(p.street) + "^^ELY^^" + p.postcode + "||" + p.phone + "\r";
}
std::string pv1(const std::string& visit) { return "PV1|1|I|WARD1^BED2^^RGT01|||||||||||||||" + visit + "\r"; }
std::string adt(const Phi& p, const std::string& event, const std::string& control) {
  return msh("ADT^" + event + "^ADT_A01", control) + "EVN|" + event + "|20261123101500\r" + pid(p) + pv1(p.visit);
}

// The HTTPS side: one request per connection, with the test's own X-Request-ID.
struct Client {
  std::uint16_t port = 0;
  test::ClientOptions opts;
  int n = 0;
  std::map<int, int> statuses;  // status -> how many
  test::HttpResponse call(const std::string& method, const std::string& target, const std::string& headers,
                          const std::string& body = {}, const std::string& type = "application/fhir+json") {
    std::string raw = method + " " + target + " HTTP/1.1\r\nHost: localhost\r\nX-Request-ID: phi-" +
                      std::to_string(++n) + "\r\n" + headers;
    if (!body.empty() || method == "POST" || method == "PUT")
      raw += "Content-Type: " + type + "\r\nContent-Length: " + std::to_string(body.size()) + "\r\n";
    raw += "Connection: close\r\n\r\n" + body;
    auto ex = test::exchange(port, raw, 1, opts);
    REQUIRE_MESSAGE(ex.responses.size() == 1, method << " " << target << ": " << ex.error);
    ++statuses[ex.responses.front().status];
    return ex.responses.front();
  }
};

std::string bearer(const test::TokenClaims& c) { return test::test_tokens().header(c); }

test::TokenClaims clinician(const std::string& org) {
  test::TokenClaims c;
  c.sub = "dr-ward";
  c.org = org;
  return c;
}
test::TokenClaims ig_officer() {
  test::TokenClaims c;
  c.sub = "ig-jones";
  c.role = "ig-officer";
  c.org = "X26";
  c.scope = "user/AuditEvent.rs";
  return c;
}
test::TokenClaims source(const std::string& org) {
  test::TokenClaims c;
  c.sub = "epr-" + org;
  c.role = "system";
  c.org = org;
  c.scope = "system/DocumentReference.cruds";
  return c;
}

std::string pointer(const Phi& p, const std::string& custodian, const std::string& id) {
  std::string j = R"({"resourceType":"DocumentReference",)";
  if (!id.empty()) j += R"("id":")" + id + R"(",)";
  j += R"("status":"current","type":{"coding":[{"system":"http://snomed.info/sct","code":"887701000000100"}]},)"
       R"("subject":{"identifier":{"system":"https://fhir.nhs.uk/Id/nhs-number","value":")" + p.nhs + R"("}},)"
       R"("custodian":{"identifier":{"system":"https://fhir.nhs.uk/Id/ods-organization-code","value":")" + custodian +
       R"("}},)"
       R"("content":[{"attachment":{"contentType":"application/fhir+json","url":"https://rx1.example.nhs.uk/fhir/Bundle/)" +
       p.mrn + R"("}}]})";
  return j;
}

std::string slurp(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// The port in the first log line of `msg` (bounded wait: the listener may start after HTTPS).
std::uint16_t port_in_log(const std::filesystem::path& log, const std::string& msg) {
  const std::regex line("\"msg\":\"" + msg + "\"[^\\n]*\"port\":\"?([0-9]+)");
  for (int i = 0; i < 200; ++i) {
    std::smatch m;
    const std::string text = slurp(log);
    if (std::regex_search(text, m, line)) return static_cast<std::uint16_t>(std::stoi(m[1]));
    std::this_thread::sleep_for(50ms);
  }
  FAIL("no '" << msg << "' line with a port in the log");
  return 0;
}

std::string ack_code(const std::vector<std::string>& acks) {
  return acks.empty() ? std::string("(no ACK)") : test::hl7_field(acks.front(), "MSA", 1);
}

// The number of log lines whose "msg" is `msg` and which contain `part`.
std::size_t lines_with(const std::string& log, const std::string& msg, const std::string& part = {}) {
  std::size_t n = 0, at = 0;
  while (at < log.size()) {
    std::size_t end = log.find('\n', at);
    if (end == std::string::npos) end = log.size();
    const std::string_view l(log.data() + at, end - at);
    if (l.find("\"msg\":\"" + msg + "\"") != std::string_view::npos && l.find(part) != std::string_view::npos) ++n;
    at = end + 1;
  }
  return n;
}

}  // namespace

TEST_CASE("No PHI in the operational log: every path driven with distinctive patient data; the audit store has it") {
  const Phi p;
  REQUIRE(p.nhs.substr(0, 3) == "999");
  const auto dir = test::temp_dir("phi-log");
  const auto data = dir / "data";
  std::filesystem::create_directories(data);
  const auto& certs = test::dev_certs();
  const auto config = dir / "gateway.toml";
  std::ofstream(config) << "[server]\npublic_base_url = \"https://localhost:8443\"\nthreads = 2\n"
                        << "[server.https]\naddress = \"127.0.0.1\"\nport = 0\ncertificate = \"" << certs.server_cert
                        << "\"\nprivate_key = \"" << certs.server_key << "\"\n"
                        << "[storage]\ndata_dir = \"" << data.string() << "\"\n"
                        << "[auth]\njwks_file = \"" << test::test_tokens().jwks_path << "\"\n"
                        << "[audit]\nsigning_key = \"" << certs.audit_key << "\"\n"
                        << "[log]\nlevel = \"debug\"\naccess_log = true\n"
                        << "[[source_systems]]\nname = \"rgt-pas\"\nods_code = \"RGT01\"\nadapter = \"hl7v2\"\n"
                        << "endpoint = \"127.0.0.1:0\"\n"
                        // The example plug-in: one batch applied, one refused for its content.
                        << "[[source_systems]]\nname = \"vendor-ok\"\nods_code = \"RXP01\"\nadapter = \"plugin\"\n"
                        << "plugin = \"" << GW_EXAMPLE_PLUGIN << "\"\n[source_systems.settings]\ningest_on_start = \"true\"\n"
                        << "[[source_systems]]\nname = \"vendor-refused\"\nods_code = \"RXP02\"\nadapter = \"plugin\"\n"
                        << "plugin = \"" << GW_EXAMPLE_PLUGIN << "\"\n[source_systems.settings]\ningest_on_start = \"unserved\"\n";
  const auto log_file = dir / "gateway.log";
  const auto g = test::start_child_gateway(GATEWAY_BIN, config.string(), log_file.string(),
                                           "\"msg\":\"listening\",\"scheme\":\"https\"[^}]*\"port\":\"?([0-9]+)");
  const std::uint16_t mllp = port_in_log(log_file, "mllp listener started");

  // --- HL7 v2 over MLLP -------------------------------------------------------------------
  std::map<std::string, std::string> acks;  // what -> MSA-1
  auto send = [&](const std::string& what, const std::string& message) {
    acks[what] = ack_code(test::mllp_round_trip(mllp, message));
  };
  // A sender keying control ids by patient: the reused-id line below names the id, without the number.
  send("A01", adt(p, "A01", "PHI-" + p.nhs));
  send("A08", adt(p, "A08", "PHI-2"));
  send("A31", msh("ADT^A31^ADT_A05", "PHI-3") + "EVN|A31|20261123101500\r" + pid(p));
  send("ORU", msh("ORU^R01^ORU_R01", "PHI-4") + pid(p) + "OBR|1|PL1|FL-PHI-4|24331-1^Lipid panel^LN|||20261123110000|||||||||||||||20261123111000|||F\r" +
                  "OBX|1|NM|2093-3^Cholesterol^LN||5.2|mmol/L|3.0-5.0|H|||F|||20261123110000\r" +
                  "OBX|2|TX|NOTE^Comment^L||Seen with " + upper(p.family) + " at " + p.postcode + "||||||F\r");
  // The second patient (no NHS number), then merged into the first.
  send("A01 second", msh("ADT^A01^ADT_A01", "PHI-5") + "EVN|A01|20261123101500\r" + "PID|1||" + p.mrn2 +
                         "^^^RGT01^MR||" + upper(p.family2) + "^" + upper(p.given2) + "||" + hl7_date(p.birth2) + "|M\r" +
                         pv1("VNVT2"));
  send("A40", msh("ADT^A40^ADT_A39", "PHI-6") + "EVN|A40|20261123101500\r" + pid(p) + "MRG|" + p.mrn2 + "^^^RGT01^MR\r");
  send("A40 unknown", msh("ADT^A40^ADT_A39", "PHI-7") + "EVN|A40|20261123101500\r" + pid(p) + "MRG|" + p.mrn_unknown +
                          "^^^RGT01^MR\r");
  // Malformed: a segment id in lower case, quoting the patient in what follows.
  send("malformed", msh("ADT^A01^ADT_A01", "PHI-8") + "EVN|A01|20261123101500\rpid|1||" + p.nhs + "^^^NHS^NH||" +
                        upper(p.family) + "^" + upper(p.given) + "||" + hl7_date(p.birth) + "\r");
  send("bad check digit", msh("ADT^A01^ADT_A01", "PHI-9") + "EVN|A01|20261123101500\r" + "PID|1||" + p.nhs_bad_check +
                              "^^^NHS^NH~" + p.mrn_bad + "^^^RGT01^MR||" + upper(p.family) + "^" + upper(p.given) +
                              "||" + hl7_date(p.birth) + "|F\r" + pv1("VNBAD9"));
  send("unmapped", msh("ADT^A60^ADT_A60", "PHI-10") + "EVN|A60|20261123101500\r" + pid(p));
  // The control id of the A01 again, with other content.
  send("reused id", adt(p, "A08", "PHI-" + p.nhs));
  send("version", "MSH|^~\\&|PAS|RGT01|GW|GW|20261123101500||ADT^A01^ADT_A01|PHI-11|P|3.0\rEVN|A01|20261123101500\r" +
                      pid(p));
  // Two messages in one frame outside a batch: refused whole, and a sender fault logged.
  send("two in one", adt(p, "A08", "PHI-13") + adt(p, "A08", "PHI-14"));
  {
    // Bytes outside a frame: a protocol violation the listener logs.
    test::MllpConnection c(mllp);
    REQUIRE(c.ok());
    REQUIRE(c.send_raw(pid(p)));
    REQUIRE(c.send(adt(p, "A08", "PHI-12")));
    (void)c.read_frames(1, 5s);
  }
  CHECK(acks["A01"] == "AA");
  CHECK(acks["A08"] == "AA");
  CHECK(acks["A31"] == "AA");
  CHECK(acks["ORU"] == "AA");
  CHECK(acks["A01 second"] == "AA");
  CHECK(acks["A40"] == "AA");
  CHECK(acks["A40 unknown"] == "AE");
  CHECK(acks["malformed"] == "AR");
  CHECK(acks["unmapped"] == "AR");
  CHECK(acks["version"] == "AR");
  CHECK(acks["two in one"] == "AR");
  CHECK(acks["bad check digit"] != "(no ACK)");
  CHECK(acks["reused id"] != "(no ACK)");

  // --- FHIR ------------------------------------------------------------------------------
  Client c;
  c.port = g.port;
  c.opts.ca_file = certs.ca;
  c.opts.close_wait = 0ms;
  const std::string here = bearer(clinician("RGT01"));
  const std::string elsewhere = bearer(clinician("B99999"));
  const std::string ig = bearer(ig_officer());

  test::HttpResponse found = c.call("GET", "/Patient?identifier=" + std::string(kNhsSystem) + "%7C" + p.nhs, here);
  REQUIRE_MESSAGE(found.status == 200, found.body);
  auto bundle = fhir::parse_json(found.body);
  REQUIRE(bundle.ok());
  REQUIRE(bundle->find("entry") != nullptr);
  REQUIRE(!bundle->find("entry")->items().empty());
  const std::string id(bundle->find("entry")->items().at(0).find("resource")->string_at("id"));
  REQUIRE(!id.empty());

  CHECK(c.call("GET", "/Patient/" + id, here).status == 200);
  CHECK(c.call("GET", "/Patient?identifier=" + std::string(kMrnSystem) + "%7C" + p.mrn, here).status == 200);
  CHECK(c.call("POST", "/Patient/_search", here, "identifier=" + std::string(kNhsSystem) + "%7C" + p.nhs,
               "application/x-www-form-urlencoded").status == 200);
  CHECK(c.call("GET", "/Patient?family=" + p.family + "&given=" + p.given + "&birthdate=" + p.birth, here).status == 200);
  CHECK(c.call("GET", "/Patient?address-postalcode=ZE2%209QX&family=" + p.family, here).status == 200);
  for (const char* type : {"Encounter", "Observation", "DiagnosticReport"})
    CHECK(c.call("GET", "/" + std::string(type) + "?patient=" + id, here).status == 200);
  CHECK(c.call("GET", "/Patient?identifier=" + std::string(kNhsSystem) + "%7C" + p.nhs_bad_check, here).status == 400);
  CHECK(c.call("GET", "/Patient?birthdate=" + hl7_date(p.birth) + "x", here).status == 400);
  CHECK(c.call("GET", "/Patient/" + p.mrn_unknown, here).status == 404);
  // No relationship: the record is not disclosed (404, as for an unknown one), its clinical
  // resources are not listed (an empty Bundle), and the audit trail is not a clinician's to search (403).
  CHECK(c.call("GET", "/Patient/" + id, elsewhere).status == 404);
  test::HttpResponse hidden = c.call("GET", "/Encounter?patient=" + id, elsewhere);
  CHECK(hidden.status == 200);
  CHECK(hidden.body.find("\"total\":0") != std::string::npos);
  CHECK(c.call("GET", "/AuditEvent?patient=" + p.nhs, here).status == 403);
  CHECK(c.call("GET", "/Patient/$ihe-pix?sourceIdentifier=" + std::string(kNhsSystem) + "%7C" + p.nhs, here).status == 200);
  // A local identifier system the cross-reference does not know: refused, quoting nothing.
  CHECK(c.call("GET", "/Patient/$ihe-pix?sourceIdentifier=" + std::string(kMrnSystem) + "%7C" + p.mrn, here).status == 400);
  // Break-glass: a justification the policy takes, and one it refuses (no reason code).
  const std::string bg = "X-Break-Glass-Reason: emergency-care\r\nX-Break-Glass-Justification: " + p.justification + "\r\n";
  CHECK(c.call("GET", "/Patient/" + id, elsewhere + bg).status == 200);
  CHECK(c.call("GET", "/Patient/" + id, bearer(clinician("C77777")) + "X-Break-Glass-Reason: whim\r\nX-Break-Glass-Justification: " +
                                            p.justification + "\r\n").status / 100 == 4);
  // Tokens: expired, and not a token at all.
  test::TokenClaims expired = clinician("RGT01");
  expired.ttl = -600;
  CHECK(c.call("GET", "/Patient/" + id, bearer(expired)).status == 401);
  CHECK(c.call("GET", "/Patient?identifier=" + std::string(kNhsSystem) + "%7C" + p.nhs,
               "Authorization: Bearer " + p.nhs + "." + p.family + ".x\r\n").status == 401);
  // A body that is not FHIR, quoting the patient.
  CHECK(c.call("POST", "/Patient/_search", here + "Prefer: handling=strict\r\n",
               "identifier=" + p.nhs + "&family=" + p.family + "&bogus=" + p.given, "application/x-www-form-urlencoded")
            .status == 400);
  // Ids a caller keyed by the patient: mirrored as sent (the client's own, matched by it), but
  // logged without the NHS number (the scan of the whole log below checks that).
  {
    const std::string raw = "GET /Patient/" + id + " HTTP/1.1\r\nHost: localhost\r\nX-Request-ID: " + p.nhs +
                            "\r\nX-Correlation-ID: corr-" + p.nhs.substr(0, 3) + "-" + p.nhs.substr(3, 3) + "-" +
                            p.nhs.substr(6) + "\r\n" + here + "Connection: close\r\n\r\n";
    auto ex = test::exchange(c.port, raw, 1, c.opts);
    REQUIRE(ex.responses.size() == 1);
    CHECK(ex.responses[0].status == 200);
    CHECK(ex.responses[0].header("x-request-id") == p.nhs);
    CHECK(ex.responses[0].header("x-correlation-id") ==
          "corr-" + p.nhs.substr(0, 3) + "-" + p.nhs.substr(3, 3) + "-" + p.nhs.substr(6));
    ++c.statuses[200];
  }

  {
    // TLS 1.1, which the gateway refuses: a failed handshake, logged at debug.
    test::ClientOptions old = c.opts;
    old.max_tls_version = 0x0302;
    (void)test::exchange(c.port, "GET /Patient?family=" + p.family + " HTTP/1.1\r\nHost: localhost\r\n\r\n", 1, old);
  }

  // --- Record pointers --------------------------------------------------------------------
  test::HttpResponse created = c.call("POST", "/DocumentReference", bearer(source("RX1")), pointer(p, "RX1", ""));
  REQUIRE_MESSAGE(created.status == 201, created.body);
  const std::string pointer_id(fhir::parse_json(created.body)->string_at("id"));
  CHECK(c.call("PUT", "/DocumentReference/" + pointer_id, bearer(source("RX1")), pointer(p, "RX1", pointer_id)).status == 200);
  CHECK(c.call("PUT", "/DocumentReference/" + pointer_id, bearer(source("RX2")), pointer(p, "RX2", pointer_id)).status == 403);
  CHECK(c.call("POST", "/DocumentReference", bearer(source("RX1")),
               R"({"resourceType":"DocumentReference","subject":{"identifier":{"system":"https://fhir.nhs.uk/Id/nhs-number","value":")" +
                   p.nhs_bad_check + R"("}},"description":")" + p.family + R"("})").status == 400);
  CHECK(c.call("GET", "/DocumentReference?subject:identifier=" + std::string(kNhsSystem) + "%7C" + p.nhs, here).status == 200);

  // --- Information governance -------------------------------------------------------------
  CHECK(c.call("GET", "/AuditEvent?patient=" + p.nhs, ig).status == 200);
  CHECK(c.call("GET", "/AuditEvent?patient=" + p.nhs_bad_check, ig).status == 400);
  CHECK(c.call("GET", "/AuditEvent/$access-report?patient=" + p.nhs, ig).status == 200);
  test::HttpResponse exported = c.call("GET", "/AuditEvent/$export?start=2020-01-01&end=2999-12-31", ig);
  CHECK(exported.status == 200);
  CHECK(exported.body.find(p.nhs) != std::string::npos);  // the export does carry it, to the IG officer
  test::HttpResponse alerts = c.call("GET", "/audit/alerts?status=open", ig);
  REQUIRE(alerts.status == 200);
  auto alert_list = fhir::parse_json(alerts.body);
  REQUIRE(alert_list.ok());
  REQUIRE(alert_list->find("alerts") != nullptr);
  REQUIRE(!alert_list->find("alerts")->items().empty());  // the break-glass raised one
  const std::string review =
      "/audit/alerts/" + std::to_string(alert_list->find("alerts")->items().at(0).find("id")->as_int64().value()) + "/review";
  CHECK(c.call("POST", review, ig, R"({"outcome":"referred","note":")" + p.review_note + R"("})", "application/json").status == 200);
  CHECK(c.call("POST", review, ig, R"({"outcome":"referred","note":")" + p.review_note + R"("})", "application/json").status == 409);
  CHECK(c.call("PUT", "/audit/flagged-patients/" + p.nhs, ig, R"({"reason":")" + p.flag_reason + R"("})", "application/json").status == 200);
  CHECK(c.call("GET", "/Patient/" + id, here).status == 200);  // a flagged record's access raises an alert
  CHECK(c.call("DELETE", "/audit/flagged-patients/" + p.nhs, ig).status == 200);
  CHECK(c.call("PUT", "/audit/flagged-patients/" + p.nhs_bad_check, ig, R"({"reason":")" + p.flag_reason + R"("})",
               "application/json").status == 400);
  CHECK(c.call("PUT", "/audit/objections/" + p.nhs, ig, R"({"note":")" + p.objection_note + R"("})", "application/json").status == 200);
  CHECK(c.call("DELETE", "/audit/objections/" + p.nhs, ig, R"({"note":")" + p.withdrawal_note + R"("})", "application/json").status == 200);
  CHECK(c.call("PUT", "/audit/objections/" + p.nhs, ig, R"({"note":")" + p.objection_note + "\\n" + p.family + R"("})",
               "application/json").status == 400);
  CHECK(c.call("DELETE", "/audit/objections/" + p.nhs, here).status == 403);

  // Stop cleanly: the log is complete, the audit store closed.
  REQUIRE(::kill(g.pid, SIGTERM) == 0);
  const int status = test::wait_child_exit(g.pid);
  CHECK(WIFEXITED(status));
  const std::string log = slurp(log_file);

  // The log is the operator's: it holds the lines for what happened (so an empty or
  // truncated capture cannot pass).
  CHECK(lines_with(log, "fhir-gateway ready") == 1);
  CHECK(lines_with(log, "stopped") == 1);
  CHECK(lines_with(log, "request") >= static_cast<std::size_t>(c.n));
  for (int code : {200, 201, 400, 401, 403, 404, 409}) {
    CAPTURE(code);
    CHECK(c.statuses[code] > 0);
    CHECK(lines_with(log, "request", "\"status\":" + std::to_string(code) + ",") >= static_cast<std::size_t>(c.statuses[code]));
  }
  CHECK(lines_with(log, "break-glass access granted", "\"reason\":\"emergency-care\"") == 1);
  CHECK(lines_with(log, "sender reused a message control id for different content",
                   "\"key\":\"PAS|RGT01|PHI-(nhs-number-removed)\"") == 1);
  CHECK(lines_with(log, "mllp protocol violation", "\"event\":\"stray_bytes_skipped\"") == 1);
  CHECK(lines_with(log, "mllp protocol violation", "\"event\":\"several messages in one frame\"") == 1);
  // The request keyed by the patient: its line is there, its ids without the number.
  CHECK(lines_with(log, "request", "\"request_id\":\"(nhs-number-removed)\",\"correlation_id\":\"corr-(nhs-number-removed)\"") == 1);
  CHECK(lines_with(log, "TLS handshake failed") >= 1);  // a debug line: the level is debug
  CHECK(lines_with(log, "example: batch stored", "\"source\":\"vendor-ok\"") == 1);
  CHECK(log.find("\"msg\":\"batch refused: batch.resources[0] is a Condition") != std::string::npos);

  // Nothing of the patient's.
  for (const auto& phi : forbidden(p)) {
    const std::string& what = phi.first;
    const std::string& value = phi.second;
    const std::size_t at = log.find(value);
    std::string line;
    if (at != std::string::npos) {
      const std::size_t from = log.rfind('\n', at);
      const std::size_t to = log.find('\n', at);
      line = log.substr(from == std::string::npos ? 0 : from + 1, to == std::string::npos ? std::string::npos : to - from - 1);
    }
    CHECK_MESSAGE(at == std::string::npos, "the log holds the " << what << " '" << value << "': " << line);
  }

  // The audit store does hold it: the NHS number, the justification, the IG notes.
  audit::LogOptions lo;
  lo.path = (data / "audit.db").string();
  lo.checkpoint_file = (data / "audit-checkpoints.log").string();
  auto audit_log = audit::Log::open(lo, nullptr);
  REQUIRE_MESSAGE(audit_log.ok(), audit_log.issue().diagnostics);
  audit::Query q;
  q.count = 100000;
  q.newest_first = false;
  auto page = (*audit_log)->search(q);
  REQUIRE(page.ok());
  std::string audited;
  for (const auto& r : page->records) {
    audited += r.target + "\n" + r.outcome_text + "\n" + r.detail.note + "\n" + r.detail.break_glass_justification + "\n";
    for (const auto& n : r.detail.patients) audited += n + "\n";
  }
  (*audit_log)->stop();
  CHECK(audited.find(p.nhs) != std::string::npos);
  CHECK(audited.find(p.justification) != std::string::npos);
  CHECK(audited.find(p.objection_note) != std::string::npos);
  CHECK(audited.find(p.withdrawal_note) != std::string::npos);
  CHECK(audited.find(p.review_note) != std::string::npos);
  CHECK(audited.find(p.flag_reason) != std::string::npos);
  CHECK(audited.find("family=" + p.family) != std::string::npos);  // the search as received
}
