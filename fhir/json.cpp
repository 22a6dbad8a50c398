// SPDX-License-Identifier: Apache-2.0
#include "fhir/json.h"

#include <cstdint>
#include <cstring>

#include <algorithm>
#include <charconv>

#include <rapidjson/error/en.h>
#include <rapidjson/memorystream.h>
#include <rapidjson/prettywriter.h>
#include <rapidjson/reader.h>
#include <rapidjson/writer.h>

namespace fhir {

Json Json::boolean(bool b) {
  Json j;
  j.kind_ = Kind::boolean;
  j.bool_ = b;
  return j;
}

Json Json::integer(std::int64_t n) {
  Json j;
  j.kind_ = Kind::number;
  j.text_ = std::to_string(n);
  return j;
}

namespace {

// RFC 8259 section 6: -? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?
bool is_json_number(std::string_view s) {
  std::size_t i = 0;
  auto digit = [&](std::size_t k) { return k < s.size() && s[k] >= '0' && s[k] <= '9'; };
  if (i < s.size() && s[i] == '-') ++i;
  if (!digit(i)) return false;
  if (s[i] == '0') {
    ++i;
  } else {
    while (digit(i)) ++i;
  }
  if (i < s.size() && s[i] == '.') {
    ++i;
    if (!digit(i)) return false;
    while (digit(i)) ++i;
  }
  if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
    ++i;
    if (i < s.size() && (s[i] == '+' || s[i] == '-')) ++i;
    if (!digit(i)) return false;
    while (digit(i)) ++i;
  }
  return i == s.size();
}

}  // namespace

std::optional<Json> Json::decimal(std::string_view text) {
  if (!is_json_number(text)) return std::nullopt;
  Json j;
  j.kind_ = Kind::number;
  j.text_ = std::string(text);
  return j;
}

Json Json::string(std::string s) {
  Json j;
  j.kind_ = Kind::string;
  j.text_ = std::move(s);
  return j;
}

Json Json::array() {
  Json j;
  j.kind_ = Kind::array;
  return j;
}

Json Json::object() {
  Json j;
  j.kind_ = Kind::object;
  return j;
}

std::optional<std::int64_t> Json::as_int64() const {
  if (kind_ != Kind::number) return std::nullopt;
  std::int64_t v = 0;
  const char* first = text_.data();
  const char* last = first + text_.size();
  auto [p, ec] = std::from_chars(first, last, v);
  if (ec != std::errc() || p != last) return std::nullopt;
  return v;
}

const Json* Json::find(std::string_view key) const {
  for (const Member& m : members_)
    if (m.first == key) return &m.second;
  return nullptr;
}

Json* Json::find(std::string_view key) {
  for (Member& m : members_)
    if (m.first == key) return &m.second;
  return nullptr;
}

std::string_view Json::string_at(std::string_view key) const {
  const Json* v = find(key);
  return v && v->is_string() ? std::string_view(v->text_) : std::string_view();
}

void Json::set(std::string key, Json v) {
  if (kind_ != Kind::object) {
    *this = object();
  }
  if (Json* existing = find(key)) {
    *existing = std::move(v);
    return;
  }
  // Objects built member by member (resources, bundles) mostly hold a handful of members:
  // start with room for eight rather than growing through 1, 2 and 4.
  if (members_.empty()) members_.reserve(8);
  members_.emplace_back(std::move(key), std::move(v));
}

bool Json::erase(std::string_view key) {
  auto it = std::find_if(members_.begin(), members_.end(),
                         [&](const Member& m) { return m.first == key; });
  if (it == members_.end()) return false;
  members_.erase(it);
  return true;
}

bool operator==(const Json& a, const Json& b) {
  return a.kind_ == b.kind_ && a.bool_ == b.bool_ && a.text_ == b.text_ && a.items_ == b.items_ &&
         a.members_ == b.members_;
}

// SAX handler that builds the tree with an explicit stack, so depth costs heap, not C stack.
class JsonBuilder {
 public:
  explicit JsonBuilder(const JsonLimits& limits) : limits_(limits) {}

  bool Null() { return add(Json()); }
  bool Bool(bool b) { return add(Json::boolean(b)); }
  // With kParseNumbersAsStringsFlag every number arrives through RawNumber; these are
  // required by the handler concept only.
  bool Int(int i) { return add(Json::integer(i)); }
  bool Uint(unsigned u) { return add(Json::integer(u)); }
  bool Int64(std::int64_t i) { return add(Json::integer(i)); }
  bool Uint64(std::uint64_t u) { return RawNumber(std::to_string(u).c_str(), 0, false); }
  bool Double(double) { return fail("unexpected binary number"); }
  bool RawNumber(const char* str, rapidjson::SizeType len, bool) {
    Json j;
    j.kind_ = Json::Kind::number;
    j.text_.assign(str, len);
    return add(std::move(j));
  }
  bool String(const char* str, rapidjson::SizeType len, bool) {
    return add(Json::string(std::string(str, len)));
  }
  bool StartObject() { return open(Json::object()); }
  bool Key(const char* str, rapidjson::SizeType len, bool) {
    keys_.emplace_back(str, len);
    return true;
  }
  bool EndObject(rapidjson::SizeType) {
    if (!unique_keys(stack_.back())) return false;
    return close();
  }
  bool StartArray() { return open(Json::array()); }
  bool EndArray(rapidjson::SizeType) { return close(); }

