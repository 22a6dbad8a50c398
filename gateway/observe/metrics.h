// SPDX-License-Identifier: Apache-2.0
// Prometheus metrics for GET /metrics (text exposition format 0.0.4). Labels are route
// templates, methods and statuses, never patient ids or raw paths.
#pragma once

#include <array>
#include <functional>
#include <vector>
#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <tuple>

namespace gw::observe {

// Orders series keys (tuples of strings and ints) and lets them be looked up by tuples of
// string_views, so counting a request allocates nothing once its series exists. Compares
// element views explicitly: clang 14 cannot compare mixed tuple types.
struct SeriesLess {
  using is_transparent = void;
  template <class... A, class... B>
  bool operator()(const std::tuple<A...>& a, const std::tuple<B...>& b) const {
    return as_views(a) < as_views(b);
  }

 private:
  static std::string_view view(const std::string& s) { return s; }
  static std::string_view view(std::string_view s) { return s; }
  static int view(int i) { return i; }
  template <class... T>
  static auto as_views(const std::tuple<T...>& t) {
    return std::apply([](const auto&... e) { return std::make_tuple(view(e)...); }, t);
  }
};

class Metrics {
 public:
  // Upper bounds in seconds of the latency histogram buckets.
  static constexpr std::array<double, 12> kBuckets{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                                   0.05,   0.1,   0.25,   0.5,   1.0,  2.5};

  // Counts one finished request. Thread-safe.
  void observe_request(std::string_view route, std::string_view method, int status, double seconds);

  void connection_opened() { open_connections_.fetch_add(1, std::memory_order_relaxed); connections_total_.fetch_add(1, std::memory_order_relaxed); }
  void connection_closed() { open_connections_.fetch_sub(1, std::memory_order_relaxed); }
  void connection_rejected() { connections_rejected_.fetch_add(1, std::memory_order_relaxed); }
  // A protocol violation by a client, by kind (e.g. "malformed_http", "tls_handshake").
  void protocol_error(std::string_view kind);

  std::int64_t open_connections() const { return open_connections_.load(std::memory_order_relaxed); }

  // Adds metrics kept elsewhere (e.g. MLLP listener and ingest counters): `collect` appends
  // complete Prometheus text (HELP, TYPE and samples) when /metrics is rendered. Call at
  // start-up, before the server runs.
  void add_collector(std::function<void(std::string& out)> collect) { collectors_.push_back(std::move(collect)); }

  // Renders every metric in the Prometheus text format.
  std::string render() const;

 private:
  struct Histogram {
    std::array<std::uint64_t, kBuckets.size()> buckets{};
    std::uint64_t count = 0;
    double sum = 0;
  };
  mutable std::mutex mu_;
  std::map<std::tuple<std::string, std::string, int>, std::uint64_t, SeriesLess> requests_;
  std::map<std::tuple<std::string, std::string>, Histogram, SeriesLess> latency_;
  std::map<std::string, std::uint64_t, std::less<>> protocol_errors_;
  std::atomic<std::int64_t> open_connections_{0};
  std::atomic<std::uint64_t> connections_total_{0};
  std::atomic<std::uint64_t> connections_rejected_{0};
  std::vector<std::function<void(std::string&)>> collectors_;
};

}  // namespace gw::observe
