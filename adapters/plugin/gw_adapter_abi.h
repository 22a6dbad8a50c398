/* SPDX-License-Identifier: Apache-2.0 */
/* The gateway's plug-in C ABI, version 1: what a vendor's shared library exports so that the
 * gateway can load it at run time as a source-system adapter (DESIGN.md "Contracts",
 * "Plug-ins"). Pure C99; include it from C or C++. docs/write-an-adapter.md walks through it.
 *
 * Two tables cross the boundary, one in each direction:
 *
 *   gateway ---- gw_adapter_entry(GW_ADAPTER_ABI_VERSION) ---> plug-in
 *   gateway <--- const gw_adapter_v1*  (create, start, stop, fetch, destroy, free_string)
 *   gateway ---- const gw_host_v1*     (ingest, log) passed to create() ---> plug-in
 *
 * Payloads are FHIR R4 JSON (UTF-8) strings, each passed as pointer + length. The JSON
 * shapes are described next to the function that carries them.
 *
 * Versioning
 *   GW_ADAPTER_ABI_VERSION changes only for breaking changes (a field removed, reordered or
 *   given a new meaning). The gateway refuses a plug-in whose table carries another
 *   abi_version, with an error naming both versions: rebuild against the matching header.
 *   Additive changes (a new field at the END of a table, a new optional JSON member) keep
 *   the version and grow struct_size. Each side therefore checks the other side's
 *   struct_size before touching a field added later (GW_HOST_HAS below); the gateway
 *   refuses a plug-in table smaller than the version-1 table.
 *
 * Threads
 *   - create, start, stop and destroy are called on one gateway thread, in that order (stop
 *     and start at most once each). An instance may be destroyed without ever being started:
 *     the gateway creates one only to check its configuration (--check-config, and at every
 *     start-up before the instance it runs). fetch is called on any gateway thread, possibly several
 *     at once for one instance, between start and stop. None of them may block: answer from
 *     your own threads.
 *   - The host functions (ingest, log) may be called from ANY thread, including your own
 *     threads, from create() until destroy() returns; they never block on I/O.
 *   - Every callback the host hands you (fetch's done) is safe to call from any thread, even
 *     from inside fetch() itself, and even after the deadline has passed (a late answer is
 *     ignored). The host copies what it needs and moves the work onto its own executor.
 *   - Callbacks the host calls on you (ingest's done) may run on any host thread, possibly
 *     before ingest() has returned to you. They must return promptly and not block.
 *   - After destroy() returns, the plug-in must not call any host function or callback and
 *     must have joined every thread it started: the library may be unloaded right after.
 *   - One library may serve several configured sources: keep state in the instance that
 *     create() returns, not in globals.
 *
 * Strings and ownership
 *   - Strings the host passes in (config, requests, error texts) are borrowed for the
 *     duration of the call only; copy what you keep. They are NUL-terminated, and a length,
 *     where given, excludes the NUL.
 *   - Strings you pass to the host (batches, answers, log lines) are borrowed by the host
 *     for the duration of the call only; the host copies them. They need not be
 *     NUL-terminated when a length is given.
 *   - The one exception: an error text that create() returns through `error` is allocated by
 *     the plug-in and given back to it through free_string().
 *
 * Failures
 *   Nothing may unwind across this boundary: no C++ exception, no longjmp. Report failures
 *   as non-zero status values (GW_ERR_*) and short texts. Log lines and error texts must
 *   never contain patient data (names, NHS numbers, identifiers) or secrets: they end up in
 *   operational logs, which are not the place for PHI.
 */
#ifndef GW_ADAPTER_ABI_H
#define GW_ADAPTER_ABI_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The ABI version this header describes. */
#define GW_ADAPTER_ABI_VERSION 1u

/* The name of the one symbol a plug-in exports (see gw_adapter_entry_fn). */
#define GW_ADAPTER_ENTRY_SYMBOL "gw_adapter_entry"

