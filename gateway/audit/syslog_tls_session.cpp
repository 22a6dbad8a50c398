// SPDX-License-Identifier: Apache-2.0
// The forwarder's TLS client (syslog_tls_session.h): connect, handshake, write, liveness and a
// clean close, each bounded by a deadline.
#include "gateway/audit/syslog_tls_session.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>
#if __has_include(<linux/sockios.h>)
#include <linux/sockios.h>
#endif

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>

namespace gw::audit {

using fhir::ErrorCode;
using fhir::Issue;
using Clock = std::chrono::steady_clock;

namespace {

// Waits until `fd` is ready for `events` (or reports hang-up/error) before `deadline`.
bool wait_fd(int fd, short events, Clock::time_point deadline) {
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return false;
    pollfd p{fd, events, 0};
    const int r = ::poll(&p, 1, static_cast<int>(std::min<long long>(left, 1000)));
    if (r > 0) return true;
    if (r < 0 && errno != EINTR) return false;
  }
}

// OpenSSL's error queue as text (and cleared), or the socket error for a system failure.
std::string tls_error_text(SSL* ssl, int ret, const char* what) {
  std::string text = what;
  const int err = SSL_get_error(ssl, ret);
  if (err == SSL_ERROR_ZERO_RETURN) return text + ": the receiver closed the connection";
  if (ssl != nullptr && SSL_get_verify_result(ssl) != X509_V_OK)
    return text + ": certificate verification failed: " +
           X509_verify_cert_error_string(SSL_get_verify_result(ssl));
  if (unsigned long e = ERR_peek_last_error(); e != 0) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    ERR_clear_error();
    return text + ": " + buf;
  }
  if (err == SSL_ERROR_SYSCALL && errno != 0) return text + ": " + std::strerror(errno);
  return text + ": connection closed";
}

// Repeats an OpenSSL call on a non-blocking socket until it completes, fails or times out.
template <class Op>
int drive(SyslogTlsSession& s, Op op, Clock::time_point deadline, int& ret) {
  for (;;) {
    ERR_clear_error();
    errno = 0;
    ret = op();
    if (ret > 0) return SSL_ERROR_NONE;
    const int err = SSL_get_error(s.ssl, ret);
    if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
      if (!wait_fd(s.fd, err == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, deadline)) return -1;
      continue;
    }
    return err;
  }
}

int tcp_connect(const addrinfo* ai, Clock::time_point deadline, std::string& error) {
  const int fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
  if (fd < 0) {
    error = std::string("socket: ") + std::strerror(errno);
    return -1;
  }
  if (::connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
    if (errno != EINPROGRESS) {
      error = std::string("connect: ") + std::strerror(errno);
      ::close(fd);
      return -1;
    }
    int so_error = 0;
    socklen_t len = sizeof so_error;
    if (!wait_fd(fd, POLLOUT, deadline)) so_error = ETIMEDOUT;
    else if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &so_error, &len) != 0) so_error = errno;
    if (so_error != 0) {
      error = std::string("connect: ") + std::strerror(so_error);
      ::close(fd);
      return -1;
    }
  }
  // Keepalive finds a receiver that vanished without a reset on an idle session.
  int on = 1, idle = 30, interval = 10, count = 3;
  ::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof interval);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof count);
  return fd;
}

}  // namespace

SyslogTlsSession::~SyslogTlsSession() {
  if (ssl) SSL_free(ssl);
  if (fd >= 0) ::close(fd);
}

