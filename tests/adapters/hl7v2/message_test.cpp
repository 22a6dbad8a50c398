// SPDX-License-Identifier: Apache-2.0
// HL7 v2 parser and encoder: delimiters, escapes, character sets, line endings, limits and
// round-trip stability on hand-written messages, then every message of the shared HL7 v2 sets.
#include <doctest/doctest.h>

#include <filesystem>
#include <map>
#include <string>

#include "adapters/hl7v2/message.h"
#include "support/paths.h"

using gw::hl7v2::Delimiters;
using gw::hl7v2::Message;
using gw::hl7v2::ParseOptions;
using fhir::ErrorCode;

namespace {

const std::string kMsh = "MSH|^~\\&|SENDER|RGT01|GATEWAY|X26|20240101120000||ADT^A01^ADT_A01|MSG0001|P|2.4";

Message parse_ok(std::string_view text, const ParseOptions& options = {}) {
  auto r = Message::parse(text, options);
  if (!r) FAIL("unexpected refusal: ", r.issue().expression, ": ", r.issue().diagnostics);
  return std::move(r).value();
}

fhir::Issue parse_refused(std::string_view text, const ParseOptions& options = {}) {
  auto r = Message::parse(text, options);
  if (r) FAIL("unexpectedly parsed: ", std::string(text.substr(0, 60)));
  return std::move(r).issue();
}

// The encoded form is a fixed point: parsing it again gives the same text.
void check_stable(const Message& m) {
  const std::string once = m.encode();
  auto again = Message::parse(once);
  REQUIRE(again.ok());
  CHECK(again->encode() == once);
  CHECK(again->segment_count() == m.segment_count());
}

}  // namespace

TEST_CASE("Message: segments, fields and the MSH shortcuts") {
  Message m = parse_ok(kMsh + "\rEVN|A01|20240101120000\rPID|1||9000000009^^^NHS^NH||SMITH^JOHN\r");
  REQUIRE(m.segment_count() == 3);
  CHECK(m.segment(0).id() == "MSH");
  CHECK(m.segment(1).id() == "EVN");
  CHECK(m.segment(2).id() == "PID");
  CHECK(m.message_type() == "ADT^A01");
  CHECK(m.control_id() == "MSG0001");
  CHECK(m.version() == "2.4");
  CHECK(m.charset() == "");
  // MSH-1 is the field separator itself, MSH-2 the encoding characters, taken literally.
  CHECK(m.msh().raw(1) == "|");
  CHECK(m.msh().get(1) == "|");
  CHECK(m.msh().raw(2) == "^~\\&");
  CHECK(m.msh().get(2) == "^~\\&");
  CHECK(m.msh().repetition_count(2) == 1);
  CHECK(m.msh().raw(3) == "SENDER");
  CHECK(m.msh().field_count() == 12);
  CHECK(m.msh().get(9, 3) == "ADT_A01");
  CHECK(m.segment(1).field_count() == 2);
  CHECK(m.segment(1).get(1) == "A01");
  CHECK(m.segment(2).field_count() == 5);
  CHECK(m.segment(2).get(5, 2) == "JOHN");
  CHECK(m.delimiters().field == '|');
  CHECK(m.delimiters().encoding_characters() == "^~\\&");
  CHECK(m.encode() == m.text());
}

TEST_CASE("Message: repetitions, components and sub-components") {
  Message m = parse_ok(kMsh + "\rPID|1||A123^^^MRENTR&1.2.3&ISO^MR~9000000009^^^NHS^NH||||||||^^^^|\"\"\r");
  auto pid = m.find("PID");
  REQUIRE(pid.has_value());
  CHECK(pid->repetition_count(3) == 2);
  CHECK(pid->repetition_count(1) == 1);
  CHECK(pid->repetition_count(2) == 0);   // empty field
  CHECK(pid->repetition_count(99) == 0);  // absent field
  CHECK(pid->raw(3) == "A123^^^MRENTR&1.2.3&ISO^MR");
  CHECK(pid->raw(3, 2) == "9000000009^^^NHS^NH");
  CHECK(pid->raw(3, 3).empty());
  CHECK(pid->raw(3, 1, 4) == "MRENTR&1.2.3&ISO");
  CHECK(pid->raw(3, 1, 4, 2) == "1.2.3");
  CHECK(pid->raw(3, 1, 4, 4).empty());
  CHECK(pid->raw(3, 1, 9).empty());
  CHECK(pid->raw(3, 0).empty());  // repetitions count from 1
  CHECK(pid->get(3) == "A123");
  CHECK(pid->get(3, 4) == "MRENTR");
  CHECK(pid->get(3, 4, 3) == "ISO");
  CHECK(pid->get(3, 1, 1, 2) == "9000000009");
  CHECK(pid->get(3, 5, 1, 2) == "NH");
  CHECK(pid->get(3, 2, 1, 2).empty());
  CHECK(pid->get(0).empty());
  CHECK(pid->raw(11) == "^^^^");
  CHECK(pid->field_count() == 12);
  CHECK(pid->get(12) == "\"\"");
  CHECK(pid->get(11, 2).empty());
  CHECK(pid->raw(13).empty());
}

TEST_CASE("Message: explicit null \"\" is told apart from an empty value") {
  Message m = parse_ok(kMsh + "\rPID|1|\"\"|X^\"\"||\r");
  auto pid = m.segment(1);
  CHECK(pid.get(2) == "\"\"");
  CHECK(pid.is_null(2));
  CHECK(pid.is_null(3, 2));
  CHECK_FALSE(pid.is_null(3, 1));
  CHECK_FALSE(pid.is_null(4));
  CHECK_FALSE(pid.is_null(1));
}

