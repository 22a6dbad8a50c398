// SPDX-License-Identifier: Apache-2.0
// A small MLLP test client: connects to a loopback port (plain TCP or TLS), sends raw bytes
// (frames or deliberate garbage) and reads acknowledgement frames back. Every call is
// bounded by a timeout, so a misbehaving listener fails the test instead of hanging it.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace gw::test {

class MllpConnection {
 public:
  // Connects (and, with `ca_file`, completes a TLS handshake verifying the server against it,
  // presenting `client_cert` with `client_key` when given). ok() is false when that failed;
  // error() says why.
  MllpConnection(std::uint16_t port, std::string ca_file = {}, const std::string& client_cert = {},
                 const std::string& client_key = {});
  ~MllpConnection();
  MllpConnection(const MllpConnection&) = delete;
  MllpConnection& operator=(const MllpConnection&) = delete;

  bool ok() const { return fd_ >= 0 && error_.empty(); }
  const std::string& error() const { return error_; }

  bool send_raw(const std::string& bytes);
  // Frames `message` (<VT> message <FS><CR>) and sends it.
  bool send(const std::string& message);
  // Reads until `count` frames arrived, the peer closed, or `timeout` passed. ACK segments
  // are returned with their CR terminators.
  std::vector<std::string> read_frames(std::size_t count, std::chrono::milliseconds timeout);
  // True when the peer closed the connection within `timeout` (reading and discarding).
  bool closed_by_peer(std::chrono::milliseconds timeout);
  void close();

 private:
  int read_some(char* buf, std::size_t n, std::chrono::milliseconds timeout);  // 0 closed, -1 timeout/error
  int fd_ = -1;
  struct Tls;
  std::unique_ptr<Tls> tls_;
  std::string error_;
  std::string pending_;
};

// One message on a fresh connection: its acknowledgements (empty on timeout).
std::vector<std::string> mllp_round_trip(std::uint16_t port, const std::string& message,
                                         std::size_t expect = 1,
                                         std::chrono::milliseconds timeout = std::chrono::seconds(10));

// Field `field` (1-based after the segment id; MSH-1 is the separator) of segment `segment`
// in an HL7 message, split on '|'; "" when absent.
std::string hl7_field(const std::string& message, const std::string& segment, std::size_t field);

}  // namespace gw::test
