// SPDX-License-Identifier: Apache-2.0
// gw-messages: the inbound message store tool (issue #4 item 6): list the messages a gateway
// errored or rejected, show one, replay them to the running gateway after a fix, and count.
//   gw-messages list   --data DIR [--status S] [--source NAME] [--limit N] [--after-id N] [--json]
//   gw-messages show   --data DIR [--raw] ID
//   gw-messages replay (--config FILE | --data DIR --port P) (--id N... | --status S) [--source NAME]
//                      (S: error, rejected, failed, filtered or pending; a pending message's resend
//                      completes it; a filtered one is applied once its type is mapped)
//                      [--host H] [--port P [--force-port]] [--tls ...]
//   gw-messages stats  --data DIR [--json]
// store.db is opened read-only (safe while the gateway runs). Replay sends each stored message,
// byte for byte, over MLLP: once applied, the gateway marks the errored rows 'replayed'.
// Exit codes: 0 done (replay: every message got AA/CA, or asked for no ACK in MSH-15/16),
// 1 failure, 2 usage.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "adapters/hl7v2/ack.h"
#include "adapters/hl7v2/hl7v2_adapter.h"
#include "fhir/json.h"
#include "gateway/config/config.h"
#include "tools/cli/parse.h"
#include "tools/hl7send/cli_options.h"
#include "tools/hl7send/mllp_client.h"
#include "tools/messages_cli/message_reader.h"

using gw::messages_cli::MessageReader;
using gw::messages_cli::MessageRow;
using gw::messages_cli::utc_time;

namespace {

constexpr std::size_t kMaxReplay = 100000;

// At most `max` characters' worth of bytes of `s`, cut on a UTF-8 boundary, with "..." when cut.
std::string truncate(const std::string& s, std::size_t max) {
  if (s.size() <= max) return s;
  std::size_t cut = max > 3 ? max - 3 : max;
  while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xC0) == 0x80) --cut;
  return s.substr(0, cut) + "...";
}

// Control characters (CR, LF, tabs of a stored error text) would break a table row.
std::string one_line(std::string s) {
  for (char& c : s)
    if (static_cast<unsigned char>(c) < 0x20) c = ' ';
  return s;
}

std::string segments_as_lines(const std::string& hl7) {
  std::string out;
  out.reserve(hl7.size() + 1);
  for (std::size_t i = 0; i < hl7.size(); ++i) {
    if (hl7[i] == '\r') {
      out += '\n';
      if (i + 1 < hl7.size() && hl7[i + 1] == '\n') ++i;
    } else {
      out += hl7[i];
    }
  }
  if (!out.empty() && out.back() != '\n') out += '\n';
  return out;
}

fhir::Json row_json(const MessageRow& r) {
  fhir::Json o = fhir::Json::object();
  o.set("id", fhir::Json::integer(r.id));
  o.set("received", fhir::Json::string(utc_time(r.received_ms, true)));
  o.set("received_ms", fhir::Json::integer(r.received_ms));
  o.set("updated", fhir::Json::string(utc_time(r.updated_ms, true)));
  o.set("source", fhir::Json::string(r.source));
  o.set("kind", fhir::Json::string(r.kind));
  o.set("status", fhir::Json::string(r.status));
  o.set("pending", fhir::Json::boolean(r.pending));
  o.set("control_id", fhir::Json::string(r.control_id()));
  o.set("dedupe_key", fhir::Json::string(r.dedupe_key));
  o.set("error_location", fhir::Json::string(r.error_location));
  o.set("error", fhir::Json::string(r.error));
  o.set("patient_id", fhir::Json::string(r.patient_id));
  o.set("content_sha256", fhir::Json::string(r.content_sha256));
  return o;
}

int fail(const fhir::Issue& issue) {
  std::fprintf(stderr, "gw-messages: %s\n", issue.diagnostics.c_str());
  return issue.code == fhir::ErrorCode::not_found ? 2 : 1;
}

// ---- list -----------------------------------------------------------------------------------