TEST_CASE("Message: find returns the n-th segment with an id") {
  Message m = parse_ok(kMsh + "\rOBX|1|ST|A\rNTE|1\rOBX|2|ST|B\rOBX|3|ST|C\r");
  REQUIRE(m.find("OBX", 2).has_value());
  CHECK(m.find("OBX", 2)->get(3) == "C");
  CHECK(m.find("OBX", 1)->get(3) == "B");
  CHECK_FALSE(m.find("OBX", 3).has_value());
  CHECK_FALSE(m.find("PV1").has_value());
  CHECK(m.find("MSH")->raw(10) == "MSG0001");
}

TEST_CASE("unescape: every HL7 escape sequence") {
  Delimiters d;
  CHECK(gw::hl7v2::unescape("a\\F\\b", d) == "a|b");
  CHECK(gw::hl7v2::unescape("a\\S\\b", d) == "a^b");
  CHECK(gw::hl7v2::unescape("a\\T\\b", d) == "a&b");
  CHECK(gw::hl7v2::unescape("a\\R\\b", d) == "a~b");
  CHECK(gw::hl7v2::unescape("a\\E\\b", d) == "a\\b");
  CHECK(gw::hl7v2::unescape("line1\\.br\\line2", d) == "line1\nline2");
  CHECK(gw::hl7v2::unescape("\\X41424344\\", d) == "ABCD");
  CHECK(gw::hl7v2::unescape("caf\\XC3A9\\", d) == "caf\xC3\xA9");  // hex bytes that are UTF-8
  CHECK(gw::hl7v2::unescape("caf\\XE9\\", d) == "caf\xC3\xA9");    // not UTF-8: ISO 8859-1
  CHECK(gw::hl7v2::unescape("\\X0D0A\\", d) == "\r\n");
  // Formatting and charset switches carry no text.
  CHECK(gw::hl7v2::unescape("\\H\\bold\\N\\", d) == "bold");
  CHECK(gw::hl7v2::unescape("a\\.sp2\\b\\.in+4\\c\\.ti-2\\d\\.sk3\\e\\.fi\\\\.nf\\\\.ce\\f", d) == "abcdef");
  CHECK(gw::hl7v2::unescape("\\C2842\\x\\M2442\\", d) == "x");
  // \P\ is the truncation character only when MSH-2 declares one (v2.7).
  CHECK(gw::hl7v2::unescape("a\\P\\b", d) == "a\\P\\b");
  Delimiters v27;
  v27.truncation = '#';
  CHECK(gw::hl7v2::unescape("Flat \\P\\3", v27) == "Flat #3");
  // Escape sequences at the very start and end of a value.
  CHECK(gw::hl7v2::unescape("\\F\\", d) == "|");
  CHECK(gw::hl7v2::unescape("x10\\S\\", d) == "x10^");
  CHECK(gw::hl7v2::unescape("\\E\\\\E\\", d) == "\\\\");
  CHECK(gw::hl7v2::unescape("", d).empty());
  CHECK(gw::hl7v2::unescape("plain", d) == "plain");
}

TEST_CASE("unescape: unterminated and unknown sequences are kept literally") {
  Delimiters d;
  CHECK(gw::hl7v2::unescape("abc\\F", d) == "abc\\F");
  CHECK(gw::hl7v2::unescape("trailing\\", d) == "trailing\\");
  CHECK(gw::hl7v2::unescape("\\r", d) == "\\r");  // LinuxForHealth's literal "\r" artefact
  CHECK(gw::hl7v2::unescape("\\Zlocal\\", d) == "\\Zlocal\\");
  CHECK(gw::hl7v2::unescape("\\\\", d) == "\\\\");
  CHECK(gw::hl7v2::unescape("\\X4\\", d) == "\\X4\\");    // odd number of hex digits
  CHECK(gw::hl7v2::unescape("\\XZZ\\", d) == "\\XZZ\\");  // not hex
  CHECK(gw::hl7v2::unescape("\\X\\", d) == "\\X\\");
  // An unknown sequence does not swallow a real one that follows.
  CHECK(gw::hl7v2::unescape("C:\\dir\\F\\", d) == "C:\\dir|");
}

TEST_CASE("escape: delimiters and line breaks become sequences that unescape back") {
  Delimiters d;
  CHECK(gw::hl7v2::escape("A|B^C~D&E\\F", d) == "A\\F\\B\\S\\C\\R\\D\\T\\E\\E\\F");
  CHECK(gw::hl7v2::escape("one\rtwo\nthree\r\nfour", d) == "one\\.br\\two\\.br\\three\\.br\\four");
  CHECK(gw::hl7v2::escape("Flat #3", d) == "Flat #3");
  Delimiters v27;
  v27.truncation = '#';
  CHECK(gw::hl7v2::escape("Flat #3", v27) == "Flat \\P\\3");
  for (std::string value : {"A|B^C~D&E\\F", "x10^9/L", "\\F\\", "caf\xC3\xA9", "Flat #3", ""}) {
    CAPTURE(value);
    CHECK(gw::hl7v2::unescape(gw::hl7v2::escape(value, v27), v27) == value);
    CHECK(gw::hl7v2::unescape(gw::hl7v2::escape(value, d), d) == value);
  }
  CHECK(gw::hl7v2::unescape(gw::hl7v2::escape("a\r\nb", d), d) == "a\nb");
}

TEST_CASE("Message: escaped field values decode on get() and stay escaped in raw()") {
  Message m = parse_ok(kMsh + "\rOBX|1|NM|WCC||10.04|x10\\S\\9/L|3.0-10.0\rNTE|1||A\\T\\E\\.br\\next|end\\F\\\r");
  CHECK(m.segment(1).raw(6) == "x10\\S\\9/L");
  CHECK(m.segment(1).get(6) == "x10^9/L");
  CHECK(m.segment(2).get(3) == "A&E\nnext");
  CHECK(m.segment(2).get(4) == "end|");  // a sequence at the very end of the last field
  check_stable(m);
}

