// Package agent wires the leadport-agent daemon together: it owns the
// configuration, opens the store, and (as later parts land) starts the SIP
// proxy, the MQTT sync, the local API and the service integration. The
// binary in agent/cmd/leadport-agent is a thin CLI over this package.
package agent
