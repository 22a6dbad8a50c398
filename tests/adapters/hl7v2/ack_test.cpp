// SPDX-License-Identifier: Apache-2.0
// HL7 v2 acknowledgements (adapters/hl7v2/ack.h): what MSA-2 echoes, which delimiters the ACK
// is written with, how error texts are escaped, and the HL7 table 0357 code of each failure.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "adapters/hl7v2/ack.h"
#include "adapters/hl7v2/message.h"

using gw::hl7v2::AckClock;
using gw::hl7v2::AckCode;
using gw::hl7v2::AckError;
using gw::hl7v2::Message;
using gw::hl7v2::Outcome;
using fhir::ErrorCode;
using fhir::Issue;

namespace {

const AckClock kClock{"20261123141502+0000", "GW0000000000000001"};

// The acknowledgement of `inbound`, parsed back as a receiver would.
Message ack_of(const std::string& inbound, AckCode code, const std::optional<AckError>& error = std::nullopt) {
  const std::string ack = gw::hl7v2::build_ack(gw::hl7v2::read_msh(inbound), code, error, kClock);
  auto parsed = Message::parse(ack);
  REQUIRE_MESSAGE(parsed.ok(), ack);
  return std::move(*parsed);
}

int code_for(ErrorCode code, const std::string& location) {
  return gw::hl7v2::ack_error_for(Issue::make(code, "x", location)).code;
}

}  // namespace

TEST_CASE("ACK: MSA-2 echoes MSH-10 as sent, escape sequences and delimiters included") {
  const std::string inbound = "MSH|^~\\&|PAS|RGT01|GW|GW|20261123101500||ADT^A01^ADT_A01|ID\\F\\X2|P|2.5\r";
  const std::string raw = gw::hl7v2::build_ack(gw::hl7v2::read_msh(inbound), AckCode::AA, std::nullopt, kClock);
  CHECK(raw.find("\rMSA|AA|ID\\F\\X2\r") != std::string::npos);
  const Message ack = ack_of(inbound, AckCode::AA);
  REQUIRE(ack.find("MSA"));
  CHECK(ack.find("MSA")->raw(2) == "ID\\F\\X2");
  CHECK(ack.find("MSA")->get(2) == "ID|X2");  // what the sender meant, decoded the same way

  // A component separator inside the id comes back as sent, too.
  const std::string with_component = "MSH|^~\\&|PAS|RGT01|GW|GW|20261123101500||ADT^A01|ID^7|P|2.4\r";
  CHECK(ack_of(with_component, AckCode::AA).find("MSA")->raw(2) == "ID^7");
}

TEST_CASE("ACK: written with the inbound delimiters, so every echoed field stays valid") {
  // HAPI-style custom sub-component separator, and a three-character MSH-2.
  const std::string custom = "MSH|^~\\}|PAS|RGT01|GW|GW|20261123101500||ADT^A01|C}1|P|2.5\r";
  const std::string ack = gw::hl7v2::build_ack(gw::hl7v2::read_msh(custom), AckCode::AE,
                                               AckError{"PID-3", 101, "PID-3 } missing"}, kClock);
  CHECK(ack.rfind("MSH|^~\\}|GW|GW|PAS|RGT01|", 0) == 0);
  const Message parsed = ack_of(custom, AckCode::AE, AckError{"PID-3", 101, "PID-3 } missing"});
  CHECK(parsed.find("MSA")->raw(2) == "C}1");
  CHECK(parsed.find("MSA")->get(3) == "PID-3 } missing");  // escaped as \T\ on the wire
  CHECK(ack.find("\\T\\") != std::string::npos);

  const std::string three = "MSH|^~\\|PAS|RGT01|GW|GW|20261123101500||ADT^A01|T&1|P|2.4\r";
  const std::string ack3 = gw::hl7v2::build_ack(gw::hl7v2::read_msh(three), AckCode::AE,
                                                AckError{"PID-3", 101, "PID-3 is required"}, kClock);
  CHECK(ack3.rfind("MSH|^~\\|", 0) == 0);
  CHECK(ack3.find("\rMSA|AE|T&1|") != std::string::npos);
  // No sub-component separator for the text in ELD-4: the v2.5 fields follow ERR-1 with it.
  CHECK(ack3.find("\rERR|PID^1^3^101|PID^1^3|101^PID-3 is required^HL70357|E||||PID-3 is required\r") !=
        std::string::npos);
}

