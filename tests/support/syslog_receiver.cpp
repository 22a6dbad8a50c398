// SPDX-License-Identifier: Apache-2.0
#include "support/syslog_receiver.h"

#include <regex>

namespace gw::test {

int next_frame(std::string& buf, std::string& out) {
  if (buf.empty()) return 0;
  std::size_t i = 0;
  while (i < buf.size() && buf[i] >= '0' && buf[i] <= '9') ++i;
  if (i == 0 || buf[0] == '0' || i > 7) return -1;
  if (i == buf.size()) return 0;
  if (buf[i] != ' ') return -1;
  const std::size_t len = std::stoul(buf.substr(0, i));
  if (len > 1024 * 1024) return -1;
  if (buf.size() < i + 1 + len) return 0;
  out = buf.substr(i + 1, len);
  buf.erase(0, i + 1 + len);
  return 1;
}

namespace {

bool printable(std::string_view s, std::size_t max) {
  if (s.empty() || s.size() > max) return false;
  for (char c : s)
    if (static_cast<unsigned char>(c) < 33 || static_cast<unsigned char>(c) > 126) return false;
  return true;
}

}  // namespace

Syslog parse_5424(const std::string& m) {
  Syslog s;
  std::size_t p = 0;
  auto fail = [&](std::string why) {
    s.error = std::move(why);
    return s;
  };
  auto token = [&](std::string& out) {
    auto sp = m.find(' ', p);
    if (sp == std::string::npos) return false;
    out = m.substr(p, sp - p);
    p = sp + 1;
    return true;
  };
  if (m.empty() || m[0] != '<') return fail("no PRI");
  auto gt = m.find('>');
  if (gt == std::string::npos || gt < 2 || gt > 4) return fail("bad PRI");
  for (std::size_t i = 1; i < gt; ++i)
    if (m[i] < '0' || m[i] > '9') return fail("bad PRI digit");
  if (gt > 2 && m[1] == '0') return fail("PRI with a leading zero");
  s.pri = std::stoi(m.substr(1, gt - 1));
  if (s.pri > 191) return fail("PRI out of range");
  if (m.compare(gt + 1, 2, "1 ") != 0) return fail("VERSION is not 1");
  p = gt + 3;
  if (!token(s.timestamp) || !token(s.hostname) || !token(s.app_name) || !token(s.procid) || !token(s.msgid))
    return fail("header too short");
  static const std::regex ts(R"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2}))");
  if (s.timestamp != "-" && !std::regex_match(s.timestamp, ts)) return fail("bad TIMESTAMP");
  if (!printable(s.hostname, 255) || !printable(s.app_name, 48) || !printable(s.procid, 128) || !printable(s.msgid, 32))
    return fail("bad header field");
  if (p >= m.size() || m[p] != '[') return fail("no SD-ELEMENT");
  ++p;
  auto sd_name = [&](std::string& out) {
    std::size_t start = p;
    while (p < m.size() && m[p] != ' ' && m[p] != '=' && m[p] != ']' && m[p] != '"') {
      if (static_cast<unsigned char>(m[p]) < 33 || static_cast<unsigned char>(m[p]) > 126) return false;
      ++p;
    }
    out = m.substr(start, p - start);
    return !out.empty() && out.size() <= 32;
  };
  if (!sd_name(s.sd_id)) return fail("bad SD-ID");
  for (;;) {
    if (p >= m.size()) return fail("unterminated SD-ELEMENT");
    if (m[p] == ']') {
      ++p;
      break;
    }
    if (m[p] != ' ') return fail("expected SP in SD-ELEMENT");
    ++p;
    std::string name, value;
    if (!sd_name(name)) return fail("bad PARAM-NAME");
    if (m.compare(p, 2, "=\"") != 0) return fail("expected =\"");
    p += 2;
    for (;;) {
      if (p >= m.size()) return fail("unterminated PARAM-VALUE");
      char c = m[p++];
      if (c == '"') break;
      if (c == ']') return fail("unescaped ] in PARAM-VALUE");
      if (c == '\\' && p < m.size() && (m[p] == '"' || m[p] == '\\' || m[p] == ']')) c = m[p++];
      value.push_back(c);
    }
    s.params.emplace(name, value);
  }
  if (p < m.size()) {
    if (m[p] == '[') return fail("more than one SD-ELEMENT");
    if (m[p] != ' ') return fail("expected SP before MSG");
    s.msg = m.substr(p + 1);
  }
  return s;
}

}  // namespace gw::test
