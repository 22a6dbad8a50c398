// SPDX-License-Identifier: Apache-2.0
// Ships audit records from audit.db to a SIEM (issue #6 item 5): RFC 5424 syslog messages over
// TLS (RFC 5425) with octet-counting framing, at least once, in sequence order. Runs beside the
// Log on its own thread with its own database connections; the Log never waits for it.
//
// Delivery guarantee (at least once, honestly stated):
// - A record counts as delivered only when the receiver's TCP has acknowledged the bytes that
//   carried it (Linux SIOCOUTQ; elsewhere from the write) and the connection then stayed
//   healthy for `resend_window` (no error, no reset, no close from the receiver), or when we
//   closed that connection cleanly: our TLS close_notify answered by the receiver's
//   close_notify, which proves its TLS layer read every byte before it. TCP acceptance alone
//   is not delivery.
// - The cursor (audit_forward_cursor row `name`: the first sequence number not yet known to be
//   delivered) only moves past delivered records. On any error or receiver close the
//   connection is dropped and everything after the cursor is sent again after a bounded
//   exponential backoff; a process restart resumes from the persisted cursor.
// - So records are never lost by the forwarder, but the SIEM can see duplicates: each message
//   carries its sequence number (structured data `seq`), so duplicates are identifiable.
// - Limits of what the sender can know: a receiver that acknowledges at the TCP level, stays
//   connected for `resend_window` and then loses what it had buffered (or a host that
//   vanishes without a reset for longer than `resend_window`) defeats any sender without
//   application acknowledgements, which RFC 5425 does not have. A longer window narrows this.
// - Records pruned by retention before they were forwarded (record IS NULL) are skipped and
//   counted (stats().skipped_pruned); their leaf hashes stay in the tree.
//
// Message (RFC 5424 section 6):
//   <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID audit [fhirgw@32473 seq="7" leaf="…" …] BOM RECORD
// PRI = facility * 8 + severity; severity 6 (informational) for outcome 0, 4 (warning) for a
// 4xx-like outcome, 3 (error) for a 5xx-like outcome. TIMESTAMP is the record's own time.
// RECORD is the canonical record exactly as stored (the bytes the Merkle leaf hashes), so the
// SIEM can re-hash it and compare with `leaf`. Structured-data values are informational
// copies (escaped per RFC 5424 6.3.3, control characters replaced by '?', each value cut at
// 128 bytes, at most 8 `patient` params); the record is authoritative. A message longer than
// max_message_bytes carries only the first bytes of the record (cut on a UTF-8 character
// boundary) and a `truncated="<full length in bytes>"` param; `leaf` still identifies the
// whole record. A stored record that is not valid UTF-8 is sent without the BOM.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "fhir/result.h"

