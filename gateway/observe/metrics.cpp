// SPDX-License-Identifier: Apache-2.0
#include "gateway/observe/metrics.h"

#include <cstdio>

namespace gw::observe {

void Metrics::observe_request(std::string_view route, std::string_view method, int status, double seconds) {
  std::lock_guard lock(mu_);
  // Heterogeneous lookups: strings are allocated only the first time a series appears.
  auto r = requests_.find(std::make_tuple(route, method, status));
  if (r == requests_.end()) r = requests_.emplace(std::make_tuple(std::string(route), std::string(method), status), 0).first;
  ++r->second;
  auto l = latency_.find(std::make_tuple(route, method));
  if (l == latency_.end()) l = latency_.emplace(std::make_tuple(std::string(route), std::string(method)), Histogram{}).first;
  Histogram& h = l->second;
  for (std::size_t i = 0; i < kBuckets.size(); ++i)
    if (seconds <= kBuckets[i]) ++h.buckets[i];
  ++h.count;
  h.sum += seconds;
}

void Metrics::protocol_error(std::string_view kind) {
  std::lock_guard lock(mu_);
  ++protocol_errors_[std::string(kind)];
}

std::string Metrics::render() const {
  std::string out;
  char num[64];
  auto line = [&](const std::string& name_and_labels, double v) {
    std::snprintf(num, sizeof num, " %.17g\n", v);
    out += name_and_labels;
    out += num;
  };
  std::lock_guard lock(mu_);
  out += "# HELP gateway_http_requests_total HTTP requests answered, by route template, method and status.\n";
  out += "# TYPE gateway_http_requests_total counter\n";
  for (const auto& [key, n] : requests_) {
    const auto& [route, method, status] = key;
    line("gateway_http_requests_total{route=\"" + route + "\",method=\"" + method + "\",status=\"" +
             std::to_string(status) + "\"}",
         static_cast<double>(n));
  }
  out += "# HELP gateway_http_request_duration_seconds Time from request parsed to response written.\n";
  out += "# TYPE gateway_http_request_duration_seconds histogram\n";
  for (const auto& [key, h] : latency_) {
    const std::string labels = "route=\"" + std::get<0>(key) + "\",method=\"" + std::get<1>(key) + "\"";
    for (std::size_t i = 0; i < kBuckets.size(); ++i) {
      std::snprintf(num, sizeof num, "%g", kBuckets[i]);
      line("gateway_http_request_duration_seconds_bucket{" + labels + ",le=\"" + num + "\"}",
           static_cast<double>(h.buckets[i]));
    }
    line("gateway_http_request_duration_seconds_bucket{" + labels + ",le=\"+Inf\"}", static_cast<double>(h.count));
    line("gateway_http_request_duration_seconds_sum{" + labels + "}", h.sum);
    line("gateway_http_request_duration_seconds_count{" + labels + "}", static_cast<double>(h.count));
  }
  out += "# HELP gateway_http_open_connections Client connections currently open.\n";
  out += "# TYPE gateway_http_open_connections gauge\n";
  line("gateway_http_open_connections", static_cast<double>(open_connections_.load()));
  out += "# HELP gateway_http_connections_total Client connections accepted.\n";
  out += "# TYPE gateway_http_connections_total counter\n";
  line("gateway_http_connections_total", static_cast<double>(connections_total_.load()));
  out += "# HELP gateway_http_connections_rejected_total Connections refused at the connection limit.\n";
  out += "# TYPE gateway_http_connections_rejected_total counter\n";
  line("gateway_http_connections_rejected_total", static_cast<double>(connections_rejected_.load()));
  out += "# HELP gateway_protocol_errors_total Client protocol violations, by kind.\n";
  out += "# TYPE gateway_protocol_errors_total counter\n";
  for (const auto& [kind, n] : protocol_errors_)
    line("gateway_protocol_errors_total{kind=\"" + kind + "\"}", static_cast<double>(n));
  for (const auto& collect : collectors_) collect(out);
  return out;
}

}  // namespace gw::observe
