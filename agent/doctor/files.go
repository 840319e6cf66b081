package doctor

import (
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"reflect"
	"runtime"
	"strconv"
)

// account is a local user as far as file ownership goes; known is false
// where the platform has no numeric owners (Windows).
type account struct {
	name    string
	uid     int
	gids    []int
	known   bool
	service bool // the packaged service user, not the one running doctor
}

func currentAccount() account {
	uid := os.Geteuid()
	if uid < 0 {
		return account{}
	}
	a := account{name: strconv.Itoa(uid), uid: uid, gids: []int{os.Getegid()}, known: true}
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil {
		if b, ok := accountOf(u); ok {
			a = b
		}
	}
	if gs, err := os.Getgroups(); err == nil {
		a.gids = append(a.gids, gs...)
	}
	return a
}

func accountOf(u *user.User) (account, bool) {
	uid, err1 := strconv.Atoi(u.Uid)
	gid, err2 := strconv.Atoi(u.Gid)
	if err1 != nil || err2 != nil {
		return account{}, false
	}
	a := account{name: u.Username, uid: uid, gids: []int{gid}, known: true}
	if gs, err := u.GroupIds(); err == nil {
		for _, g := range gs {
			if n, err := strconv.Atoi(g); err == nil {
				a.gids = append(a.gids, n)
			}
		}
	}
	return a, true
}

// fileOwner reads a file's owner without build tags: on Unix, Sys() is a
// *syscall.Stat_t with Uid and Gid fields; Windows has none (ok false).
func fileOwner(fi fs.FileInfo) (uid, gid int, ok bool) {
	v := reflect.ValueOf(fi.Sys())
	if v.Kind() == reflect.Pointer {
		if v.IsNil() {
			return 0, 0, false
		}
		v = v.Elem()
	}
	if v.Kind() != reflect.Struct {
		return 0, 0, false
	}
	u, g := v.FieldByName("Uid"), v.FieldByName("Gid")
	if !u.IsValid() || !g.IsValid() || !u.CanUint() || !g.CanUint() {
		return 0, 0, false
	}
	return int(u.Uint()), int(g.Uint()), true
}

func userName(uid int) string {
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil {
		return u.Username
	}
	return "uid " + strconv.Itoa(uid)
}

// modeChecks says whether permission bits mean anything here.
var modeChecks = runtime.GOOS != "windows"

// cannotLook is the result for a path the user running doctor may not
// even look at (a data directory that belongs to the service user).
func (env *Env) cannotLook(r Result, path string) Result {
	r.Status = Skip
	r.Found = fmt.Sprintf("%s cannot be looked at as %s (permission denied): run doctor as root", path, env.self.name)
	return r
}

// tryWrite creates and removes a file in dir.
func tryWrite(dir string) error {
	f, err := os.CreateTemp(dir, ".leadport-doctor-*")
	if err != nil {
		return err
	}
	name := f.Name()
	f.Close()
	return os.Remove(name)
}

func abs(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}
