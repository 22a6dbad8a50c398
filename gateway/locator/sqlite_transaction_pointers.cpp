// SPDX-License-Identifier: Apache-2.0
// SqliteTransaction's primitives on pointers and source systems (sqlite_transaction.h).
#include "gateway/locator/sqlite_transaction_internal.h"

namespace gw::locator {

fhir::Result<std::optional<Pointer>> SqliteTransaction::pointer(const std::string& id) {
  StatementUse q(st(S::pointer_by_id));
  q->bind(1, id);
  auto row = q->step();
  if (!row) return storage(row.issue());
  if (!*row) return std::optional<Pointer>();
  return std::optional<Pointer>(pointer_from_row(*q));
}

namespace {

void bind_pointer(sqlite::Statement& q, const Pointer& p, std::int64_t patient_pk) {
  q.bind(1, p.id).bind(2, patient_pk).bind(3, p.source_ods).bind(4, p.type_system).bind(5, p.type_code);
  q.bind(6, p.type_display).bind(7, p.category_code).bind(8, p.category_display);
  q.bind(9, join_resource_types(p.resource_types)).bind(10, p.url).bind(11, p.content_type);
  q.bind(12, p.version).bind(13, p.last_updated).bind(14, p.date);
}

}  // namespace

fhir::Status SqliteTransaction::insert_pointer(const Pointer& p) {
  auto pk = pk_of(p.patient_id);
  if (!pk) return std::move(pk).issue();
  StatementUse q(st(S::insert_pointer));
  bind_pointer(*q, p, *pk);
  if (auto r = q->run(); !r) return storage(r.issue());
  return fhir::Ok{};
}

fhir::Result<bool> SqliteTransaction::insert_pointer_if_new(const Pointer& p) {
  auto pk = pk_of(p.patient_id);
  if (!pk) return std::move(pk).issue();
  StatementUse q(st(S::insert_pointer_if_new));
  bind_pointer(*q, p, *pk);
  if (auto r = q->run(); !r) return storage(r.issue());
  return db_.changes() == 1;
}

fhir::Status SqliteTransaction::update_pointer(const Pointer& p) {
  auto pk = pk_of(p.patient_id);
  if (!pk) return std::move(pk).issue();
  StatementUse q(st(S::update_pointer));
  bind_pointer(*q, p, *pk);
  if (auto r = q->run(); !r) return storage(r.issue());
  return fhir::Ok{};
}

fhir::Status SqliteTransaction::delete_pointer(const std::string& id) {
  StatementUse q(st(S::delete_pointer));
  q->bind(1, id);
  if (auto r = q->run(); !r) return storage(r.issue());
  return fhir::Ok{};
}

fhir::Result<std::vector<Pointer>> SqliteTransaction::pointers_of(const std::string& id) {
  StatementUse q(st(S::pointers_of));
  q->bind(1, id);
  std::vector<Pointer> out;
  for (;;) {
    auto row = q->step();
    if (!row) return storage(row.issue());
    if (!*row) return out;
    out.push_back(pointer_from_row(*q));
  }
}

fhir::Status SqliteTransaction::move_pointers(const std::string& from, const std::string& to,
                                              const std::string& now) {
  auto from_pk = pk_of(from);
  if (!from_pk) return std::move(from_pk).issue();
  auto to_pk = pk_of(to);
  if (!to_pk) return std::move(to_pk).issue();
  StatementUse q(st(S::move_pointers));
  q->bind(1, *to_pk).bind(2, *from_pk).bind(3, now);
  if (auto r = q->run(); !r) return storage(r.issue());
  return fhir::Ok{};
}

fhir::Status SqliteTransaction::upsert_source_system(const SourceSystem& s, const std::string& now) {
  StatementUse q(st(S::upsert_source));
  q->bind(1, s.ods_code).bind(2, s.name).bind(3, s.adapter).bind(4, s.endpoint).bind(5, now);
  if (auto r = q->run(); !r) return storage(r.issue());
  return fhir::Ok{};
}

}  // namespace gw::locator
