/* SPDX-License-Identifier: Apache-2.0 */
/* The example plug-in: a complete vendor adapter in plain C99 against gw_adapter_abi.h,
 * built as a shared library and loaded by the plug-in tests (and a starting point for
 * vendors, see docs/write-an-adapter.md). It pretends to be a source system that:
 *
 *   - answers every fetch with a Bundle holding one body-weight Observation, or with an
 *     OperationOutcome and GW_ERR_UNAVAILABLE when the patient's NHS number is
 *     EXAMPLE_FAIL_NHS_NUMBER ("9999999999": the documented failure trigger);
 *   - answers from its own worker thread after setting "delay_ms" (default 0). It ignores
 *     the fetch's timeout on purpose so that tests can see an answer arrive after the
 *     deadline; a real plug-in gives up by then;
 *   - on start, when setting "ingest_on_start" is "true", pushes one batch (a Patient and an
 *     Observation) through the host's ingest and logs the outcome; "malformed" pushes a
 *     truncated JSON text instead, and "unserved" a batch carrying a Condition (a type the
 *     gateway does not serve), to show how the host refuses them;
 *   - fails its start() (GW_ERR_UNAVAILABLE, after logging why) when setting "fail_start" is
 *     "true", as a plug-in whose source system cannot be reached at start-up would;
 *   - answers every fetch twice when setting "answer_twice" is "true", breaking the rule of
 *     one answer per fetch on purpose, to show that the host ignores (and logs) the second.
 *
 * Build: cc -std=c99 -fPIC -shared -fvisibility=hidden -I<gateway source> \
 *           example_adapter.c -o libexample_adapter.so -lpthread
 * Compile with -DEXAMPLE_ABI_VERSION=<n> to claim another ABI version (the host refuses it),
 * or -DEXAMPLE_OMIT_ENTRY to export a misnamed entry point (the host refuses that too). */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "adapters/plugin/gw_adapter_abi.h"

#ifndef EXAMPLE_ABI_VERSION
#define EXAMPLE_ABI_VERSION GW_ADAPTER_ABI_VERSION
#endif

#define EXAMPLE_FAIL_NHS_NUMBER "9999999999"
#define EXAMPLE_MAX_DELAY_MS 600000ul
#define EXAMPLE_MAX_PENDING 64u

enum job_kind { JOB_FETCH, JOB_INGEST };
enum ingest_mode { INGEST_NONE, INGEST_VALID, INGEST_MALFORMED, INGEST_UNSERVED };

/* One piece of work for the worker thread, kept in a list sorted by due time. */
typedef struct job {
  uint64_t due_ms;
  enum job_kind kind;
  char nhs_number[11]; /* "" when the request had none (or not ten digits) */
  gw_fetch_done_fn done;
  void* cookie;
  struct job* next;
} job;

typedef struct example {
  const gw_host_v1* host;
  unsigned long delay_ms;
  enum ingest_mode ingest_mode;
  int fail_start;
  int answer_twice;
  pthread_mutex_t mutex;
  pthread_cond_t wake;
  job* jobs;
  unsigned pending_fetches;
  int accepting; /* between start and stop */
  int quit;      /* set by destroy */
  pthread_t worker;
} example;

#if defined(__GNUC__)
__attribute__((format(printf, 3, 4)))
#endif
static void example_log(const example* ex, int level, const char* format, ...) {
  char line[512];
  va_list args;
  va_start(args, format);
  vsnprintf(line, sizeof line, format, args);
  va_end(args);
  gw_host_log(ex->host, level, line);
}

static uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Copies the string value of the first member `key` in `json` into `out`. Returns 1 when found
 * and it fits, else 0. A minimal scanner, enough for the host's compact JSON (no spaces, no
 * escapes in the values it reads here); a real plug-in uses a JSON library such as cJSON or
 * jansson. */
static int string_member(const char* json, const char* key, char* out, size_t out_size) {
  char pattern[64];
  const char* start;
  size_t n = 0;
  if (snprintf(pattern, sizeof pattern, "\"%s\":\"", key) >= (int)sizeof pattern) return 0;
  start = strstr(json, pattern);
  if (start == NULL) return 0;
  start += strlen(pattern);
  while (start[n] != '"' && start[n] != '\0' && start[n] != '\\') {
    if (n + 1 >= out_size) return 0;
    out[n] = start[n];
    ++n;
  }
  if (start[n] != '"') return 0;
  out[n] = '\0';
  return 1;
}

