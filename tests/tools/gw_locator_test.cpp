// SPDX-License-Identifier: Apache-2.0
// gw-locator, run as a user would: bulk import with a per-entry rejection report, nothing
// half-written, statistics, the Synthea sample set (when ../shared/data is present), usage errors.
#include <doctest/doctest.h>

#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "gateway/locator/sqlite_locator.h"
#include "support/paths.h"

namespace {

struct Run {
  int status = -1;
  std::string out;
};

// Runs gw-locator with `args` (shell-quoted by the caller), stdout and stderr together.
Run gw_locator(const std::string& args) {
  Run r;
  std::string cmd = std::string(GW_LOCATOR_BIN) + " " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  REQUIRE(p != nullptr);
  std::array<char, 4096> buf{};
  std::size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
  int st = pclose(p);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

std::string patient(const std::string& id, const std::string& nhs, const std::string& gender) {
  return R"({"resourceType":"Patient","id":")" + id + R"(","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":")" +
         nhs + R"("},{"system":"https://trust.example/mrn","value":"M-)" + id + R"("}],"name":[{"family":"Okafor","given":["Ada"]}],"gender":")" +
         gender + R"(","birthDate":"1970-01-01"})";
}

std::string line_of(const std::string& text, const std::string& label) {
  auto at = text.find(label);
  if (at == std::string::npos) return {};
  return text.substr(at, text.find('\n', at) - at);
}

}  // namespace

TEST_CASE("gw-locator: import reports created, rejected entries one by one, and writes nothing half") {
  auto dir = gw::test::temp_dir("gwloc");
  const std::string data = (dir / "data").string();
  std::ofstream(dir / "good.json") << R"({"resourceType":"Bundle","type":"collection","entry":[)"
                                   << R"({"fullUrl":"urn:uuid:p1","resource":)" << patient("p1", "9990000018", "female") << "},"
                                   << R"({"fullUrl":"urn:uuid:p2","resource":)" << patient("p2", "9990000026", "male") << "},"
                                   << R"({"resource":{"resourceType":"DocumentReference","status":"current",)"
                                   << R"("type":{"coding":[{"system":"http://snomed.info/sct","code":"887701000000100"}]},)"
                                   << R"("subject":{"reference":"urn:uuid:p1"},)"
                                   << R"("custodian":{"identifier":{"system":"https://fhir.nhs.uk/Id/ods-organization-code","value":"RX1"}},)"
                                   << R"("content":[{"attachment":{"contentType":"application/fhir+json","url":"https://rx1.example/fhir/x"}}]}}]})";
  std::ofstream(dir / "bad.json") << R"({"resourceType":"Bundle","type":"collection","entry":[)"
                                  << R"({"resource":)" << patient("p3", "9990000034", "sometimes") << "},"
                                  << R"({"fullUrl":"urn:uuid:nothing"},)"
                                  << R"({"resource":)" << patient("p4", "9990000042", "female") << "}]}";
  std::ofstream(dir / "broken.json") << R"({"resourceType":"Bundle","entry":[)";
  const std::string report = (dir / "rejected.ndjson").string();
  Run r = gw_locator("import --data " + data + " --source RX1 --report " + report + " " + (dir / "good.json").string() +
                     " " + (dir / "bad.json").string() + " " + (dir / "broken.json").string());
  CHECK_MESSAGE(r.status == 3, r.out);  // done, some entries rejected
  CHECK(line_of(r.out, "patients seen:").find(" 4") != std::string::npos);
  CHECK(line_of(r.out, "  created:").find(" 3") != std::string::npos);
  CHECK(line_of(r.out, "pointers indexed:").find(" 1") != std::string::npos);
  CHECK(line_of(r.out, "rejected entries:").find(" 3") != std::string::npos);
  // Each rejection names its file, entry and reason.
  std::string rep = gw::test::read_file(report);
  CHECK(rep.find("bad.json#entry[0] (Patient/p3)") != std::string::npos);
  CHECK(rep.find("gender") != std::string::npos);
  CHECK(rep.find("bad.json#entry[1]") != std::string::npos);
  CHECK(rep.find("entry has no resource") != std::string::npos);
  CHECK(rep.find("broken.json") != std::string::npos);
  // Nothing of the rejected Patient was written; the good ones are there.
  Run st = gw_locator("stats --data " + data);
  CHECK(st.status == 0);
  CHECK(line_of(st.out, "patients:").find(" 3") != std::string::npos);
  CHECK(line_of(st.out, "local identifiers:").find(" 3") != std::string::npos);
  CHECK(line_of(st.out, "pointers:").find(" 1") != std::string::npos);
  // Re-importing the same file matches instead of duplicating.
  Run again = gw_locator("import --quiet --data " + data + " --source RX1 " + (dir / "good.json").string());
  CHECK(line_of(again.out, "matched NHS number:").find(" 2") != std::string::npos);
  CHECK(line_of(again.out, "of which updated:").find(" 0") != std::string::npos);
  // A re-import with changed demographics updates the record, and the summary says so.
  std::string changed = gw::test::read_file((dir / "good.json").string());
  changed.replace(changed.find("Okafor"), 6, "Okafor-Butler");
  std::ofstream(dir / "changed.json") << changed;
  Run updated = gw_locator("import --quiet --data " + data + " --source RX1 " + (dir / "changed.json").string());
  CHECK(line_of(updated.out, "matched NHS number:").find(" 2") != std::string::npos);
  CHECK(line_of(updated.out, "of which updated:").find(" 1") != std::string::npos);
  CHECK(line_of(gw_locator("stats --data " + data).out, "patients:").find(" 3") != std::string::npos);
}

