// SPDX-License-Identifier: Apache-2.0
// Structured operational logs: one JSON object per line on stderr. Never give it patient data
// (names, NHS numbers, identifiers) or token material: the audit store is the only home for
// PHI. Every request-scoped line carries request_id (and correlation_id when present).
#pragma once

#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>
#include <string_view>
#include <variant>

namespace gw::observe {

enum class Level { debug, info, warn, error };

struct Field {
  std::string_view key;
  std::variant<std::string_view, std::int64_t, double, bool> value;
  Field(std::string_view k, std::string_view v) : key(k), value(v) {}
  Field(std::string_view k, const char* v) : key(k), value(std::string_view(v)) {}
  Field(std::string_view k, const std::string& v) : key(k), value(std::string_view(v)) {}
  Field(std::string_view k, std::int64_t v) : key(k), value(v) {}
  Field(std::string_view k, int v) : key(k), value(static_cast<std::int64_t>(v)) {}
  Field(std::string_view k, unsigned v) : key(k), value(static_cast<std::int64_t>(v)) {}
  Field(std::string_view k, std::uint64_t v) : key(k), value(static_cast<std::int64_t>(v)) {}
  Field(std::string_view k, double v) : key(k), value(v) {}
  Field(std::string_view k, bool v) : key(k), value(v) {}
};

// Sets the minimum level written (default info). Thread-safe.
void set_level(Level level);
bool parse_level(std::string_view text, Level& out);

// Writes {"ts":..., "level":..., "msg":..., <fields>} as one line. Thread-safe; a line is
// written with a single write(2) so lines from different threads never interleave. The span
// form is for fields built at run time (an adapter's, gateway/app.cpp); both write the same.
void log(Level level, std::string_view msg, std::span<const Field> fields);
void log(Level level, std::string_view msg, std::initializer_list<Field> fields = {});

// Formats one log line without writing it (used by log() and by tests).
std::string format_line(Level level, std::string_view msg, std::span<const Field> fields, std::int64_t epoch_ms);
std::string format_line(Level level, std::string_view msg, std::initializer_list<Field> fields,
                        std::int64_t epoch_ms);

}  // namespace gw::observe
