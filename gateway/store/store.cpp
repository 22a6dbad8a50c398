// SPDX-License-Identifier: Apache-2.0
// Store (see store.h): a GroupWriter owns the read-write connection of store.db; reads lease
// one of a few read-only connections.
#include "gateway/store/store.h"

#include <openssl/evp.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <mutex>

#include "gateway/sqlite/database.h"
#include "gateway/sqlite/group_writer.h"
#include "gateway/sqlite/migrations.h"
#include "gateway/store/schema.h"

namespace gw::store {
namespace {

using fhir::ErrorCode;
using fhir::Issue;
using fhir::Json;

constexpr std::size_t kMaxListLimit = 1000;

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// The open ends of a Period: beyond any date a search names, with room left for
// date_matches' arithmetic.
constexpr std::int64_t kNoStart = INT64_MIN / 2;
constexpr std::int64_t kOngoing = INT64_MAX / 2;

std::optional<fhir::DateRange> date_of(std::string_view text) {
  if (text.empty()) return std::nullopt;
  auto d = fhir::parse_fhir_date(text);
  if (!d) return std::nullopt;
  return *d;
}

// A Period includes the whole of its end value: one ending "2012-02-03" lasts all that day
// (R4 datatypes.html Period).
std::optional<fhir::DateRange> period_range(const Json* period) {
  if (!period || !period->is_object()) return std::nullopt;
  const auto start = date_of(period->string_at("start"));
  const auto end = date_of(period->string_at("end"));
  if (!start && !end) return std::nullopt;
  std::int64_t last = end ? end->end : kOngoing;
  if (start) last = std::max(last, start->end);
  return fhir::DateRange{start ? start->begin : kNoStart, last};
}

// A Timing by its outer limits, its events and repeat.boundsPeriod; which days in between the
// schedule names is not looked at (R4 search.html "date").
std::optional<fhir::DateRange> timing_range(const Json* timing) {
  if (!timing || !timing->is_object()) return std::nullopt;
  std::optional<fhir::DateRange> out;
  auto widen = [&out](const fhir::DateRange& d) {
    out = out ? fhir::DateRange{std::min(out->begin, d.begin), std::max(out->end, d.end)} : d;
  };
  if (const Json* events = timing->find("event"); events && events->is_array())
    for (const Json& e : events->items())
      if (e.is_string())
        if (auto d = date_of(e.text())) widen(*d);
  if (const Json* repeat = timing->find("repeat"); repeat && repeat->is_object())
    if (auto d = period_range(repeat->find("boundsPeriod"))) widen(*d);
  return out;
}

// The codings a `code` search matches: code.coding[] (Observation, DiagnosticReport) or
// type[].coding[] (Encounter).
std::vector<std::pair<std::string, std::string>> codes_of(const Json& r) {
  std::vector<std::pair<std::string, std::string>> out;
  auto add_concept = [&](const Json* cc) {
    if (!cc || !cc->is_object()) return;
    if (const Json* codings = cc->find("coding"); codings && codings->is_array())
      for (const Json& c : codings->items())
        if (c.is_object() && !c.string_at("code").empty())
          out.emplace_back(std::string(c.string_at("system")), std::string(c.string_at("code")));
  };
  add_concept(r.find("code"));
  if (const Json* types = r.find("type"); types && types->is_array())
    for (const Json& t : types->items()) add_concept(&t);
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

std::string status_text(MessageStatus s) { return std::string(status_name(s)); }

StoredMessage message_row(sqlite::Statement& st, bool with_raw) {
  StoredMessage m;
  m.id = st.column_int64(0);
  m.source = st.column_text(1);
  m.kind = st.column_text(2);
  m.dedupe_key = st.column_text(3);
  m.content_sha256 = st.column_blob(4);
  m.received_ms = st.column_int64(5);
  m.updated_ms = st.column_int64(6);
  m.status = parse_status(st.column_text(7)).value_or(MessageStatus::error);
  m.error = st.column_text(8);
  m.error_location = st.column_text(9);
  m.reply = st.column_blob(10);
  m.patient_id = st.column_text(11);
  m.pending = st.column_int64(12) != 0;
  if (with_raw) m.raw = st.column_blob(13);
  return m;
}

constexpr const char* kMessageColumns =
    "id, source, kind, dedupe_key, content_sha256, received_ms, updated_ms, status, error, error_location, reply, "
    "patient_id, pending, raw";

}  // namespace

std::string_view status_name(MessageStatus s) {
  switch (s) {
    case MessageStatus::applied: return "applied";
    case MessageStatus::error: return "error";
    case MessageStatus::rejected: return "rejected";
    case MessageStatus::replayed: return "replayed";
    case MessageStatus::filtered: return "filtered";
  }
  return "error";
}

std::optional<fhir::DateRange> date_index(const Json& r) {
  const std::string_view type = r.string_at("resourceType");
  if (type == "Encounter") return period_range(r.find("period"));
  const bool observation = type == "Observation";
  if (!observation && type != "DiagnosticReport") return std::nullopt;
  if (auto d = date_of(r.string_at("effectiveDateTime"))) return d;
  if (auto d = period_range(r.find("effectivePeriod"))) return d;
  if (!observation) return std::nullopt;  // DiagnosticReport.effective[x] is dateTime or Period
  if (auto d = date_of(r.string_at("effectiveInstant"))) return d;
  return timing_range(r.find("effectiveTiming"));
}

bool carries_coding(const Json& resource, const std::vector<std::pair<std::string, std::string>>& codings) {
  if (codings.empty()) return false;
  // Every node, wherever a source put the coding: a sensitive result is as sensitive in
  // Observation.valueCodeableConcept or Encounter.reasonCode as in code.
  std::vector<const Json*> todo{&resource};
  while (!todo.empty()) {
    const Json* node = todo.back();
    todo.pop_back();
    if (node->is_array()) {
      for (const Json& item : node->items()) todo.push_back(&item);
    } else if (node->is_object()) {
      const Json* system = node->find("system");
      const Json* code = node->find("code");
      if (system && code && system->is_string() && code->is_string()) {
        const bool hit = std::any_of(codings.begin(), codings.end(), [&](const auto& c) {
          return c.first == system->text() && c.second == code->text();
        });
        if (hit) return true;
      }
      for (const auto& member : node->members()) todo.push_back(&member.second);
    }
  }
  return false;
}

std::optional<MessageStatus> parse_status(std::string_view s) {
  for (MessageStatus m : {MessageStatus::applied, MessageStatus::error, MessageStatus::rejected, MessageStatus::replayed,
                          MessageStatus::filtered})
    if (status_name(m) == s) return m;
  return std::nullopt;
}

std::string sha256(std::string_view bytes) {
  unsigned char out[32];
  unsigned int len = 0;
  EVP_Digest(bytes.data(), bytes.size(), out, &len, EVP_sha256(), nullptr);
  return std::string(reinterpret_cast<const char*>(out), len);
}

struct Store::State {
  std::string path;  // store.db, for the retention checkpoint's own connection
  StoreOptions options;
  std::unique_ptr<sqlite::GroupWriter> writer;
  std::vector<sqlite::Database> readers;
  std::vector<sqlite::Database*> idle;
  std::mutex pool_m;
  std::condition_variable pool_cv;