static int ten_digits(const char* s) {
  size_t i;
  for (i = 0; i < 10; ++i)
    if (s[i] < '0' || s[i] > '9') return 0;
  return s[10] == '\0';
}

static char* copy_string(const char* s) {
  char* copy = malloc(strlen(s) + 1);
  if (copy != NULL) strcpy(copy, s);
  return copy;
}

/* ---- Answers ------------------------------------------------------------------------- */

static void answer_failure(job* j, int status, const char* diagnostics) {
  char json[512];
  int n = snprintf(json, sizeof json,
                   "{\"resourceType\":\"OperationOutcome\",\"issue\":[{\"severity\":\"error\","
                   "\"code\":\"transient\",\"diagnostics\":\"%s\"}]}",
                   diagnostics);
  j->done(j->cookie, status, json, (size_t)n);
}

static void answer_fetch(job* j) {
  char subject[128] = "";
  char json[1024];
  int n;
  if (strcmp(j->nhs_number, EXAMPLE_FAIL_NHS_NUMBER) == 0) {
    answer_failure(j, GW_ERR_UNAVAILABLE, "the example source is unavailable (failure trigger)");
    return;
  }
  if (j->nhs_number[0] != '\0')
    snprintf(subject, sizeof subject,
             "\"subject\":{\"identifier\":{\"system\":\"https://fhir.nhs.uk/Id/nhs-number\",\"value\":\"%s\"}},",
             j->nhs_number);
  n = snprintf(json, sizeof json,
               "{\"resourceType\":\"Bundle\",\"type\":\"collection\",\"entry\":[{\"resource\":"
               "{\"resourceType\":\"Observation\",\"id\":\"example-obs-1\",\"status\":\"final\","
               "\"code\":{\"coding\":[{\"system\":\"http://snomed.info/sct\",\"code\":\"27113001\","
               "\"display\":\"Body weight\"}]},%s\"effectiveDateTime\":\"2024-01-15T09:30:00Z\","
               "\"valueQuantity\":{\"value\":72.5,\"unit\":\"kg\",\"system\":\"http://unitsofmeasure.org\","
               "\"code\":\"kg\"}}}]}",
               subject);
  j->done(j->cookie, GW_OK, json, (size_t)n);
}

/* ---- Ingest -------------------------------------------------------------------------- */

static const char kBatch[] =
    "{\"identity\":{\"resourceType\":\"Patient\",\"identifier\":[{\"system\":"
    "\"https://fhir.nhs.uk/Id/nhs-number\",\"value\":\"9000000009\"}],\"name\":[{\"family\":\"EXAMPLE\","
    "\"given\":[\"Alex\"]}],\"birthDate\":\"1970-01-01\"},"
    "\"resources\":[{\"resourceType\":\"Observation\",\"id\":\"example-ingest-1\",\"status\":\"final\","
    "\"code\":{\"coding\":[{\"system\":\"http://snomed.info/sct\",\"code\":\"27113001\",\"display\":"
    "\"Body weight\"}]},\"subject\":{\"identifier\":{\"system\":\"https://fhir.nhs.uk/Id/nhs-number\","
    "\"value\":\"9000000009\"}},\"valueQuantity\":{\"value\":72.5,\"unit\":\"kg\",\"system\":"
    "\"http://unitsofmeasure.org\",\"code\":\"kg\"}}],"
    "\"raw\":\"EXAMPLE|1|9000000009|72.5 kg\"}";

static const char kMalformedBatch[] = "{\"identity\":{\"resourceType\":\"Patient\"},\"resources\":[";

static const char kUnservedBatch[] =
    "{\"identity\":{\"resourceType\":\"Patient\",\"identifier\":[{\"system\":"
    "\"https://fhir.nhs.uk/Id/nhs-number\",\"value\":\"9000000009\"}]},"
    "\"resources\":[{\"resourceType\":\"Condition\",\"id\":\"example-condition-1\"}],"
    "\"raw\":\"EXAMPLE|2|9000000009|condition\",\"kind\":\"EXAMPLE^CONDITION\"}";

/* The host's answer for a batch: acknowledge (or reject) it to the source system here. */
static void on_ingest_done(void* cookie, int status, const char* error) {
  const example* ex = cookie;
  if (status == GW_OK)
    example_log(ex, GW_LOG_INFO, "example: batch stored");
  else
    example_log(ex, GW_LOG_WARN, "example: batch failed (status %d): %.300s", status, error ? error : "");
}

