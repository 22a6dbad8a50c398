// SPDX-License-Identifier: Apache-2.0
#include "gateway/observe/log.h"

#include <unistd.h>

#include <atomic>
#include <chrono>

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include "fhir/date_range.h"

namespace gw::observe {
namespace {

std::atomic<Level> g_level{Level::info};

const char* level_name(Level l) {
  switch (l) {
    case Level::debug: return "debug";
    case Level::info: return "info";
    case Level::warn: return "warn";
    case Level::error: return "error";
  }
  return "info";
}

}  // namespace

void set_level(Level level) { g_level.store(level, std::memory_order_relaxed); }

bool parse_level(std::string_view text, Level& out) {
  if (text == "debug") out = Level::debug;
  else if (text == "info") out = Level::info;
  else if (text == "warn") out = Level::warn;
  else if (text == "error") out = Level::error;
  else return false;
  return true;
}

std::string format_line(Level level, std::string_view msg, std::span<const Field> fields, std::int64_t epoch_ms) {
  rapidjson::StringBuffer buf;
  rapidjson::Writer<rapidjson::StringBuffer> w(buf);
  auto key = [&](std::string_view k) { w.Key(k.data(), static_cast<rapidjson::SizeType>(k.size())); };
  auto str = [&](std::string_view s) { w.String(s.data(), static_cast<rapidjson::SizeType>(s.size())); };
  w.StartObject();
  key("ts");
  str(fhir::format_instant(epoch_ms));
  key("level");
  str(level_name(level));
  key("msg");
  str(msg);
  for (const Field& f : fields) {
    // Empty strings are left out (e.g. no correlation id) to keep lines short and greppable.
    if (auto* s = std::get_if<std::string_view>(&f.value); s && s->empty()) continue;
    key(f.key);
    if (auto* s = std::get_if<std::string_view>(&f.value)) str(*s);
    else if (auto* i = std::get_if<std::int64_t>(&f.value)) w.Int64(*i);
    else if (auto* d = std::get_if<double>(&f.value)) w.Double(*d);
    else w.Bool(std::get<bool>(f.value));
  }
  w.EndObject();
  std::string line(buf.GetString(), buf.GetSize());
  line.push_back('\n');
  return line;
}

std::string format_line(Level level, std::string_view msg, std::initializer_list<Field> fields,
                        std::int64_t epoch_ms) {
  return format_line(level, msg, std::span<const Field>(fields.begin(), fields.size()), epoch_ms);
}

void log(Level level, std::string_view msg, std::span<const Field> fields) {
  if (level < g_level.load(std::memory_order_relaxed)) return;
  auto now = std::chrono::duration_cast<std::chrono::milliseconds>(
                 std::chrono::system_clock::now().time_since_epoch()).count();
  std::string line = format_line(level, msg, fields, now);
  // One write(2) per line: atomic with respect to other writers for lines under PIPE_BUF and
  // in practice for regular files/journald; a short write just drops the rest of the line.
  ssize_t n = ::write(STDERR_FILENO, line.data(), line.size());
  (void)n;
}

void log(Level level, std::string_view msg, std::initializer_list<Field> fields) {
  log(level, msg, std::span<const Field>(fields.begin(), fields.size()));
}

}  // namespace gw::observe
