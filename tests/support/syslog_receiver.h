// SPDX-License-Identifier: Apache-2.0
// An RFC 5425 syslog-over-TLS receiver on 127.0.0.1 for tests of the audit forwarder, in process
// or against a gateway child process: strict octet-counting framing and RFC 5424 syntax, every
// message kept with its sequence number (structured data `seq`).
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "support/certs.h"

namespace gw::test {

// --- RFC 5424 / RFC 5425 parsing, strict ----------------------------------------------

// One octet-counted frame off the front of `buf`: 1 = `out` holds a message, 0 = need more
// bytes, -1 = malformed (RFC 5425 4.3.1: MSG-LEN = NONZERO-DIGIT *DIGIT, then one SP).
int next_frame(std::string& buf, std::string& out);

struct Syslog {
  int pri = -1;
  std::string timestamp, hostname, app_name, procid, msgid, sd_id;
  std::multimap<std::string, std::string> params;  // unescaped
  std::string msg;
  std::string error;  // empty when the message is valid RFC 5424
  std::string param(const std::string& name) const {
    auto it = params.find(name);
    return it == params.end() ? std::string() : it->second;
  }
};

// RFC 5424 section 6, with exactly one SD-ELEMENT (what the forwarder sends); Syslog::error
// says what is wrong when `m` is not valid.
Syslog parse_5424(const std::string& m);

// --- the receiver -------------------------------------------------------------------------

struct ReceiverOptions {
  std::string cert = test::dev_certs().server_cert;
  std::string key = test::dev_certs().server_key;
  std::string client_ca;                  // require a client certificate from this CA
  std::uint16_t port = 0;                 // 0 = ephemeral
  std::size_t reset_first_session_after = 0;  // TCP reset after this many messages (first session only)
  bool plain_garbage = false;             // not TLS: answer with junk and close
};

// An RFC 5425 receiver on 127.0.0.1, one session at a time, on its own thread. Every received
// message is kept; any framing error ends the session and is counted.
class Receiver {
 public:
  explicit Receiver(ReceiverOptions o) : opt_(std::move(o)) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    REQUIRE(listen_fd_ >= 0);
    int on = 1;
    ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(opt_.port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    REQUIRE(::listen(listen_fd_, 16) == 0);
    socklen_t len = sizeof a;
    ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    if (!opt_.plain_garbage) {
      ctx_ = SSL_CTX_new(TLS_server_method());
      REQUIRE(ctx_ != nullptr);
      SSL_CTX_set_min_proto_version(ctx_, TLS1_2_VERSION);
      REQUIRE(SSL_CTX_use_certificate_chain_file(ctx_, opt_.cert.c_str()) == 1);
      REQUIRE(SSL_CTX_use_PrivateKey_file(ctx_, opt_.key.c_str(), SSL_FILETYPE_PEM) == 1);
      if (!opt_.client_ca.empty()) {
        REQUIRE(SSL_CTX_load_verify_locations(ctx_, opt_.client_ca.c_str(), nullptr) == 1);
        SSL_CTX_set_verify(ctx_, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
        static const unsigned char kContext[] = "forwarder-test";
        SSL_CTX_set_session_id_context(ctx_, kContext, sizeof kContext - 1);
      }
    }
    thread_ = std::thread([this] { run(); });
  }
  ~Receiver() {
    stop();
    if (ctx_) SSL_CTX_free(ctx_);
  }
  Receiver(const Receiver&) = delete;
  Receiver& operator=(const Receiver&) = delete;

  // Goes down like a crashed process: the open session is reset, the port closed.
  void stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
    if (listen_fd_ >= 0) ::close(listen_fd_);
    listen_fd_ = -1;
  }

