// SPDX-License-Identifier: Apache-2.0
// HL7 v2 acknowledgements (HL7 v2.5 ch. 2.9 and 2.14.1 MSA, 2.14.5 ERR): the one place that
// builds ACK and NACK messages. Works from the inbound MSH read leniently, so even a message
// the parser refused gets an AR that echoes its control id when one can be found.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "fhir/issue.h"

namespace gw::hl7v2 {

class Message;

// The inbound MSH, split leniently on its own field separator. Fields stay as sent (escapes
// not decoded), which is how an ACK echoes them. fields[1] is MSH-1, fields[2] MSH-2, ...
struct MshSummary {
  bool found = false;                 // the input starts with "MSH" and a field separator
  char field_separator = '|';
  std::string encoding_characters = "^~\\&";
  std::vector<std::string> fields;    // index = HL7 field number; [0] is "MSH"
  // The trigger event the gateway read the message as (unescaped), set by read_msh(raw,
  // parsed): MSH-9.2, else EVN-1 for an ADT, R01 for an ORU. Empty: MSH-9.2 as sent.
  std::string trigger;
  // The message is ISO 8859-1 (read_as_latin1: MSH-18 says so, or undeclared bytes that are
  // not UTF-8): its acknowledgements are written in that set, texts included.
  bool latin1 = false;
  std::string field(std::size_t n) const { return n < fields.size() ? fields[n] : std::string(); }
  // Component `c` (1-based) of field `n`.
  std::string component(std::size_t n, std::size_t c) const;
};

// Reads the first segment of `raw` (after an optional UTF-8 BOM, up to CR or LF).
MshSummary read_msh(std::string_view raw);
// The MSH of `raw` as received (its bytes, not Message::text(), which is converted to UTF-8:
// an acknowledgement echoes the sender's bytes), with the trigger `parsed` (parsed from `raw`)
// was read as (Message::message_type()), so that its acknowledgements name the event even when
// MSH-9.2 was empty.
MshSummary read_msh(std::string_view raw, const Message& parsed);

enum class AckCode { AA, AE, AR, CA, CE, CR };
std::string_view ack_code_name(AckCode c);

// What became of a message. applied: committed and applied; error: committed (stored, status
// error, replayable) but its content could not be applied; rejected: refused and stored as
// rejected; not_committed: the gateway could not commit it (storage or queue unavailable).
enum class Outcome { applied, error, rejected, not_committed };

// Why a message was not applied, for the ERR segment.
struct AckError {
  std::string location;  // HL7 location as the mapper names it: "PID-3", "OBX[2]-5", "MRG-1", ""
  int code = 207;        // HL7 table 0357: 100-207
  std::string text;      // user-facing text (no patient data)
};
// Table 0357 code for an Issue: not_supported at MSH-9 -> 200 (message type), MSH-9.2 -> 201
// (event), MSH-11 -> 202 (processing id), MSH-12 -> 203 (version); missing_value -> 100 for a
// segment ("PID"), 101 for a field; invalid values -> 102 (100 for the structure, "segment N");
// not_found -> 204; anything else -> 207.
AckError ack_error_for(const fhir::Issue& issue);
// The same, for an Issue about `raw`, the message as received: a location the parser gives
// by position ("segment 4") is named as ERR names segments, by the id as sent and its
// occurrence ("pv1[1]", "PV1[2]"), so the ERR segment says which segment was at fault.
AckError ack_error_for(const fhir::Issue& issue, std::string_view raw);

// Acknowledgement mode (HL7 v2.5 ch. 2.9.2/2.9.3): original when MSH-15 and MSH-16 are both
// empty, else enhanced. Conditions are table 0155 values AL, NE, ER, SU ("" counts as NE in
// enhanced mode; unknown values as AL).
struct AckMode {
  bool enhanced = false;
  std::string accept;       // MSH-15
  std::string application;  // MSH-16
};
AckMode ack_mode(const MshSummary& msh);

struct AckClock {
  std::string timestamp;    // MSH-7 of the ACK, e.g. "20261123141502+0000"
  std::string control_id;   // MSH-10 of the ACK
};
// The current UTC time and a new control id (unique within the process, 20 characters).
AckClock next_ack_clock();

// Error and warning texts are kept whole up to this many bytes in ERR-1 (ELD-4, the only copy
// a pre-2.5 receiver reads), ERR-8 and an AA/CA's MSA-3 when it is the only copy of the
// warnings (see with_warnings); an error's MSA-3 and ERR-3.2 keep 80 (their HL7 length). A
// longer text is cut at a word boundary and ends in "...".
inline constexpr std::size_t kMaxAckTextBytes = 500;

// One acknowledgement message (segments ending in CR), written with the inbound message's
// delimiters when they are usable (else |^~\&). MSH-3..6 are the inbound MSH-5, 6, 3, 4;
// MSH-9 is "ACK^<trigger>^ACK" from v2.4 ("ACK^<trigger>" before; "ACK" when no trigger is
// known), the trigger being `inbound.trigger` or else MSH-9.2; MSH-11, MSH-12 and MSH-18
// (when sent; MSH-18 only when it names a set the gateway reads) are echoed; MSA-2 echoes MSH-10 byte for byte (escapes included). For an
// ISO 8859-1 message (`inbound.latin1`) the ACK's own texts (MSA-3, ERR) are written in
// ISO 8859-1, a character it cannot hold as '?'. `error` adds an ERR segment
// (v2.5+: ERR-2 location, ERR-3 code, ERR-4 severity, ERR-8 message; earlier versions: ERR-1
// as ELD, followed by the v2.5 fields when MSH-2 has no sub-component separator to carry the
// text in ELD-4); its texts are escaped, so delimiters they name read back as themselves.
std::string build_ack(const MshSummary& inbound, AckCode code, const std::optional<AckError>& error,
                      const AckClock& clock);

// At most this many warnings are written into one acknowledgement; a last ERR says how many
// more the message store holds.
inline constexpr std::size_t kMaxAckWarnings = 20;

// `ack` (an AA or CA from build_ack) with the warnings of a message that was applied, each as
// "LOCATION: text" ("PID-7: not a valid HL7 date ..."; a text without an HL7 location is
// written without one). v2.5+: one ERR per warning, ERR-2 the location, ERR-3 code 0 (HL7
// table 0357: message accepted) with the text, ERR-4 severity W, ERR-8 the text; v2.4 and
// earlier (one ERR, no severity field): one ERR-1 repetition per warning in the ELD form, and,
// when MSH-2 declares no sub-component separator to carry the texts in the ELDs, MSA-3 holds
// them all ("2 warnings: PID-7: ... / OBX[3]-2: ...", at most kMaxAckTextBytes, cut at a word).
// Texts are escaped as in build_ack. Unchanged when `warnings` is empty.
std::string with_warnings(const MshSummary& inbound, std::string ack, const std::vector<std::string>& warnings);

// The acknowledgements to send for `outcome`, in order, under the inbound message's mode:
// original mode: one AA/AE/AR (AR for rejected and not_committed); enhanced mode: the accept
// acknowledgement when MSH-15 asks for it, then the application acknowledgement (AA/AE/AR)
// when MSH-16 asks for it. The accept acknowledgement follows HL7 table 0008: CA when the
// message is committed to safe storage (applied, and error: its AE comes as the application
// acknowledgement), CR for a rejected message whose `error` is an unsupported message type,
// event, processing id or version (table 0357 codes 200-203), CE for any other rejection and
// for not_committed. MSH-15 ER/SU are judged by the accept code (ER: CE/CR only; SU: CA
// only), MSH-16 by the outcome. Empty when the sender asked for none.
std::vector<std::string> acknowledgements(const MshSummary& inbound, Outcome outcome,
                                          const std::optional<AckError>& error);

// The acknowledgement of an HL7 batch (HL7 v2.5 ch. 2.10.3), one message for one MLLP frame:
// FHS (when the inbound batch had one `fhs`), BHS, `acks` (whole ACK messages, in the order
// of the messages they answer), BTS with BTS-1 their count, FTS (with FHS). FHS/BHS-3..6 are
// the inbound header's 5, 6, 3, 4 and FHS/BHS-12 echo its FHS/BHS-11; written with its
// delimiters when usable. `fhs` and `bhs` are the inbound envelope segments ("" when absent).
std::string build_batch_ack(std::string_view fhs, std::string_view bhs, const std::vector<std::string>& acks,
                            const AckClock& clock);

}  // namespace gw::hl7v2