TEST_CASE("Message: declared delimiters are used, whatever they are") {
  Message m = parse_ok("MSH#$*@%#APP#FAC#####ADT$A08#1#P#2.5\rPID#1##123$$$NHS$NH*456$$$X$MR##A@B%C\r");
  CHECK(m.delimiters().field == '#');
  CHECK(m.delimiters().component == '$');
  CHECK(m.delimiters().repetition == '*');
  CHECK(m.delimiters().escape == '@');
  CHECK(m.delimiters().subcomponent == '%');
  CHECK(m.message_type() == "ADT^A08");
  CHECK(m.segment(1).get(3, 4) == "NHS");
  CHECK(m.segment(1).get(3, 5, 1, 2) == "MR");
  CHECK(m.segment(1).raw(5, 1, 1, 2) == "C");
  CHECK(m.segment(1).get(5) == "A@B");  // first sub-component; "@B" is an unterminated escape
  CHECK(m.msh().raw(2) == "$*@%");
  check_stable(m);
}

TEST_CASE("Message: v2.7 truncation character in MSH-2") {
  Message m = parse_ok("MSH|^~\\&#|A|B|C|D|20240101||ADT^A01|1|P|2.7\rPID|1||X||Flat \\P\\3#\r");
  CHECK(m.delimiters().truncation == '#');
  CHECK(m.delimiters().encoding_characters() == "^~\\&#");
  CHECK(m.msh().raw(2) == "^~\\&#");
  CHECK(m.segment(1).get(5) == "Flat #3#");
  check_stable(m);
}

TEST_CASE("Message: three encoding characters mean no sub-component separator (HAPI ^~} data)") {
  Message m = parse_ok("MSH|^~}|ADMISSION|ADT1|RADIOLOGY|MIR1|19930502185327||BAR^P01|908594|P|2.4\r"
                       "PID||^^|479305169^1^M10|A&B}E}|CRESWELL^DEBORAH\r");
  CHECK(m.delimiters().escape == '}');
  CHECK(m.delimiters().subcomponent == '\0');
  CHECK(m.delimiters().encoding_characters() == "^~}");
  auto pid = m.segment(1);
  CHECK(pid.get(3, 2) == "1");
  CHECK(pid.raw(4) == "A&B}E}");
  CHECK(pid.raw(4, 1, 1, 1) == "A&B}E}");  // '&' is data here
  CHECK(pid.raw(4, 1, 1, 2).empty());
  CHECK(pid.get(4) == "A&B}");  // }E} is the escape character
  CHECK(gw::hl7v2::escape("A&B", m.delimiters()) == "A&B");
  check_stable(m);
}

TEST_CASE("Message: a doubled backslash in MSH-2 (LinuxForHealth ^~\\\\&) is read as ^~\\&") {
  Message m = parse_ok("MSH|^~\\\\&|SE050|050|PACS|050|20120912011230||ADT^A01|102|T|2.6\r"
                       "PID|0010||PID1234^5^M11^A^MR^HOSP~1234568965^^^USA^SS||DOE^JOHN^A^\r"
                       "OBX|1|TX|1234||ECHO\\T\\REPORT|\\r\r");
  CHECK(m.delimiters().component == '^');
  CHECK(m.delimiters().repetition == '~');
  CHECK(m.delimiters().escape == '\\');
  CHECK(m.delimiters().subcomponent == '&');
  CHECK(m.delimiters().truncation == '\0');
  CHECK(m.msh().raw(2) == "^~\\\\&");  // kept as declared in the text
  CHECK(m.message_type() == "ADT^A01");
  CHECK(m.segment(1).get(3, 4, 1, 2) == "USA");
  CHECK(m.segment(2).get(5) == "ECHO&REPORT");
  CHECK(m.segment(2).get(6) == "\\r");
  check_stable(m);
}

TEST_CASE("Message: bad MSH-1 and MSH-2 are refused naming the field") {
  struct Case {
    std::string text;
    std::string expression;
    std::string says;
  };
  for (const Case& c : std::vector<Case>{
           {"MSH|^~\\^|A|B|C|D|1||ADT^A01|1|P|2.4", "MSH-2", "used twice"},
           {"MSH|^~~&|A|B|C|D|1||ADT^A01|1|P|2.4", "MSH-2", "used twice"},
           {"MSH|^|\\&|A|B|C|D|1||ADT^A01|1|P|2.4", "MSH-2", "found 1 characters"},
           {"MSH|^~\\&|", "MSH-9", "MSH-9"},
           {"MSH|^~a&|A|B|C|D|1||ADT^A01|1|P|2.4", "MSH-2", "'a' is not allowed"},
           {"MSH|^~\\0|A|B|C|D|1||ADT^A01|1|P|2.4", "MSH-2", "'0' is not allowed"},
           {"MSH|^~ &|A|B|C|D|1||ADT^A01|1|P|2.4", "MSH-2", "0x20 is not allowed"},
           {"MSH|^~\\&#!|A|B|C|D|1||ADT^A01|1|P|2.4", "MSH-2", "found 6 characters"},
           {"MSH||A|B|C|D|1||ADT^A01|1|P|2.4", "MSH-2", "found 0 characters"},
           {"MSHX^~\\&X", "MSH-1", "found 'X'"},
           {"MSH", "MSH-1", "field separator"},
           {"MSH\r", "MSH-1", "field separator"},
           {"PID|1\rMSH|^~\\&|A", "segment 1", "must start with an MSH"},
           {"", "segment 1", "must start with an MSH"},
       }) {
    CAPTURE(c.text);
    auto issue = parse_refused(c.text);
    CHECK(issue.code == ErrorCode::invalid_value);
    CHECK(issue.expression == c.expression);
    CHECK(issue.diagnostics.find(c.says) != std::string::npos);
  }
}