/* Marks the entry point as exported even when the library is built with
 * -fvisibility=hidden (recommended: export nothing else). */
#if defined(_WIN32)
#define GW_ADAPTER_EXPORT __declspec(dllexport)
#elif defined(__GNUC__)
#define GW_ADAPTER_EXPORT __attribute__((visibility("default")))
#else
#define GW_ADAPTER_EXPORT
#endif

/* Status values. 0 is success; every other value is a failure. A plug-in may return any
 * non-zero value from its own functions; the host uses these. */
#define GW_OK 0
#define GW_ERR_INVALID 1     /* the JSON is malformed or not of the documented shape */
#define GW_ERR_TOO_LARGE 2   /* the payload is over the host's size limit (16 MiB) */
#define GW_ERR_STOPPED 3     /* not started yet, stopping, or shutting down */
#define GW_ERR_UNSUPPORTED 4 /* no ingest sink for this source (configured pull-only) */
#define GW_ERR_FAILED 5      /* the gateway could not process or store it; see the text */
#define GW_ERR_UNAVAILABLE 6 /* (plug-in to host) the source system is down or refused */

/* Log levels for gw_host_v1.log. */
#define GW_LOG_DEBUG 0
#define GW_LOG_INFO 1
#define GW_LOG_WARN 2
#define GW_LOG_ERROR 3

/* Completion of one ingest call, called by the host exactly once for every ingest() that
 * returned GW_OK: with status GW_OK once the batch is committed to the gateway's store (now
 * acknowledge it to your source system), or with a non-zero status and a short reason
 * (`error`, borrowed for the call) when the batch was not applied (now reject it): its
 * content, or the gateway unable to commit it ("retry later": resend it unchanged, with the
 * same dedupe_key and raw, which completes it once).
 * `cookie` is the value you passed to ingest(). Runs on a host thread; see "Threads". */
typedef void (*gw_ingest_done_fn)(void* cookie, int status, const char* error);

/* Completion of one fetch, called by the plug-in exactly once for every fetch() that
 * returned GW_OK. `status` GW_OK with `json` a FHIR R4 Bundle:
 *
 *   {"resourceType":"Bundle","type":"collection",
 *    "entry":[{"resource":{"resourceType":"Observation", ...}}, ...]}
 *
 * ("searchset" is accepted too; an empty or absent "entry" means "nothing for this
 * patient"). Each resource needs an R4 resourceType and a valid FHIR id, as in ingest; a
 * Patient, or a resource whose subject.identifier is an NHS number, naming another NHS
 * number than the one asked for fails the whole answer. On failure: a non-zero status (e.g. GW_ERR_UNAVAILABLE) and, in `json`, an
 * OperationOutcome whose first issue's "diagnostics" says what went wrong; `json` may be
 * NULL with len 0 when there is nothing to say. The host copies `json` before returning.
 * `cookie` is the value the host passed to fetch(): pass it back unchanged. Safe to call
 * from any thread. */
typedef void (*gw_fetch_done_fn)(void* cookie, int status, const char* json, size_t len);

/* The host table: what the gateway offers a plug-in instance. Valid from create() until
 * destroy() returns; read it through the pointer you were given (do not copy the struct). */