TEST_CASE("ACK: a segment the parser names by position is named in ERR by its id and occurrence, with the text") {
  // A lower-case segment id: the parser's location is "segment 4".
  const std::string v24 = "MSH|^~\\&|PAS|RGT01|GW|GW|20261123101500||ADT^A01|S-1|P|2.4\rEVN|A01\rPID|1\rpv1|1|I\r";
  auto parsed = Message::parse(v24);
  REQUIRE_FALSE(parsed.ok());
  REQUIRE(parsed.issue().expression == "segment 4");
  const AckError e = gw::hl7v2::ack_error_for(parsed.issue(), v24);
  CHECK(e.code == 100);
  CHECK(e.location == "pv1[1]");
  const std::string ack = gw::hl7v2::build_ack(gw::hl7v2::read_msh(v24), AckCode::AR, e, kClock);
  CHECK(ack.find("\rERR|pv1^1^^100&segment 4 ('pv1'): a segment must start") != std::string::npos);
  // v2.5: ERR-2 names it.
  std::string v25 = v24;
  v25.replace(v25.find("|2.4\r"), 5, "|2.5\r");
  const Message ack25 = ack_of(v25, AckCode::AR, gw::hl7v2::ack_error_for(parsed.issue(), v25));
  CHECK(ack25.find("ERR")->raw(2) == "pv1^1");
  CHECK(ack25.find("ERR")->get(3, 1) == "100");
  CHECK(ack25.find("ERR")->get(8).rfind("segment 4 ('pv1')", 0) == 0);
  // The occurrence counts segments with the same id; empty lines and CRLF do not count.
  const std::string twice = "MSH|^~\\&|PAS|RGT01|GW|GW|2026||ORU^R01|S-2|P|2.5\r\nOBX|1\r\n\r\nOBX|2|NM|X\x01\r";
  CHECK(gw::hl7v2::ack_error_for(Issue::make(ErrorCode::invalid_value, "x", "segment 3"), twice).location == "OBX[2]");
  // Locations that are not positions are kept; a position past the end is left as it was.
  CHECK(gw::hl7v2::ack_error_for(Issue::make(ErrorCode::invalid_value, "x", "PID-7"), twice).location == "PID-7");
  CHECK(gw::hl7v2::ack_error_for(Issue::make(ErrorCode::invalid_value, "x", "segment 9"), twice).location ==
        "segment 9");

  // HAPI-style three-character MSH-2 (^~}... as ^~\ here): the ERR still carries the text.
  const std::string three = "MSH|^~\\|PAS|RGT01|GW|GW|20261123101500||ADT^A01|S-3|P|2.3\rPID|1\rpv1|1\r";
  auto refused = Message::parse(three);
  REQUIRE_FALSE(refused.ok());
  const std::string ack3 =
      gw::hl7v2::build_ack(gw::hl7v2::read_msh(three), AckCode::AR, gw::hl7v2::ack_error_for(refused.issue(), three), kClock);
  const std::size_t err = ack3.find("\rERR|pv1^1^^100|pv1^1|100^segment 3 ('pv1'): a segment must start");
  CHECK(err != std::string::npos);
}

TEST_CASE("ACK: a batch is acknowledged by one batch of ACK messages with the envelope swapped and counted") {
  const std::string fhs = "FHS|^~\\&|LAB|RGT01|GW|X26|20261123||||F-7";
  const std::string bhs = "BHS|^~\\&|LAB|RGT01|GW|X26|20261123||||B-7";
  const std::string in1 = "MSH|^~\\&|LAB|RGT01|GW|X26|20261123||ORU^R01|M1|P|2.5\r";
  const std::string in2 = "MSH|^~\\&|LAB|RGT01|GW|X26|20261123||ORU^R01|M2|P|2.5\r";
  const std::vector<std::string> acks = {
      gw::hl7v2::build_ack(gw::hl7v2::read_msh(in1), AckCode::AA, std::nullopt, kClock),
      gw::hl7v2::build_ack(gw::hl7v2::read_msh(in2), AckCode::AE, AckError{"PID-3", 101, "PID-3 is required"}, kClock)};
  const std::string batch = gw::hl7v2::build_batch_ack(fhs, bhs, acks, kClock);
  CHECK(batch.rfind("FHS|^~\\&|GW|X26|LAB|RGT01|20261123141502+0000||||GW0000000000000001|F-7\r"
                    "BHS|^~\\&|GW|X26|LAB|RGT01|20261123141502+0000||||GW0000000000000001|B-7\r",
                    0) == 0);
  CHECK(batch.find(acks[0] + acks[1] + "BTS|2\rFTS|1\r") != std::string::npos);
  // Read back as a batch: two messages answering M1 and M2.
  auto read = gw::hl7v2::read_batch(batch, 10);
  REQUIRE(read.ok());
  REQUIRE(read->messages.size() == 2);
  CHECK(Message::parse(read->messages[0])->find("MSA")->get(2) == "M1");
  CHECK(Message::parse(read->messages[1])->find("MSA")->get(1) == "AE");
  // Without FHS: BHS alone, and no FTS.
  const std::string plain = gw::hl7v2::build_batch_ack("", bhs, {acks[0]}, kClock);
  CHECK(plain.rfind("BHS|", 0) == 0);
  CHECK(plain.find("\rBTS|1\r") != std::string::npos);
  CHECK(plain.find("FTS") == std::string::npos);
}