TEST_CASE("Message: segment ids must be three upper-case letters or digits") {
  for (std::string bad : {"pid|1", "PI|1", "PIDX|1", "PID 1", "// comment", " PID|1", "PI"}) {
    CAPTURE(bad);
    auto issue = parse_refused(kMsh + "\rEVN|A01\r" + bad + "\rPV1|1\r");
    CHECK(issue.code == ErrorCode::invalid_value);
    CHECK(issue.expression == "segment 3");
  }
  Message m = parse_ok(kMsh + "\rZU1|a|b\rZLW|x\rPV1\rOBX|1\r");
  CHECK(m.segment(1).id() == "ZU1");
  CHECK(m.segment(2).get(1) == "x");
  CHECK(m.segment(3).id() == "PV1");
  CHECK(m.segment(3).field_count() == 0);
}

TEST_CASE("Message: a second MSH is refused naming it, not read as part of the first message") {
  // Two messages in one input: reading the first and ignoring the second (Mirth's behaviour)
  // would lose it without anyone being told.
  auto issue = parse_refused(kMsh + "\rEVN|A01\rPID|1\r" + kMsh + "\rPID|2\r");
  CHECK(issue.code == ErrorCode::invalid_value);
  CHECK(issue.expression == "MSH[2]");
  CHECK(issue.diagnostics.find("segment 4 is a second MSH segment") != std::string::npos);
  CHECK(issue.diagnostics.find("one message per MLLP frame") != std::string::npos);
  // A batch header after MSH is not the start of a batch.
  issue = parse_refused(kMsh + "\rBHS|^~\\&|LAB\rPID|1\r");
  CHECK(issue.expression == "BHS[1]");
  CHECK(issue.diagnostics.find("must start with FHS or BHS") != std::string::npos);
  // "MSH" inside a value is no segment.
  CHECK(parse_ok(kMsh + "\rNTE|1||MSH|x\r").segment_count() == 2);
}

TEST_CASE("Message: a malformed segment id is named with its position and its text") {
  auto issue = parse_refused(kMsh + "\rEVN|A01\rPID|1\rpv1|1|I\r");
  CHECK(issue.expression == "segment 4");
  CHECK(issue.diagnostics.rfind("segment 4 ('pv1'): a segment must start", 0) == 0);
}

TEST_CASE("Message: the message type without a trigger, or padded with spaces, reads as older senders meant it") {
  const std::string v23 = "MSH|^~\\&|PAS|RGT01|GW|GW|20240101120000||";
  // v2.1-2.3 ADT: the event is EVN-1.
  Message adt = parse_ok(v23 + "ADT|C1|P|2.3\rEVN|A01|20240101120000\rPID|1\r");
  CHECK(adt.message_type() == "ADT^A01");
  CHECK(adt.message_type_as_sent() == "MSH-9 'ADT' with EVN-1 'A01'");
  CHECK(parse_ok(v23 + "ADT^|C1|P|2.3\rEVN| A08 \rPID|1\r").message_type() == "ADT^A08");
  // An ORU has one event, R01.
  CHECK(parse_ok(v23 + "ORU|C2|P|2.2\rPID|1\r").message_type() == "ORU^R01");
  // Surrounding spaces in MSH-9 components are no part of the code.
  CHECK(parse_ok(v23 + "ADT^A01 |C3|P|2.4\rPID|1\r").message_type() == "ADT^A01");
  CHECK(parse_ok(v23 + " ADT ^ A02^ADT_A02|C4|P|2.4\rPID|1\r").message_type() == "ADT^A02");
  // What already worked still does: MSH-9.2 wins over EVN-1, MSH-9.3 is not part of the type.
  CHECK(parse_ok(v23 + "ADT^A08^ADT_A01|C5|P|2.5\rEVN|A01\rPID|1\r").message_type() == "ADT^A08");
  CHECK(parse_ok(v23 + "ADT^A40^ADT_A39|C6|P|2.5\rPID|1\r").message_type() == "ADT^A40");
  CHECK(parse_ok(v23 + "ADT^A01^|C7|P|2.4\rPID|1\r").message_type() == "ADT^A01");
  // No trigger anywhere: the type alone, and the text says what was missing.
  Message bare = parse_ok(v23 + "ADT|C8|P|2.3\rPID|1\r");
  CHECK(bare.message_type() == "ADT");
  CHECK(bare.message_type_as_sent() == "MSH-9 'ADT' with no trigger event (MSH-9.2 and EVN-1 are empty)");
  // Other types are not given a trigger.
  CHECK(parse_ok(v23 + "SIU|C9|P|2.3\rEVN|S12\r").message_type() == "SIU");
  CHECK(parse_ok(v23 + "SIU^S12^SIU_S12|C9|P|2.5\r").message_type_as_sent() == "MSH-9 'SIU^S12^SIU_S12'");
}

TEST_CASE("Message: Z-segments are kept in order and round-trip") {
  Message m = parse_ok(kMsh + "\rPID|1||A1^^^MRENTR^MEDREC\rZUK|1|2|REFERRER^X\rZLW||BED 4\rPV1|1|I\r");
  REQUIRE(m.segment_count() == 5);
  CHECK(m.find("ZUK")->get(3, 2) == "X");
  CHECK(m.find("ZLW")->get(2) == "BED 4");
  CHECK(m.segment(4).id() == "PV1");
  CHECK(m.encode().find("\rZUK|1|2|REFERRER^X\rZLW||BED 4\r") != std::string::npos);
  check_stable(m);
}

