// Package packaging holds the service definitions that the packages install
// (packaging/leadport-agent.service, packaging/openwrt/leadport-agent.init,
// packaging/openrc/leadport-agent.initd), built into the binary so that
// `leadport-agent install` writes the very same files: one source for both.
package packaging

import _ "embed" // the files below

// SystemdUnit is the systemd unit for /usr/bin/leadport-agent with
// /etc/leadport-agent/agent.yaml.
//
//go:embed leadport-agent.service
var SystemdUnit string

// ProcdInit is the OpenWrt procd init script.
//
//go:embed openwrt/leadport-agent.init
var ProcdInit string

// OpenRCInit is the OpenRC init script (Alpine).
//
//go:embed openrc/leadport-agent.initd
var OpenRCInit string