namespace gw::audit {

struct ForwarderOptions {
  std::string name = "siem";            // the cursor row in audit_forward_cursor (one per receiver)
  std::string database;                 // audit.db (the Log's LogOptions::path); the Log must have
                                        // created it
  std::string host;                     // receiver: DNS name or IP literal (checked against its
                                        // certificate: subjectAltName DNS or IP)
  std::uint16_t port = 6514;            // RFC 5425's registered port
  std::string ca_file;                  // PEM CA bundle the receiver's certificate must chain to
  std::string client_certificate;       // PEM chain for mutual TLS ("" = none)
  std::string client_key;               // PEM key of client_certificate
  std::string app_name = "fhir-gateway";  // APP-NAME (printable ASCII, cut at 48)
  std::string hostname;                 // HOSTNAME ("" = gethostname(); printable ASCII, cut at 255)
  int facility = 10;                    // authpriv (security/authorisation, private), as the
                                        // Log's syslog checkpoints; 13 (log audit) also fits
  std::string sd_id = "fhirgw@32473";   // SD-ID; 32473 is the documentation enterprise number
                                        // (RFC 5612): set your own registered number
  std::size_t batch_size = 256;         // records read and written per round
  std::size_t max_message_bytes = 64 * 1024;  // SYSLOG-MSG limit (at least 2048, RFC 5425 4.3.1)
  std::chrono::milliseconds poll_interval{200};      // how often audit.db is checked for new records
  std::chrono::milliseconds resend_window{5000};     // healthy time after a write before it counts
  std::chrono::milliseconds backoff_min{500};        // reconnect delay, doubled per failure ...
  std::chrono::milliseconds backoff_max{30000};      // ... up to this
  std::chrono::milliseconds io_timeout{10000};       // connect, handshake, a stalled write
  std::chrono::milliseconds drain_timeout{5000};     // stop(): time allowed to send what is committed
  bool from_start = true;  // with no cursor row yet: forward the whole log (true) or only records
                           // appended from now on (false)
};

struct ForwarderStats {
  std::uint64_t sent = 0;              // messages written, resends included
  std::uint64_t resent = 0;            // messages written again after a lost session (what a restart
                                       // resends from the persisted cursor is not counted here)
  std::uint64_t connects = 0;          // TLS sessions established
  std::uint64_t connect_failures = 0;  // resolve, TCP or TLS handshake failures
  std::uint64_t disconnects = 0;       // sessions lost (error, reset, receiver close)
  std::uint64_t truncated = 0;         // messages cut to max_message_bytes
  std::uint64_t skipped_pruned = 0;    // records pruned by retention before they were forwarded
  std::uint64_t cursor = 0;            // first sequence number not yet known to be delivered
  std::uint64_t saved_cursor = 0;      // the cursor as last saved in audit.db (a restart resumes
                                       // from it: at most `cursor`)
  bool connected = false;
  std::string last_error;              // connection or database error text (never record content)
};

class Forwarder {
 public:
  // Checks the options, loads the CA and client credentials, opens a read-only connection and a
  // read-write connection (for the cursor only) to audit.db, loads the cursor and starts the
  // thread. Fails with invalid_value naming the option, or not_ready when audit.db cannot be
  // opened. Connecting to the receiver happens on the thread: an absent receiver is not an
  // error here, only retried.
  static fhir::Result<std::unique_ptr<Forwarder>> start(ForwarderOptions options);
  // What start() checks before it touches audit.db, and nothing more: the options and the CA
  // and client credentials, loaded into a TLS context that is then dropped (`database` is not
  // looked at). The same failures as start(); `fhir-gateway --check-config` runs it.
  static fhir::Status check(const ForwarderOptions& options);
  ~Forwarder();  // stop()
  Forwarder(const Forwarder&) = delete;
  Forwarder& operator=(const Forwarder&) = delete;

  // Wakes the thread to look for new records now (call after a commit). Never blocks; safe
  // from any thread, including the Log's writer.
  void notify();
  // Drains: sends every record committed before the call, waiting at most drain_timeout,
  // closes the session cleanly (which confirms what it carried), persists the cursor and joins
  // the thread. Idempotent; call before the Log stops.
  void stop();

  ForwarderStats stats() const;  // thread-safe snapshot
  const ForwarderOptions& options() const { return options_; }

 private:
  struct Impl;
  explicit Forwarder(ForwarderOptions options);
  ForwarderOptions options_;
  std::unique_ptr<Impl> impl_;
};

// --- formatting (syslog_format.cpp; exposed for tests) ---------------------------------

// The bounds of ForwarderOptions::max_message_bytes (RFC 5425 4.3.1: receivers MUST take 2048).
inline constexpr std::size_t kMinMessageBytes = 2048;
inline constexpr std::size_t kMaxMessageBytes = 1024 * 1024;

struct SyslogMessage {
  std::string text;        // the SYSLOG-MSG
  bool truncated = false;  // the record was cut to fit max_message_bytes
};

// The RFC 5424 message for the stored record `record` (canonical bytes) with sequence number
// `seq`. `procid` is the PROCID field ("-" when empty). Never fails: a record that does not
// decode is still sent, with only `seq` and `leaf` in the structured data.
SyslogMessage format_syslog(const ForwarderOptions& options, std::string_view hostname, std::string_view procid,
                            std::uint64_t seq, std::string_view record);
// RFC 5425 section 4.3 octet-counting frame: MSG-LEN SP SYSLOG-MSG.
std::string frame_syslog(std::string_view message);
// RFC 5424 section 6.3.3 PARAM-VALUE escaping of '"', '\' and ']'.
std::string escape_sd_value(std::string_view value);
// SD-NAME: 1*32 PRINTUSASCII except '=', SP, ']' and '"' (RFC 5424 6.3.2).
bool valid_sd_name(std::string_view s);

}  // namespace gw::audit
