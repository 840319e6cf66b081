package doctor

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"github.com/leadport/leadport-agent/agent/config"
)

// sipListen checks each SIP listen address (both sides): free, or held by
// the running agent; else who holds it.
type sipListen struct{}

func (sipListen) Name() string { return "sip listen" }

func (c sipListen) Run(_ context.Context, env *Env) []Result {
	var out []Result
	s := env.Config.SIP
	for i, e := range append(append([]config.Endpoint{}, s.Listen...), s.UpstreamListen...) {
		label := e.String()
		if i >= len(s.Listen) {
			label += " (upstream side)"
		}
		out = append(out, c.check(env, e, label))
	}
	return out
}

func (sipListen) check(env *Env, e config.Endpoint, label string) Result {
	var r Result
	network := "tcp"
	if e.Transport == "udp" {
		network = "udp"
	}
	err := tryBind(network, e.Addr())
	switch {
	case err == nil:
		r.Status, r.Found = OK, label+": free"
		return r
	case errors.Is(err, syscall.EADDRINUSE):
		if env.agentRunning() {
			r.Status, r.Found = OK, label+": held by the running agent (its API answered)"
			return r
		}
		owners := portOwners(network, e.Port)
		for _, o := range owners {
			if o.name == "leadport-agent" {
				r.Status = OK
				r.Found = fmt.Sprintf("%s: held by leadport-agent (pid %d)", label, o.pid)
				return r
			}
		}
		if len(owners) == 0 && errors.Is(env.api.err, fs.ErrPermission) {
			r.Status = Warn
			r.Found = fmt.Sprintf("%s: in use, perhaps by the agent: %s may not ask it (permission denied on %s)", label, env.self.name, env.Config.API.Socket)
			r.Fix = "run doctor as root, or add this user to the agent's group (usermod -aG leadport-agent USER)"
			return r
		}
		r.Status = Fail
		if len(owners) > 0 {
			var names []string
			for _, o := range owners {
				names = append(names, fmt.Sprintf("%s (pid %d)", o.name, o.pid))
			}
			r.Found = fmt.Sprintf("%s: port in use by another program: %s", label, strings.Join(uniq(names), ", "))
		} else {
			r.Found = label + ": port in use by another program"
			if runtime.GOOS == "linux" && env.self.uid != 0 {
				r.Found += " (run doctor as root to name it)"
			}
		}
		r.Fix = fmt.Sprintf("stop that program or move it off %s port %d (a PBX's own SIP often holds 5060), or choose another port in sip.listen", strings.ToUpper(network), e.Port)
	case errors.Is(err, syscall.EACCES):
		r.Status = Warn
		r.Found = fmt.Sprintf("%s: %s may not bind port %d", label, env.self.name, e.Port)
		r.Fix = "ports below 1024 need root or CAP_NET_BIND_SERVICE: run the agent as the system service, or use a port above 1023"
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		r.Status = Fail
		r.Found = fmt.Sprintf("%s: %s is not an address of this host", label, e.Host)
		r.Fix = "use one of this host's addresses, or 0.0.0.0 for all of them"
	default:
		r.Status = Fail
		r.Found = fmt.Sprintf("%s: %v", label, err)
		var dnsErr *net.DNSError
		if errors.As(err, &dnsErr) {
			r.Fix = "the host name does not resolve: use an IP address of this host"
		} else {
			r.Fix = "check the address in sip.listen"
		}
	}
	return r
}

func tryBind(network, addr string) error {
	if network == "udp" {
		c, err := net.ListenPacket("udp", addr)
		if err != nil {
			return err
		}
		return c.Close()
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	return l.Close()
}

type proc struct {
	pid  int
	name string
}

// portOwners names the processes holding a port, from Linux's
// /proc/net/{udp,tcp}[6] (socket inode) and /proc/*/fd (which process has
// it). Best effort: nil elsewhere, and without root only one's own
// processes can be seen.
func portOwners(network string, port int) []proc {
	if runtime.GOOS != "linux" {
		return nil
	}
	inodes := map[string]bool{}
	for _, f := range []string{"/proc/net/" + network, "/proc/net/" + network + "6"} {
		fh, err := os.Open(f)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(fh)
		sc.Scan() // header
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) < 10 {
				continue
			}
			_, hexPort, ok := strings.Cut(fields[1], ":")
			if !ok {
				continue
			}
			p, err := strconv.ParseUint(hexPort, 16, 16)
			if err != nil || int(p) != port {
				continue
			}
			if network == "tcp" && fields[3] != "0A" { // LISTEN
				continue
			}
			if fields[9] != "0" {
				inodes["socket:["+fields[9]+"]"] = true
			}
		}
		fh.Close()
	}
	if len(inodes) == 0 {
		return nil
	}
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []proc
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		fdDir := filepath.Join("/proc", p.Name(), "fd")
		fds, err := os.ReadDir(fdDir)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			link, err := os.Readlink(filepath.Join(fdDir, fd.Name()))
			if err == nil && inodes[link] {
				out = append(out, proc{pid: pid, name: procName(pid)})
				break
			}
		}
	}
	return out
}

func procName(pid int) string {
	if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); err == nil {
		return filepath.Base(strings.TrimSuffix(exe, " (deleted)"))
	}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); err == nil {
		return strings.TrimSpace(string(b))
	}
	return "?"
}