TEST_CASE("Message: CR, LF and CRLF terminators, empty lines and a missing last terminator") {
  const std::string expected = kMsh + "\rPID|1||X\rPV1|1|I\r";
  for (std::string text : {kMsh + "\rPID|1||X\rPV1|1|I\r", kMsh + "\nPID|1||X\nPV1|1|I\n",
                           kMsh + "\r\nPID|1||X\r\nPV1|1|I\r\n", kMsh + "\r\nPID|1||X\nPV1|1|I",
                           "\r\n" + kMsh + "\n\n\r\nPID|1||X\r\r\rPV1|1|I\n\n\n",
                           kMsh + "\rPID|1||X\n\rPV1|1|I"}) {
    CAPTURE(text);
    Message m = parse_ok(text);
    CHECK(m.segment_count() == 3);
    CHECK(m.encode() == expected);
    CHECK(m.segment(2).get(2) == "I");
  }
}

TEST_CASE("Message: a UTF-8 byte order mark before MSH is tolerated") {
  Message m = parse_ok("\xEF\xBB\xBF" + kMsh + "\nPID|1||X\n");
  CHECK(m.segment(0).id() == "MSH");
  CHECK(m.encode() == kMsh + "\rPID|1||X\r");
  CHECK(m.message_type() == "ADT^A01");
  // Only before MSH: a second BOM is data, and here it breaks a segment id.
  CHECK(parse_refused("\xEF\xBB\xBF\xEF\xBB\xBF" + kMsh).expression == "segment 1");
}

TEST_CASE("Message: MSH-18 selects the character set") {
  const std::string head = "MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5|||AL|NE|GBR|";
  SUBCASE("UTF-8 declared and valid: kept") {
    Message m = parse_ok(head + "UNICODE UTF-8\rPID|1||X||BARRIONUEVO^RODOLFO SEBASTI\xC3\x81N\r");
    CHECK(m.charset() == "UNICODE UTF-8");
    CHECK(m.segment(1).get(5, 2) == "RODOLFO SEBASTI\xC3\x81N");
    check_stable(m);
  }
  SUBCASE("UTF-8 declared but invalid: refused naming the segment") {
    auto issue = parse_refused(head + "UNICODE UTF-8\rPID|1||X\rNTE|1||caf\xE9\r");
    CHECK(issue.code == ErrorCode::invalid_value);
    CHECK(issue.expression == "segment 3");
    CHECK(issue.diagnostics.find("UTF-8") != std::string::npos);
    CHECK(parse_refused(head + "UTF-8\rNTE|1||\xED\xA0\x80\r").code == ErrorCode::invalid_value);  // surrogate
    CHECK(parse_refused(head + "UTF-8\rNTE|1||\xC0\xAF\r").code == ErrorCode::invalid_value);      // overlong
    CHECK(parse_refused(head + "UTF-8\rNTE|1||\xE2\x82\r").code == ErrorCode::invalid_value);      // truncated
  }
  SUBCASE("ISO 8859-1 declared: converted to UTF-8 and MSH-18 rewritten") {
    Message m = parse_ok(head + "8859/1~ISO IR87\rPID|1||X||M\xDCLLER^REN\xC9\rNTE|1||\\XE9\\\r");
    CHECK(m.segment(1).get(5) == "M\xC3\x9CLLER");
    CHECK(m.segment(1).get(5, 2) == "REN\xC3\x89");
    CHECK(m.segment(2).get(3) == "\xC3\xA9");
    CHECK(m.charset() == "UNICODE UTF-8");
    CHECK(m.msh().raw(18, 2) == "ISO IR87");
    check_stable(m);
  }
  SUBCASE("ISO 8859-1 with '-' as a delimiter: MSH-18 is emptied rather than split") {
    Message m = parse_ok("MSH|-~\\&|A|B|C|D|1||ADT-A01|1|P|2.4||||||8859/1~X\rPID|1||X||M\xDCLLER-REN\xC9\r");
    CHECK(m.charset().empty());
    CHECK(m.msh().raw(18, 2) == "X");
    CHECK(m.message_type() == "ADT^A01");
    CHECK(m.segment(1).get(5, 2) == "REN\xC3\x89");
    check_stable(m);
  }
  SUBCASE("ISO 8859-1 declared and all ASCII: nothing changes") {
    Message m = parse_ok(head + "8859/1\rPID|1||X\r");
    CHECK(m.charset() == "8859/1");
    check_stable(m);
  }
  SUBCASE("no MSH-18: valid UTF-8 kept, anything else read as ISO 8859-1") {
    Message utf8 = parse_ok(kMsh + "\rPID|1||X||SEBASTI\xC3\x81N\r");
    CHECK(utf8.segment(1).get(5) == "SEBASTI\xC3\x81N");
    Message latin1 = parse_ok(kMsh + "\rPID|1||X||SEBASTI\xC1N\r");
    CHECK(latin1.segment(1).get(5) == "SEBASTI\xC3\x81N");
    CHECK(latin1.charset().empty());
    check_stable(latin1);
  }
  SUBCASE("ASCII declared: read like no MSH-18") {
    Message m = parse_ok(head + "ASCII\rPID|1||X||SEBASTI\xC1N\r");
    CHECK(m.segment(1).get(5) == "SEBASTI\xC3\x81N");
    CHECK(m.charset() == "UNICODE UTF-8");
    check_stable(m);
  }
  SUBCASE("other character sets are refused as not supported") {
    for (std::string cs : {"UNICODE", "UNICODE UTF-16", "8859/15", "8859/2", "ISO IR87", "GB 18030-2000", "BIG-5"}) {
      CAPTURE(cs);
      auto issue = parse_refused(head + cs + "\rPID|1||X\r");
      CHECK(issue.code == ErrorCode::not_supported);
      CHECK(issue.expression == "MSH-18");
    }
  }
}