  std::uint16_t port() const { return port_; }
  std::vector<std::string> messages() const {
    std::lock_guard lock(mu_);
    return messages_;
  }
  std::vector<std::uint64_t> seqs() const {
    std::lock_guard lock(mu_);
    return seqs_;
  }
  std::set<std::uint64_t> distinct() const {
    auto v = seqs();
    return {v.begin(), v.end()};
  }
  std::size_t count() const {
    std::lock_guard lock(mu_);
    return seqs_.size();
  }
  int sessions() const { return sessions_; }
  int handshake_failures() const { return handshake_failures_; }
  int framing_errors() const { return framing_errors_; }
  int syntax_errors() const { return syntax_errors_; }
  int clean_closes() const { return clean_closes_; }

 private:
  static void reset_close(int fd) {
    linger l{1, 0};  // RST: what a crash or an abortive close looks like to the sender
    ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
    ::close(fd);
  }
  bool wait(int fd, short events) {
    pollfd p{fd, events, 0};
    return ::poll(&p, 1, 50) > 0;
  }

  void run() {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
    while (!stop_) {
      if (!wait(listen_fd_, POLLIN)) continue;
      const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
      if (fd >= 0) serve(fd);
    }
  }

  void serve(int fd) {
    const int session = ++sessions_;
    if (opt_.plain_garbage) {
      static const char junk[] = "HTTP/1.1 400 Bad Request\r\n\r\n";
      [[maybe_unused]] auto n = ::write(fd, junk, sizeof junk - 1);
      reset_close(fd);
      return;
    }
    SSL* ssl = SSL_new(ctx_);
    SSL_set_fd(ssl, fd);
    auto finish = [&](bool reset) {
      SSL_free(ssl);
      if (reset) reset_close(fd);
      else ::close(fd);
    };
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    for (;;) {
      ERR_clear_error();
      const int r = SSL_accept(ssl);
      if (r == 1) break;
      const int err = SSL_get_error(ssl, r);
      if ((err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) && !stop_ &&
          std::chrono::steady_clock::now() < deadline) {
        wait(fd, err == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT);
        continue;
      }
      ++handshake_failures_;
      finish(true);
      return;
    }
    std::string buf;
    std::size_t in_session = 0;
    char tmp[16384];
    for (;;) {
      ERR_clear_error();
      const int r = SSL_read(ssl, tmp, sizeof tmp);
      if (r > 0) {
        buf.append(tmp, static_cast<std::size_t>(r));
        std::string msg;
        int got;
        while ((got = next_frame(buf, msg)) == 1) {
          Syslog parsed = parse_5424(msg);
          if (!parsed.error.empty()) ++syntax_errors_;
          {
            std::lock_guard lock(mu_);
            messages_.push_back(msg);
            seqs_.push_back(std::strtoull(parsed.param("seq").c_str(), nullptr, 10));
          }
          if (session == 1 && opt_.reset_first_session_after != 0 && ++in_session == opt_.reset_first_session_after) {
            finish(true);  // whatever else TCP already accepted is dropped unread
            return;
          }
        }
        if (got < 0) {
          ++framing_errors_;
          finish(true);
          return;
        }
        continue;
      }
      const int err = SSL_get_error(ssl, r);
      if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
        if (stop_) {
          finish(true);
          return;
        }
        wait(fd, err == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT);
        continue;
      }
      if (err == SSL_ERROR_ZERO_RETURN) {
        // The sender's close_notify: a frame cut short before it is a framing error; answer
        // with ours (RFC 5425 4.4).
        if (!buf.empty()) ++framing_errors_;
        for (int i = 0; i < 100 && SSL_shutdown(ssl) < 0; ++i) wait(fd, POLLOUT);
        ++clean_closes_;
        finish(false);
        return;
      }
      finish(true);
      return;
    }
  }

  ReceiverOptions opt_;
  int listen_fd_ = -1;
  std::uint16_t port_ = 0;
  SSL_CTX* ctx_ = nullptr;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  mutable std::mutex mu_;
  std::vector<std::string> messages_;
  std::vector<std::uint64_t> seqs_;
  std::atomic<int> sessions_{0}, handshake_failures_{0}, framing_errors_{0}, syntax_errors_{0}, clean_closes_{0};
};

}  // namespace gw::test