TEST_CASE("ACK: error texts are escaped, never blanked (a bad MSH-2 is named as sent)") {
  const std::string inbound = "MSH|^^\\&|PAS|RGT01|GW|GW|20261123101500||ADT^A01|DUP-1|P|2.5\r";
  auto parsed = Message::parse(inbound);
  REQUIRE_FALSE(parsed.ok());
  const Issue issue = parsed.issue();
  CHECK(issue.diagnostics.find("'^' is used twice") != std::string::npos);
  const auto acks = gw::hl7v2::acknowledgements(gw::hl7v2::read_msh(inbound), Outcome::rejected,
                                                gw::hl7v2::ack_error_for(issue));
  REQUIRE(acks.size() == 1);
  // The inbound delimiters are unusable: the ACK uses the standard ones, and says which
  // character was at fault.
  CHECK(acks[0].rfind("MSH|^~\\&|", 0) == 0);
  CHECK(acks[0].find("'\\S\\' is used twice") != std::string::npos);
  auto ack = Message::parse(acks[0]);
  REQUIRE(ack.ok());
  CHECK(ack->find("MSA")->get(2) == "DUP-1");
  CHECK(ack->find("MSA")->get(3).find("'^' is used twice") != std::string::npos);
  CHECK(ack->find("ERR")->get(8).find("'^' is used twice") != std::string::npos);
  CHECK(ack->find("ERR")->get(3, 1) == "102");
}

TEST_CASE("ACK: table 0357 codes name the kind of failure") {
  CHECK(code_for(ErrorCode::not_supported, "MSH-9") == 200);    // unsupported message type
  CHECK(code_for(ErrorCode::not_supported, "MSH-9.2") == 201);  // unsupported event code
  CHECK(code_for(ErrorCode::not_supported, "MSH-11") == 202);   // unsupported processing id
  CHECK(code_for(ErrorCode::not_supported, "MSH-12") == 203);   // unsupported version id
  CHECK(code_for(ErrorCode::not_supported, "MSH-18") == 207);   // no code of its own
  CHECK(code_for(ErrorCode::missing_value, "PID") == 100);      // a required segment missing
  CHECK(code_for(ErrorCode::missing_value, "OBR[1]-4") == 101); // a required field missing
  CHECK(code_for(ErrorCode::invalid_value, "PID-7") == 102);    // data type error
  CHECK(code_for(ErrorCode::invalid_value, "segment 3") == 100);
  CHECK(code_for(ErrorCode::invalid_value, "MSH[2]") == 100);   // a second MSH: the structure
  CHECK(code_for(ErrorCode::missing_value, "MSH-10") == 101);
  CHECK(code_for(ErrorCode::not_found, "MRG-1") == 204);        // unknown key identifier
  CHECK(code_for(ErrorCode::payload_too_large, "message") == 207);
  CHECK(code_for(ErrorCode::internal_error, "") == 207);

  // v2.4: ERR-1 as ELD, segment^sequence^field^code&text&table.
  const std::string v24 = "MSH|^~\\&|PAS|RGT01|GW|GW|20261123101500||ADT^A01|P-1|X|2.4\r";
  const auto ack = gw::hl7v2::build_ack(
      gw::hl7v2::read_msh(v24), AckCode::AR,
      gw::hl7v2::ack_error_for(Issue::make(ErrorCode::not_supported, "processing id must be P, T or D", "MSH-11")),
      kClock);
  CHECK(ack.find("\rERR|MSH^1^11^202&processing id must be P, T or D&HL70357\r") != std::string::npos);
  // v2.5: ERR-2 (ERL) down to the component, ERR-3 the code.
  const std::string v25 = "MSH|^~\\&|PAS|RGT01|GW|GW|20261123101500||ADT^A60|E-1|P|2.5\r";
  const auto ack25 = gw::hl7v2::build_ack(
      gw::hl7v2::read_msh(v25), AckCode::AR,
      gw::hl7v2::ack_error_for(Issue::make(ErrorCode::not_supported, "ADT^A60 is not mapped", "MSH-9.2")), kClock);
  CHECK(ack25.find("\rERR||MSH^1^9^1^2|201^ADT\\S\\A60 is not mapped^HL70357|E|") != std::string::npos);
}