int run_list(MessageReader& reader, const gw::messages_cli::ListQuery& q, bool json) {
  auto rows = reader.list(q);
  if (!rows) return fail(rows.issue());
  if (json) {
    for (const MessageRow& r : *rows) std::printf("%s\n", fhir::to_json(row_json(r)).c_str());
    return 0;
  }
  std::size_t w_id = 2, w_source = 6, w_kind = 4, w_loc = 8;
  for (const MessageRow& r : *rows) {
    w_id = std::max(w_id, std::to_string(r.id).size());
    w_source = std::max(w_source, std::min<std::size_t>(r.source.size(), 24));
    w_kind = std::max(w_kind, std::min<std::size_t>(r.kind.size(), 12));
    w_loc = std::max(w_loc, std::min<std::size_t>(r.error_location.size(), 16));
  }
  auto cell = [](const std::string& s, std::size_t w) { return truncate(one_line(s), w); };
  std::printf("%*s  %-19s  %-*s  %-*s  %-8s  %-*s  %s\n", static_cast<int>(w_id), "ID", "RECEIVED (UTC)",
              static_cast<int>(w_source), "SOURCE", static_cast<int>(w_kind), "KIND", "STATUS", static_cast<int>(w_loc),
              "LOCATION", "ERROR");
  for (const MessageRow& r : *rows)
    std::printf("%*lld  %-19s  %-*s  %-*s  %-8s  %-*s  %s\n", static_cast<int>(w_id), static_cast<long long>(r.id),
                utc_time(r.received_ms, false).c_str(), static_cast<int>(w_source), cell(r.source, 24).c_str(),
                static_cast<int>(w_kind), cell(r.kind, 12).c_str(), r.pending ? "pending" : r.status.c_str(),
                static_cast<int>(w_loc),
                cell(r.error_location, 16).c_str(), cell(r.error, 72).c_str());
  std::printf("%zu message(s)", rows->size());
  if (!rows->empty() && rows->size() == q.limit)
    std::printf("; more may follow: --after-id %lld", static_cast<long long>(rows->back().id));
  std::printf("\n");
  return 0;
}

// ---- show -----------------------------------------------------------------------------------

int run_show(MessageReader& reader, std::int64_t id, bool raw) {
  auto row = reader.get(id);
  if (!row) return fail(row.issue());
  if (!*row) {
    std::fprintf(stderr, "gw-messages: no message with id %lld\n", static_cast<long long>(id));
    return 1;
  }
  const MessageRow& r = **row;
  if (raw) {
    std::fwrite(r.raw.data(), 1, r.raw.size(), stdout);
    return std::fflush(stdout) == 0 ? 0 : 1;
  }
  std::printf("id:             %lld\n", static_cast<long long>(r.id));
  std::printf("source:         %s\n", r.source.c_str());
  std::printf("kind:           %s\n", r.kind.c_str());
  std::printf("control id:     %s\n", gw::hl7v2::read_msh(r.raw).field(10).c_str());
  std::printf("status:         %s\n", r.status.c_str());
  if (r.pending)
    std::printf("pending:        yes: committed, its acknowledgement may not have been sent; a resend by the "
                "sender, or `gw-messages replay --id %lld`, completes it\n",
                static_cast<long long>(r.id));
  std::printf("received:       %s\n", utc_time(r.received_ms, true).c_str());
  std::printf("updated:        %s\n", utc_time(r.updated_ms, true).c_str());
  if (r.status == "applied") {
    // An applied message's error columns hold its warnings, one per line (a replayed row's
    // still hold the error it had before it was applied).
    std::size_t begin = 0;
    while (begin < r.error.size()) {
      std::size_t end = r.error.find('\n', begin);
      if (end == std::string::npos) end = r.error.size();
      std::printf("%s%s\n", begin == 0 ? "warnings:       " : "                ",
                  one_line(r.error.substr(begin, end - begin)).c_str());
      begin = end + 1;
    }
  } else {
    if (!r.error_location.empty()) std::printf("error location: %s\n", r.error_location.c_str());
    if (!r.error.empty()) std::printf("error:          %s\n", one_line(r.error).c_str());
  }
  if (!r.patient_id.empty()) std::printf("patient:        %s\n", r.patient_id.c_str());
  std::printf("sha-256:        %s\n", r.content_sha256.c_str());
  if (!r.reply.empty()) std::printf("reply sent:\n%s", segments_as_lines(r.reply).c_str());
  std::printf("message (%zu bytes):\n%s", r.raw.size(), segments_as_lines(r.raw).c_str());
  return 0;
}