static void push_batch(example* ex) {
  const char* batch = ex->ingest_mode == INGEST_MALFORMED ? kMalformedBatch
                      : ex->ingest_mode == INGEST_UNSERVED ? kUnservedBatch
                                                           : kBatch;
  int rc = gw_host_ingest(ex->host, batch, strlen(batch), on_ingest_done, ex);
  if (rc != GW_OK) example_log(ex, GW_LOG_WARN, "example: batch refused at once (status %d)", rc);
}

/* ---- Worker thread ------------------------------------------------------------------- */

static void insert_job(example* ex, job* j) {
  job** at = &ex->jobs;
  while (*at != NULL && (*at)->due_ms <= j->due_ms) at = &(*at)->next;
  j->next = *at;
  *at = j;
  pthread_cond_signal(&ex->wake);
}

static void* worker_main(void* arg) {
  example* ex = arg;
  job* rest;
  pthread_mutex_lock(&ex->mutex);
  while (!ex->quit) {
    job* j = ex->jobs;
    uint64_t now = now_ms();
    if (j == NULL) {
      pthread_cond_wait(&ex->wake, &ex->mutex);
      continue;
    }
    if (j->due_ms > now) {
      struct timespec until;
      until.tv_sec = (time_t)(j->due_ms / 1000u);
      until.tv_nsec = (long)(j->due_ms % 1000u) * 1000000L;
      pthread_cond_timedwait(&ex->wake, &ex->mutex, &until);
      continue;
    }
    ex->jobs = j->next;
    /* Call the host without holding our lock: its callbacks may call back into us. */
    pthread_mutex_unlock(&ex->mutex);
    if (j->kind == JOB_FETCH) {
      answer_fetch(j);
      if (ex->answer_twice) answer_fetch(j);
    } else
      push_batch(ex);
    pthread_mutex_lock(&ex->mutex);
    if (j->kind == JOB_FETCH) --ex->pending_fetches;
    free(j);
  }
  rest = ex->jobs;
  ex->jobs = NULL;
  pthread_mutex_unlock(&ex->mutex);
  /* Shutting down: every fetch still owed an answer gets one. */
  while (rest != NULL) {
    job* j = rest;
    rest = j->next;
    if (j->kind == JOB_FETCH) answer_failure(j, GW_ERR_STOPPED, "the example source is shutting down");
    free(j);
  }
  return NULL;
}

/* ---- The table's functions ----------------------------------------------------------- */

static void* example_create(const gw_host_v1* host, const char* config_json, char** error) {
  char value[32];
  const char* config_start;
  example* ex;
  pthread_condattr_t attr;
  if (host->abi_version != GW_ADAPTER_ABI_VERSION) {
    *error = copy_string("the example plug-in needs host ABI version 1");
    return NULL;
  }
  ex = calloc(1, sizeof *ex);
  if (ex == NULL) return NULL;
  ex->host = host;
  config_start = config_json;
  /* Settings sit in their own object, after name, ods_code and endpoint. */
  config_json = strstr(config_json, "\"settings\":{");
  if (config_json != NULL && string_member(config_json, "delay_ms", value, sizeof value)) {
    char* end = NULL;
    errno = 0;
    ex->delay_ms = strtoul(value, &end, 10);
    if (value[0] < '0' || value[0] > '9' || *end != '\0' || errno != 0 || ex->delay_ms > EXAMPLE_MAX_DELAY_MS) {
      *error = copy_string("setting delay_ms must be a whole number of milliseconds from 0 to 600000");
      free(ex);
      return NULL;
    }
  }
  if (config_json != NULL && string_member(config_json, "ingest_on_start", value, sizeof value))
    ex->ingest_mode = strcmp(value, "true") == 0        ? INGEST_VALID
                      : strcmp(value, "malformed") == 0 ? INGEST_MALFORMED
                      : strcmp(value, "unserved") == 0  ? INGEST_UNSERVED
                                                        : INGEST_NONE;
  if (config_json != NULL && string_member(config_json, "fail_start", value, sizeof value))
    ex->fail_start = strcmp(value, "true") == 0;
  if (config_json != NULL && string_member(config_json, "answer_twice", value, sizeof value))
    ex->answer_twice = strcmp(value, "true") == 0;

  pthread_condattr_init(&attr);
  pthread_condattr_setclock(&attr, CLOCK_MONOTONIC); /* due times are monotonic */
  pthread_mutex_init(&ex->mutex, NULL);
  pthread_cond_init(&ex->wake, &attr);
  pthread_condattr_destroy(&attr);
  if (pthread_create(&ex->worker, NULL, worker_main, ex) != 0) {
    pthread_cond_destroy(&ex->wake);
    pthread_mutex_destroy(&ex->mutex);
    free(ex);
    *error = copy_string("the example plug-in could not start its worker thread");
    return NULL;
  }
  /* A real plug-in reads its secrets from "credentials" (the source's credentials_file) and,
   * like here, never logs them: only whether they were given. */
  example_log(ex, GW_LOG_INFO, "example: created (delay %lu ms, %s)", ex->delay_ms,
              strstr(config_start, "\"credentials\":\"") != NULL ? "credentials given" : "no credentials");
  return ex;
}