TEST_CASE("ACK: the warnings of an applied message go back as ERR segments of severity W") {
  const std::vector<std::string> warnings = {
      "PID-7: not a valid HL7 date (YYYY[MM[DD]]); the birth date is not mapped",
      "OBX[3]-2: value type XX is not mapped; the value is kept as text",
      "further warnings were left out"};
  // v2.5+: one ERR per warning: ERR-2 location, ERR-3 code 0, ERR-4 W, ERR-8 the text.
  const std::string v25 = "MSH|^~\\&|LAB|RGT01|GW|GW|20261123101500||ORU^R01|W-1|P|2.5.1\r";
  const auto msh25 = gw::hl7v2::read_msh(v25);
  const std::string ack25 =
      gw::hl7v2::with_warnings(msh25, gw::hl7v2::build_ack(msh25, AckCode::AA, std::nullopt, kClock), warnings);
  auto parsed = Message::parse(ack25);
  REQUIRE_MESSAGE(parsed.ok(), ack25);
  CHECK(parsed->find("MSA")->raw(1) == "AA");
  std::vector<gw::hl7v2::SegmentRef> errs;
  for (std::size_t i = 0; i < parsed->segment_count(); ++i)
    if (parsed->segment(i).id() == "ERR") errs.push_back(parsed->segment(i));
  REQUIRE(errs.size() == 3);
  CHECK(errs[0].raw(2) == "PID^1^7");
  CHECK(errs[0].get(3, 1) == "0");
  CHECK(errs[0].get(3, 3) == "HL70357");
  CHECK(errs[0].raw(4) == "W");
  CHECK(errs[0].get(8) == warnings[0]);
  CHECK(errs[1].raw(2) == "OBX^3^2");
  CHECK(errs[2].raw(2).empty());  // no HL7 location
  CHECK(errs[2].get(8) == warnings[2]);
  // Escaped like error texts: the '[' ']' pass, a delimiter in a text reads back as itself.
  CHECK(ack25.find("YYYY[MM[DD]]") != std::string::npos);

  // v2.4 and earlier: one ERR, one ERR-1 (ELD) repetition per warning.
  const std::string v24 = "MSH|^~\\&|LAB|RGT01|GW|GW|20261123101500||ORU^R01|W-2|P|2.4\r";
  const auto msh24 = gw::hl7v2::read_msh(v24);
  const std::string ack24 =
      gw::hl7v2::with_warnings(msh24, gw::hl7v2::build_ack(msh24, AckCode::AA, std::nullopt, kClock), warnings);
  CHECK(ack24.find("\rERR|PID^1^7^0&PID-7: not a valid HL7 date (YYYY[MM[DD]]); the birth date is not mapped&"
                   "HL70357~OBX^3^2^0&") != std::string::npos);
  auto parsed24 = Message::parse(ack24);
  REQUIRE(parsed24.ok());
  CHECK(parsed24->find("ERR")->repetition_count(1) == 3);

  // No warnings: the acknowledgement is unchanged. Too many: the rest are counted.
  const std::string plain = gw::hl7v2::build_ack(msh25, AckCode::AA, std::nullopt, kClock);
  CHECK(gw::hl7v2::with_warnings(msh25, plain, {}) == plain);
  const std::vector<std::string> many(gw::hl7v2::kMaxAckWarnings + 5, "PV1-2: patient class unknown");
  const std::string capped = gw::hl7v2::with_warnings(msh25, plain, many);
  std::size_t count = 0;
  for (std::size_t at = capped.find("\rERR|"); at != std::string::npos; at = capped.find("\rERR|", at + 1)) ++count;
  CHECK(count == gw::hl7v2::kMaxAckWarnings + 1);
  CHECK(capped.find("5 further warnings are kept with the message") != std::string::npos);
}

