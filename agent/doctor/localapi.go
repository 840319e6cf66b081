package doctor

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
)

// agentRunning asks the local API of a running agent for its status; any
// 200 means an agent runs with this config's socket. It also learns the
// device id the agent uses (generated when the config names none). The
// listener and broker checks ask; the API is asked once.
func (env *Env) agentRunning() bool {
	env.api.once.Do(func() {
		sock := env.Config.API.Socket
		if sock == "" {
			return
		}
		cl := &http.Client{Timeout: apiTimeout, Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var nd net.Dialer
				return nd.DialContext(ctx, "unix", sock)
			},
		}}
		defer cl.CloseIdleConnections()
		res, err := cl.Get("http://leadport-agent/v1/status")
		if err != nil {
			env.api.err = err
			return
		}
		defer res.Body.Close()
		env.api.up = res.StatusCode == http.StatusOK
		var st struct {
			DeviceID string `json:"device_id"`
			SIP      struct {
				Register agentRegister `json:"register"`
			} `json:"sip"`
		}
		if env.api.up && json.NewDecoder(io.LimitReader(res.Body, 1<<20)).Decode(&st) == nil {
			env.api.deviceID = st.DeviceID
			env.api.register = st.SIP.Register
		}
	})
	return env.api.up
}

// agentRegister is the running agent's sip.register: the register mode in
// force, whether it fell back from path, and the lines whose registrations
// fail (masked) with the registrar's last status.
type agentRegister struct {
	Mode         string         `json:"mode"`
	Fallback     bool           `json:"fallback"`
	LinesFailing map[string]int `json:"lines_failing"`
}
