package agent

import (
	"crypto/tls"

	"github.com/leadport/leadport-agent/agent/config"
)

// MQTTTLS is the TLS configuration the agent uses for ssl:// and wss://
// brokers (the system roots or mqtt.tls.ca_file, and the client
// certificate when one is configured), so that `leadport-agent doctor`
// tests the broker exactly as the agent will connect to it.
func MQTTTLS(m config.MQTT) (*tls.Config, error) { return mqttTLS(m) }