// ---- replay ---------------------------------------------------------------------------------

struct ReplayArgs {
  std::vector<std::int64_t> ids;
  std::string status, source;
  std::size_t limit = 1000;
  bool json = false, quiet = false, dry_run = false;
  gw::hl7send::ClientFlags client;
  bool host_given = false, port_given = false, force_port = false;
  std::string config_file;
  std::optional<gw::config::Config> config;  // with --config
};

// The address and port a configured hl7v2 source listens on, read as the gateway reads them
// (hl7v2::listener_options); port 0 when its endpoint does not fix one.
std::pair<std::string, std::uint16_t> listener_of(const gw::config::SourceSystemConfig& s) {
  auto o = gw::hl7v2::listener_options(gw::config::adapter_source(s));
  if (!o) return {std::string(), 0};  // load_config has refused such an endpoint already
  return {o->address, o->port};
}

// Where the messages of `source` go. The listener a message arrives on decides the source it is
// stored under, so a message sent to another source's port would be filed as that source's.
// With the gateway's configuration the source's own endpoint is the default, and any other
// port (another source's, or none of this gateway's) is refused unless forced; without it the
// port must be given.
// An empty string when `a.client` now names the target; else why not (a usage error).
std::string choose_target(ReplayArgs& a, const std::string& source) {
  auto& o = a.client.options;
  if (!a.config) {
    if (a.port_given || a.dry_run) return {};
    return "give --port, the MLLP port of source '" + source +
           "''s listener (or --config with the gateway's configuration file to take it from the source's "
           "endpoint); nothing sent";
  }
  const gw::config::SourceSystemConfig* own = nullptr;
  for (const auto& s : a.config->source_systems)
    if (s.name == source) own = &s;
  if (!own || own->adapter != "hl7v2")
    return "source '" + source + "' is not an hl7v2 source in " + a.config_file + "; nothing sent";
  const auto [own_host, own_port] = listener_of(*own);
  if (!a.host_given && !own_host.empty())
    o.host = own_host == "0.0.0.0" ? "127.0.0.1" : own_host == "::" ? "::1" : own_host;  // listening on all
  if (!a.port_given) {
    if (own_port == 0 && !a.dry_run)
      return "source '" + source + "' has no fixed MLLP port in " + a.config_file + " (endpoint '" + own->endpoint +
             "'): give --port; nothing sent";
    o.port = own_port;
    return {};
  }
  // A source whose endpoint fixes no port (port 0: chosen at start-up) takes the port given.
  if (o.port == own_port || own_port == 0 || a.force_port) return {};
  for (const auto& s : a.config->source_systems) {
    if (s.adapter != "hl7v2" || listener_of(s).second != o.port) continue;
    return "port " + std::to_string(o.port) + " is the listener of source '" + s.name + "', not of '" + source +
           "' (port " + std::to_string(own_port) + "): the messages would be stored as '" + s.name +
           "''s. Leave out --port, or add --force-port; nothing sent";
  }
  // Not a listener of this gateway's at all: another gateway's, perhaps, which would store
  // them as its own.
  return "port " + std::to_string(o.port) + " is not the MLLP port of source '" + source + "' in " + a.config_file +
         " (port " + std::to_string(own_port) + "): whatever listens there (another gateway?) would store the "
         "messages as its own. Leave out --port, or add --force-port; nothing sent";
}