TEST_CASE("Message: size, segment and field limits are enforced with payload_too_large") {
  ParseOptions small;
  small.max_message_bytes = 200;
  small.max_segments = 3;
  small.max_fields_per_segment = 20;
  std::string at_size = kMsh + "\rNTE|1||";
  at_size.append(200 - at_size.size(), 'x');
  REQUIRE(at_size.size() == 200);
  CHECK(Message::parse(at_size, small).ok());
  auto over = parse_refused(at_size + "x", small);
  CHECK(over.code == ErrorCode::payload_too_large);
  CHECK(over.expression == "message");

  CHECK(Message::parse(kMsh + "\rEVN|1\rPID|1", small).ok());
  auto segments = parse_refused(kMsh + "\rEVN|1\rPID|1\rPV1|1", small);
  CHECK(segments.code == ErrorCode::payload_too_large);
  CHECK(segments.expression == "segment 4");

  std::string fields20 = "NTE";
  for (int i = 0; i < 20; ++i) fields20.append("|f");
  CHECK(Message::parse(kMsh + "\r" + fields20, small).ok());
  auto fields = parse_refused(kMsh + "\r" + fields20 + "|f", small);
  CHECK(fields.code == ErrorCode::payload_too_large);
  CHECK(fields.expression == "segment 2");
}

TEST_CASE("Message: a 4 MiB message and a 20000-segment message parse (linear by design)") {
  const std::size_t four_mib = 4 * 1024 * 1024;
  std::string big = kMsh + "\r";
  std::size_t obx = 0;
  while (big.size() + 300 < four_mib) {
    ++obx;
    big.append("OBX|").append(std::to_string(obx)).append("|TX|REPORT^Report||");
    big.append(220, static_cast<char>('a' + obx % 26)).append("||||||F\r");
  }
  big.append("NTE|1||");
  big.append(four_mib - big.size(), 'z');
  REQUIRE(big.size() == four_mib);
  Message m = parse_ok(big);
  CHECK(m.segment_count() == obx + 2);
  CHECK(m.find("OBX", obx - 1)->get(1) == std::to_string(obx));
  CHECK(m.segment(m.segment_count() - 1).raw(3).size() == four_mib - (big.rfind("NTE|1||") + 7));
  CHECK(parse_refused(big + "z").code == ErrorCode::payload_too_large);

  std::string many = kMsh + "\r";
  for (int i = 1; i < 20000; ++i) many.append("OBX|").append(std::to_string(i)).append("|NM|K^Potassium||4.1\r");
  Message n = parse_ok(many);
  CHECK(n.segment_count() == 20000);
  CHECK(n.segment(19999).get(1) == "19999");
  check_stable(n);
  auto issue = parse_refused(many + "OBX|20000\r");
  CHECK(issue.code == ErrorCode::payload_too_large);
  CHECK(issue.expression == "segment 20001");
}

TEST_CASE("Message: encode is stable across awkward inputs") {
  int refused = 0;
  for (const std::string& text : std::vector<std::string>{
           "\xEF\xBB\xBF" + kMsh + "\r\n\r\nPID|1||A\\F\\B^^^X&Y\r\n",
           "MSH|^~\\&|A|B|C|D|1||ORU^R01|1|P|2.3||||||8859/1\nOBX|1|TX|||r\xE9sum\xE9\\.br\\\n",
           kMsh + "\rNTE|1||\\XE9\\ trailing\\",
           kMsh + "\rZZZ\rZZ9|\r|||\r",
           kMsh + std::string("\rNTE|1||nul\0byte", 16),
       }) {
    CAPTURE(text);
    auto r = Message::parse(text);
    if (!r) {
      // "|||" is not a segment: the only refusal expected in this list.
      CHECK(r.issue().expression == "segment 4");
      ++refused;
      continue;
    }
    check_stable(*r);
    if (r->version() == "2.3") {
      CHECK(r->encode().find("|8859/1") == std::string::npos);
      CHECK(r->charset() == "UNICODE UTF-8");
      CHECK(r->segment(1).get(5) == "r\xC3\xA9sum\xC3\xA9\n");
    }
  }
  CHECK(refused == 1);
}

TEST_CASE("split_messages: files with several messages and batch envelopes") {
  const std::string file = "\xEF\xBB\xBF" + kMsh + "\nPID|1\n\nMSH|^~\\&|B||||||ADT^A02|2|P|2.4\r\nPV1|1\r\n";
  auto parts = gw::hl7v2::split_messages(file);
  REQUIRE(parts.size() == 2);
  CHECK(parse_ok(parts[0]).message_type() == "ADT^A01");
  CHECK(parse_ok(parts[1]).segment_count() == 2);
  CHECK(parse_ok(parts[1]).control_id() == "2");
  CHECK(parse_ok(parts[1]).message_type() == "ADT^A02");

  const std::string batch =
      "FHS|^~\\&|LAB\rBHS|^~\\&|LAB\r" + kMsh + "\rPID|1\r" + "MSH|^~\\&|L||||||ORU^R01|2|P|2.4\rOBX|1\r" +
      "BTS|2\rFTS|1\r";
  auto batched = gw::hl7v2::split_messages(batch);
  REQUIRE(batched.size() == 2);
  CHECK(parse_ok(batched[0]).segment_count() == 2);
  Message second = parse_ok(batched[1]);
  CHECK(second.segment_count() == 2);
  CHECK(second.segment(1).id() == "OBX");  // BTS and FTS are not part of it
  CHECK(second.message_type() == "ORU^R01");
  CHECK(gw::hl7v2::split_messages("no message here\r").empty());
  CHECK(gw::hl7v2::split_messages("").empty());
  // "MSH" only counts at the start of a line.
  CHECK(gw::hl7v2::split_messages(kMsh + "\rNTE|1||see MSH|x\r").size() == 1);
}