  Json take_root() { return std::move(root_); }
  const std::string& error() const { return error_; }

 private:
  bool fail(std::string why) {
    error_ = std::move(why);
    return false;
  }

  bool open(Json container) {
    if (stack_.size() >= limits_.max_depth)
      return fail("JSON nesting deeper than " + std::to_string(limits_.max_depth) + " levels");
    stack_.push_back(std::move(container));
    return true;
  }

  bool close() {
    Json done = std::move(stack_.back());
    stack_.pop_back();
    return add(std::move(done));
  }

  bool add(Json v) {
    if (stack_.empty()) {
      root_ = std::move(v);
      return true;
    }
    Json& top = stack_.back();
    if (top.size() >= limits_.max_members)
      return fail("JSON object or array with more than " + std::to_string(limits_.max_members) +
                  " members");
    if (top.is_array()) {
      top.items_.push_back(std::move(v));
    } else {
      top.members_.emplace_back(std::move(keys_.back()), std::move(v));
      keys_.pop_back();
    }
    return true;
  }

  // FHIR R4 json.html: "no duplicate keys". Sorting a view is O(n log n) even for hostile
  // objects with very many members.
  bool unique_keys(const Json& obj) {
    const auto& m = obj.members_;
    if (m.size() < 2) return true;
    std::vector<std::string_view> keys;
    keys.reserve(m.size());
    for (const auto& kv : m) keys.emplace_back(kv.first);
    std::sort(keys.begin(), keys.end());
    auto dup = std::adjacent_find(keys.begin(), keys.end());
    if (dup == keys.end()) return true;
    return fail("duplicate JSON key \"" + std::string(dup->substr(0, 64)) + "\"");
  }

  const JsonLimits& limits_;
  std::vector<Json> stack_;
  std::vector<std::string> keys_;
  Json root_;
  std::string error_;
};

Result<Json> parse_json(std::string_view text, const JsonLimits& limits) {
  if (text.size() > limits.max_bytes)
    return Issue::make(ErrorCode::payload_too_large,
                       "JSON body of " + std::to_string(text.size()) + " bytes exceeds the limit of " +
                           std::to_string(limits.max_bytes) + " bytes");
  JsonBuilder builder(limits);
  rapidjson::MemoryStream ms(text.data(), text.size());
  rapidjson::Reader reader;
  constexpr unsigned kFlags = rapidjson::kParseValidateEncodingFlag | rapidjson::kParseIterativeFlag |
                              rapidjson::kParseNumbersAsStringsFlag;
  rapidjson::ParseResult ok = reader.Parse<kFlags>(ms, builder);
  if (!ok) {
    std::string why = builder.error().empty() ? rapidjson::GetParseError_En(ok.Code()) : builder.error();
    if (!why.empty() && why.back() == '.') why.pop_back();
    return Issue::make(ErrorCode::invalid_json,
                       "Body is not valid JSON: " + why + " at byte offset " + std::to_string(ok.Offset()));
  }
  return builder.take_root();
}

namespace {

// rapidjson output stream appending to a std::string without an intermediate buffer copy.
struct StringSink {
  using Ch = char;
  std::string& out;
  void Put(char c) { out.push_back(c); }
  void Flush() {}
};

template <class Writer>
void write(const Json& v, Writer& w) {
  switch (v.kind()) {
    case Json::Kind::null: w.Null(); break;
    case Json::Kind::boolean: w.Bool(v.as_bool()); break;
    case Json::Kind::number:
      w.RawValue(v.text().data(), v.text().size(), rapidjson::kNumberType);
      break;
    case Json::Kind::string:
      w.String(v.text().data(), static_cast<rapidjson::SizeType>(v.text().size()));
      break;
    case Json::Kind::array:
      w.StartArray();
      for (const Json& item : v.items()) write(item, w);
      w.EndArray();
      break;
    case Json::Kind::object:
      w.StartObject();
      for (const auto& [key, value] : v.members()) {
        w.Key(key.data(), static_cast<rapidjson::SizeType>(key.size()));
        write(value, w);
      }
      w.EndObject();
      break;
  }
}

}  // namespace