TEST_CASE("ACK: v2.4 warnings reach a sender without a sub-component separator in MSA-3") {
  // "^~\" (three encoding characters): an ELD's code has no room for its text, so ERR-1 keeps
  // the locations and codes, and MSA-3 (defined up to v2.6) carries the texts.
  const std::string v24 = "MSH|^~\\|LAB|RGT01|GW|GW|20261123101500||ORU^R01|W-3|P|2.4\r";
  const auto msh = gw::hl7v2::read_msh(v24);
  const std::vector<std::string> warnings = {
      "PID-7: not a valid HL7 date (YYYY[MM[DD]]); the birth date is not mapped",
      "OBX[3]-2: value type X^Y is not mapped; the value is kept as text"};
  const std::string ack =
      gw::hl7v2::with_warnings(msh, gw::hl7v2::build_ack(msh, AckCode::AA, std::nullopt, kClock), warnings);
  CHECK(ack ==
        "MSH|^~\\|GW|GW|LAB|RGT01|20261123141502+0000||ACK^R01^ACK|GW0000000000000001|P|2.4\r"
        "MSA|AA|W-3|2 warnings: PID-7: not a valid HL7 date (YYYY[MM[DD]]); the birth date is not mapped / "
        "OBX[3]-2: value type X\\S\\Y is not mapped; the value is kept as text\r"
        "ERR|PID^1^7^0~OBX^3^2^0\r");
  auto parsed = Message::parse(ack);
  REQUIRE_MESSAGE(parsed.ok(), ack);
  CHECK(parsed->find("MSA")->get(3) ==
        "2 warnings: " + warnings[0] + " / " + warnings[1]);  // the escaped '^' reads back as itself
  // One warning goes alone; many are cut at a word within the ACK text limit, and marked.
  const std::string one =
      gw::hl7v2::with_warnings(msh, gw::hl7v2::build_ack(msh, AckCode::AA, std::nullopt, kClock), {warnings[0]});
  CHECK(one.find("\rMSA|AA|W-3|" + warnings[0] + "\r") != std::string::npos);
  const std::vector<std::string> many(gw::hl7v2::kMaxAckWarnings + 5, warnings[0]);
  auto capped = Message::parse(
      gw::hl7v2::with_warnings(msh, gw::hl7v2::build_ack(msh, AckCode::CA, std::nullopt, kClock), many));
  REQUIRE(capped.ok());
  const std::string text = capped->find("MSA")->get(3);
  CHECK(text.rfind("25 warnings: PID-7: ", 0) == 0);
  CHECK(text.size() <= gw::hl7v2::kMaxAckTextBytes);
  REQUIRE(text.size() > gw::hl7v2::kMaxAckTextBytes - 80);
  CHECK(text.substr(text.size() - 3) == "...");
  CHECK(capped->find("ERR")->repetition_count(1) == gw::hl7v2::kMaxAckWarnings + 1);
  // With "^~\&" the texts are in ERR-1, and MSA-3 stays empty as before.
  const auto msh4 = gw::hl7v2::read_msh("MSH|^~\\&|LAB|RGT01|GW|GW|20261123101500||ORU^R01|W-4|P|2.4\r");
  const std::string ack4 =
      gw::hl7v2::with_warnings(msh4, gw::hl7v2::build_ack(msh4, AckCode::AA, std::nullopt, kClock), warnings);
  CHECK(ack4.find("\rMSA|AA|W-4\r") != std::string::npos);
}

TEST_CASE("ACK: MSH-9 names the trigger the message was read as when MSH-9.2 is empty, for every outcome") {
  struct Case {
    std::string inbound;
    std::string msh9;
  };
  const std::vector<Case> cases = {
      // v2.1-2.3 senders: an ADT's event is EVN-1; an ORU has one event, R01.
      {"MSH|^~\\&|PAS|RGT01|GW|GW|20261123101500||ADT|T-1|P|2.3\rEVN|A08|20261123101500\rPID|1||123^^^X\r",
       "ACK^A08"},
      {"MSH|^~\\&|LAB|RGT01|GW|GW|20261123101500||ORU|T-2|P|2.3\rPID|1||123^^^X\r", "ACK^R01"},
      // From v2.4 the structure follows.
      {"MSH|^~\\&|PAS|RGT01|GW|GW|20261123101500||ADT|T-3|P|2.4\rEVN|A08|20261123101500\rPID|1||123^^^X\r",
       "ACK^A08^ACK"},
      {"MSH|^~\\&|PAS|RGT01|GW|GW|20261123101500||ADT^A01|T-4|P|2.5\rEVN|A08\rPID|1||123^^^X\r", "ACK^A01^ACK"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.inbound);
    auto message = Message::parse(c.inbound);
    REQUIRE_MESSAGE(message.ok(), message.issue().diagnostics);
    const auto msh = gw::hl7v2::read_msh(c.inbound, *message);
    for (AckCode code : {AckCode::AA, AckCode::AE, AckCode::AR, AckCode::CA, AckCode::CE, AckCode::CR}) {
      const std::optional<AckError> error =
          code == AckCode::AA || code == AckCode::CA ? std::nullopt : std::optional<AckError>(AckError{"PID-3", 101, "x"});
      auto ack = Message::parse(gw::hl7v2::build_ack(msh, code, error, kClock));
      REQUIRE(ack.ok());
      CHECK(ack->msh().raw(9) == c.msh9);
    }
    for (const std::string& ack : gw::hl7v2::acknowledgements(msh, Outcome::error, AckError{"PID-3", 101, "x"}))
      CHECK(ack.find("|" + c.msh9 + "|") != std::string::npos);
  }
  // Refused before it could be read (no trigger known): MSH-9 is ACK alone, or MSH-9.2 as sent.
  const std::string unread = "MSH|^~\\&|PAS|RGT01|GW|GW|20261123101500||ADT|T-5|P|2.3\rEVN|A08\rpv1|1\r";
  REQUIRE_FALSE(Message::parse(unread).ok());
  CHECK(ack_of(unread, AckCode::AR, AckError{"pv1[1]", 100, "x"}).msh().raw(9) == "ACK");
  const std::string unread24 = "MSH|^~\\&|PAS|RGT01|GW|GW|20261123101500||ADT^A08|T-6|P|2.4\rpv1|1\r";
  CHECK(ack_of(unread24, AckCode::AR, AckError{"pv1[1]", 100, "x"}).msh().raw(9) == "ACK^A08^ACK");
}