TEST_CASE("read_batch: an FHS/BHS batch splits into its envelope and messages, or is refused whole") {
  const std::string m1 = kMsh + "\rPID|1\r";
  const std::string m2 = "MSH|^~\\&|L||||||ORU^R01|2|P|2.4\rOBX|1\r";
  const std::string batch = "\xEF\xBB\xBF" "FHS|^~\\&|LAB|RGT01|||||||F-7\rBHS|^~\\&|LAB|RGT01|||||||B-7\r" + m1 + m2 +
                            "BTS|2\rFTS|1\r";
  CHECK(gw::hl7v2::is_batch(batch));
  CHECK(gw::hl7v2::is_batch("\r\nBHS|^~\\&\r"));
  CHECK_FALSE(gw::hl7v2::is_batch(m1));
  auto b = gw::hl7v2::read_batch(batch, 10);
  REQUIRE(b.ok());
  CHECK(b->fhs == "FHS|^~\\&|LAB|RGT01|||||||F-7");
  CHECK(b->bhs == "BHS|^~\\&|LAB|RGT01|||||||B-7");
  CHECK(b->bts == "BTS|2");
  CHECK(b->fts == "FTS|1");
  REQUIRE(b->messages.size() == 2);
  CHECK(b->messages[0] == m1);
  CHECK(b->messages[1] == m2);
  CHECK(parse_ok(b->messages[1]).message_type() == "ORU^R01");
  // BHS alone, LF line ends, no trailer, and an empty batch are all batches.
  auto lf = gw::hl7v2::read_batch("BHS|^~\\&|LAB\n" + kMsh + "\nPID|1\n", 10);
  REQUIRE(lf.ok());
  CHECK(lf->messages.size() == 1);
  CHECK(lf->bts.empty());
  auto empty = gw::hl7v2::read_batch("BHS|^~\\&\rBTS|0\r", 10);
  REQUIRE(empty.ok());
  CHECK(empty->messages.empty());

  struct Bad {
    std::string text, expression, says;
  };
  const std::vector<Bad> bad = {
      {"BHS|^~\\&\r" + m1 + m2 + "BTS|3\r", "BTS-1", "BTS-1 counts '3' messages but the batch holds 2"},
      {"BHS|^~\\&\r" + m1 + "BTS|1\rBHS|^~\\&\r" + m2 + "BTS|1\r", "segment 5", "second or misplaced header"},
      {"BHS|^~\\&\rNTE|1\r" + m1, "segment 2", "(NTE) is outside every message"},
      {"FHS|^~\\&\r" + m1 + "FTS|1\r" + m2, "segment 5", "follows the file trailer"},
      {"BHS|^^\\&\r" + m1, "BHS-2", "the batch header BHS declares unusable delimiters"},
      {"BHS|^~\\&\r" + m1 + m2 + m1, "segment 6", "more than 2 messages"},
  };
  for (const Bad& c : bad) {
    CAPTURE(c.text);
    auto r = gw::hl7v2::read_batch(c.text, 2);
    REQUIRE_FALSE(r.ok());
    CHECK(r.issue().expression == c.expression);
    CHECK(r.issue().diagnostics.find(c.says) != std::string::npos);
  }
}

// ---- real data ----

namespace {

// HAPI's util/messages.txt has "//" and "/* ... */" comment lines between messages.
std::string drop_comment_lines(std::string_view text) {
  std::string out;
  std::size_t i = 0;
  while (i < text.size()) {
    std::size_t eol = i;
    while (eol < text.size() && text[eol] != '\r' && text[eol] != '\n') ++eol;
    std::size_t next = eol;
    if (next < text.size() && text[next] == '\r' && next + 1 < text.size() && text[next + 1] == '\n') ++next;
    if (next < text.size()) ++next;
    std::string_view start = text.substr(i, 2);
    if (start != "//" && start != "/*" && start != " *" && start != "*/") out.append(text.substr(i, next - i));
    i = next;
  }
  return out;
}

struct SetCount {
  int files = 0;
  int parsed = 0;
  int refused = 0;
};

std::optional<Message> parse_file_message(const std::string& path) {
  auto data = gw::test::shared_data_dir();
  if (!data) return std::nullopt;
  std::string text = gw::test::read_file(*data / path);
  auto parts = gw::hl7v2::split_messages(text);
  REQUIRE(!parts.empty());
  auto r = Message::parse(parts[0]);
  REQUIRE(r.ok());
  return std::move(r).value();
}

}  // namespace

