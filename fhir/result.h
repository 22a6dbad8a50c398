// SPDX-License-Identifier: Apache-2.0
// Result<T>: the value-or-Issue return type used on every request and ingest path.
// Expected failures travel as values (STYLE.md "Errors"); exceptions are for start-up.
#pragma once

#include <cassert>
#include <utility>
#include <variant>

#include "fhir/issue.h"

namespace fhir {

// Marker for a Result that carries no value on success.
struct Ok {};

template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::in_place_index<0>, std::move(value)) {}  // NOLINT: implicit by design
  Result(Issue issue) : v_(std::in_place_index<1>, std::move(issue)) {}  // NOLINT

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }

  // Precondition: ok(). Calling these on a failure is a broken invariant.
  T& value() & { assert(ok()); return std::get<0>(v_); }
  const T& value() const& { assert(ok()); return std::get<0>(v_); }
  T&& value() && { assert(ok()); return std::get<0>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

  // Precondition: !ok().
  const Issue& issue() const& { assert(!ok()); return std::get<1>(v_); }
  Issue&& issue() && { assert(!ok()); return std::get<1>(std::move(v_)); }

 private:
  std::variant<T, Issue> v_;
};

using Status = Result<Ok>;

}  // namespace fhir
