// SPDX-License-Identifier: Apache-2.0
#include "support/https_client.h"

#include <openssl/ssl.h>

#include <optional>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/ssl/host_name_verification.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>

namespace gw::test {

namespace asio = boost::asio;
namespace bhttp = boost::beast::http;
using asio::ip::tcp;
using boost::system::error_code;

namespace {

template <class Stream>
asio::awaitable<void> talk(Stream& stream, tcp::socket& raw, const std::string& bytes, std::size_t expect,
                           const ClientOptions& opts, Exchange& out) {
  error_code ec;
  co_await asio::async_write(stream, asio::buffer(bytes), asio::redirect_error(asio::use_awaitable, ec));
  if (ec) {
    out.error = "write: " + ec.message();
    co_return;
  }
  if (opts.pause_after_send.count() > 0) {
    asio::steady_timer t(co_await asio::this_coro::executor, opts.pause_after_send);
    co_await t.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
  boost::beast::flat_buffer buf;
  for (std::size_t i = 0; i < expect; ++i) {
    bhttp::response_parser<bhttp::string_body> parser;
    parser.body_limit(64 * 1024 * 1024);
    if (i == 0 && opts.first_is_head) parser.skip(true);
    co_await bhttp::async_read(stream, buf, parser, asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      out.error = "read: " + ec.message();
      co_return;
    }
    auto msg = parser.release();
    HttpResponse r;
    r.status = static_cast<int>(msg.result_int());
    for (const auto& f : msg) {
      std::string name(f.name_string());
      for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      r.headers[name] = std::string(f.value());
    }
    r.body = std::move(msg.body());
    out.responses.push_back(std::move(r));
  }
  // Did the server close? Wait briefly for EOF; a kept-alive connection stays silent.
  asio::steady_timer quiet(co_await asio::this_coro::executor, opts.close_wait);
  quiet.async_wait([&raw](error_code wec) {
    if (!wec) raw.cancel();
  });
  char c;
  co_await stream.async_read_some(asio::buffer(&c, 1), asio::redirect_error(asio::use_awaitable, ec));
  quiet.cancel();
  out.peer_closed = static_cast<bool>(ec) && ec != asio::error::operation_aborted;
}

// Handshake (when TLS) then the exchange; a named coroutine so its lifetime is plain.
asio::awaitable<void> run_exchange(asio::ssl::stream<tcp::socket&>* tls, tcp::socket& socket, const std::string& bytes,
                                   std::size_t expect, const ClientOptions& opts, Exchange& out) {
  if (tls) {
    error_code hec;
    co_await tls->async_handshake(asio::ssl::stream_base::client, asio::redirect_error(asio::use_awaitable, hec));
    if (hec) {
      out.error = "handshake: " + hec.message();
      co_return;
    }
    co_await talk(*tls, socket, bytes, expect, opts, out);
  } else {
    co_await talk(socket, socket, bytes, expect, opts, out);
  }
}

}  // namespace

Exchange exchange(std::uint16_t port, const std::string& bytes, std::size_t expect, const ClientOptions& opts) {
  Exchange out;
  asio::io_context ioc;
  tcp::socket socket(ioc);
  error_code ec;
  socket.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port), ec);
  if (ec) {
    out.error = "connect: " + ec.message();
    return out;
  }
  std::optional<asio::ssl::context> ctx;
  std::optional<asio::ssl::stream<tcp::socket&>> tls;
  if (opts.tls) {
    ctx.emplace(asio::ssl::context::tls_client);
    ctx->load_verify_file(opts.ca_file);
    ctx->set_verify_mode(asio::ssl::verify_peer);
    ctx->set_verify_callback(asio::ssl::host_name_verification("localhost"));
    if (!opts.cert_file.empty()) {
      ctx->use_certificate_chain_file(opts.cert_file);
      ctx->use_private_key_file(opts.key_file, asio::ssl::context::pem);
    }
    if (opts.max_tls_version) {
      SSL_CTX_set_security_level(ctx->native_handle(), 0);
      SSL_CTX_set_min_proto_version(ctx->native_handle(), 0);
      SSL_CTX_set_max_proto_version(ctx->native_handle(), opts.max_tls_version);
    }
    if (!opts.tls12_ciphers.empty()) {
      SSL_CTX_set_max_proto_version(ctx->native_handle(), TLS1_2_VERSION);
      SSL_CTX_set_cipher_list(ctx->native_handle(), opts.tls12_ciphers.c_str());
    }
    tls.emplace(socket, *ctx);
    SSL_set_tlsext_host_name(tls->native_handle(), "localhost");
  }
  asio::co_spawn(ioc, run_exchange(tls ? &*tls : nullptr, socket, bytes, expect, opts, out), asio::detached);
  ioc.run_for(opts.timeout + opts.pause_after_send + opts.close_wait);
  if (!ioc.stopped()) {
    // Timed out waiting: the server neither answered nor closed.
    if (out.error.empty() && out.responses.size() < expect) out.error = "timeout";
    socket.close(ec);
    ioc.run_for(std::chrono::milliseconds(100));
  }
  return out;
}

HttpResponse get(std::uint16_t port, const std::string& target, const ClientOptions& opts,
                 const std::string& extra_headers) {
  std::string req = "GET " + target + " HTTP/1.1\r\nHost: localhost\r\n" + extra_headers + "Connection: close\r\n\r\n";
  Exchange ex = exchange(port, req, 1, opts);
  if (ex.responses.empty()) return HttpResponse{0, {{"x-test-error", ex.error}}, {}};
  return ex.responses.front();
}

}  // namespace gw::test
