// SPDX-License-Identifier: Apache-2.0
#include "support/mllp_client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <cerrno>

namespace gw::test {

namespace {

// OpenSSL writes with plain write(2), which cannot pass MSG_NOSIGNAL. A listener that dropped
// the connection (e.g. refusing a client certificate, even mid-handshake) must read as a
// failed call, not kill the test process: SIGPIPE is blocked on this thread for the guard's
// lifetime, and one raised meanwhile is consumed before it is unblocked.
class NoSigpipe {
 public:
  NoSigpipe() {
    sigemptyset(&pipe_);
    sigaddset(&pipe_, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_, &old_);
  }
  ~NoSigpipe() {
    const timespec now{0, 0};
    while (sigtimedwait(&pipe_, nullptr, &now) == SIGPIPE) {
    }
    pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  }
  NoSigpipe(const NoSigpipe&) = delete;
  NoSigpipe& operator=(const NoSigpipe&) = delete;

 private:
  sigset_t pipe_, old_;
};

}  // namespace

struct MllpConnection::Tls {
  SSL_CTX* ctx = nullptr;
  SSL* ssl = nullptr;
  ~Tls() {
    if (ssl) SSL_free(ssl);
    if (ctx) SSL_CTX_free(ctx);
  }
};

MllpConnection::MllpConnection(std::uint16_t port, std::string ca_file, const std::string& client_cert,
                               const std::string& client_key) {
  fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd_ < 0) {
    error_ = "socket failed";
    return;
  }
  int one = 1;
  ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    error_ = "connect failed";
    return;
  }
  if (ca_file.empty()) return;
  tls_ = std::make_unique<Tls>();
  tls_->ctx = SSL_CTX_new(TLS_client_method());
  if (!tls_->ctx || SSL_CTX_load_verify_locations(tls_->ctx, ca_file.c_str(), nullptr) != 1) {
    error_ = "cannot load CA";
    return;
  }
  SSL_CTX_set_verify(tls_->ctx, SSL_VERIFY_PEER, nullptr);
  if (!client_cert.empty() &&
      (SSL_CTX_use_certificate_chain_file(tls_->ctx, client_cert.c_str()) != 1 ||
       SSL_CTX_use_PrivateKey_file(tls_->ctx, client_key.c_str(), SSL_FILETYPE_PEM) != 1)) {
    error_ = "cannot load the client certificate";
    return;
  }
  tls_->ssl = SSL_new(tls_->ctx);
  SSL_set_fd(tls_->ssl, fd_);
  SSL_set_tlsext_host_name(tls_->ssl, "localhost");
  SSL_set1_host(tls_->ssl, "localhost");
  timeval tv{10, 0};
  ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  NoSigpipe guard;
  if (SSL_connect(tls_->ssl) != 1) error_ = "TLS handshake failed";
}

MllpConnection::~MllpConnection() { close(); }

void MllpConnection::close() {
  tls_.reset();
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

bool MllpConnection::send_raw(const std::string& bytes) {
  if (fd_ < 0) return false;
  std::size_t sent = 0;
  while (sent < bytes.size()) {
    int n = 0;
    if (tls_) {
      NoSigpipe guard;
      n = SSL_write(tls_->ssl, bytes.data() + sent, static_cast<int>(bytes.size() - sent));
    } else {
      n = static_cast<int>(::send(fd_, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL));
    }
    if (n <= 0) return false;
    sent += static_cast<std::size_t>(n);
  }
  return true;
}

bool MllpConnection::send(const std::string& message) { return send_raw("\x0b" + message + "\x1c\r"); }

int MllpConnection::read_some(char* buf, std::size_t n, std::chrono::milliseconds timeout) {
  if (fd_ < 0) return 0;
  if (!tls_ || SSL_pending(tls_->ssl) == 0) {
    pollfd p{fd_, POLLIN, 0};
    const int r = ::poll(&p, 1, static_cast<int>(timeout.count()));
    if (r <= 0) return -1;
  }
  int got = 0;
  if (tls_) {
    NoSigpipe guard;  // reading may write too (a TLS alert)
    got = SSL_read(tls_->ssl, buf, static_cast<int>(n));
  } else {
    got = static_cast<int>(::recv(fd_, buf, n, 0));
  }
  return got < 0 ? 0 : got;  // an error reads as a close
}

std::vector<std::string> MllpConnection::read_frames(std::size_t count, std::chrono::milliseconds timeout) {
  std::vector<std::string> out;
  const auto until = std::chrono::steady_clock::now() + timeout;
  char buf[65536];
  for (;;) {
    // Complete frames already buffered.
    for (;;) {
      const auto start = pending_.find('\x0b');
      if (start == std::string::npos) break;
      const auto end = pending_.find("\x1c\r", start);
      if (end == std::string::npos) break;
      out.push_back(pending_.substr(start + 1, end - start - 1));
      pending_.erase(0, end + 2);
    }
    if (out.size() >= count) return out;
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
    if (left.count() <= 0) return out;
    const int n = read_some(buf, sizeof buf, left);
    if (n <= 0) return out;
    pending_.append(buf, static_cast<std::size_t>(n));
  }
}

bool MllpConnection::closed_by_peer(std::chrono::milliseconds timeout) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  char buf[4096];
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    const int n = read_some(buf, sizeof buf, left);
    if (n == 0) return true;
    if (n < 0) return false;
  }
}

std::vector<std::string> mllp_round_trip(std::uint16_t port, const std::string& message, std::size_t expect,
                                         std::chrono::milliseconds timeout) {
  MllpConnection c(port);
  if (!c.ok() || !c.send(message)) return {};
  return c.read_frames(expect, timeout);
}

std::string hl7_field(const std::string& message, const std::string& segment, std::size_t field) {
  std::size_t pos = 0;
  while (pos < message.size()) {
    std::size_t end = message.find_first_of("\r\n", pos);
    if (end == std::string::npos) end = message.size();
    const std::string seg = message.substr(pos, end - pos);
    if (seg.compare(0, segment.size(), segment) == 0 && seg.size() > segment.size() && seg[segment.size()] == '|') {
      // MSH-1 is the separator itself, so MSH fields are shifted by one.
      std::size_t n = segment == "MSH" ? 1 : 0;
      if (segment == "MSH" && field == 1) return "|";
      std::size_t at = segment.size();
      while (at != std::string::npos && at < seg.size()) {
        const std::size_t next = seg.find('|', at + 1);
        ++n;
        if (n == field) return seg.substr(at + 1, next == std::string::npos ? std::string::npos : next - at - 1);
        at = next;
      }
      return {};
    }
    pos = end + 1;
  }
  return {};
}

}  // namespace gw::test
