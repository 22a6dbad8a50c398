// SPDX-License-Identifier: Apache-2.0
// HL7 v2 messages (v2.3-2.8): the parser and encoder every HL7 path uses (MLLP listener,
// mapping to FHIR, ACK building, hl7send, benchmarks, fuzzing). Parsing is one linear pass
// that indexes the message text; values are unescaped only when asked for.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "fhir/result.h"

namespace gw::hl7v2 {

// The delimiters a message declares in MSH-1 and MSH-2 (HL7 v2.5 ch. 2.5.4). `truncation` is
// the fifth encoding character introduced in v2.7 ('#'), or '\0' when MSH-2 has four.
// `subcomponent` is '\0' when MSH-2 has only three characters (tolerated, see parse()): values
// then have no sub-components.
struct Delimiters {
  char field = '|';
  char component = '^';
  char repetition = '~';
  char escape = '\\';
  char subcomponent = '&';
  char truncation = '\0';
  // MSH-2 as it should be encoded: four or five characters (three when `subcomponent` is '\0').
  std::string encoding_characters() const;
};

struct ParseOptions {
  std::size_t max_message_bytes = 4 * 1024 * 1024;  // larger input is refused (payload_too_large)
  std::size_t max_segments = 20000;
  std::size_t max_fields_per_segment = 1000;
};

class Message;

// A view of one segment of a Message; valid while the Message lives and is not moved.
// Field numbers follow HL7: for MSH (and the batch headers FHS and BHS), field 1 is the field
// separator itself and field 2 the encoding characters, both taken literally (one repetition,
// no components, no escapes); for other segments field 1 is the first field after the segment
// id. Repetitions, components and sub-components are numbered from 1. Access scans the field's
// text, so it costs the length of the field.
class SegmentRef {
 public:
  std::string_view id() const;
  // The highest field number present (0 when the segment has only its id).
  std::size_t field_count() const;
  // Repetitions of `field` (0 when the field is absent or empty).
  std::size_t repetition_count(std::size_t field) const;
  // Escaped text as sent. component 0 = the whole repetition; sub 0 = the whole component.
  // Empty when absent.
  std::string_view raw(std::size_t field, std::size_t repetition = 1, std::size_t component = 0,
                       std::size_t sub = 0) const;
  // Unescaped value (escape sequences decoded as get() in unescape()). Empty when absent.
  // Note the argument order: component and sub-component first, repetition last, because
  // most lookups want the first repetition. HL7's explicit null `""` is returned as the two
  // characters `""`; use is_null() to tell it apart.
  std::string get(std::size_t field, std::size_t component = 1, std::size_t sub = 1,
                  std::size_t repetition = 1) const;
  bool is_null(std::size_t field, std::size_t component = 1, std::size_t sub = 1, std::size_t repetition = 1) const;

 private:
  friend class Message;
  SegmentRef(const Message* m, std::size_t index) : m_(m), index_(index) {}
  const Message* m_;
  std::size_t index_;
};

class Message {
 public:
  // Parses one message. The input may start with a UTF-8 byte order mark; segments may end
  // in CR, LF or CRLF (normalised to CR); a trailing terminator is optional; empty lines are
  // skipped. MSH-18 selects the character set: UTF-8 (e.g. "UNICODE UTF-8") is validated;
  // ISO 8859-1 ("8859/1") is converted to UTF-8; other sets are refused (not_supported).
  // Without MSH-18, or with "ASCII", valid UTF-8 is kept and anything else is read as
  // ISO 8859-1. When bytes are converted and MSH-18 is present, its first repetition is
  // rewritten to "UNICODE UTF-8" in text(), so that the text declares what it holds.
  // MSH-2 holds 4 encoding characters, or 5 (v2.7 truncation); tolerated for real senders:
  // 3 (no sub-component separator) and "^~\\&" (a doubled backslash, read as "^~\&"; text()
  // keeps MSH-2 as sent). Delimiters must be distinct, printable, non-alphanumeric ASCII.
  // Failures: payload_too_large (over max_message_bytes, max_segments or
  // max_fields_per_segment), invalid_value (no MSH first, bad MSH-1/MSH-2 encoding
  // characters, a segment id that is not 3 upper-case letters or digits followed by the field
  // separator, an empty MSH-9.1, invalid UTF-8 when UTF-8 is declared, a second MSH (or an FHS or
  // BHS after MSH): one message per input, see read_batch() for batches), not_supported (MSH-18),
  // with the Issue's expression naming where ("MSH-2", "MSH-18", "segment 4", "MSH[2]",
  // "message").
  // Linear in the input size.
  static fhir::Result<Message> parse(std::string_view bytes, const ParseOptions& options = {});

  const Delimiters& delimiters() const { return delimiters_; }
  std::size_t segment_count() const { return segments_.size(); }
  SegmentRef segment(std::size_t index) const { return SegmentRef(this, index); }
  // The `occurrence`-th (0-based) segment with this id, if any.
  std::optional<SegmentRef> find(std::string_view id, std::size_t occurrence = 0) const;
  SegmentRef msh() const { return segment(0); }