typedef struct gw_host_v1 {
  uint32_t abi_version; /* GW_ADAPTER_ABI_VERSION of the gateway */
  uint32_t struct_size; /* sizeof the host's table; check with GW_HOST_HAS before using a
                           field added after version 1.0 */
  void* host_ctx;       /* pass as the first argument of every host function */

  /* Push: hands one inbound unit (a message from your source system) to the gateway.
   * `batch_json` (`len` bytes, UTF-8) is one JSON object:
   *
   *   {"source":   "royal-infirmary-pas",  optional; when present it must equal the
   *                                         configured source name
   *    "identity": {"resourceType":"Patient", ...}   who the unit is about: identifiers
   *                                         (NHS number, your local ids: at least one
   *                                         with both system and value) + demographics;
   *                                         valid FHIR R4 JSON, as the resources are
   *    "resources":[{"resourceType":"Observation", ...}, ...]   FHIR R4 resources of the
   *                                         types the gateway stores and serves:
   *                                         DiagnosticReport, Encounter, Location,
   *                                         Observation, Practitioner (not Patient: that
   *                                         is the identity), each with your
   *                                         own stable FHIR id (a later unit with the same
   *                                         type and id updates it), valid FHIR R4 JSON
   *                                         and about the identity (a subject.identifier
   *                                         with another NHS number, or with one when the
   *                                         identity has none, is refused); ids are one namespace
   *                                         per type across sources: one another source
   *                                         holds fails the unit (`done` with
   *                                         GW_ERR_FAILED and the reason)
   *    "raw":      "MSH|^~\\&|...",          optional; the unit as received, kept verbatim
   *    "kind":     "ADT^A01",               optional; shown in the message store and audit
   *    "dedupe_key": "PAS|RXX01|000123",    optional; your key for the unit: a resend with
   *                                         the same key and raw is acknowledged (GW_OK)
   *                                         but not applied again
   *    "retired_identifiers": [{"system":"...","value":"..."}],   optional; a merge: records
   *                                         to retire into the identity's record
   *    "encounters": [{"organisation":"RXX01","date":"2024-01-15T09:30:00Z"}]}   optional;
   *                                         contacts, for the gateway's access policy:
   *                                         an ODS code (letters and digits) and a FHIR
   *                                         date or dateTime each
   *
   * Limits: at most 16 MiB, JSON nested at most 100 levels with at most 100000 members per
   * object or array, at most 10000 resources. Members not listed are ignored. `done` is
   * required (NULL is refused, GW_ERR_INVALID); `cookie` is passed back to it unchanged.
   * Returns GW_OK when the batch was accepted: `done` then
   * runs exactly once, later, from a host thread (possibly before ingest returns). Any
   * other value means refused at once, nothing of it was applied and `done` is NOT called:
   * GW_ERR_INVALID (malformed JSON or shape), GW_ERR_TOO_LARGE, GW_ERR_STOPPED (before
   * start or after stop), GW_ERR_UNSUPPORTED (pull-only source), GW_ERR_FAILED (an internal
   * error); the host logs the detail. A batch refused as INVALID or TOO_LARGE is kept in
   * the gateway's message store as rejected (with its "raw", or its text), counted and
   * audited, as a rejected HL7 message is.
   * Never blocks on storage: acknowledge your source from `done`, not from the return. */
  int (*ingest)(void* host_ctx, const char* batch_json, size_t len, gw_ingest_done_fn done,
                void* cookie);

  /* Writes one line (`msg`, NUL-terminated, no patient data) to the gateway's operational
   * log at `level` (GW_LOG_*), tagged with the source name. Long lines are cut, and an NHS
   * number in one is replaced by "(NHS number removed)" (names and other identifiers cannot
   * be told from other text: never log them). */
  void (*log)(void* host_ctx, int level, const char* msg);
} gw_host_v1;

/* True when the host table `host` is large enough to hold `field` (for fields added after
 * version 1.0; every field above is always present). */
#define GW_HOST_HAS(host, field) \
  ((host)->struct_size >= offsetof(gw_host_v1, field) + sizeof(((gw_host_v1*)0)->field))

/* The plug-in table: what a plug-in offers. Static storage in the library (it must stay
 * valid while the library is loaded); the host never writes to it. */
