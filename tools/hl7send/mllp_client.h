// SPDX-License-Identifier: Apache-2.0
// A blocking MLLP sender (HL7 v2.5 Appendix C) for the command-line tools: hl7send, the
// replay of `gw-messages`, benchmarks and durability tests. One MllpClient is one connection
// (plain TCP or TLS) used by one thread; every wait is bounded by a timeout. It frames a
// message, sends it, reads the acknowledgement(s) its MSH-15/16 ask for, checks that each
// ACK's MSA-2 echoes the message's MSH-10, and resends on timeout or disconnect when asked to.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "fhir/result.h"

namespace gw::hl7send {

struct ClientOptions {
  std::string host = "127.0.0.1";  // a name or an IP address
  std::uint16_t port = 2575;
  bool tls = false;
  std::string ca_file;                               // TLS: trust anchors (PEM); empty: the system's default store
  std::string cert_file, key_file;                   // TLS: client certificate and key (PEM) for mutual TLS
  std::string server_name;                           // TLS: SNI and the name checked in the certificate; default `host`
  std::chrono::milliseconds connect_timeout{10000};  // TCP connect and TLS handshake together
  std::chrono::milliseconds ack_timeout{10000};      // each acknowledgement, from the end of the send
  std::size_t max_ack_bytes = 1024 * 1024;           // a larger frame closes the connection
  // Pause before a resend: this long before the first, doubling each time, at most 5 s.
  std::chrono::milliseconds retry_backoff{200};
};

// One acknowledgement as read from the wire (HL7 v2.5 ch. 2.14.1 MSA, 2.14.5 ERR).
struct Ack {
  std::string raw;             // the ACK message as received (segments end in CR)
  std::string code;            // MSA-1: AA, AE, AR, CA, CE or CR ("" when there is no MSA)
  std::string control_id;      // MSA-2 as received (escapes not decoded): the MSH-10 it answers
  std::string text;            // the ERR's full message (ERR-8), else MSA-3, else ERR-3.2 / ELD-4.2
  std::string error_location;  // "PID-3", "MRG-1", "OBX[2]-5" from ERR-2 (v2.5+) or ERR-1 (ELD)
  std::string error_code;      // HL7 table 0357 code from ERR-3.1 or ELD-4.1, e.g. "204"
};

// Reads MSA and the first ERR of `raw` (segments may end in CR, LF or CRLF). Never fails: an
// ACK without MSA has an empty code and control id.
Ack parse_ack(std::string_view raw);

// Which acknowledgements a message asks for, from its own MSH-15 (accept) and MSH-16
// (application) (HL7 v2.5 ch. 2.9.2-2.9.3, table 0155). Both empty: original mode, one ACK.
struct AckRequest {
  bool enhanced = false;
  std::string accept;       // MSH-15: AL, NE, ER, SU ("" = NE in enhanced mode; unknown = AL)
  std::string application;  // MSH-16
  // Enhanced mode with both conditions NE: no acknowledgement is ever sent.
  bool none() const;
  // Whether a condition asks for an ACK when the message was applied (`applied`) or not.
  static bool holds(const std::string& condition, bool applied);
};
AckRequest ack_request(std::string_view message);

enum class SendStatus {
  acknowledged,    // every ACK the message asked for arrived and echoed its control id
  not_requested,   // MSH-15/16 asked for no ACK in this case: none awaited (NE/NE), or none came
                   // when only errors are acknowledged (ER): taken as applied
  timeout,         // an ACK did not arrive within ack_timeout (after every retry)
  disconnected,    // the connection failed or closed before the ACK (after every retry)
  connect_failed,  // no connection could be made (after every retry; see SendResult::written)
  mismatch,        // an ACK's MSA-2 is not the message's MSH-10: never retried
};
std::string_view status_name(SendStatus s);

struct SendResult {
  SendStatus status = SendStatus::disconnected;
  std::vector<Ack> acks;                 // in the order received (the accept ACK before the application ACK)
  std::string error;                     // what went wrong, for every status but acknowledged/not_requested
  int attempts = 0;                      // sends made (1 + resends)
  bool written = false;                  // the message reached the connection whole at least once
  std::chrono::microseconds latency{0};  // last attempt: send start to last ACK read
  // The code that decides the outcome: the worst of the ACKs (R over E over A), "" without one.
  std::string code() const;
  // True when the message was acknowledged and every ACK is AA or CA.
  bool accepted() const;
};

class MllpClient {
 public:
  explicit MllpClient(ClientOptions options);
  ~MllpClient();
  MllpClient(const MllpClient&) = delete;
  MllpClient& operator=(const MllpClient&) = delete;

  // Connects (TCP, then the TLS handshake verifying the server's certificate against ca_file
  // and server_name) unless connected. Failures (not_ready) say what failed: resolve, connect,
  // handshake, certificate files, timeout.
  fhir::Status connect();
  bool connected() const;
  // Closes the connection (a later send() reconnects).
  void close();

  // Sends `message` (an HL7 v2 message, segments ending in CR: sent as given, framed here) and
  // waits for the acknowledgements its MSH-15/16 ask for: one in original mode; in enhanced
  // mode the accept ACK, then the application ACK when MSH-16 asks for it given the accept
  // ACK's outcome; none for NE/NE. Connects first when needed, and reconnects when the open
  // connection has anything unread or was closed by the peer while idle. On a timeout or a
  // lost connection the connection is closed (a late ACK must never be read as the answer to
  // the next message) and, while `retries` remain, the same bytes are sent again on a new
  // connection after retry_backoff. An ACK whose MSA-2 differs from MSH-10 closes the
  // connection and is reported as a mismatch (never resent). Never throws for network
  // failures: they are in the result.
  SendResult send(std::string_view message, int retries = 0);

  const ClientOptions& options() const { return options_; }

 private:
  struct Impl;
  ClientOptions options_;
  std::unique_ptr<Impl> impl_;
};

// Normalises one message for the wire: a leading UTF-8 BOM removed, segment terminators CR,
// CR LF or LF all made CR, blank lines dropped, a final CR added.
std::string normalise_message(std::string_view message);

// A line of a message that is not an HL7 segment: it does not start with a three-character
// segment id (upper-case letters or digits) followed by the message's field separator (MSH-1)
// or the end of the line; e.g. a "// ***" comment in a sample file. The gateway refuses a
// message holding one (AR), so hl7send reports it before sending.
struct ForeignLine {
  std::size_t line = 0;  // 1-based line number within the message (FileMessage::lines maps it)
  std::string text;      // the line, at most 60 characters, non-printable bytes as '?'
};
// The foreign lines of a normalised message (segments ending in CR), in order.
std::vector<ForeignLine> foreign_lines(std::string_view message);
// `message` (normalised) without its foreign lines.
std::string drop_foreign_lines(std::string_view message);

// One message of a file: what goes on the wire, and where each of its lines is in the file
// (so a report can name the line a user finds in an editor, whichever message it is in).
struct FileMessage {
  std::string text;                // normalised (normalise_message)
  std::vector<std::size_t> lines;  // 1-based file line of each line of `text`, in order
};
// Splits the text of a file into normalised messages: a message starts at each line beginning
// with "MSH"; batch envelope segments (FHS, BHS, BTS, FTS), blank lines and anything before
// the first MSH are left out; a UTF-8 BOM at the start is ignored. File lines are counted
// from 1, a CR, LF or CR LF ending each, blank and dropped lines included.
std::vector<FileMessage> split_file(std::string_view text);

}  // namespace gw::hl7send
