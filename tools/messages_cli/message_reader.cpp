// SPDX-License-Identifier: Apache-2.0
#include "tools/messages_cli/message_reader.h"

#include <ctime>
#include <filesystem>

namespace gw::messages_cli {
namespace {

using fhir::ErrorCode;
using fhir::Issue;

constexpr const char* kColumns =
    "id, source, kind, dedupe_key, lower(hex(content_sha256)), received_ms, updated_ms, status, error, "
    "error_location, patient_id";
constexpr int kReplyColumn = 12, kRawColumn = 13;  // after kColumns and the pending column

MessageRow read_row(const sqlite::Statement& st) {
  MessageRow r;
  r.id = st.column_int64(0);
  r.source = st.column_text(1);
  r.kind = st.column_text(2);
  r.dedupe_key = st.column_text(3);
  r.content_sha256 = st.column_text(4);
  r.received_ms = st.column_int64(5);
  r.updated_ms = st.column_int64(6);
  r.status = st.column_text(7);
  r.error = st.column_text(8);
  r.error_location = st.column_text(9);
  r.patient_id = st.column_text(10);
  r.pending = st.column_int64(11) != 0;
  return r;
}

}  // namespace

std::string MessageReader::columns() const {
  return std::string(kColumns) + (has_pending_ ? ", pending" : ", 0");
}

std::string MessageRow::control_id() const {
  const auto first = dedupe_key.find('|');
  if (first == std::string::npos) return {};
  const auto second = dedupe_key.find('|', first + 1);
  return second == std::string::npos ? std::string() : dedupe_key.substr(second + 1);
}

std::vector<std::string> expand_status(const std::string& name) {
  if (name == "failed") return {"error", "rejected"};
  if (name == "pending") return {"applied"};
  if (name == "applied" || name == "error" || name == "rejected" || name == "replayed" || name == "filtered")
    return {name};
  return {};
}

std::string utc_time(std::int64_t ms, bool iso) {
  const std::time_t t = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[40];
  std::strftime(buf, sizeof buf, iso ? "%Y-%m-%dT%H:%M:%S" : "%Y-%m-%d %H:%M:%S", &tm);
  std::string out = buf;
  if (iso) {
    char frac[8];
    std::snprintf(frac, sizeof frac, ".%03dZ", static_cast<int>(ms % 1000 < 0 ? 0 : ms % 1000));
    out += frac;
  }
  return out;
}

fhir::Result<MessageReader> MessageReader::open(const std::string& data_dir) {
  const std::filesystem::path path = std::filesystem::path(data_dir) / "store.db";
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec))
    return Issue::make(ErrorCode::not_found,
                       "no message store at " + path.string() + " (is --data the gateway's data directory?)");
  auto db = sqlite::Database::open(path.string(), sqlite::Database::Mode::read_only);
  if (!db) return std::move(db).issue();
  auto st = db->prepare("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'message'");
  if (!st) return std::move(st).issue();
  auto row = st->step();
  if (!row) return std::move(row).issue();
  if (!*row || st->column_int64(0) != 1)
    return Issue::make(ErrorCode::not_ready, path.string() +
                                                 " holds no message table: it is not a gateway store, or the gateway "
                                                 "has not started on it yet");
  auto pending = db->prepare("SELECT count(*) FROM pragma_table_info('message') WHERE name = 'pending'");
  if (!pending) return std::move(pending).issue();
  auto has = pending->step();
  if (!has) return std::move(has).issue();
  const bool has_pending = *has && pending->column_int64(0) == 1;
  return MessageReader(std::move(*db), has_pending);
}

fhir::Result<std::vector<MessageRow>> MessageReader::list(const ListQuery& q) {
  std::string sql = "SELECT " + columns() + " FROM message WHERE id > ?1";
  if (!q.source.empty()) sql += " AND source = ?2";
  if (!q.statuses.empty()) {
    sql += " AND status IN (";
    for (std::size_t i = 0; i < q.statuses.size(); ++i)
      sql.append(i ? ", " : "").append("?").append(std::to_string(i + 3));
    sql += ")";
  }
  if (q.pending_only) sql += has_pending_ ? " AND pending = 1" : " AND 0";
  sql += " ORDER BY id LIMIT ?" + std::to_string(q.statuses.size() + 3);
  auto st = db_.prepare(sql);
  if (!st) return std::move(st).issue();
  st->bind(1, q.after_id);
  if (!q.source.empty()) st->bind(2, std::string_view(q.source));
  for (std::size_t i = 0; i < q.statuses.size(); ++i)
    st->bind(static_cast<int>(i + 3), std::string_view(q.statuses[i]));
  st->bind(static_cast<int>(q.statuses.size() + 3), static_cast<std::int64_t>(q.limit));
  std::vector<MessageRow> out;
  for (;;) {
    auto row = st->step();
    if (!row) return std::move(row).issue();
    if (!*row) break;
    out.push_back(read_row(*st));
  }
  return out;
}

fhir::Result<std::optional<MessageRow>> MessageReader::get(std::int64_t id) {
  auto st = db_.prepare("SELECT " + columns() + ", reply, raw FROM message WHERE id = ?1");
  if (!st) return std::move(st).issue();
  st->bind(1, id);
  auto row = st->step();
  if (!row) return std::move(row).issue();
  if (!*row) return std::optional<MessageRow>();
  MessageRow r = read_row(*st);
  r.reply = st->column_blob(kReplyColumn);
  r.raw = st->column_blob(kRawColumn);
  return std::optional<MessageRow>(std::move(r));
}

fhir::Result<MessageStats> MessageReader::stats() {
  MessageStats s;
  auto st = db_.prepare("SELECT source, status, count(*) FROM message GROUP BY source, status");
  if (!st) return std::move(st).issue();
  for (;;) {
    auto row = st->step();
    if (!row) return std::move(row).issue();
    if (!*row) break;
    const std::int64_t n = st->column_int64(2);
    s.by_source[st->column_text(0)][st->column_text(1)] = n;
    s.by_status[st->column_text(1)] += n;
    s.total += n;
  }
  if (has_pending_) {
    auto pending = db_.prepare("SELECT count(*) FROM message WHERE pending = 1");
    if (!pending) return std::move(pending).issue();
    auto row = pending->step();
    if (!row) return std::move(row).issue();
    if (*row) s.pending = pending->column_int64(0);
  }
  auto range = db_.prepare("SELECT min(received_ms), max(received_ms) FROM message");
  if (!range) return std::move(range).issue();
  auto row = range->step();
  if (!row) return std::move(row).issue();
  if (*row && !range->column_is_null(0)) {
    s.oldest_received_ms = range->column_int64(0);
    s.newest_received_ms = range->column_int64(1);
  }
  return s;
}

}  // namespace gw::messages_cli
