package api

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os/user"
	"slices"
	"strconv"
)

// peer is the other end of a connection to the API. Over the socket the
// kernel says who it is; over loopback TCP nobody does, so TCP is
// read-only.
type peer struct {
	unix  bool
	port  string // TCP: the port the client connected to, for the Host check
	creds *creds // unix: nil when the platform cannot tell
	err   error  // why creds is nil
}

// creds are a socket peer's credentials as the kernel recorded them when
// it connected: the peer cannot choose them.
type creds struct {
	uid, gid int
	groups   []int // supplementary groups, where the platform gives them (darwin)
}

type peerKey struct{}

// connContext tells the handlers who is on each connection: the server
// calls it once per accepted connection, before any request is read.
func connContext(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, peerKey{}, newPeer(c))
}

func newPeer(c net.Conn) *peer {
	if uc, ok := c.(*net.UnixConn); ok {
		p := &peer{unix: true}
		cr, err := peerCreds(uc)
		if err != nil {
			p.err = err
		} else {
			p.creds = &cr
		}
		return p
	}
	_, port, _ := net.SplitHostPort(c.LocalAddr().String())
	return &peer{port: port}
}

// peerOf is the request's peer. A Handler served without connContext
// (an httptest server, say) still knows its listener's kind from the
// address net/http records, and gets no credentials: read-only.
func peerOf(r *http.Request) *peer {
	if p, ok := r.Context().Value(peerKey{}).(*peer); ok {
		return p
	}
	addr, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	if addr == nil {
		return &peer{err: errNoCreds}
	}
	if addr.Network() == "unix" {
		return &peer{unix: true, err: errNoCreds}
	}
	_, port, _ := net.SplitHostPort(addr.String())
	return &peer{port: port}
}

var (
	errNoCreds     = errors.New("the platform does not tell who is on the other end of the socket")
	errReadOnlyTCP = errors.New("the API is read-only over TCP: changes are accepted only on the unix socket (api.socket), e.g. by `leadport-agent consent add`")
)

// Accounts is the local account database: os/user in the agent, a table
// in tests.
type Accounts interface {
	Lookup(name string) (*user.User, error)
	LookupId(uid string) (*user.User, error)
	GroupIds(u *user.User) ([]string, error)
}

type osAccounts struct{}

func (osAccounts) Lookup(name string) (*user.User, error)  { return user.Lookup(name) }
func (osAccounts) LookupId(uid string) (*user.User, error) { return user.LookupId(uid) }
func (osAccounts) GroupIds(u *user.User) ([]string, error) { return u.GroupIds() }

// writers decides who may change the agent's state: root, the user the
// agent runs as (a developer running it as themselves), the service user
// and the members of its group. Membership is read from the account
// database on each request, so `usermod -aG` takes effect without a new
// login and a removal at once.
type writers struct {
	accounts Accounts
	service  string // the service user's name
	self     int    // the agent's own uid; -1 where there is none (windows)
}

// allow returns the name to record as the author of a change, or why the
// peer may not make one.
func (w writers) allow(p *peer) (string, error) {
	if !p.unix {
		return "", errReadOnlyTCP
	}
	if p.creds == nil {
		return "", fmt.Errorf("changes need the peer's credentials: %w", p.err)
	}
	c := p.creds
	name := w.name(c.uid)
	if c.uid == 0 || c.uid == w.self {
		return name, nil
	}
	svc, err := w.accounts.Lookup(w.service)
	if err != nil {
		return "", fmt.Errorf("%s may not change the agent's state: only root and the agent's own user may while the service user %s does not exist", name, w.service)
	}
	if strconv.Itoa(c.uid) == svc.Uid {
		return name, nil
	}
	if gid, err := strconv.Atoi(svc.Gid); err == nil && (c.gid == gid || slices.Contains(c.groups, gid)) {
		return name, nil
	}
	if u, err := w.accounts.LookupId(strconv.Itoa(c.uid)); err == nil {
		if gids, err := w.accounts.GroupIds(u); err == nil && slices.Contains(gids, svc.Gid) {
			return name, nil
		}
	}
	return "", fmt.Errorf("%s may not change the agent's state: only root, the user %s and the members of its group may (usermod -aG %s USER)", name, w.service, w.service)
}

// name is what a consent record says recorded it: the user's name, or
// its uid when the account database does not know it.
func (w writers) name(uid int) string {
	if u, err := w.accounts.LookupId(strconv.Itoa(uid)); err == nil && u.Username != "" {
		return u.Username
	}
	return "uid " + strconv.Itoa(uid)
}