namespace {

// True when any of the 8 bytes at `p` is a control character, '"' or '\\' (the classic
// "has zero byte" bit trick on the word and on its XOR with each special byte).
bool needs_escape8(const char* p) {
  std::uint64_t w;
  std::memcpy(&w, p, 8);
  constexpr std::uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
  const auto zero_byte = [](std::uint64_t v) { return (v - ones) & ~v & highs; };
  const std::uint64_t below_space = (w - ones * 0x20) & ~w & highs;
  return (below_space | zero_byte(w ^ (ones * '"')) | zero_byte(w ^ (ones * '\\'))) != 0;
}

// Whether any byte of d[0, n) needs an escape, in words of eight: the last word overlaps
// the one before it, and a string shorter than eight is padded with a plain byte.
bool needs_escape(const char* d, std::size_t n) {
  if (n < 8) {
    char pad[8] = {'a', 'a', 'a', 'a', 'a', 'a', 'a', 'a'};
    std::memcpy(pad, d, n);
    return needs_escape8(pad);
  }
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8)
    if (needs_escape8(d + i)) return true;
  return i < n && needs_escape8(d + n - 8);
}

// The contents of a JSON string for `s`, with the escapes RapidJSON's Writer uses (\" \\ \b
// \f \n \r \t, other control characters as \u00XX, upper-case hex; every other byte, UTF-8
// included, unchanged), given to `raw` in runs.
template <class Raw>
void append_escaped(std::string_view s, Raw&& raw) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::size_t run = 0;
  for (std::size_t i = 0; i < s.size(); ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c != '"' && c != '\\') continue;
    raw(s.data() + run, i - run);
    run = i + 1;
    switch (c) {
      case '"': raw("\\\"", 2); break;
      case '\\': raw("\\\\", 2); break;
      case '\b': raw("\\b", 2); break;
      case '\f': raw("\\f", 2); break;
      case '\n': raw("\\n", 2); break;
      case '\r': raw("\\r", 2); break;
      case '\t': raw("\\t", 2); break;
      default: {
        const char u[] = {'\\', 'u', '0', '0', kHex[c >> 4], kHex[c & 0xF]};
        raw(u, sizeof u);
      }
    }
  }
  raw(s.data() + run, s.size() - run);
}

// Appends into a std::string through a raw cursor: the string is grown ahead (amortised
// doubling) and cut to the written size at the end, so each byte or run is a plain store or
// memcpy rather than a push_back or append call that checks the capacity.
class CompactWriter {
 public:
  explicit CompactWriter(std::string& out) : out_(out), p_(out.data()), size_(out.size()), cap_(out.size()) {}
  ~CompactWriter() { out_.resize(size_); }
  CompactWriter(const CompactWriter&) = delete;
  CompactWriter& operator=(const CompactWriter&) = delete;

  void value(const Json& v) {
    switch (v.kind()) {
      case Json::Kind::null: raw("null", 4); break;
      case Json::Kind::boolean: v.as_bool() ? raw("true", 4) : raw("false", 5); break;
      case Json::Kind::number: raw(v.text().data(), v.text().size()); break;
      case Json::Kind::string: string(v.text()); break;
      case Json::Kind::array: {
        byte('[');
        bool first = true;
        for (const Json& item : v.items()) {
          if (!first) byte(',');
          first = false;
          value(item);
        }
        byte(']');
        break;
      }
      case Json::Kind::object: {
        byte('{');
        bool first = true;
        for (const auto& [key, member] : v.members()) {
          if (!first) byte(',');
          first = false;
          string(key);
          byte(':');
          value(member);
        }
        byte('}');
        break;
      }
    }
  }

 private:
  void string(std::string_view s) {
    reserve(s.size() + 2);
    p_[size_++] = '"';
    if (!needs_escape(s.data(), s.size())) {
      std::memcpy(p_ + size_, s.data(), s.size());
      size_ += s.size();
    } else {
      append_escaped(s, [this](const char* p, std::size_t n) { raw(p, n); });
    }
    byte('"');
  }

  [[gnu::always_inline]] void reserve(std::size_t n) {
    if (n > cap_ - size_) grow(n);
  }
  [[gnu::noinline]] void grow(std::size_t n) {
    out_.resize(std::max<std::size_t>(size_ + n, std::max<std::size_t>(256, cap_ * 2)));
    p_ = out_.data();
    cap_ = out_.size();
  }
  [[gnu::always_inline]] void byte(char c) {
    if (size_ == cap_) grow(1);
    p_[size_++] = c;
  }
  [[gnu::always_inline]] void raw(const char* p, std::size_t n) {
    reserve(n);
    std::memcpy(p_ + size_, p, n);
    size_ += n;
  }

  std::string& out_;
  char* p_;
  std::size_t size_, cap_;
};

}  // namespace

void append_json_string(std::string& out, std::string_view s) {
  out.reserve(out.size() + s.size() + 2);
  out.push_back('"');
  if (!needs_escape(s.data(), s.size())) out.append(s);
  else append_escaped(s, [&out](const char* p, std::size_t n) { out.append(p, n); });
  out.push_back('"');
}

void append_json(const Json& value, std::string& out, bool pretty) {
  if (!pretty) {
    CompactWriter(out).value(value);
    return;
  }
  StringSink sink{out};
  rapidjson::PrettyWriter<StringSink> w(sink);
  w.SetIndent(' ', 2);
  write(value, w);
}

std::string to_json(const Json& value, bool pretty) {
  std::string out;
  append_json(value, out, pretty);
  return out;
}

}  // namespace fhir