TEST_CASE("gw-locator: the Synthea sample set imports with one pointer per patient") {
  auto shared = gw::test::shared_data_dir();
  if (!shared) return;  // skipped with a message by shared_data_dir()
  auto dir = gw::test::temp_dir("gwloc-synthea");
  Run r = gw_locator("import --quiet --data " + (dir / "data").string() + " --source RSYN --pointer-base https://synthea.example/fhir " +
                     (*shared / "synthea-r4-smart-on-fhir").string());
  REQUIRE_MESSAGE(r.status == 0, r.out);
  const std::string created = line_of(r.out, "  created:");
  const std::string pointers = line_of(r.out, "pointers indexed:");
  CHECK(line_of(r.out, "rejected entries:").find(" 0") != std::string::npos);
  // Every Synthea patient file holds one Patient plus clinical resources: one pointer each.
  const int n_created = std::stoi(created.substr(created.find(':') + 1));
  CHECK(n_created == std::stoi(pointers.substr(pointers.find(':') + 1)));
  CHECK(n_created >= 20);
}

TEST_CASE("gw-locator: --help, usage errors and missing inputs") {
  Run help = gw_locator("--help");
  CHECK(help.status == 0);
  CHECK(help.out.find("import") != std::string::npos);
  CHECK(gw_locator("import --help").out.find("--pointer-base") != std::string::npos);
  CHECK(gw_locator("").status == 2);
  CHECK(gw_locator("frobnicate").status == 2);
  Run missing = gw_locator("import --data /tmp/gwloc-none /no/such/file.json");
  CHECK(missing.status == 2);
  CHECK(missing.out.find("no such file") != std::string::npos);
}

TEST_CASE("gw-locator: stats and conflicts refuse a --data without an index instead of making one") {
  auto dir = gw::test::temp_dir("gwloc-typo");
  const auto typo = dir / "typo" / "path";
  for (const std::string command : {"stats", "conflicts"}) {
    CAPTURE(command);
    Run r = gw_locator(command + " --data " + typo.string());
    CHECK(r.status != 0);
    CHECK(r.out.find("no locator index") != std::string::npos);
    CHECK(r.out.find("patients:") == std::string::npos);
    CHECK_FALSE(std::filesystem::exists(typo / "locator.db"));
  }
}

