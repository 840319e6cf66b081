package api

import (
	"os/user"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// fakeAccounts is an account database: name -> uid, gid and the groups
// it lists the user in.
type fakeAccounts map[string]struct {
	uid, gid int
	groups   []int
}

func (f fakeAccounts) Lookup(name string) (*user.User, error) {
	a, ok := f[name]
	if !ok {
		return nil, user.UnknownUserError(name)
	}
	return &user.User{Username: name, Uid: strconv.Itoa(a.uid), Gid: strconv.Itoa(a.gid)}, nil
}

func (f fakeAccounts) LookupId(uid string) (*user.User, error) {
	for name, a := range f {
		if strconv.Itoa(a.uid) == uid {
			return f.Lookup(name)
		}
	}
	n, _ := strconv.Atoi(uid)
	return nil, user.UnknownUserIdError(n)
}

func (f fakeAccounts) GroupIds(u *user.User) ([]string, error) {
	a := f[u.Username]
	gids := []string{strconv.Itoa(a.gid)}
	for _, g := range a.groups {
		gids = append(gids, strconv.Itoa(g))
	}
	return gids, nil
}

// The service user is 4242 in group 4243, as `useradd --system` would
// make it; tech is in that group by the account database, outsider not.
var testAccounts = fakeAccounts{
	"root":           {uid: 0, gid: 0},
	"leadport-agent": {uid: 4242, gid: 4243},
	"tech":           {uid: 65533, gid: 65533, groups: []int{4243}},
	"nobody":         {uid: 65534, gid: 65534},
	"dev":            {uid: 1000, gid: 1000},
}

func TestWriters(t *testing.T) {
	noService := fakeAccounts{}
	for k, v := range testAccounts {
		if k != "leadport-agent" {
			noService[k] = v
		}
	}
	sock := func(uid, gid int, groups ...int) *peer {
		return &peer{unix: true, creds: &creds{uid: uid, gid: gid, groups: groups}}
	}
	tests := []struct {
		name     string
		accounts Accounts
		self     int
		peer     *peer
		want     string // the author, or "" when refused with an error containing refusal
		refusal  string
	}{
		{"root", testAccounts, 4242, sock(0, 0), "root", ""},
		{"the service user", testAccounts, 4242, sock(4242, 4243), "leadport-agent", ""},
		{"its group, primary", testAccounts, 4242, sock(65534, 4243), "nobody", ""},
		{"its group, in the credentials (darwin)", testAccounts, 4242, sock(65534, 65534, 4243), "nobody", ""},
		{"its group, in the account database", testAccounts, 4242, sock(65533, 65533), "tech", ""},
		{"an outsider", testAccounts, 4242, sock(65534, 65534), "", "nobody may not change the agent's state: only root, the user leadport-agent and the members of its group"},
		{"an unknown uid", testAccounts, 4242, sock(7777, 7777), "", "uid 7777 may not"},
		{"the agent's own user", testAccounts, 1000, sock(1000, 1000), "dev", ""},
		{"no service user: self", noService, 1000, sock(1000, 1000), "dev", ""},
		{"no service user: root", noService, 1000, sock(0, 0), "root", ""},
		{"no service user: another", noService, 1000, sock(65533, 4243), "", "while the service user leadport-agent does not exist"},
		{"over TCP", testAccounts, 0, &peer{port: "9797"}, "", "read-only over TCP"},
		{"no credentials", testAccounts, 0, &peer{unix: true, err: errNoCreds}, "", "does not tell who"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := writers{accounts: tt.accounts, service: "leadport-agent", self: tt.self}
			got, err := w.allow(tt.peer)
			if tt.want != "" && (err != nil || got != tt.want) {
				t.Errorf("allow = %q, %v; want %q", got, err, tt.want)
			}
			if tt.want == "" && (err == nil || !strings.Contains(err.Error(), tt.refusal)) {
				t.Errorf("allow = %q, %v; want refused: %s", got, err, tt.refusal)
			}
		})
	}
}

// TestOSAccounts: the default lookup reads the machine's account
// database.
func TestOSAccounts(t *testing.T) {
	root, err := osAccounts{}.LookupId("0")
	if err != nil || root.Username != "root" {
		t.Fatalf("uid 0 = %+v, %v", root, err)
	}
	gids, err := osAccounts{}.GroupIds(root)
	if err != nil || !slices.Contains(gids, "0") {
		t.Errorf("root's groups = %v, %v; want 0 among them", gids, err)
	}
	if _, err := (osAccounts{}).Lookup("leadport-no-such-user"); err == nil {
		t.Error("a user that does not exist was found")
	}
}
