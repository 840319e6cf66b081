// Package agent wires the leadport-agent daemon together: it owns the
// configuration, opens the store, starts the SIP proxy with its rules, the
// MQTT sync and the local API, and carries out the platform's commands. The
// binary in agent/cmd/leadport-agent is a thin CLI over this package,
// agent/doctor (the installation checks) and agent/service (the system
// service).
//
// # Data flow
//
//	local UAs ──SIP──▶ proxy (detect/sipproxy) ──▶ tracker (detect/dialog)
//	                     │  ▲ verdict                  │ answered, ended
//	                     ▼  │                          ▼
//	                   rules (detect/rules) ◀──────────┘
//	                     │ violations        │ ended calls (usage)
//	                     ▼                   ▼
//	                   sink (a bounded queue, one writer, group commit)
//	                     │
//	                     ▼
//	                   store (bbolt: outbox, keys, ledger, policy, calls)
//	                     │  ▲ erase, export, policy, identity.rotate
//	                     ▼  │
//	                   sync (MQTT: batches up, commands down, status)
//
//	allowed outbound INVITE ──▶ callSigner: Identity (RFC 8224) ──▶ upstream
//
// # Files, by role
//
//   - agent.go: Open and Run, the order things start and stop in.
//   - pipeline.go: builds proxy, tracker and rules from the config, and
//     applies a new policy.
//   - sink.go: the record sink between the signalling path and the store.
//   - checkpoint.go: the calls in progress, kept across a crash.
//   - callsign.go: the call-signing key, the counter, the edge's clock.
//   - sync.go: the MQTT client's wiring, the command handler, the status.
//   - localapi.go: what the local API, status page and metrics show.
//   - logging.go: the logger, which masks phone numbers in everything.
package agent