TEST_CASE("gw-locator: a pointer whose Patient is in another file is filed under the indexed patient") {
  auto dir = gw::test::temp_dir("gwloc-split");
  const std::string data = (dir / "data").string();
  auto pointer = [](const std::string& nhs) {
    return R"({"resourceType":"DocumentReference","status":"current",)"
           R"("type":{"coding":[{"system":"http://snomed.info/sct","code":"887701000000100"}]},)"
           R"("subject":{"identifier":{"system":"https://fhir.nhs.uk/Id/nhs-number","value":")" + nhs + R"("}},)"
           R"("custodian":{"identifier":{"system":"https://fhir.nhs.uk/Id/ods-organization-code","value":"RX1"}},)"
           R"("content":[{"attachment":{"contentType":"application/fhir+json","url":"https://rx1.example/fhir/)" + nhs +
           R"("}}]})";
  };
  std::ofstream(dir / "a.json") << R"({"resourceType":"Bundle","type":"collection","entry":[{"resource":)"
                                << patient("p1", "9990000018", "female") << "}]}";
  std::ofstream(dir / "b.json") << R"({"resourceType":"Bundle","type":"collection","entry":[{"resource":)"
                                << pointer("9990000018") << R"(},{"resource":)" << pointer("9990000026") << "}]}";
  Run r = gw_locator("import --data " + data + " --source RX1 " + (dir / "a.json").string() + " " +
                     (dir / "b.json").string());
  CHECK_MESSAGE(r.status == 3, r.out);  // done, some entries rejected
  CHECK(line_of(r.out, "pointers indexed:").find(" 1") != std::string::npos);
  CHECK(line_of(r.out, "rejected entries:").find(" 1") != std::string::npos);  // 9990000026 is nobody's
  CHECK(r.out.find("nor an indexed patient") != std::string::npos);

  // synthpop's Bundles never split a patient from its pointers, and import them whole.
  auto bundles = dir / "bundles";
  const std::string synth = std::string(SYNTHPOP_BIN) + " --quiet --count 4 --format bundle --bundle-size 4 --out " +
                            bundles.string();
  REQUIRE(std::system(synth.c_str()) == 0);
  Run all = gw_locator("import --data " + (dir / "data2").string() + " --source RX1 " + bundles.string());
  CHECK_MESSAGE(all.status == 0, all.out);
  CHECK(line_of(all.out, "  created:").find(" 4") != std::string::npos);
  CHECK(line_of(all.out, "pointers indexed:").find(" 20") != std::string::npos);
  CHECK(line_of(all.out, "rejected entries:").find(" 0") != std::string::npos);
}

namespace {

std::string dated_pointer(const std::string& id, const std::string& date_member) {
  return R"({"resourceType":"DocumentReference","id":")" + id + R"(","status":"current",)" + date_member +
         R"("type":{"coding":[{"system":"http://snomed.info/sct","code":"887701000000100"}]},)"
         R"("subject":{"reference":"urn:uuid:p1"},)"
         R"("custodian":{"identifier":{"system":"https://fhir.nhs.uk/Id/ods-organization-code","value":"RX1"}},)"
         R"("content":[{"attachment":{"contentType":"application/fhir+json","url":"https://rx1.example/fhir/)" + id +
         R"("}}]})";
}

}  // namespace

