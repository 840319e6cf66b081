package config_test

import (
	"fmt"

	"github.com/leadport/leadport-agent/agent/config"
)

func ExampleParse() {
	_, err := config.Parse("agent.yaml", []byte(`sip:
  listen: ["udp://0.0.0.0:5060", "htp://0.0.0.0:5060"]
policy:
  pacing:
    cooldown_s: 15m
`))
	fmt.Println(err)
	// Output:
	// agent.yaml:2: sip.listen[1]: unsupported scheme "htp" (want udp, tcp or tls)
	// agent.yaml:5: policy.pacing.cooldown_s: got the string "15m", want an integer
}