fhir::Result<std::vector<MessageRow>> select_rows(MessageReader& reader, const ReplayArgs& a) {
  std::vector<MessageRow> rows;
  if (!a.ids.empty()) {
    for (std::int64_t id : a.ids) {
      auto row = reader.get(id);
      if (!row) return std::move(row).issue();
      if (!*row) return fhir::Issue::make(fhir::ErrorCode::invalid_value, "no message with id " + std::to_string(id));
      rows.push_back(std::move(**row));
    }
    return rows;
  }
  gw::messages_cli::ListQuery q;
  q.statuses = gw::messages_cli::expand_status(a.status);
  q.pending_only = a.status == "pending";
  q.source = a.source;
  q.limit = a.limit;
  auto listed = reader.list(q);
  if (!listed) return std::move(listed).issue();
  return std::move(*listed);
}

int run_replay(MessageReader& reader, ReplayArgs& a) {
  auto selected = select_rows(reader, a);
  if (!selected) {
    std::fprintf(stderr, "gw-messages: %s; nothing sent\n", selected.issue().diagnostics.c_str());
    return selected.issue().code == fhir::ErrorCode::invalid_value ? 2 : 1;
  }
  std::vector<MessageRow>& rows = *selected;
  // Each source has its own listener: a message sent to another source's port would be
  // attributed to that source. One source per replay.
  std::set<std::string> sources;
  for (const MessageRow& r : rows) {
    if (!a.source.empty() && r.source != a.source) {
      std::fprintf(stderr, "gw-messages: message %lld came from '%s', not '%s'; nothing sent\n",
                   static_cast<long long>(r.id), r.source.c_str(), a.source.c_str());
      return 2;
    }
    sources.insert(r.source);
  }
  if (sources.size() > 1) {
    std::string names;
    for (const auto& s : sources) names.append(names.empty() ? "" : ", ").append(s);
    std::fprintf(stderr,
                 "gw-messages: the selected messages come from %zu sources (%s); each source has its own MLLP "
                 "port: replay one at a time with --source NAME; nothing sent\n",
                 sources.size(), names.c_str());
    return 2;
  }
  if (rows.empty()) {
    std::printf("no messages to replay\n");
    return 0;
  }
  const std::string source = *sources.begin();
  if (const std::string why = choose_target(a, source); !why.empty()) {
    std::fprintf(stderr, "gw-messages: %s\n", why.c_str());
    return 2;
  }
  std::fprintf(a.json ? stderr : stdout, "replaying %zu message%s from source '%s' to %s:%u\n", rows.size(),
               rows.size() == 1 ? "" : "s", source.c_str(), a.client.options.host.c_str(),
               static_cast<unsigned>(a.client.options.port));

  gw::hl7send::MllpClient client(a.client.client_options());
  std::map<std::string, std::int64_t> sent_once;  // source|key|sha -> first id sent
  std::size_t ok = 0, errors = 0, rejected = 0, no_ack = 0, mismatched = 0, not_requested = 0, skipped = 0, sent = 0;
  std::size_t attempted = 0, not_connected = 0;
  std::string connect_error;
  for (const MessageRow& listed : rows) {
    const std::string identity = listed.source + "\n" + listed.dedupe_key + "\n" + listed.content_sha256;
    if (auto first = sent_once.find(identity); first != sent_once.end()) {
      ++skipped;
      if (!a.quiet && !a.json)
        std::printf("id %lld  same message as id %lld: sent once\n", static_cast<long long>(listed.id),
                    static_cast<long long>(first->second));
      continue;
    }
    sent_once.emplace(identity, listed.id);
    MessageRow row = listed;
    if (row.raw.empty()) {  // list() rows carry no bytes
      auto full = reader.get(listed.id);
      if (!full) return fail(full.issue());
      if (!*full) continue;  // pruned meanwhile
      row = std::move(**full);
    }
    if (a.dry_run) {
      std::printf("id %lld  %s  %s  %s  %s  would be sent\n", static_cast<long long>(row.id), row.source.c_str(),
                  row.kind.c_str(), row.control_id().c_str(), row.status.c_str());
      continue;
    }
    ++attempted;
    const gw::hl7send::SendResult r = client.send(row.raw, a.client.retries);
    // Only a message that reached the gateway counts as replayed.
    if (r.written) ++sent;
    const std::string code = r.code();
    const gw::hl7send::Ack* ack = nullptr;
    for (const auto& x : r.acks)
      if (x.code == code) ack = &x;
    // MSH-15/16 asking for no acknowledgement (NE/NE, or ER with none sent) is no failure:
    // counted apart and taken as applied, as hl7send does.
    const bool asked_none = r.status == gw::hl7send::SendStatus::not_requested;
    const bool good = r.accepted() || asked_none;
    if (asked_none)
      ++not_requested;
    else if (good)
      ++ok;
    else if (r.status == gw::hl7send::SendStatus::mismatch)
      ++mismatched;
    else if (!r.written) {
      ++not_connected;
      if (connect_error.empty()) connect_error = r.error;
    } else if (r.status != gw::hl7send::SendStatus::acknowledged)
      ++no_ack;
    else if (code.size() == 2 && code[1] == 'R')
      ++rejected;
    else
      ++errors;
    if (a.json) {
      fhir::Json o = fhir::Json::object();
      o.set("id", fhir::Json::integer(row.id));
      o.set("source", fhir::Json::string(row.source));
      o.set("kind", fhir::Json::string(row.kind));
      o.set("control_id", fhir::Json::string(row.control_id()));
      o.set("status", fhir::Json::string(std::string(gw::hl7send::status_name(r.status))));
      o.set("ack_code", fhir::Json::string(code));
      o.set("text", fhir::Json::string(ack ? ack->text : std::string()));
      o.set("error_location", fhir::Json::string(ack ? ack->error_location : std::string()));
      o.set("error", fhir::Json::string(r.error));
      o.set("attempts", fhir::Json::integer(r.attempts));
      std::printf("%s\n", fhir::to_json(o).c_str());
    } else if (!a.quiet || !good) {
      std::string line = "id " + std::to_string(row.id) + "  " + row.kind + "  " + row.control_id() + "  ";
      if (r.status == gw::hl7send::SendStatus::acknowledged) {
        line += code;
        if (!good && ack) {
          if (!ack->error_location.empty()) line += "  " + ack->error_location;
          if (!ack->text.empty()) line += "  " + ack->text;
        }
      } else if (asked_none) {
        line += "sent (no ACK asked for by MSH-15/16)";
      } else {
        line += std::string(gw::hl7send::status_name(r.status)) + "  " + r.error;
      }
      std::printf("%s\n", line.c_str());
    }
  }
  if (a.dry_run) return 0;
  std::FILE* out = a.json ? stderr : stdout;
  std::fflush(stdout);
  std::fprintf(out,
               "replayed:   %zu\nAA/CA:      %zu\nAE/CE:      %zu\nAR/CR:      %zu\nno ACK:     %zu\n"
               "mismatched: %zu\n",
               sent, ok, errors, rejected, no_ack, mismatched);
  if (not_requested) std::fprintf(out, "no ACK asked for: %zu\n", not_requested);
  if (skipped) std::fprintf(out, "duplicates: %zu (the same message selected twice: sent once)\n", skipped);
  if (not_connected) std::fprintf(out, "not connected: %zu (not sent: %s)\n", not_connected, connect_error.c_str());
  return ok + not_requested == attempted ? 0 : 1;
}