TEST_CASE("gw-locator: a pointer keeps the date its source gave; the time of indexing only stands in for none") {
  auto dir = gw::test::temp_dir("gwloc-dates");
  const std::string data = (dir / "data").string();
  std::ofstream(dir / "dated.json") << R"({"resourceType":"Bundle","type":"collection","entry":[)"
                                    << R"({"fullUrl":"urn:uuid:p1","resource":)" << patient("p1", "9990000018", "female")
                                    << R"(},{"resource":)" << dated_pointer("RX1-dated", R"("date":"2019-04-01T10:15:00+01:00",)")
                                    << R"(},{"resource":)" << dated_pointer("RX1-undated", "")
                                    << R"(},{"resource":)" << dated_pointer("RX1-baddate", R"("date":"2019-04-01",)")
                                    << "}]}";
  Run r = gw_locator("import --data " + data + " --source RX1 " + (dir / "dated.json").string());
  CHECK_MESSAGE(r.status == 3, r.out);  // done, some entries rejected
  // A date that is not an instant rejects its entry, saying what an instant is.
  CHECK(line_of(r.out, "rejected entries:").find(" 1") != std::string::npos);
  CHECK(r.out.find("DocumentReference.date must be a FHIR instant with seconds and a time zone") != std::string::npos);
  auto l = gw::locator::SqliteLocator::open((std::filesystem::path(data) / "locator.db").string());
  REQUIRE(l.ok());
  auto dated = (*l)->read_pointer("RX1-dated");
  REQUIRE(dated.ok());
  REQUIRE(dated->has_value());
  CHECK((*dated)->date == "2019-04-01T10:15:00+01:00");
  CHECK((*dated)->last_updated.rfind("2019", 0) != 0);  // the index's own time of writing
  auto undated = (*l)->read_pointer("RX1-undated");
  REQUIRE(undated.ok());
  REQUIRE(undated->has_value());
  CHECK((*undated)->date.empty());
  CHECK_FALSE((*undated)->last_updated.empty());
}

TEST_CASE("gw-locator: a file that starts with a UTF-8 byte order mark imports as without it") {
  auto dir = gw::test::temp_dir("gwloc-bom");
  const std::string bom = "\xEF\xBB\xBF";
  std::ofstream(dir / "bom.json") << bom << R"({"resourceType":"Bundle","type":"collection","entry":[{"resource":)"
                                  << patient("p1", "9990000018", "female") << "}]}";
  std::ofstream(dir / "bom.ndjson") << bom << patient("p2", "9990000026", "male") << "\n"
                                    << patient("p3", "9990000034", "female") << "\n";
  Run r = gw_locator("import --data " + (dir / "data").string() + " --source RX1 " + (dir / "bom.json").string() + " " +
                     (dir / "bom.ndjson").string());
  CHECK_MESSAGE(r.status == 0, r.out);
  CHECK(line_of(r.out, "  created:").find(" 3") != std::string::npos);
  CHECK(line_of(r.out, "rejected entries:").find(" 0") != std::string::npos);
}