static int example_start(void* instance) {
  example* ex = instance;
  if (ex->fail_start) {
    example_log(ex, GW_LOG_ERROR, "example: the source system cannot be reached (fail_start)");
    return GW_ERR_UNAVAILABLE;
  }
  pthread_mutex_lock(&ex->mutex);
  ex->accepting = 1;
  if (ex->ingest_mode != INGEST_NONE) {
    job* j = calloc(1, sizeof *j);
    if (j != NULL) {
      j->kind = JOB_INGEST;
      j->due_ms = now_ms();
      insert_job(ex, j);
    }
  }
  pthread_mutex_unlock(&ex->mutex);
  return GW_OK;
}

static void example_stop(void* instance) {
  example* ex = instance;
  pthread_mutex_lock(&ex->mutex);
  ex->accepting = 0;
  pthread_mutex_unlock(&ex->mutex);
}

static int example_fetch(void* instance, const char* request_json, size_t len, uint32_t timeout_ms,
                         gw_fetch_done_fn done, void* cookie) {
  example* ex = instance;
  job* j;
  (void)len;        /* request_json is NUL-terminated (ABI) */
  (void)timeout_ms; /* ignored on purpose: see the file comment */
  j = calloc(1, sizeof *j);
  if (j == NULL) return GW_ERR_FAILED;
  if (!string_member(request_json, "nhs_number", j->nhs_number, sizeof j->nhs_number) || !ten_digits(j->nhs_number))
    j->nhs_number[0] = '\0';
  j->kind = JOB_FETCH;
  j->done = done;
  j->cookie = cookie;
  j->due_ms = now_ms() + ex->delay_ms;
  pthread_mutex_lock(&ex->mutex);
  if (!ex->accepting || ex->pending_fetches >= EXAMPLE_MAX_PENDING) {
    pthread_mutex_unlock(&ex->mutex);
    free(j);
    return GW_ERR_UNAVAILABLE;
  }
  ++ex->pending_fetches;
  insert_job(ex, j);
  pthread_mutex_unlock(&ex->mutex);
  return GW_OK;
}

static void example_destroy(void* instance) {
  example* ex = instance;
  pthread_mutex_lock(&ex->mutex);
  ex->quit = 1;
  pthread_cond_signal(&ex->wake);
  pthread_mutex_unlock(&ex->mutex);
  pthread_join(ex->worker, NULL);
  pthread_cond_destroy(&ex->wake);
  pthread_mutex_destroy(&ex->mutex);
  free(ex);
}

static void example_free_string(char* s) { free(s); }

static const gw_adapter_v1 example_table = {
    EXAMPLE_ABI_VERSION,   /* abi_version */
    sizeof(gw_adapter_v1), /* struct_size */
    "example",             /* name */
    example_create,
    example_start,
    example_stop,
    example_fetch,
    example_destroy,
    example_free_string,
};

#ifndef EXAMPLE_OMIT_ENTRY
GW_ADAPTER_EXPORT const gw_adapter_v1* gw_adapter_entry(uint32_t host_abi_version) {
  (void)host_abi_version; /* the host compares versions and explains a mismatch */
  return &example_table;
}
#else
/* A misnamed entry point, as a vendor's typo would produce: the host must refuse it. */
GW_ADAPTER_EXPORT const gw_adapter_v1* gw_adapter_entry_misnamed(uint32_t host_abi_version) {
  (void)host_abi_version;
  return &example_table;
}
#endif