TEST_CASE("ACK: texts are not cut mid-word: ERR-1 of v2.4 and earlier keeps the whole text") {
  const std::string warning =
      "PV1-44: not a valid HL7 date/time (YYYY[MM[DD[HH[MM[SS[.S]]]]]][+/-ZZZZ]); the time is not mapped";
  REQUIRE(warning.size() > 80);
  const std::string v24 = "MSH|^~\\&|PAS|RGT01|GW|GW|20261123101500||ADT^A01|L-1|P|2.4\r";
  const auto msh = gw::hl7v2::read_msh(v24);
  const std::string warned =
      gw::hl7v2::with_warnings(msh, gw::hl7v2::build_ack(msh, AckCode::AA, std::nullopt, kClock), {warning});
  CHECK(warned.find("\rERR|PV1^1^44^0&" + warning + "&HL70357\r") != std::string::npos);

  // An AE's error text: whole in ERR-1; MSA-3 (80 characters in HL7) cut at a word, marked.
  const std::string error = "PID-3: the patient identifier list holds no NHS number and no local identifier the "
                            "gateway can use; send at least one";
  const Message ae = ack_of(v24, AckCode::AE, AckError{"PID-3", 101, error});
  CHECK(ae.find("ERR")->raw(1) == "PID^1^3^101&" + error + "&HL70357");
  const std::string msa3 = ae.find("MSA")->get(3);
  CHECK(msa3 == "PID-3: the patient identifier list holds no NHS number and no local...");
  CHECK(msa3.size() <= 80);

  // v2.5: ERR-3's text is cut the same way; ERR-8 keeps it whole.
  const std::string v25 = "MSH|^~\\&|PAS|RGT01|GW|GW|20261123101500||ADT^A01|L-2|P|2.5\r";
  const Message ae25 = ack_of(v25, AckCode::AE, AckError{"PID-3", 101, error});
  CHECK(ae25.find("ERR")->get(3, 2) == msa3);
  CHECK(ae25.find("ERR")->get(8) == error);

  // Past the documented limit, a text is cut at a word and marked.
  std::string longest;
  while (longest.size() < gw::hl7v2::kMaxAckTextBytes + 50) longest += "word ";
  const std::string eld(ack_of(v24, AckCode::AE, AckError{"PID-3", 101, longest}).find("ERR")->raw(1));
  const std::string text = eld.substr(eld.find('&') + 1, eld.rfind('&') - eld.find('&') - 1);
  CHECK(text.size() <= gw::hl7v2::kMaxAckTextBytes);
  CHECK(text.size() > gw::hl7v2::kMaxAckTextBytes - 10);
  CHECK(text.substr(text.size() - 7) == "word...");
}