// ---- stats ----------------------------------------------------------------------------------

int run_stats(MessageReader& reader, bool json) {
  auto s = reader.stats();
  if (!s) return fail(s.issue());
  static const char* const kStatuses[] = {"applied", "error", "rejected", "replayed", "filtered"};
  auto count = [](const std::map<std::string, std::int64_t>& m, const char* k) {
    auto it = m.find(k);
    return it == m.end() ? std::int64_t{0} : it->second;
  };
  if (json) {
    fhir::Json o = fhir::Json::object();
    o.set("messages", fhir::Json::integer(s->total));
    fhir::Json by_status = fhir::Json::object();
    for (const char* st : kStatuses) by_status.set(st, fhir::Json::integer(count(s->by_status, st)));
    o.set("by_status", std::move(by_status));
    o.set("pending", fhir::Json::integer(s->pending));
    fhir::Json by_source = fhir::Json::object();
    for (const auto& [source, m] : s->by_source) {
      fhir::Json x = fhir::Json::object();
      for (const char* st : kStatuses) x.set(st, fhir::Json::integer(count(m, st)));
      by_source.set(source, std::move(x));
    }
    o.set("by_source", std::move(by_source));
    o.set("oldest_received",
          s->oldest_received_ms ? fhir::Json::string(utc_time(*s->oldest_received_ms, true)) : fhir::Json());
    o.set("newest_received",
          s->newest_received_ms ? fhir::Json::string(utc_time(*s->newest_received_ms, true)) : fhir::Json());
    std::printf("%s\n", fhir::to_json(o).c_str());
    return 0;
  }
  std::printf("messages:        %lld\n", static_cast<long long>(s->total));
  for (const char* st : kStatuses)
    std::printf("  %-14s %lld\n", (std::string(st) + ":").c_str(), static_cast<long long>(count(s->by_status, st)));
  if (s->pending)
    std::printf("  %-14s %lld (applied and committed, the acknowledgement may not have been sent: a resend by the "
                "sender, or `gw-messages replay --status pending`, completes them)\n",
                "pending:", static_cast<long long>(s->pending));
  if (!s->by_source.empty()) {
    std::printf("by source:\n");
    for (const auto& [source, m] : s->by_source) {
      std::printf("  %-24s", truncate(one_line(source), 24).c_str());
      for (const char* st : kStatuses) std::printf("  %s %lld", st, static_cast<long long>(count(m, st)));
      std::printf("\n");
    }
  }
  if (s->oldest_received_ms) {
    std::printf("oldest received: %s\n", utc_time(*s->oldest_received_ms, true).c_str());
    std::printf("newest received: %s\n", utc_time(*s->newest_received_ms, true).c_str());
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::signal(SIGPIPE, SIG_IGN);
  CLI::App app{
      "gw-messages: list, show, replay and count the inbound messages in a gateway's store.db.\n"
      "store.db is opened read-only, so the tools are safe while the gateway runs."};
  app.require_subcommand(1);
  std::string data_dir = "data";
  auto status_check = CLI::IsMember({"error", "rejected", "applied", "replayed", "failed", "pending", "filtered"});
  // Ids are store.db row ids, from 1. (CLI::PositiveNumber answers 0 with "Value 0 not in range
  // 0.000000 to 1.797693e+308", which tells the user nothing.)
  const CLI::Validator message_id(
      [](std::string& v) -> std::string {
        char* end = nullptr;
        errno = 0;
        const long long n = std::strtoll(v.c_str(), &end, 10);
        if (v.empty() || *end != '\0' || errno == ERANGE || n < 1)
          return "'" + v.substr(0, 32) + "' is not a message id: ids are whole numbers from 1 (see gw-messages list)";
        return {};
      },
      "ID");

  auto* list = app.add_subcommand("list", "list stored messages (default: the failed ones: error and rejected)");
  gw::messages_cli::ListQuery q;
  std::string list_status = "failed";
  bool list_json = false;
  list->add_option("--data", data_dir, "the gateway's data directory (holding store.db)")->capture_default_str();
  list->add_option("--status", list_status,
                   "error, rejected, applied, replayed, failed (error + rejected), filtered (a type or event "
                   "not mapped, acknowledged AA as its source's unmapped = \"filter\" asks; nothing applied), or "
                   "pending (applied, its acknowledgement may not have been sent)")
      ->check(status_check)
      ->capture_default_str();
  list->add_option("--source", q.source, "only messages from this source system (its configured name)");
  list->add_option("--limit", q.limit, "at most this many (1..10000)")
      ->check(CLI::Range(1, 10000))
      ->capture_default_str();
  list->add_option("--after-id", q.after_id, "only ids greater than this (next page)")->check(CLI::NonNegativeNumber);
  list->add_flag("--json", list_json, "one JSON object per line");

  auto* show = app.add_subcommand("show", "show one message: its fields and the message with segments on lines");
  std::int64_t show_id = 0;
  bool show_raw = false;
  show->add_option("--data", data_dir, "the gateway's data directory (holding store.db)")->capture_default_str();
  show->add_flag("--raw", show_raw, "write the exact stored bytes to stdout (segments end in CR)");
  show->add_option("id", show_id, "message id (from list)")->required()->check(message_id);

  auto* replay = app.add_subcommand(
      "replay",
      "send stored messages again, byte for byte, to the running gateway over MLLP and report each ACK; "
      "applied messages turn their errored rows 'replayed'; one failing again keeps its one failed row, "
      "updated. Exit 0 when every message got AA/CA (or asked for no ACK in MSH-15/16)");
  ReplayArgs ra;
  replay->add_option("--data", data_dir, "the gateway's data directory (holding store.db)")->capture_default_str();
  CLI::Option* ids = replay->add_option("--id", ra.ids, "message id(s) to replay")->check(message_id);
  CLI::Option* rstatus = replay
                             ->add_option("--status", ra.status,
                                          "replay every message with this status: error, rejected, failed, "
                                          "filtered (applied once the gateway maps its type), or pending (its "
                                          "resend completes it)")
                             ->check(CLI::IsMember({"error", "rejected", "failed", "filtered", "pending"}));
  ids->excludes(rstatus);
  rstatus->excludes(ids);
  replay->add_option("--source", ra.source, "only messages from this source system (required when several match)");
  replay->add_option("--limit", ra.limit, "with --status: at most this many, oldest first (1..100000)")
      ->check(CLI::Range(std::size_t{1}, kMaxReplay))
      ->capture_default_str();
  replay->add_flag("--json", ra.json, "one JSON line per message on stdout; the summary goes to stderr");
  replay->add_flag("--quiet", ra.quiet, "print only failures and the summary");
  replay->add_flag("--dry-run", ra.dry_run, "list what would be sent; send nothing");
  gw::hl7send::add_client_options(*replay, ra.client);
  replay->get_option("--port")
      ->description("MLLP port of the source's listener: required without --config; with it, the source's endpoint")
      ->default_str("");
  replay->add_option("--config", ra.config_file,
                     "the gateway's configuration file: --data defaults to its data_dir, --host and --port to "
                     "the source's MLLP endpoint, and a --port other than that endpoint's is refused")
      ->check(CLI::ExistingFile);
  replay->add_flag("--force-port", ra.force_port,
                   "with --config: send to --port even when it is not the source's endpoint (another source's "
                   "listener would store the messages as that source's)");

  auto* stats = app.add_subcommand("stats", "count messages per status and per source; oldest and newest");
  bool stats_json = false;
  stats->add_option("--data", data_dir, "the gateway's data directory (holding store.db)")->capture_default_str();
  stats->add_flag("--json", stats_json, "one JSON object");

  try {
    gw::tools::parse(app, argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  if (*replay && ra.ids.empty() && ra.status.empty()) {
    std::fprintf(stderr,
                 "gw-messages replay: name the messages with --id N or --status error|rejected|failed|pending\n");
    return 2;
  }
  if (*replay) {
    ra.host_given = replay->get_option("--host")->count() > 0;
    ra.port_given = replay->get_option("--port")->count() > 0;
    if (!ra.config_file.empty()) {
      try {
        ra.config = gw::config::load_config(ra.config_file);
      } catch (const gw::config::ConfigError& e) {
        std::fprintf(stderr, "gw-messages: %s\n", e.what());
        return 2;
      }
      if (replay->get_option("--data")->count() == 0) data_dir = ra.config->data_dir;
    }
  }

  auto reader = MessageReader::open(data_dir);
  if (!reader) return fail(reader.issue());
  if (*list) {
    q.statuses = gw::messages_cli::expand_status(list_status);
    q.pending_only = list_status == "pending";
    return run_list(*reader, q, list_json);
  }
  if (*show) return run_show(*reader, show_id, show_raw);
  if (*replay) return run_replay(*reader, ra);
  return run_stats(*reader, stats_json);
}