TEST_CASE("gw-locator: a misspelt resourceType is a rejected file, not a type left unindexed; an empty Bundle warns") {
  auto dir = gw::test::temp_dir("gwloc-types");
  const std::string data = (dir / "data").string();
  std::ofstream(dir / "typo.json") << R"({"resourceType":"Bundel","type":"collection","entry":[{"resource":)"
                                   << patient("t1", "9990000018", "female") << "}]}";
  std::ofstream(dir / "empty.json") << R"({"resourceType":"Bundle","type":"collection"})";
  std::ofstream(dir / "entries.json") << R"({"resourceType":"Bundle","type":"collection","entry":[)"
                                      << R"({"resource":{"resourceType":"Patinet","id":"x"}},)"
                                      << R"({"resource":{"resourceType":"Observation","id":"o1"}}]})";
  const std::string report = (dir / "report.ndjson").string();
  Run r = gw_locator("import --data " + data + " --source RX1 --report " + report + " " + (dir / "typo.json").string() +
                     " " + (dir / "empty.json").string() + " " + (dir / "entries.json").string());
  CHECK_MESSAGE(r.status == 3, r.out);  // done, some entries rejected
  CHECK(line_of(r.out, "rejected entries:").find(" 2") != std::string::npos);
  CHECK(line_of(r.out, "  whole files:").find(" 1") != std::string::npos);
  CHECK(line_of(r.out, "warnings:").find(" 1") != std::string::npos);
  // A real FHIR type the locator does not hold is still only "not indexed".
  CHECK(line_of(r.out, "  Observation").find(" 1") != std::string::npos);
  CHECK(r.out.find("Bundel ") == std::string::npos);
  CHECK(r.out.find("Patinet ") == std::string::npos);
  const std::string rep = gw::test::read_file(report);
  CHECK(rep.find(R"(typo.json","reason":"resourceType \"Bundel\" is not a FHIR R4 resource type)") != std::string::npos);
  CHECK(rep.find(R"(entries.json#entry[0]","reason":"resourceType \"Patinet\")") != std::string::npos);
  CHECK(rep.find(R"(empty.json","warning":"the Bundle has no entry: nothing imported from it")") != std::string::npos);
}

TEST_CASE("gw-locator: --pointer-base must be https and --source an ODS code, checked before anything is written") {
  auto dir = gw::test::temp_dir("gwloc-args");
  const std::string data = (dir / "data").string();
  std::ofstream(dir / "one.json") << R"({"resourceType":"Bundle","type":"collection","entry":[{"resource":)"
                                  << patient("a1", "9990000018", "female")
                                  << R"(},{"resource":{"resourceType":"Observation","id":"o1"}}]})";
  const std::string file = (dir / "one.json").string();
  Run http = gw_locator("import --data " + data + " --source RX1 --pointer-base http://insecure.example/fhir " + file);
  CHECK(http.status == 2);
  CHECK(http.out.find("--pointer-base must be an https:// base URL naming a host") != std::string::npos);
  Run ods = gw_locator("import --data " + data + " --source 'bad ods!' " + file);
  CHECK(ods.status == 2);
  CHECK(ods.out.find("--source must be an ODS code: 1-64 letters and digits") != std::string::npos);
  CHECK_FALSE(std::filesystem::exists(dir / "data" / "locator.db"));
  Run ok = gw_locator("import --quiet --data " + data + " --source RX1 --pointer-base https://rx1.example/fhir " + file);
  CHECK_MESSAGE(ok.status == 0, ok.out);
  CHECK(line_of(ok.out, "pointers indexed:").find(" 1") != std::string::npos);  // <base>/Patient/a1/$everything
}

TEST_CASE("gw-locator: an NHS number failing its check digit is loaded untrusted with a warning; exit 0 without "
          "rejections") {
  auto dir = gw::test::temp_dir("gwloc-mod11");
  const std::string data = (dir / "data").string();
  std::ofstream(dir / "p.ndjson") << patient("a1", "9990000018", "female") << "\n"
                                  << patient("a3", "9434765918", "male") << "\n";  // fails Modulus 11
  const std::string report = (dir / "report.ndjson").string();
  Run r = gw_locator("import --data " + data + " --source RX1 --report " + report + " " + (dir / "p.ndjson").string());
  CHECK_MESSAGE(r.status == 0, r.out);
  CHECK(line_of(r.out, "  created:").find(" 2") != std::string::npos);
  CHECK(line_of(r.out, "rejected entries:").find(" 0") != std::string::npos);
  CHECK(line_of(r.out, "warnings:").find(" 1") != std::string::npos);
  const std::string warned = line_of(r.out, "warning ");
  CHECK(warned.find("(Patient/a3)") != std::string::npos);
  CHECK(warned.find("NHS number fails its Modulus 11 check digit") != std::string::npos);
  CHECK(warned.find("loaded as an untrusted identifier") != std::string::npos);
  const std::string rep = gw::test::read_file(report);
  CHECK(rep.find("Modulus 11") != std::string::npos);
  CHECK(rep.find("Patient/a1") == std::string::npos);  // a valid one is not warned about
}