TEST_CASE("ACK: an ISO 8859-1 message is answered in ISO 8859-1, echoing its bytes and its MSH-18") {
  // MSH-10 "CTLé1", MSH-4 "HôPITAL" as Latin-1 bytes; Message::text() holds them as UTF-8.
  const std::string inbound =
      "MSH|^~\\&|PAS|H\xF4PITAL|GW|GW|20261123101500||ADT^A01^ADT_A01|CTL\xE9" "1|P|2.5|||AL|AL||8859/1\r"
      "EVN|A01\rPID|1||123^^^X\r";
  auto parsed = Message::parse(inbound);
  REQUIRE(parsed.ok());
  REQUIRE(parsed->text() != inbound);  // converted: what the ACK must not echo
  const auto msh = gw::hl7v2::read_msh(inbound, *parsed);
  CHECK(msh.latin1);
  // Its own texts too: "é" as one Latin-1 byte, "—" (no Latin-1 form) as '?'.
  const std::string ae = gw::hl7v2::build_ack(msh, AckCode::AE,
                                              AckError{"PID-3", 204, "patient Zo\xC3\xAB \xE2\x80\x94 not known"}, kClock);
  CHECK(ae ==
        "MSH|^~\\&|GW|GW|PAS|H\xF4PITAL|20261123141502+0000||ACK^A01^ACK|GW0000000000000001|P|2.5||||||8859/1\r"
        "MSA|AE|CTL\xE9" "1|patient Zo\xEB ? not known\r"
        "ERR||PID^1^3|204^patient Zo\xEB ? not known^HL70357|E||||patient Zo\xEB ? not known\r");
  // Without MSH-18, undeclared Latin-1 bytes (not valid UTF-8) are answered the same way,
  // and the ACK declares no MSH-18 either.
  const std::string undeclared = "MSH|^~\\&|PAS|H\xF4PITAL|GW|GW|20261123101500||ADT^A01|C\xE9|P|2.5\rEVN|A01\r";
  auto parsed2 = Message::parse(undeclared);
  REQUIRE(parsed2.ok());
  CHECK(gw::hl7v2::build_ack(gw::hl7v2::read_msh(undeclared, *parsed2), AckCode::AA, std::nullopt, kClock) ==
        "MSH|^~\\&|GW|GW|PAS|H\xF4PITAL|20261123141502+0000||ACK^A01^ACK|GW0000000000000001|P|2.5\rMSA|AA|C\xE9\r");
  // A UTF-8 message keeps UTF-8 texts and gets its MSH-18 back.
  const std::string utf8 =
      "MSH|^~\\&|PAS|H\xC3\xB4PITAL|GW|GW|20261123101500||ADT^A01|C1|P|2.5|||||GBR|UNICODE UTF-8\rEVN|A01\r";
  auto parsed3 = Message::parse(utf8);
  REQUIRE(parsed3.ok());
  const auto msh3 = gw::hl7v2::read_msh(utf8, *parsed3);
  CHECK_FALSE(msh3.latin1);
  CHECK(gw::hl7v2::build_ack(msh3, AckCode::AE, AckError{"", 207, "Zo\xC3\xAB"}, kClock) ==
        "MSH|^~\\&|GW|GW|PAS|H\xC3\xB4PITAL|20261123141502+0000||ACK^A01^ACK|GW0000000000000001|P|2.5||||||"
        "UNICODE UTF-8\rMSA|AE|C1|Zo\xC3\xAB\rERR|||207^Zo\xC3\xAB^HL70357|E||||Zo\xC3\xAB\r");
}

// Found by fuzz_hl7v2_map: the ACK of a message refused for its character set echoed that
// set in MSH-18, so the ACK declared a set it was not written in and that the gateway's own
// parser (and likely the sender's) refuses: an answer nobody could read.
TEST_CASE("ACK: a message refused for an unsupported MSH-18 gets a readable AR without that MSH-18") {
  const std::string inbound =
      "MSH|^~\\&|PAS|RFZ|GW|RFZ|20261207||ADT^A01|MSG1|P|2.5||||||EBCDIC\rPID|1||123^^^RFZ^MR\r";
  auto refused = Message::parse(inbound);
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.issue().code == ErrorCode::not_supported);
  CHECK(refused.issue().expression == "MSH-18");
  const auto msh = gw::hl7v2::read_msh(inbound);
  const std::vector<std::string> acks =
      gw::hl7v2::acknowledgements(msh, Outcome::rejected, gw::hl7v2::ack_error_for(refused.issue(), inbound));
  REQUIRE(acks.size() == 1);
  auto ack = Message::parse(acks[0]);
  REQUIRE_MESSAGE(ack.ok(), acks[0]);
  const auto msa = ack->find("MSA");
  REQUIRE(msa.has_value());
  CHECK(msa->get(1) == "AR");
  CHECK(msa->get(2) == "MSG1");
  const auto err = ack->find("ERR");
  REQUIRE(err.has_value());
  CHECK(err->raw(2) == "MSH^1^18");
  CHECK(ack->segment(0).get(18).empty());
  CHECK(acks[0].find("EBCDIC|") == std::string::npos);
  CHECK(acks[0].find("EBCDIC\r") == std::string::npos);
  // A set the gateway reads is still echoed, in any case the sender wrote it.
  const std::string latin1 = "MSH|^~\\&|PAS|RFZ|GW|RFZ|20261207||ADT^A01|MSG2|P|2.5||||||iso-8859-1\rEVN|A01\r";
  CHECK(ack_of(latin1, AckCode::AA).segment(0).get(18) == "iso-8859-1");
}