  class Lease {
   public:
    explicit Lease(State& s) : s_(s) {
      std::unique_lock lock(s_.pool_m);
      s_.pool_cv.wait(lock, [&] { return !s_.idle.empty(); });
      db_ = s_.idle.back();
      s_.idle.pop_back();
    }
    ~Lease() {
      {
        std::lock_guard lock(s_.pool_m);
        s_.idle.push_back(db_);
      }
      s_.pool_cv.notify_one();
    }
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    sqlite::Database& db() { return *db_; }

   private:
    State& s_;
    sqlite::Database* db_ = nullptr;
  };
};

Store::Store(std::unique_ptr<State> s) : s_(std::move(s)) {}
Store::~Store() { stop(); }

fhir::Result<std::unique_ptr<Store>> Store::open(const std::string& path, StoreOptions options) {
  auto db = sqlite::Database::open(path);
  if (!db) return std::move(db).issue();
  if (auto v = sqlite::migrate(*db, schema_migrations()); !v) return std::move(v).issue();
  // Retention must really delete: freed pages are overwritten, not left readable.
  if (auto s = db->exec("PRAGMA secure_delete = ON"); !s) return std::move(s).issue();
  auto state = std::make_unique<State>();
  state->options = options;
  state->path = path;
  for (std::size_t i = 0; i < std::max<std::size_t>(1, options.readers); ++i) {
    auto r = sqlite::Database::open(path, sqlite::Database::Mode::read_only);
    if (!r) return std::move(r).issue();
    state->readers.push_back(std::move(*r));
  }
  for (auto& r : state->readers) state->idle.push_back(&r);
  state->writer = std::make_unique<sqlite::GroupWriter>(
      std::move(*db), sqlite::GroupWriterOptions{"store", options.max_batch, options.max_queue});
  return std::unique_ptr<Store>(new Store(std::move(state)));
}

void Store::stop() {
  if (s_ && s_->writer) s_->writer->stop();
}

void Store::inject_commit_failure(bool on) { s_->writer->inject_commit_failure(on); }

sqlite::GroupWriter::Counters Store::writer_counters() const { return s_->writer->counters(); }

namespace {

fhir::Result<std::int64_t> insert_message(sqlite::Database& db, const MessageWrite& m, const std::string& hash,
                                          std::int64_t now) {
  auto st = db.cached(
      "INSERT INTO message(source, kind, dedupe_key, content_sha256, received_ms, updated_ms, status, error, "
      "error_location, reply, patient_id, raw, pending) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)");
  if (!st) return std::move(st).issue();
  st->bind(1, m.source).bind(2, m.kind).bind(3, m.dedupe_key).bind_blob(4, hash.data(), hash.size());
  st->bind(5, m.received_ms ? m.received_ms : now).bind(6, now).bind(7, status_text(m.status));
  st->bind(8, m.error).bind(9, m.error_location).bind_blob(10, m.reply.data(), m.reply.size());
  st->bind(11, m.patient_id).bind_blob(12, m.raw.data(), m.raw.size());
  st->bind(13, static_cast<std::int64_t>(m.pending && m.status == MessageStatus::applied));
  if (auto s = st->run(); !s) return std::move(s).issue();
  return db.last_insert_rowid();
}

// Upserts one resource of message `message_id`; fills meta.versionId and meta.lastUpdated.
fhir::Status put_resource(sqlite::Database& db, Json r, const std::string& patient_id, const std::string& source,
                          const std::vector<std::string>& may_move_from, std::int64_t message_id, std::int64_t now,
                          std::vector<std::string>& stored) {
  const std::string type(r.string_at("resourceType"));
  const std::string id(r.string_at("id"));
  if (type.empty() || id.empty())
    return Issue::make(ErrorCode::invalid_resource, "a delivered resource has no resourceType or id");
  auto existing = db.cached(
      "SELECT source, version, last_updated_ms, patient_id, json FROM resource WHERE type = ? AND id = ?");
  if (!existing) return std::move(existing).issue();
  existing->bind(1, type).bind(2, id);
  auto row = existing->step();
  if (!row) return std::move(row).issue();
  std::int64_t version = 1;
  Json meta = Json::object();
  if (const Json* old = r.find("meta"); old && old->is_object()) meta = *old;
  if (*row) {
    if (existing->column_text(0) != source)
      return Issue::make(ErrorCode::conflict, type + "/" + id + " belongs to another source system", type);
    // A clinical record stays its patient's: another patient's message naming it (a reused
    // visit or order number) is refused, unless a merge explains the move.
    if (const std::string owner = existing->column_text(3);
        r.find("subject") && owner != patient_id &&
        std::find(may_move_from.begin(), may_move_from.end(), owner) == may_move_from.end())
      return Issue::make(ErrorCode::conflict, type + "/" + id + " is another patient's record (a visit or order number is one patient's): not applied",
                         type + "/" + id);
    // The same content again (a ward or clinician named by every message): no new version,
    // as a FHIR server treats an update that changes nothing.
    version = existing->column_int64(1);
    Json same = r;
    Json same_meta = meta;
    same_meta.set("versionId", Json::string(std::to_string(version)));
    same_meta.set("lastUpdated", Json::string(fhir::format_instant(existing->column_int64(2))));
    same.set("meta", std::move(same_meta));
    if (existing->column_text(3) == patient_id && existing->column_blob(4) == fhir::to_json(same)) {
      stored.push_back(type + "/" + id);
      return fhir::Ok{};
    }
    ++version;
  }
  existing->reset();
  meta.set("versionId", Json::string(std::to_string(version)));
  meta.set("lastUpdated", Json::string(fhir::format_instant(now)));
  r.set("meta", std::move(meta));
  const auto date = date_index(r);
  const std::string json = fhir::to_json(r);
  auto put = db.cached(
      "INSERT INTO resource(type, id, patient_id, source, version, last_updated_ms, date_begin, date_end, message_id, "
      "json) VALUES (?,?,?,?,?,?,?,?,?,?) ON CONFLICT(type, id) DO UPDATE SET patient_id = excluded.patient_id, "
      "version = excluded.version, last_updated_ms = excluded.last_updated_ms, date_begin = excluded.date_begin, "
      "date_end = excluded.date_end, message_id = excluded.message_id, json = excluded.json");
  if (!put) return std::move(put).issue();
  put->bind(1, type).bind(2, id).bind(3, patient_id).bind(4, source).bind(5, version).bind(6, now);
  if (date) put->bind(7, date->begin).bind(8, date->end);
  else put->bind_null(7).bind_null(8);
  put->bind(9, message_id).bind_blob(10, json.data(), json.size());
  if (auto s = put->run(); !s) return s;
  auto clear = db.cached("DELETE FROM resource_code WHERE type = ? AND id = ?");
  if (!clear) return std::move(clear).issue();
  clear->bind(1, type).bind(2, id);
  if (auto s = clear->run(); !s) return s;
  for (const auto& [system, code] : codes_of(r)) {
    auto c = db.cached("INSERT OR IGNORE INTO resource_code(type, id, system, code) VALUES (?,?,?,?)");
    if (!c) return std::move(c).issue();
    c->bind(1, type).bind(2, id).bind(3, system).bind(4, code);
    if (auto s = c->run(); !s) return s;
  }
  stored.push_back(type + "/" + id);
  return fhir::Ok{};
}

}  // namespace

void Store::apply(MessageWrite message, std::vector<fhir::Json> resources,
                  std::function<void(fhir::Result<ApplyResult>)> done) {
  auto result = std::make_shared<ApplyResult>();
  auto body = [result, m = std::move(message), rs = std::move(resources)](sqlite::Database& db) -> fhir::Status {
    const std::int64_t now = now_ms();
    const std::string hash = m.content_sha256.empty() ? sha256(m.raw) : m.content_sha256;
    MessageWrite row = m;
    row.status = MessageStatus::applied;
    auto id = insert_message(db, row, hash, now);
    if (!id) return std::move(id).issue();
    result->message_id = *id;
    for (const Json& r : rs)
      if (auto s = put_resource(db, r, m.patient_id, m.source, m.subject_may_move_from, *id, now, result->stored); !s) return s;
    if (!m.dedupe_key.empty()) {
      auto replayed = db.cached(
          "UPDATE message SET status = 'replayed', updated_ms = ? WHERE source = ? AND dedupe_key = ? AND "
          "content_sha256 = ? AND status IN ('error', 'rejected', 'filtered')");
      if (!replayed) return std::move(replayed).issue();
      replayed->bind(1, now).bind(2, m.source).bind(3, m.dedupe_key).bind_blob(4, hash.data(), hash.size());
      if (auto s = replayed->run(); !s) return s;
    }
    return fhir::Ok{};
  };
  s_->writer->submit(std::move(body), [result, done = std::move(done)](fhir::Status st) {
    if (!st) return done(std::move(st).issue());
    done(std::move(*result));
  });
}

void Store::confirm(std::int64_t message_id, std::function<void(fhir::Status)> done) {
  auto body = [message_id](sqlite::Database& db) -> fhir::Status {
    auto st = db.cached("UPDATE message SET pending = 0, updated_ms = ? WHERE id = ? AND pending = 1");
    if (!st) return std::move(st).issue();
    st->bind(1, now_ms()).bind(2, message_id);
    return st->run();
  };
  // Nobody waits on it (the unit is acknowledged): it rides in the next message's commit
  // instead of costing a commit and a sync of its own.
  s_->writer->submit_deferrable(std::move(body), std::move(done));
}

void Store::record(MessageWrite message, std::function<void(fhir::Result<std::int64_t>)> done) {
  if (message.status == MessageStatus::applied || message.status == MessageStatus::replayed)
    return done(Issue::make(ErrorCode::internal_error, "record() stores failed messages only"));
  auto id = std::make_shared<std::int64_t>(0);
  auto body = [id, m = std::move(message)](sqlite::Database& db) -> fhir::Status {
    const std::string hash = m.content_sha256.empty() ? sha256(m.raw) : m.content_sha256;
    const std::int64_t now = now_ms();
    // The same unit failing again (a sender's resend, a gw-messages replay before the fix)
    // updates its failed row: one row per message, with the latest outcome, so a list of
    // errors does not grow with every attempt. received_ms keeps the first arrival; the
    // audit log holds every attempt.
    auto prior = db.cached(
        "SELECT id FROM message WHERE source = ? AND dedupe_key = ? AND content_sha256 = ? AND "
        "status IN ('error', 'rejected', 'filtered') ORDER BY id DESC LIMIT 1");
    if (!prior) return std::move(prior).issue();
    prior->bind(1, m.source).bind(2, m.dedupe_key).bind_blob(3, hash.data(), hash.size());
    auto found = prior->step();
    if (!found) return std::move(found).issue();
    if (*found) {
      const std::int64_t prior_id = prior->column_int64(0);
      prior->reset();
      auto update = db.cached(
          "UPDATE message SET kind = ?, status = ?, error = ?, error_location = ?, reply = ?, updated_ms = ? "
          "WHERE id = ?");
      if (!update) return std::move(update).issue();
      update->bind(1, m.kind).bind(2, status_text(m.status)).bind(3, m.error).bind(4, m.error_location);
      update->bind_blob(5, m.reply.data(), m.reply.size()).bind(6, now).bind(7, prior_id);
      if (auto st = update->run(); !st) return st;
      *id = prior_id;
      return fhir::Ok{};
    }
    prior->reset();
    auto row = insert_message(db, m, hash, now);
    if (!row) return std::move(row).issue();
    *id = *row;
    return fhir::Ok{};
  };
  s_->writer->submit(std::move(body), [id, done = std::move(done)](fhir::Status st) {
    if (!st) return done(std::move(st).issue());
    done(*id);
  });
}

fhir::Result<Store::ResendCheck> Store::resend_check(const std::string& source, const std::string& key,
                                                     const std::string& hash) {
  // One read on the ingest path: the applied messages with this key (few: a key is reused
  // only by faulty senders, and the unique index allows one row per content), compared here.
  State::Lease lease(*s_);
  auto st = lease.db().cached(std::string("SELECT ") + kMessageColumns +
                              " FROM message WHERE source = ? AND dedupe_key = ? AND status = 'applied' "
                              "ORDER BY id LIMIT 1000");
  if (!st) return std::move(st).issue();
  st->bind(1, source).bind(2, key);
  ResendCheck out;
  for (;;) {
    auto row = st->step();
    if (!row) return std::move(row).issue();
    if (!*row) break;
    out.key_seen = true;
    if (st->column_blob(4) == hash) {
      out.applied = message_row(*st, false);
      break;
    }
  }
  return out;
}

fhir::Result<std::vector<Store::Holder>> Store::holders(const std::vector<fhir::Json>& resources) {
  std::vector<Holder> out;
  if (resources.empty()) return out;
  State::Lease lease(*s_);
  auto st = lease.db().cached("SELECT source, patient_id FROM resource WHERE type = ? AND id = ?");
  if (!st) return std::move(st).issue();
  for (const Json& r : resources) {
    const std::string type(r.string_at("resourceType"));
    const std::string id(r.string_at("id"));
    st->reset();
    st->bind(1, type).bind(2, id);
    auto row = st->step();
    if (!row) return std::move(row).issue();
    if (*row) out.push_back(Holder{type + "/" + id, st->column_text(0), st->column_text(1)});
  }
  return out;
}

fhir::Result<std::optional<StoredMessage>> Store::find_applied(const std::string& source, const std::string& key,
                                                               const std::string& hash) {
  auto r = resend_check(source, key, hash);
  if (!r) return std::move(r).issue();
  return std::move(r->applied);
}

fhir::Result<bool> Store::key_reused(const std::string& source, const std::string& key) {
  auto r = resend_check(source, key, {});
  if (!r) return std::move(r).issue();
  return r->key_seen;
}

fhir::Result<std::optional<StoredMessage>> Store::message(std::int64_t id) {
  State::Lease lease(*s_);
  auto st = lease.db().prepare(std::string("SELECT ") + kMessageColumns + " FROM message WHERE id = ?");
  if (!st) return std::move(st).issue();
  st->bind(1, id);
  auto row = st->step();
  if (!row) return std::move(row).issue();
  if (!*row) return std::optional<StoredMessage>();
  return std::optional<StoredMessage>(message_row(*st, true));
}

fhir::Result<std::vector<StoredMessage>> Store::list_messages(const MessageQuery& q) {
  State::Lease lease(*s_);
  std::string sql = std::string("SELECT ") + kMessageColumns + " FROM message WHERE id > ?";
  if (q.status) sql += " AND status = ?";
  if (!q.source.empty()) sql += " AND source = ?";
  if (q.pending_only) sql += " AND pending = 1";  // the partial index message_pending
  sql += " ORDER BY id LIMIT ?";
  auto st = lease.db().cached(sql);
  if (!st) return std::move(st).issue();
  int i = 1;
  st->bind(i++, q.after_id);
  if (q.status) st->bind(i++, status_text(*q.status));
  if (!q.source.empty()) st->bind(i++, q.source);
  st->bind(i, static_cast<std::int64_t>(std::min(q.limit, kMaxListLimit)));
  std::vector<StoredMessage> out;
  for (;;) {
    auto row = st->step();
    if (!row) return std::move(row).issue();
    if (!*row) break;
    out.push_back(message_row(*st, false));
  }
  return out;
}

fhir::Result<Store::MessageCounts> Store::message_counts() {
  State::Lease lease(*s_);
  auto st = lease.db().prepare("SELECT status, count(*) FROM message GROUP BY status");
  if (!st) return std::move(st).issue();
  MessageCounts c;
  for (;;) {
    auto row = st->step();
    if (!row) return std::move(row).issue();
    if (!*row) break;
    const auto s = parse_status(st->column_text(0));
    const std::int64_t n = st->column_int64(1);
    if (s == MessageStatus::applied) c.applied = n;
    else if (s == MessageStatus::error) c.error = n;
    else if (s == MessageStatus::rejected) c.rejected = n;
    else if (s == MessageStatus::replayed) c.replayed = n;
    else if (s == MessageStatus::filtered) c.filtered = n;
  }
  return c;
}

fhir::Result<std::int64_t> Store::pending_count() {
  State::Lease lease(*s_);
  auto st = lease.db().prepare("SELECT count(*) FROM message WHERE pending = 1");
  if (!st) return std::move(st).issue();
  auto row = st->step();
  if (!row) return std::move(row).issue();
  return *row ? st->column_int64(0) : std::int64_t{0};
}

fhir::Result<std::optional<StoredResource>> Store::read(const std::string& type, const std::string& id) {
  State::Lease lease(*s_);
  auto st = lease.db().cached(
      "SELECT type, id, patient_id, source, version, last_updated_ms, json FROM resource WHERE type = ? AND id = ?");
  if (!st) return std::move(st).issue();
  st->bind(1, type).bind(2, id);
  auto row = st->step();
  if (!row) return std::move(row).issue();
  if (!*row) return std::optional<StoredResource>();
  return std::optional<StoredResource>(StoredResource{st->column_text(0), st->column_text(1), st->column_text(2),
                                                      st->column_text(3), st->column_int64(4), st->column_int64(5),
                                                      st->column_blob(6)});
}

fhir::Result<ResourcePage> Store::search(const ResourceQuery& q) {
  ResourcePage page;
  if (q.patient_ids.empty()) return page;
  State::Lease lease(*s_);
  std::string sql =
      "SELECT r.type, r.id, r.patient_id, r.source, r.version, r.last_updated_ms, r.json, r.date_begin, r.date_end "
      "FROM resource r WHERE r.type = ? AND r.patient_id IN (";
  for (std::size_t i = 0; i < q.patient_ids.size(); ++i) sql += i ? ",?" : "?";
  sql += ")";
  // One EXISTS per code= parameter (ANDed), its values ORed inside it.
  for (const auto& alternatives : q.codes) {
    sql += " AND EXISTS (SELECT 1 FROM resource_code c WHERE c.type = r.type AND c.id = r.id AND (";
    for (std::size_t i = 0; i < alternatives.size(); ++i) {
      if (i) sql += " OR ";
      // A coding without a system is indexed with system '' (codes_of), which |code asks for.
      const CodeMatch& m = alternatives[i];
      sql += !m.system ? "(c.code = ?)" : m.code.empty() ? "(c.system = ?)" : "(c.code = ? AND c.system = ?)";
    }
    if (alternatives.empty()) sql += "0";  // a parameter with no value matches nothing
    sql += "))";
  }
  sql += " ORDER BY r.date_begin DESC NULLS LAST, r.id LIMIT ?";
  auto st = lease.db().cached(sql);  // a few shapes (patients merged, codes given): parsed once
  if (!st) return std::move(st).issue();
  int i = 1;
  st->bind(i++, q.type);
  for (const auto& p : q.patient_ids) st->bind(i++, p);
  for (const auto& alternatives : q.codes) {
    for (const auto& c : alternatives) {
      if (!c.system || !c.code.empty()) st->bind(i++, c.code);
      if (c.system) st->bind(i++, *c.system);
    }
  }
  st->bind(i, static_cast<std::int64_t>(s_->options.max_scan + 1));
  const std::int64_t now_s = now_ms() / 1000;
  // Each withheld code as it appears in the stored text (written by fhir::to_json, with the
  // same escapes): a row whose text holds none of them cannot carry one, and is not parsed.
  std::vector<std::string> withheld_text;
  for (const auto& wc : q.withheld_codings) {
    withheld_text.emplace_back();
    fhir::append_json_string(withheld_text.back(), wc.second);
  }
  std::size_t scanned = 0;
  for (;;) {
    auto row = st->step();
    if (!row) return std::move(row).issue();
    if (!*row) break;
    if (++scanned > s_->options.max_scan) {
      page.truncated = true;
      break;
    }
    if (!q.dates.empty()) {
      if (st->column_is_null(7)) continue;  // no clinical date: matches no date parameter
      const fhir::DateRange target{st->column_int64(7), st->column_int64(8)};
      bool all = true;
      for (const auto& [prefix, range] : q.dates) all = all && fhir::date_matches(prefix, range, target, now_s);
      if (!all) continue;
    }
    if (!withheld_text.empty()) {
      const std::string text = st->column_blob(6);
      const bool maybe = std::any_of(withheld_text.begin(), withheld_text.end(),
                                     [&text](const std::string& w) { return text.find(w) != std::string::npos; });
      if (maybe) {
        auto json = fhir::parse_json(text);
        // Written by us; one that no longer parses is withheld rather than shown unchecked.
        if (!json || carries_coding(*json, q.withheld_codings)) {
          page.withheld.push_back(st->column_text(0) + "/" + st->column_text(1));
          continue;
        }
      }
    }
    ++page.total;
    if (page.total <= static_cast<std::int64_t>(q.offset) ||
        page.items.size() >= q.count)
      continue;
    page.items.push_back(StoredResource{st->column_text(0), st->column_text(1), st->column_text(2), st->column_text(3),
                                        st->column_int64(4), st->column_int64(5), st->column_blob(6)});
  }
  return page;
}

fhir::Result<Store::MessagePrune> Store::prune_messages_before(std::int64_t cutoff_ms) {
  auto counted = std::make_shared<MessagePrune>();
  fhir::Status s = s_->writer->run([counted, cutoff_ms](sqlite::Database& db) -> fhir::Status {
    // What goes, in the same transaction as the delete: an errored message never replayed (or
    // a pending one) leaves with its id on the record, so nobody finds it missing unexplained.
    auto by_status = db.prepare(
        "SELECT status, count(*), sum(pending) FROM message WHERE received_ms < ?1 GROUP BY status");
    if (!by_status) return std::move(by_status).issue();
    by_status->bind(1, cutoff_ms);
    MessagePrune& out = *counted = MessagePrune{};  // a batch that is retried runs this again
    for (;;) {
      auto row = by_status->step();
      if (!row) return std::move(row).issue();
      if (!*row) break;
      const std::int64_t n = by_status->column_int64(1);
      switch (parse_status(by_status->column_text(0)).value_or(MessageStatus::rejected)) {
        case MessageStatus::applied: out.applied += n; break;
        case MessageStatus::replayed: out.replayed += n; break;
        case MessageStatus::error: out.errored += n; break;
        case MessageStatus::rejected: out.rejected += n; break;
        case MessageStatus::filtered: out.filtered += n; break;
      }
      out.pending += by_status->column_int64(2);
    }
    auto unfinished = db.prepare(
        "SELECT id FROM message WHERE received_ms < ?1 AND (status = 'error' OR pending = 1) ORDER BY id LIMIT ?2");
    if (!unfinished) return std::move(unfinished).issue();
    unfinished->bind(1, cutoff_ms).bind(2, static_cast<std::int64_t>(kPrunedIdsListed));
    for (;;) {
      auto row = unfinished->step();
      if (!row) return std::move(row).issue();
      if (!*row) break;
      out.unfinished.push_back(unfinished->column_int64(0));
    }
    auto st = db.prepare("DELETE FROM message WHERE received_ms < ?");
    if (!st) return std::move(st).issue();
    st->bind(1, cutoff_ms);
    if (auto r = st->run(); !r) return r;
    out.messages = db.changes();
    return fhir::Ok{};
  });
  if (!s) return std::move(s).issue();
  MessagePrune out = std::move(*counted);
  // The writer's zeroed pages are in the WAL; the database file, and the WAL's frames from
  // when the messages were written, still hold the text until a checkpoint, which SQLite
  // runs only when the WAL reaches 1000 pages. TRUNCATE copies every frame back and empties
  // the WAL. It runs on a connection of its own because the writer's jobs run inside its
  // batch transaction, where a checkpoint cannot.
  auto db = sqlite::Database::open(s_->path);
  if (!db) return std::move(db).issue();
  auto st = db->prepare("PRAGMA wal_checkpoint(TRUNCATE)");
  if (!st) return std::move(st).issue();
  auto row = st->step();
  if (!row) return std::move(row).issue();
  out.wal_checkpointed = *row && st->column_int64(0) == 0;  // column 0: busy
  return out;
}

}  // namespace gw::store
