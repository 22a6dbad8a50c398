// SPDX-License-Identifier: Apache-2.0
// HL7 v2 acknowledgements (adapters/hl7v2/ack.h): what MSA-2 echoes, which delimiters the ACK
// is written with, how error texts are escaped, and the HL7 table 0357 code of each failure.
#include <doctest/doctest.h>

#include <string>

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
  CHECK(ack3.find("\rERR|PID^1^3^101\r") != std::string::npos);  // no sub-component separator to use
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