  // Shortcuts into MSH.
  // "ADT^A01": MSH-9.1 ^ MSH-9.2, each without surrounding spaces. Without MSH-9.2 (v2.1-2.3
  // senders, Mirth's non-strict reading): an ADT takes its trigger from EVN-1, an ORU is
  // ORU^R01 (its only event); otherwise MSH-9.1 alone.
  std::string message_type() const;
  // MSH-9 as the sender wrote it, for error texts: "MSH-9 'ADT^A60^ADT_A01'", or with the
  // EVN-1 message_type() read ("MSH-9 'ADT' with EVN-1 'A60'"); printable ASCII, bounded.
  std::string message_type_as_sent() const;
  std::string control_id() const;       // MSH-10
  std::string version() const;          // MSH-12.1
  // MSH-18 (first repetition) as in text(): as sent, or "UNICODE UTF-8" when parse() converted
  // the bytes; "" when absent.
  std::string charset() const;

  // The message as text: UTF-8, every segment ending in CR, delimiters as declared. Stable:
  // parse(encode()).encode() == encode().
  std::string encode() const;
  // The normalised text the message indexes (what encode() returns).
  const std::string& text() const { return text_; }

 private:
  friend class SegmentRef;
  struct Span {
    std::uint32_t begin = 0, end = 0;
  };
  struct SegmentIndex {
    Span whole;                           // the segment without its terminator
    std::uint32_t first_field = 0;        // index into fields_
    std::uint32_t field_count = 0;        // fields after the id (MSH: counts MSH-1 too)
  };
  Delimiters delimiters_;
  std::string text_;
  std::vector<SegmentIndex> segments_;
  std::vector<Span> fields_;  // each field's escaped text, repetitions included
};

// The delimiters MSH-1 `field_separator` and MSH-2 `encoding_characters` declare, read and
// checked as parse() reads them (same tolerances); invalid_value naming "MSH-1" or "MSH-2"
// when they cannot be used. For callers that work from a raw MSH (acknowledgements).
fhir::Result<Delimiters> read_delimiters(char field_separator, std::string_view encoding_characters);

// True when parse() reads `bytes` as ISO 8859-1: `msh18` (the first repetition of MSH-18 as
// sent) names it, or is empty or ASCII and `bytes` are not valid UTF-8. A message read so is
// answered in ISO 8859-1 too (see build_ack).
bool read_as_latin1(std::string_view msh18, std::string_view bytes);
// True when `msh18` (the first repetition of MSH-18 as sent) names a character set parse()
// reads: none (empty), ASCII, UTF-8 or ISO 8859-1; parse() refuses any other (not_supported).
bool is_supported_charset(std::string_view msh18);

// Splits text that holds several messages (a file, a batch) into one view per message, in
// order: a message starts at each line beginning with "MSH" (the first may follow a UTF-8 byte
// order mark) and runs to the next such line or to a batch envelope line (FHS, BHS, BTS, FTS),
// which is left out, as is anything before the first MSH. Lines may end in CR, LF or CRLF. The
// views point into `text`; each is then given to Message::parse. Linear in the input size.
std::vector<std::string_view> split_messages(std::string_view text);

// An HL7 batch as one MLLP frame may carry it (HL7 v2.5 ch. 2.10.3): [FHS] [BHS] {message}
// [BTS] [FTS], starting with FHS or BHS. One batch per frame.
struct Batch {
  // The envelope segments as sent, without their terminators; empty when absent.
  std::string_view fhs, bhs, bts, fts;
  // Each message's text, from its MSH line to the next MSH or envelope line, in order.
  std::vector<std::string_view> messages;
};
// True when `text` starts (after a UTF-8 byte order mark and empty lines) with an FHS or BHS
// segment: a batch, to be read with read_batch() rather than Message::parse().
bool is_batch(std::string_view text);
// Splits a batch into its envelope and messages (the messages are not parsed). Lines may end
// in CR, LF or CRLF. invalid_value, naming the segment ("segment 7", "BTS-1"), for an FHS or
// BHS header that is not a valid header (MSH-1/MSH-2 rules), envelope segments repeated or out
// of order (a second batch in the frame), a line outside every message that is not an envelope
// segment, or a BTS-1 count other than the number of messages; payload_too_large over
// `max_messages`. Linear in the input size.
fhir::Result<Batch> read_batch(std::string_view text, std::size_t max_messages);

// Decodes HL7 escape sequences (v2.5 ch. 2.7): \F\ \S\ \T\ \R\ \E\ and \P\ (the truncation
// character), \Xhh..\ (hex bytes, taken as UTF-8, or ISO 8859-1 when not valid UTF-8),
// \.br\ (a line break, "\n"); other formatting and character-set sequences (\H\ \N\ \.sp\ and
// \.in\ \.ti\ \.sk\ \.fi\ \.nf\ \.ce\ \Cxxyy\ \Mxxyyzz\) are dropped; an unterminated
// sequence is kept literally, and so is the escape character of a sequence it does not know
// (e.g. \Zxx\, or \P\ when no truncation character is declared).
std::string unescape(std::string_view escaped, const Delimiters& d);
// Encodes `value` so it survives as one sub-component: delimiter characters become escape
// sequences, line breaks become \.br\ (CR, LF and CRLF alike, one each).
std::string escape(std::string_view value, const Delimiters& d);

}  // namespace gw::hl7v2