fhir::Result<std::unique_ptr<SyslogTlsSession>> open_session(SSL_CTX* ctx, const ForwarderOptions& o,
                                                             Clock::time_point deadline) {
  auto fail = [](std::string text) { return Issue::make(ErrorCode::not_ready, std::move(text)); };
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* found = nullptr;
  const std::string port = std::to_string(o.port);
  if (int rc = ::getaddrinfo(o.host.c_str(), port.c_str(), &hints, &found); rc != 0)
    return fail(std::string("cannot resolve the receiver's host name: ") + ::gai_strerror(rc));
  auto session = std::make_unique<SyslogTlsSession>();
  std::string error = "no address";
  for (const addrinfo* ai = found; ai != nullptr && session->fd < 0; ai = ai->ai_next)
    session->fd = tcp_connect(ai, deadline, error);
  ::freeaddrinfo(found);
  if (session->fd < 0) return fail(std::move(error));

  session->ssl = SSL_new(ctx);
  if (session->ssl == nullptr || SSL_set_fd(session->ssl, session->fd) != 1)
    return fail("cannot create a TLS session");
  // The receiver's certificate must name the host we were told to reach (RFC 5425 5.2; RFC 6125).
  unsigned char addr[sizeof(in6_addr)];
  const bool ip_literal = ::inet_pton(AF_INET, o.host.c_str(), addr) == 1 || ::inet_pton(AF_INET6, o.host.c_str(), addr) == 1;
  if (ip_literal) {
    if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(session->ssl), o.host.c_str()) != 1)
      return fail("cannot set the receiver's address for verification");
  } else {
    SSL_set_hostflags(session->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    if (SSL_set1_host(session->ssl, o.host.c_str()) != 1 || SSL_set_tlsext_host_name(session->ssl, o.host.c_str()) != 1)
      return fail("cannot set the receiver's host name for verification");
  }
  int ret = 0;
  const int err = drive(*session, [&] { return SSL_connect(session->ssl); }, deadline, ret);
  if (err == -1) return fail("TLS handshake timed out");
  if (err != SSL_ERROR_NONE) return fail(tls_error_text(session->ssl, ret, "TLS handshake failed"));
  return session;
}

fhir::Status write_all(SyslogTlsSession& s, std::string_view data, Clock::time_point deadline) {
  std::size_t off = 0;
  while (off < data.size()) {
    const int n = static_cast<int>(std::min<std::size_t>(data.size() - off, 1 << 20));
    int ret = 0;
    const int err = drive(s, [&] { return SSL_write(s.ssl, data.data() + off, n); }, deadline, ret);
    if (err == -1) return Issue::make(ErrorCode::timeout, "write to the receiver timed out");
    if (err != SSL_ERROR_NONE) return Issue::make(ErrorCode::not_ready, tls_error_text(s.ssl, ret, "write failed"));
    off += static_cast<std::size_t>(ret);
  }
  return fhir::Ok{};
}

fhir::Status check_alive(SyslogTlsSession& s) {
  char buf[4096];
  for (int round = 0; round < 64; ++round) {
    pollfd p{s.fd, POLLIN, 0};
    if (SSL_pending(s.ssl) == 0 && ::poll(&p, 1, 0) <= 0) return fhir::Ok{};
    ERR_clear_error();
    errno = 0;
    const int ret = SSL_read(s.ssl, buf, sizeof buf);
    if (ret > 0) continue;
    const int err = SSL_get_error(s.ssl, ret);
    if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) return fhir::Ok{};
    return Issue::make(ErrorCode::not_ready, tls_error_text(s.ssl, ret, "connection lost"));
  }
  return fhir::Ok{};
}

bool close_cleanly(SyslogTlsSession& s, Clock::time_point deadline) {
  int ret = 0;
  int err = drive(s, [&] { return SSL_shutdown(s.ssl) >= 0 ? 1 : -1; }, deadline, ret);
  if (err != SSL_ERROR_NONE) return false;
  if ((SSL_get_shutdown(s.ssl) & SSL_RECEIVED_SHUTDOWN) == 0) {
    char buf[1024];
    do {
      err = drive(s, [&] { return SSL_read(s.ssl, buf, sizeof buf); }, deadline, ret);
      // Data after our close_notify is dropped.
    } while (err == SSL_ERROR_NONE && Clock::now() < deadline);
    if (err != SSL_ERROR_ZERO_RETURN) return false;
  }
  ::shutdown(s.fd, SHUT_RDWR);
  return true;
}

std::uint64_t unacknowledged_bytes(int fd) {
#ifdef SIOCOUTQ
  int n = 0;
  if (::ioctl(fd, SIOCOUTQ, &n) == 0 && n > 0) return static_cast<std::uint64_t>(n);
#endif
  (void)fd;
  return 0;
}

}  // namespace gw::audit