typedef struct gw_adapter_v1 {
  uint32_t abi_version; /* set to GW_ADAPTER_ABI_VERSION (of the header you built with) */
  uint32_t struct_size; /* set to sizeof(gw_adapter_v1) */
  const char* name;     /* short printable name for logs, e.g. "acme-pas"; required */

  /* Required. Creates one instance for one configured source. `host` stays valid until
   * destroy(). `config_json` (NUL-terminated) is the source's configuration:
   *
   *   {"name":"royal-infirmary-pas", "ods_code":"RXX01", "endpoint":"mllp://0.0.0.0:2575",
   *    "connect_timeout_ms":5000, "fetch_timeout_ms":10000,
   *    "settings":{"key":"value", ...},      (settings values are strings)
   *    "credentials":"..."}                  (present when the source has a credentials_file:
   *                                           its content, a secret: never log it)
   *
   * Returns the instance (an opaque pointer the host passes back), or NULL on failure after
   * setting *error to a short reason allocated by the plug-in (the host frees it with
   * free_string), or leaving it NULL. Must not start work yet. */
  void* (*create)(const gw_host_v1* host, const char* config_json, char** error);

  /* Optional (NULL: nothing to start). Starts listening to the source system; from now on
   * ingest() is accepted. Returns GW_OK or a non-zero status (log the reason first): the
   * gateway then does not start this source (it destroys the instance, logs an error naming
   * the source and shows it as gateway_source_up 0 on /metrics) and runs on without it. */
  int (*start)(void* instance);

  /* Optional. Stops accepting new work from the source; batches and fetches in flight still
   * complete. After stop, ingest() answers GW_ERR_STOPPED. */
  void (*stop)(void* instance);

  /* Optional (NULL: push-only; the gateway answers fetches itself with "not supported").
   * Pull: asks the source system for one patient's records. `request_json` (NUL-terminated,
   * `len` bytes) is:
   *
   *   {"patient":{"id":"<gateway id>", "nhs_number":"9434765919",
   *               "identifiers":[{"system":"https://...","value":"..."}]},
   *    "scope":{"resource_types":["Observation","Condition"]}}
   *
   * "nhs_number" is absent when not known; empty "resource_types" means everything you
   * offer. `timeout_ms` is the time left until the gateway's deadline: it stops waiting
   * then and ignores a later answer, so give up by then. Returns GW_OK when accepted:
   * `done` must then be called exactly once, with `cookie`, from any thread (even from
   * inside fetch). A non-zero return refuses the fetch at once and `done` must NOT be
   * called. Must not block. */
  int (*fetch)(void* instance, const char* request_json, size_t len, uint32_t timeout_ms,
               gw_fetch_done_fn done, void* cookie);

  /* Required. Ends the instance: joins every thread it started and frees everything. Pending
   * fetches should be answered (with a failure) before it returns; after it returns, no
   * host function or callback may be called. Called once, after stop when start ran. */
  void (*destroy)(void* instance);

  /* Required. Frees a string the plug-in allocated and gave to the host (create's error). */
  void (*free_string)(char* s);
} gw_adapter_v1;

/* The one exported entry point. The host calls it once per load with its own
 * GW_ADAPTER_ABI_VERSION. Return your table (whatever version you were built for; the host
 * compares and refuses a mismatch with a clear error), or NULL if you know you cannot serve
 * `host_abi_version`. Must not fail in any other way, allocate per-call state or block.
 *
 *   GW_ADAPTER_EXPORT const gw_adapter_v1* gw_adapter_entry(uint32_t host_abi_version);
 */
typedef const gw_adapter_v1* (*gw_adapter_entry_fn)(uint32_t host_abi_version);

/* Inline wrappers for plug-in code: call the host without spelling out host_ctx. */
static inline int gw_host_ingest(const gw_host_v1* host, const char* batch_json, size_t len,
                                 gw_ingest_done_fn done, void* cookie) {
  return host->ingest(host->host_ctx, batch_json, len, done, cookie);
}

static inline void gw_host_log(const gw_host_v1* host, int level, const char* msg) {
  host->log(host->host_ctx, level, msg);
}

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* GW_ADAPTER_ABI_H */