// Found by fuzz_hl7v2_map: a message that declares UTF-8 in MSH-18 but whose MSH holds bytes
// that are not UTF-8 is refused; its ACK echoed those bytes (MSH-3 into MSH-5) and declared
// UTF-8 too, so the gateway's own parser refused the ACK for the same reason.
TEST_CASE("ACK: a message refused for bytes that are not the UTF-8 it declares gets a readable AR") {
  const std::string inbound =
      "MSH|^~\\&|PA\xF8S|RFZ|GW|RFZ|20261207||ADT^A01|MSG3|P|2.5||||||UNICODE UTF-8\rEVN|A01\r";
  auto refused = Message::parse(inbound);
  REQUIRE_FALSE(refused.ok());
  const std::vector<std::string> acks = gw::hl7v2::acknowledgements(
      gw::hl7v2::read_msh(inbound), Outcome::rejected, gw::hl7v2::ack_error_for(refused.issue(), inbound));
  REQUIRE(acks.size() == 1);
  auto ack = Message::parse(acks[0]);
  REQUIRE_MESSAGE(ack.ok(), acks[0]);
  CHECK(ack->find("MSA")->get(1) == "AR");
  CHECK(ack->find("MSA")->raw(2) == "MSG3");
  // The sender's bytes go back as sent (the ACK, declaring no set, reads as ISO 8859-1).
  CHECK(acks[0].find("|PA\xF8S|") != std::string::npos);
  CHECK(ack->segment(0).get(18).empty());
  // Valid UTF-8 keeps its declaration.
  const std::string valid =
      "MSH|^~\\&|PA\xC3\xB8S|RFZ|GW|RFZ|20261207||ADT^A01|MSG4|P|2.5||||||UNICODE UTF-8\rEVN|A01\r";
  CHECK(ack_of(valid, AckCode::AA).segment(0).get(18) == "UNICODE UTF-8");
}

// Found in review: MSH-18 "ASCII" over bytes that are not ASCII (read as ISO 8859-1, as an
// undeclared message is) was echoed, so the ACK declared ASCII over the sender's 8-bit bytes.
TEST_CASE("ACK: MSH-18 ASCII is echoed only over ASCII bytes") {
  const std::string latin1 =
      "MSH|^~\\&|PAS|H\xF4PITAL|GW|GW|20261123101500||ADT^A01|C\xE9|P|2.5||||||ASCII\rEVN|A01\r";
  auto parsed = Message::parse(latin1);
  REQUIRE(parsed.ok());
  const std::string ack = gw::hl7v2::build_ack(gw::hl7v2::read_msh(latin1, *parsed), AckCode::AA, std::nullopt, kClock);
  CHECK(ack == "MSH|^~\\&|GW|GW|PAS|H\xF4PITAL|20261123141502+0000||ACK^A01^ACK|GW0000000000000001|P|2.5\r"
               "MSA|AA|C\xE9\r");
  // Plain ASCII keeps its declaration (any case, as received).
  CHECK(ack_of("MSH|^~\\&|PAS|RFZ|GW|RFZ|20261207||ADT^A01|MSG5|P|2.5||||||ascii\rEVN|A01\r", AckCode::AA)
            .segment(0)
            .get(18) == "ascii");
}

TEST_CASE("ACK: enhanced mode accepts (CA) whatever is committed; CR only for table 0008's reasons, else CE") {
  auto codes = [](const std::string& msh15_16, Outcome outcome, const std::optional<AckError>& error) {
    const auto msh = gw::hl7v2::read_msh("MSH|^~\\&|PAS|RGT01|GW|GW|20261123||ADT^A40|C-1|P|2.5|||" + msh15_16 + "\r");
    std::string out;
    for (const std::string& ack : gw::hl7v2::acknowledgements(msh, outcome, error)) {
      auto parsed = Message::parse(ack);
      REQUIRE(parsed.ok());
      out.append(out.empty() ? "" : ",").append(parsed->find("MSA")->get(1));
      // An accept ACK that is CA carries no ERR: the error is the application ACK's to report.
      if (parsed->find("MSA")->get(1) == "CA") CHECK_FALSE(parsed->find("ERR").has_value());
    }
    return out;
  };
  const AckError unknown_patient{"MRG-1", 204, "no such patient"};
  // Stored with status error (replayable): committed to safe storage, so CA; AE follows.
  CHECK(codes("AL|NE", Outcome::error, unknown_patient) == "CA");
  CHECK(codes("AL|AL", Outcome::error, unknown_patient) == "CA,AE");
  CHECK(codes("ER|ER", Outcome::error, unknown_patient) == "AE");  // the accept succeeded
  CHECK(codes("SU|ER", Outcome::error, unknown_patient) == "CA,AE");
  CHECK(codes("AL|AL", Outcome::applied, std::nullopt) == "CA,AA");
  // Table 0008 CR: unsupported message type (200), event (201), processing id (202), version (203).
  for (int code : {200, 201, 202, 203})
    CHECK(codes("AL|AL", Outcome::rejected, AckError{"MSH-9", code, "x"}) == "CR,AR");
  // Refused for another reason (unreadable, no MSH-10): not accepted, CE.
  CHECK(codes("AL|AL", Outcome::rejected, AckError{"PID", 100, "x"}) == "CE,AR");
  // The gateway could not commit: CE (resend later), AR in original mode.
  CHECK(codes("AL|AL", Outcome::not_committed, AckError{"", 207, "x"}) == "CE,AR");
  CHECK(codes("ER|NE", Outcome::not_committed, AckError{"", 207, "x"}) == "CE");
  CHECK(codes("", Outcome::not_committed, AckError{"", 207, "x"}) == "AR");
}