TEST_CASE("Message: every message of the shared HL7 v2 sets parses and round-trips, or is refused") {
  auto data = gw::test::shared_data_dir();
  if (!data) {
    MESSAGE("SKIPPED: ../shared/data not found; the shared HL7 v2 sets were not checked");
    return;
  }
  // Observed counts (messages that parse) as floors: a parser change that refuses more fails.
  const std::map<std::string, int> floors = {
      {"hl7v2-hapi", 51},       {"hl7v2-linuxforhealth", 4}, {"hl7v2-microsoft-fhir-converter", 103},
      {"hl7v2-mirth-connect", 14}, {"hl7v2-nhapi", 7},          {"hl7v2-uclh-emap", 130},
  };
  std::map<std::string, SetCount> counts;
  int three_char_msh2 = 0, custom_subcomponent = 0, doubled_backslash = 0, with_bom = 0;
  for (const auto& [set, floor] : floors) {
    const auto dir = *data / set;
    if (!std::filesystem::exists(dir)) {
      MESSAGE("SKIPPED: " << dir.string() << " not found");
      continue;
    }
    SetCount& count = counts[set];
    for (const auto& entry : std::filesystem::recursive_directory_iterator(dir)) {
      if (!entry.is_regular_file()) continue;
      const std::string name = entry.path().filename().string();
      if (name == "SOURCE.md" || name == "INDEX.tsv") continue;
      ++count.files;
      const std::string raw = gw::test::read_file(entry.path());
      if (raw.size() >= 3 && raw.compare(0, 3, "\xEF\xBB\xBF") == 0) ++with_bom;
      const std::string text = drop_comment_lines(raw);
      auto parts = gw::hl7v2::split_messages(text);
      if (parts.empty()) parts.push_back(text);  // not a message file at all: must be refused
      for (std::string_view part : parts) {
        CAPTURE(entry.path().string());
        auto r = Message::parse(part);
        if (!r) {
          ++count.refused;
          const auto code = r.issue().code;
          CHECK((code == ErrorCode::invalid_value || code == ErrorCode::not_supported ||
                 code == ErrorCode::payload_too_large));
          CHECK_FALSE(r.issue().expression.empty());
          CHECK_FALSE(r.issue().diagnostics.empty());
          continue;
        }
        ++count.parsed;
        CHECK_FALSE(r->message_type().empty());
        check_stable(*r);
        const std::string msh2(r->msh().raw(2));
        if (msh2.size() == 3) ++three_char_msh2;
        if (r->delimiters().subcomponent == '}') ++custom_subcomponent;
        if (msh2 == "^~\\\\&") ++doubled_backslash;
      }
    }
  }
  for (const auto& [set, count] : counts) {
    MESSAGE(set << ": " << count.files << " files, " << count.parsed << " messages parsed, " << count.refused
                << " refused");
    CHECK(count.parsed >= floors.at(set));
    if (set != "hl7v2-nhapi") CHECK(count.refused == (set == "hl7v2-hapi" ? 1 : 0));  // uuencoded.txt
  }
  MESSAGE("3-character MSH-2: " << three_char_msh2 << ", ^~\\} delimiters: " << custom_subcomponent
                                  << ", doubled backslash: " << doubled_backslash << ", files with BOM: " << with_bom);
  if (counts.count("hl7v2-hapi")) {
    CHECK(three_char_msh2 >= 2);       // messages.txt and its split copy
    CHECK(custom_subcomponent >= 20);  // ^~\} messages
  }
  if (counts.count("hl7v2-linuxforhealth")) CHECK(doubled_backslash >= 2);
  if (counts.count("hl7v2-microsoft-fhir-converter")) CHECK(with_bom >= 20);
}

TEST_CASE("Message: real field values (UCLH NHS numbers, Microsoft and WinPath escapes)") {
  auto data = gw::test::shared_data_dir();
  if (!data) {
    MESSAGE("SKIPPED: ../shared/data not found");
    return;
  }
  if (!std::filesystem::exists(*data / "hl7v2-uclh-emap") ||
      !std::filesystem::exists(*data / "hl7v2-microsoft-fhir-converter")) {
    MESSAGE("SKIPPED: hl7v2-uclh-emap or hl7v2-microsoft-fhir-converter not found");
    return;
  }
  {
    auto m = parse_file_message("hl7v2-uclh-emap/messages/Adt/generic/A06.txt");
    REQUIRE(m.has_value());
    auto pid = m->find("PID");
    REQUIRE(pid.has_value());
    CHECK(pid->repetition_count(3) == 2);
    CHECK(pid->raw(3, 2) == "9999999999^^^NHS^NH");
    CHECK(pid->get(3, 1, 1, 2) == "9999999999");
    CHECK(pid->get(3, 4, 1, 2) == "NHS");
    CHECK(pid->get(3, 5, 1, 2) == "NH");
    CHECK(pid->get(3) == "A/AA1111");
    CHECK(pid->get(3, 5) == "MEDREC");
  }
  {
    auto m = parse_file_message("hl7v2-uclh-emap/messages/BloodProducts/bts_o31.txt");
    REQUIRE(m.has_value());
    CHECK(m->message_type() == "BTS^O31");
    auto pid = m->find("PID");
    CHECK(pid->raw(3, 1, 4) == "MRENTR&&ISO");
    CHECK(pid->get(3, 4, 3) == "ISO");
    CHECK(pid->get(3, 1, 1, 2) == "12312324212");
  }
  {
    std::string text = gw::test::read_file(*data / "hl7v2-uclh-emap/messages/LabOrders/winpath/Incremental.txt");
    auto parts = gw::hl7v2::split_messages(text);
    REQUIRE(parts.size() == 2);
    Message m = parse_ok(parts[1]);
    auto wcc = m.find("OBX", 1);
    REQUIRE(wcc.has_value());
    CHECK(wcc->get(3, 2) == "White cell count");
    CHECK(wcc->raw(6) == "x10\\S\\9/L");
    CHECK(wcc->get(6) == "x10^9/L");
  }
  {
    auto m = parse_file_message("hl7v2-microsoft-fhir-converter/messages/RDE-O25-01.hl7");
    REQUIRE(m.has_value());
    auto pv1 = m->find("PV1");
    CHECK(pv1->raw(14) == "NHS Provider-General (inc.A\\T\\E-this Hosp)");
    CHECK(pv1->get(14) == "NHS Provider-General (inc.A&E-this Hosp)");
  }
}
