package main

import (
	"bufio"
	"cmp"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strconv"
	"strings"
	gosync "sync"
	"syscall"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"golang.org/x/crypto/chacha20poly1305"

	"github.com/leadport/leadport-agent/agent"
	"github.com/leadport/leadport-agent/agent/config"
	"github.com/leadport/leadport-agent/store"
	synccommand "github.com/leadport/leadport-agent/sync/command"
)

// Check outcomes. SKIP is a check that could not run because one it needs
// (the config) failed, or that does not apply.
const (
	doctorOK   = "OK"
	doctorWarn = "WARN"
	doctorFail = "FAIL"
	doctorSkip = "SKIP"
)

// Limits of the network checks: a technician waits for all of them, so
// they run at the same time and none waits longer than this.
const (
	doctorUpstreamTimeout = 3 * time.Second
	doctorBrokerTimeout   = 5 * time.Second
	doctorAPITimeout      = time.Second
	// doctorCertWarn is how early an expiring certificate is reported.
	doctorCertWarn = 30 * 24 * time.Hour
)

// errDoctorNoAnswer is a peer that said nothing before doctor's deadline.
var errDoctorNoAnswer = errors.New("no answer")

// doctorServiceUser is the account the packaged service runs as, when it exists.
const doctorServiceUser = config.ServiceUser

// doctorExampleKeys are the illustration keys of packaging/leadport-agent.example.yaml:
// their private halves were thrown away, so a config that still carries them
// cannot verify any real command.
var doctorExampleKeys = []string{
	"CcsHNEeHC3PBxLud1qT2mbZdYSICm97wApIea7GtaJE=",
	"gIZhFipXSeny0DMs71JfNuFUYoXcPs_ECFzpPnGelGA",
}

// doctorCheck is one line of the report.
type doctorCheck struct {
	Name    string   `json:"name"`
	Status  string   `json:"status"`
	Found   string   `json:"found"`
	Details []string `json:"details,omitempty"`
	Fix     string   `json:"fix,omitempty"`
}

type doctorReport struct {
	Version string         `json:"version"`
	OS      string         `json:"os"`
	Arch    string         `json:"arch"`
	Host    string         `json:"host,omitempty"`
	User    string         `json:"user,omitempty"`
	Config  string         `json:"config"`
	OK      bool           `json:"ok"`
	Counts  map[string]int `json:"counts"`
	Checks  []doctorCheck  `json:"checks"`
}

// doctorFailed makes the exit code 1 after the report is printed.
type doctorFailed int

func (e doctorFailed) Error() string {
	if e == 1 {
		return "1 check failed"
	}
	return fmt.Sprintf("%d checks failed", int(e))
}

// doctorCmd checks an installation the way a technician on the device
// needs it: one line per check, what was found and, for WARN and FAIL,
// how to fix it. It exits 1 when any check fails.
func doctorCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("doctor", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "configuration file (default: $LEADPORT_CONFIG, else "+defaultConfigPath+" when it exists, else built-in defaults)")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return errUsage
	}
	file, source := doctorConfigFile(*path, config.DefaultPath(), defaultConfigPath)

	d := newDoctor()
	v := agent.Version()
	rep := doctorReport{Version: v.Version, OS: v.OS, Arch: v.Arch, Config: file, Counts: map[string]int{}, Checks: []doctorCheck{}}
	rep.Host, _ = os.Hostname()
	rep.User = d.self.name
	if rep.Config == "" {
		rep.Config = "(built-in defaults)"
	}
	if !*asJSON {
		who := ""
		if rep.User != "" {
			who = ", as " + rep.User
		}
		fmt.Fprintf(stdout, "leadport-agent doctor (%s, %s/%s, host %s%s)\n", rep.Version, rep.OS, rep.Arch, rep.Host, who)
	}
	for _, r := range d.run(file, source) {
		rep.Checks = append(rep.Checks, r)
		rep.Counts[r.Status]++
		if !*asJSON {
			printDoctorCheck(stdout, r)
		}
	}
	rep.OK = rep.Counts[doctorFail] == 0
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else {
		var parts []string
		for _, s := range []string{doctorFail, doctorWarn, doctorOK, doctorSkip} {
			if n := rep.Counts[s]; n > 0 {
				parts = append(parts, fmt.Sprintf("%d %s", n, s))
			}
		}
		fmt.Fprintf(stdout, "\n%s\n", strings.Join(parts, ", "))
	}
	if n := rep.Counts[doctorFail]; n > 0 {
		return doctorFailed(n)
	}
	return nil
}

// Columns of the text report: status, name, then what was found; details
// and the fix line start under what was found.
const (
	doctorNameWidth = 12
	doctorIndent    = 4 + 2 + doctorNameWidth + 2
)

func printDoctorCheck(w io.Writer, r doctorCheck) {
	fmt.Fprintf(w, "%-4s  %-*s  %s\n", r.Status, doctorNameWidth, r.Name, r.Found)
	pad := strings.Repeat(" ", doctorIndent)
	for _, l := range r.Details {
		fmt.Fprintf(w, "%s%s\n", pad, l)
	}
	if r.Fix != "" && (r.Status == doctorWarn || r.Status == doctorFail) {
		fmt.Fprintf(w, "%sfix: %s\n", pad, r.Fix)
	}
}

// config sources, for the config check's wording.
const (
	doctorFromFlag    = "--config"
	doctorFromEnv     = "LEADPORT_CONFIG"
	doctorFromDefault = "default path"
	doctorFromNone    = ""
)

// doctorConfigFile picks the file the way the service finds it: --config, else
// $LEADPORT_CONFIG, else the packaged path when it exists, else none
// (built-in defaults).
func doctorConfigFile(flagPath, envPath, defaultPath string) (path, source string) {
	switch {
	case flagPath != "":
		return flagPath, doctorFromFlag
	case envPath != "":
		return envPath, doctorFromEnv
	}
	if _, err := os.Stat(defaultPath); err == nil {
		return defaultPath, doctorFromDefault
	}
	return "", doctorFromNone
}

// doctor holds what the checks share.
type doctor struct {
	cfg  *config.Config
	self doctorAccount // who runs the doctor
	// owner is the account expected to own the data: the service user when
	// run as root and it exists, else whoever runs the doctor.
	owner doctorAccount
	// service is the packaged service user, when it exists.
	service doctorAccount

	apiOnce     gosync.Once
	apiUp       bool
	apiErr      error
	apiDeviceID string

	mu gosync.Mutex
	// notBefore is the latest start of validity of a broker certificate
	// seen: a clock before it is certainly wrong.
	notBefore   time.Time
	notBeforeOf string
	// edgeOffset is the upstream's clock less ours, from the Date of its
	// answer to OPTIONS, when edgeDate.
	edgeOffset time.Duration
	edgeDate   bool
}

// doctorAccount is a local user as far as file ownership goes; known is false
// where the platform has no numeric owners (Windows).
type doctorAccount struct {
	name    string
	uid     int
	gids    []int
	known   bool
	service bool // the packaged service user, not the one running doctor
}

func newDoctor() *doctor {
	d := &doctor{}
	d.self = currentDoctorAccount()
	d.owner = d.self
	if u, err := user.Lookup(doctorServiceUser); err == nil && d.self.known {
		if a, ok := doctorAccountOf(u); ok {
			a.service = true
			d.service = a
			if d.self.uid == 0 {
				d.owner = a
			}
		}
	}
	return d
}

func currentDoctorAccount() doctorAccount {
	uid := os.Geteuid()
	if uid < 0 {
		return doctorAccount{}
	}
	a := doctorAccount{name: strconv.Itoa(uid), uid: uid, gids: []int{os.Getegid()}, known: true}
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil {
		if b, ok := doctorAccountOf(u); ok {
			a = b
		}
	}
	if gs, err := os.Getgroups(); err == nil {
		a.gids = append(a.gids, gs...)
	}
	return a
}

func doctorAccountOf(u *user.User) (doctorAccount, bool) {
	uid, err1 := strconv.Atoi(u.Uid)
	gid, err2 := strconv.Atoi(u.Gid)
	if err1 != nil || err2 != nil {
		return doctorAccount{}, false
	}
	a := doctorAccount{name: u.Username, uid: uid, gids: []int{gid}, known: true}
	if gs, err := u.GroupIds(); err == nil {
		for _, g := range gs {
			if n, err := strconv.Atoi(g); err == nil {
				a.gids = append(a.gids, n)
			}
		}
	}
	return a, true
}

// doctorFileOwner reads a file's owner without build tags: on Unix, Sys() is a
// *syscall.Stat_t with Uid and Gid fields; Windows has none (ok false).
func doctorFileOwner(fi fs.FileInfo) (uid, gid int, ok bool) {
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

func doctorUserName(uid int) string {
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil {
		return u.Username
	}
	return "uid " + strconv.Itoa(uid)
}

// doctorModeChecks says whether permission bits mean anything here.
var doctorModeChecks = runtime.GOOS != "windows"

// run performs every check and returns the results in report order. The
// network checks start at once and run side by side; the results still
// come in a fixed order.
func (d *doctor) run(file, source string) []doctorCheck {
	var out []doctorCheck
	res, cfg := d.checkConfig(file, source)
	out = append(out, res)
	d.cfg = cfg
	if cfg == nil {
		for _, n := range []string{"data dir", "device key", "identity key", "trusted keys", "sip listen", "upstream", "broker"} {
			out = append(out, doctorCheck{Name: n, Status: doctorSkip, Found: "needs a valid config"})
		}
		return append(out, d.checkClock())
	}
	ctx := context.Background()
	upstream := doctorAsync(func() []doctorCheck {
		out := []doctorCheck{d.checkUpstream(ctx)}
		if r, ok := d.checkUpstreamSize(ctx); ok {
			out = append(out, r)
		}
		return out
	})
	brokers := doctorAsync(func() []doctorCheck { return d.checkBrokers(ctx) })

	out = append(out, d.checkDataDir(), d.checkDeviceKey(), d.checkIdentityKey(), d.checkTrustedKeys())
	out = append(out, d.checkListeners()...)
	out = append(out, upstream()...)
	out = append(out, brokers()...)
	if r, ok := d.checkClientCert(); ok {
		out = append(out, r)
	}
	out = append(out, d.checkClock())
	if r, ok := d.checkEdgeClock(); ok {
		out = append(out, r)
	}
	return out
}

func doctorAsync(f func() []doctorCheck) func() []doctorCheck {
	ch := make(chan []doctorCheck, 1)
	go func() { ch <- f() }()
	return func() []doctorCheck { return <-ch }
}

// --- config ---

func (d *doctor) checkConfig(file, source string) (doctorCheck, *config.Config) {
	r := doctorCheck{Name: "config"}
	if file == "" {
		cfg := config.Default()
		r.Status = doctorWarn
		r.Found = fmt.Sprintf("no configuration file: built-in defaults (data_dir %s)", cfg.DataDir)
		r.Fix = fmt.Sprintf("copy packaging/leadport-agent.example.yaml to %s and edit it, or pass --config FILE", defaultConfigPath)
		return r, cfg
	}
	cfg, err := config.Load(file)
	if err == nil {
		r.Status = doctorOK
		r.Found = file + ": valid"
		if source == doctorFromEnv {
			r.Found += " (from $LEADPORT_CONFIG)"
		}
		return r, cfg
	}
	r.Status = doctorFail
	var ce *config.Error
	if errors.As(err, &ce) {
		n := len(ce.Problems)
		r.Found = fmt.Sprintf("%s: %d problem%s", file, n, doctorPlural(n))
		for _, p := range ce.Problems {
			p.File = "" // named once, above
			r.Details = append(r.Details, p.String())
		}
		r.Fix = "correct the file (leadport-agent config check " + file + " lists the same problems)"
		return r, nil
	}
	r.Found = fmt.Sprintf("cannot read %s: %v", file, doctorPathErr(err))
	switch {
	case errors.Is(err, fs.ErrNotExist) && source == doctorFromEnv:
		r.Fix = "$LEADPORT_CONFIG names a missing file: correct it or unset it"
	case errors.Is(err, fs.ErrNotExist):
		r.Fix = "check the path (the packaged place is " + defaultConfigPath + ")"
	case errors.Is(err, fs.ErrPermission):
		r.Fix = "run doctor as root or as the agent's user, or make the file readable by it"
	default:
		r.Fix = "check the path"
	}
	return r, nil
}

// doctorPathErr drops the "config: open FILE:" prefix when the file is named
// already.
func doctorPathErr(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

func doctorPlural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// --- data directory ---

func (d *doctor) checkDataDir() doctorCheck {
	r := doctorCheck{Name: "data dir"}
	dir := doctorAbs(d.cfg.DataDir)
	fi, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		parent := dir
		for {
			next := filepath.Dir(parent)
			if next == parent {
				break
			}
			parent = next
			if _, err := os.Stat(parent); err == nil {
				break
			}
		}
		if err := doctorTryWrite(parent); err != nil {
			r.Status = doctorFail
			r.Found = fmt.Sprintf("%s does not exist, and %s cannot create it: %v", dir, d.self.name, doctorPathErr(err))
			r.Fix = fmt.Sprintf("mkdir -p %s && chmod 700 %s", dir, dir)
			if d.owner.known {
				r.Fix += fmt.Sprintf(" && chown %s: %s", d.owner.name, dir)
			}
			return r
		}
		r.Status = doctorOK
		r.Found = dir + " does not exist yet: the agent creates it at first start (mode 0700)"
		return r
	}
	if errors.Is(err, fs.ErrPermission) {
		return d.cannotLook(r, dir)
	}
	if err != nil {
		r.Status, r.Found, r.Fix = doctorFail, fmt.Sprintf("%s: %v", dir, doctorPathErr(err)), "check data_dir"
		return r
	}
	if !fi.IsDir() {
		r.Status, r.Found = doctorFail, dir+" is not a directory"
		r.Fix = "move it aside, or set data_dir to a directory"
		return r
	}

	if uid, _, ok := doctorFileOwner(fi); ok && d.service.known && uid == d.service.uid && d.self.uid != 0 && d.self.uid != uid {
		// A packaged install looked at by a technician's own account.
		r.Status = doctorSkip
		r.Found = fmt.Sprintf("%s belongs to the service user %s: run doctor as root to check it", dir, d.service.name)
		return r
	}

	var problems, fixes []string
	status := doctorOK
	worse := func(s string) {
		if s == doctorFail || status == doctorOK {
			status = s
		}
	}
	writable := true
	if err := doctorTryWrite(dir); err != nil {
		writable = false
		worse(doctorFail)
		problems = append(problems, fmt.Sprintf("not writable by %s (%v)", d.self.name, doctorPathErr(err)))
		if d.owner.known {
			fixes = append(fixes, fmt.Sprintf("chown -R %s: %s", d.owner.name, dir))
		}
	}
	mode := fi.Mode().Perm()
	if doctorModeChecks {
		switch {
		case mode&0o002 != 0:
			worse(doctorFail)
			problems = append(problems, fmt.Sprintf("mode %04o: every user on this host can change the store", mode))
			fixes = append(fixes, "chmod 750 "+dir)
		case mode&0o005 != 0:
			worse(doctorWarn)
			problems = append(problems, fmt.Sprintf("mode %04o: every user on this host can look into it", mode))
			fixes = append(fixes, "chmod 750 "+dir)
		}
	}
	ownerNote := ""
	if uid, gid, ok := doctorFileOwner(fi); ok && d.owner.known {
		ownerNote = ", owner " + doctorUserName(uid)
		if uid != d.owner.uid {
			who := d.owner.name
			if d.owner.service {
				who = "the service user " + who
			}
			// Someone else's directory: the agent's user can write it
			// only through the group or other bits (or as root).
			canWrite := d.owner.uid == 0 || mode&0o003 == 0o003 ||
				(slices.Contains(d.owner.gids, gid) && mode&0o030 == 0o030)
			if canWrite || !writable {
				worse(doctorWarn)
				problems = append(problems, fmt.Sprintf("owned by %s, not %s", doctorUserName(uid), who))
			} else {
				worse(doctorFail)
				problems = append(problems, fmt.Sprintf("owned by %s: %s cannot write it", doctorUserName(uid), who))
			}
			fixes = append(fixes, fmt.Sprintf("chown -R %s: %s", d.owner.name, dir))
		}
	}
	r.Status = status
	if len(problems) == 0 {
		r.Found = fmt.Sprintf("%s: writable, mode %04o%s", dir, mode, ownerNote)
		return r
	}
	r.Found = dir + ": " + strings.Join(problems, "; ")
	r.Fix = strings.Join(doctorUniq(fixes), " && ")
	return r
}

// cannotLook is the result for a path the user running doctor may not
// even look at (a data directory that belongs to the service user).
func (d *doctor) cannotLook(r doctorCheck, path string) doctorCheck {
	r.Status = doctorSkip
	r.Found = fmt.Sprintf("%s cannot be looked at as %s (permission denied): run doctor as root", path, d.self.name)
	return r
}

// doctorTryWrite creates and removes a file in dir.
func doctorTryWrite(dir string) error {
	f, err := os.CreateTemp(dir, ".leadport-doctor-*")
	if err != nil {
		return err
	}
	name := f.Name()
	f.Close()
	return os.Remove(name)
}

func doctorAbs(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}

func doctorUniq(xs []string) []string {
	var out []string
	for _, x := range xs {
		if !slices.Contains(out, x) {
			out = append(out, x)
		}
	}
	return out
}

// --- device key ---

func (d *doctor) checkDeviceKey() doctorCheck {
	r := doctorCheck{Name: "device key"}
	key := doctorAbs(d.cfg.Store.KeyFile)
	fi, err := os.Stat(key)
	if errors.Is(err, fs.ErrNotExist) {
		db := filepath.Join(doctorAbs(d.cfg.DataDir), store.FileName)
		if _, err := os.Stat(db); err == nil {
			r.Status = doctorFail
			r.Found = fmt.Sprintf("%s is missing, but the store %s exists: what it holds cannot be read without the key", key, db)
			r.Fix = fmt.Sprintf("restore %s from a backup, or move %s aside to start with an empty store", key, db)
			return r
		}
		r.Status = doctorOK
		r.Found = key + " not created yet: the agent creates it at first start (mode 0600)"
		return r
	}
	if errors.Is(err, fs.ErrPermission) {
		return d.cannotLook(r, key)
	}
	if err != nil {
		r.Status, r.Found, r.Fix = doctorFail, fmt.Sprintf("%s: %v", key, doctorPathErr(err)), "check store.key_file"
		return r
	}
	if !fi.Mode().IsRegular() {
		r.Status, r.Found, r.Fix = doctorFail, key+" is not a regular file", "restore the key file, or correct store.key_file"
		return r
	}
	var problems, fixes []string
	status := doctorOK
	mode := fi.Mode().Perm()
	if doctorModeChecks && mode != 0o600 {
		status = doctorFail
		problems = append(problems, fmt.Sprintf("mode %04o, want 0600 (only the agent may read it)", mode))
		fixes = append(fixes, "chmod 600 "+key)
	}
	if fi.Size() != chacha20poly1305.KeySize {
		status = doctorFail
		problems = append(problems, fmt.Sprintf("%d bytes, want %d: not a device key", fi.Size(), chacha20poly1305.KeySize))
		fixes = append(fixes, "restore "+key+" from a backup")
	}
	ownerNote := ""
	if uid, _, ok := doctorFileOwner(fi); ok && d.owner.known {
		ownerNote = ", owner " + doctorUserName(uid)
		if uid != d.owner.uid {
			who := d.owner.name
			if d.owner.service {
				who = "the service user " + who
			}
			if d.owner.uid == 0 {
				// Root reads it anyway, but its owner could change it.
				if status == doctorOK {
					status = doctorWarn
				}
				problems = append(problems, fmt.Sprintf("owned by %s, not %s", doctorUserName(uid), who))
			} else {
				status = doctorFail
				problems = append(problems, fmt.Sprintf("owned by %s: %s cannot read it", doctorUserName(uid), who))
			}
			fixes = append(fixes, fmt.Sprintf("chown %s: %s", d.owner.name, key))
		}
	}
	r.Status = status
	if len(problems) == 0 {
		r.Found = fmt.Sprintf("%s: mode %04o%s", key, mode, ownerNote)
		return r
	}
	r.Found = key + ": " + strings.Join(problems, "; ")
	r.Fix = strings.Join(fixes, " && ")
	return r
}

// --- trusted keys ---

func (d *doctor) checkTrustedKeys() doctorCheck {
	r := doctorCheck{Name: "trusted keys"}
	keys := d.cfg.Commands.TrustedKeys
	if len(keys) == 0 {
		r.Status = doctorFail
		r.Found = "none: signed commands cannot be verified (erase, export and policy are all rejected)"
		r.Fix = "add the keys Leadport gives you under commands.trusted_keys (key id: base64 Ed25519 public key)"
		return r
	}
	kids := slices.Sorted(maps.Keys(keys))
	var examples []string
	for _, kid := range kids {
		for _, ex := range doctorExampleKeys {
			if b, err := doctorDecodeKey(ex); err == nil && string(b) == string(keys[kid]) {
				examples = append(examples, kid)
			}
		}
	}
	if len(examples) > 0 {
		r.Status = doctorWarn
		r.Found = fmt.Sprintf("%s: the example file's illustration keys, which no real command is signed with", strings.Join(examples, ", "))
		r.Fix = "replace them with the keys Leadport gives you under commands.trusted_keys"
		return r
	}
	r.Status = doctorOK
	r.Found = fmt.Sprintf("%d key%s: %s", len(kids), doctorPlural(len(kids)), strings.Join(kids, ", "))
	return r
}

// doctorDecodeKey reads base64 as config does (standard or URL-safe, padding
// optional).
func doctorDecodeKey(s string) ([]byte, error) {
	c, err := config.Parse("", []byte("commands: {trusted_keys: {k: \""+s+"\"}}\n"))
	if err != nil {
		return nil, err
	}
	return c.Commands.TrustedKeys["k"], nil
}

// --- SIP listeners ---

func (d *doctor) checkListeners() []doctorCheck {
	var out []doctorCheck
	s := d.cfg.SIP
	for i, e := range append(append([]config.Endpoint{}, s.Listen...), s.UpstreamListen...) {
		label := e.String()
		if i >= len(s.Listen) {
			label += " (upstream side)"
		}
		out = append(out, d.checkListener(e, label))
	}
	return out
}

func (d *doctor) checkListener(e config.Endpoint, label string) doctorCheck {
	r := doctorCheck{Name: "sip listen"}
	network := "tcp"
	if e.Transport == "udp" {
		network = "udp"
	}
	err := doctorTryBind(network, e.Addr())
	switch {
	case err == nil:
		r.Status, r.Found = doctorOK, label+": free"
		return r
	case errors.Is(err, syscall.EADDRINUSE):
		if d.agentRunning() {
			r.Status, r.Found = doctorOK, label+": held by the running agent (its API answered)"
			return r
		}
		owners := doctorPortOwners(network, e.Port)
		for _, o := range owners {
			if o.name == "leadport-agent" {
				r.Status = doctorOK
				r.Found = fmt.Sprintf("%s: held by leadport-agent (pid %d)", label, o.pid)
				return r
			}
		}
		if len(owners) == 0 && errors.Is(d.apiErr, fs.ErrPermission) {
			r.Status = doctorWarn
			r.Found = fmt.Sprintf("%s: in use, perhaps by the agent: %s may not ask it (permission denied on %s)", label, d.self.name, d.cfg.API.Socket)
			r.Fix = "run doctor as root, or add this user to the agent's group (usermod -aG leadport-agent USER)"
			return r
		}
		r.Status = doctorFail
		if len(owners) > 0 {
			var names []string
			for _, o := range owners {
				names = append(names, fmt.Sprintf("%s (pid %d)", o.name, o.pid))
			}
			r.Found = fmt.Sprintf("%s: port in use by another program: %s", label, strings.Join(doctorUniq(names), ", "))
		} else {
			r.Found = label + ": port in use by another program"
			if runtime.GOOS == "linux" && d.self.uid != 0 {
				r.Found += " (run doctor as root to name it)"
			}
		}
		r.Fix = fmt.Sprintf("stop that program or move it off %s port %d (a PBX's own SIP often holds 5060), or choose another port in sip.listen", strings.ToUpper(network), e.Port)
	case errors.Is(err, syscall.EACCES):
		r.Status = doctorWarn
		r.Found = fmt.Sprintf("%s: %s may not bind port %d", label, d.self.name, e.Port)
		r.Fix = "ports below 1024 need root or CAP_NET_BIND_SERVICE: run the agent as the system service, or use a port above 1023"
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		r.Status = doctorFail
		r.Found = fmt.Sprintf("%s: %s is not an address of this host", label, e.Host)
		r.Fix = "use one of this host's addresses, or 0.0.0.0 for all of them"
	default:
		r.Status = doctorFail
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

func doctorTryBind(network, addr string) error {
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

// agentRunning asks the local API of a running agent for its status; any
// 200 means an agent runs with this config's socket. It also learns the
// device id the agent uses (generated when the config names none).
func (d *doctor) agentRunning() bool {
	d.apiOnce.Do(func() {
		sock := d.cfg.API.Socket
		if sock == "" {
			return
		}
		cl := &http.Client{Timeout: doctorAPITimeout, Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var nd net.Dialer
				return nd.DialContext(ctx, "unix", sock)
			},
		}}
		defer cl.CloseIdleConnections()
		res, err := cl.Get("http://leadport-agent/v1/status")
		if err != nil {
			d.apiErr = err
			return
		}
		defer res.Body.Close()
		d.apiUp = res.StatusCode == http.StatusOK
		var st struct {
			DeviceID string `json:"device_id"`
		}
		if d.apiUp && json.NewDecoder(io.LimitReader(res.Body, 1<<20)).Decode(&st) == nil {
			d.apiDeviceID = st.DeviceID
		}
	})
	return d.apiUp
}

type doctorProc struct {
	pid  int
	name string
}

// doctorPortOwners names the processes holding a port, from Linux's
// /proc/net/{udp,tcp}[6] (socket inode) and /proc/*/fd (which process has
// it). Best effort: nil elsewhere, and without root only one's own
// processes can be seen.
func doctorPortOwners(network string, port int) []doctorProc {
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
	var out []doctorProc
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
				out = append(out, doctorProc{pid: pid, name: doctorProcName(pid)})
				break
			}
		}
	}
	return out
}

func doctorProcName(pid int) string {
	if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); err == nil {
		return filepath.Base(strings.TrimSuffix(exe, " (deleted)"))
	}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); err == nil {
		return strings.TrimSpace(string(b))
	}
	return "?"
}

// --- upstream ---

var doctorSIPLogOnce gosync.Once

func (d *doctor) checkUpstream(ctx context.Context) doctorCheck {
	r := doctorCheck{Name: "upstream"}
	e := d.cfg.SIP.Upstream
	if e.IsZero() {
		r.Status = doctorWarn
		r.Found = "sip.upstream is not set: the SIP proxy is off and calls are not checked"
		r.Fix = "set sip.upstream to the Leadport SIP edge Leadport gave you (e.g. udp://edge.leadport.example:5060)"
		return r
	}
	label := e.String()
	ctx, cancel := context.WithTimeout(ctx, doctorUpstreamTimeout)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupHost(ctx, e.Host)
	if err != nil || len(addrs) == 0 {
		r.Status = doctorFail
		r.Found = fmt.Sprintf("%s: %s does not resolve (%v)", label, e.Host, err)
		r.Fix = "check the name in sip.upstream and this host's DNS (/etc/resolv.conf)"
		return r
	}
	res, rtt, err := doctorOptions(ctx, e, addrs[0])
	if err != nil {
		r.Status = doctorFail
		r.Found = fmt.Sprintf("%s: no answer to OPTIONS within %s", label, doctorUpstreamTimeout)
		if !errors.Is(err, context.DeadlineExceeded) {
			r.Found += fmt.Sprintf(" (%v)", err)
		}
		r.Fix = fmt.Sprintf("check that a firewall lets %s port %d out and the answers back in, and that sip.upstream is the address Leadport gave you", strings.ToUpper(e.Transport), e.Port)
		if errors.Is(err, syscall.ECONNREFUSED) {
			r.Fix = fmt.Sprintf("nothing takes %s on %s: check the port and transport in sip.upstream", strings.ToUpper(e.Transport), net.JoinHostPort(addrs[0], strconv.Itoa(e.Port)))
		}
		return r
	}
	if h := res.GetHeader("Date"); h != nil {
		d.sawUpstreamDate(h.Value(), time.Now())
	}
	r.Found = fmt.Sprintf("%s: answered %d %s in %s", label, res.StatusCode, res.Reason, doctorMS(rtt))
	r.Status = doctorOK
	if res.StatusCode >= 500 {
		r.Status = doctorWarn
		r.Fix = "the edge answers but reports a problem on its side: try again later, or tell Leadport support"
	}
	return r
}

// doctorOptions sends one OPTIONS with sipgo's client (retransmitted over UDP
// as RFC 3261 asks) and returns the final answer and the time it took.
func doctorOptions(ctx context.Context, e config.Endpoint, ip string) (*sip.Response, time.Duration, error) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	doctorSIPLogOnce.Do(func() { sip.SetDefaultLogger(quiet) })
	host := doctorLocalAddr(net.JoinHostPort(ip, strconv.Itoa(e.Port)))
	ua, err := sipgo.NewUA(
		sipgo.WithUserAgent("leadport-agent-doctor"),
		sipgo.WithUserAgentHostname(host),
		sipgo.WithUserAgentTransactionLayerOptions(sip.WithTransactionLayerLogger(quiet)),
		sipgo.WithUserAgentTransportLayerOptions(sip.WithTransportLayerLogger(quiet)),
	)
	if err != nil {
		return nil, 0, err
	}
	defer ua.Close()
	cli, err := sipgo.NewClient(ua, sipgo.WithClientHostname(host), sipgo.WithClientLogger(quiet), sipgo.WithClientNAT())
	if err != nil {
		return nil, 0, err
	}
	uri := sip.Uri{Scheme: "sip", Host: e.Host, Port: e.Port}
	if e.Transport != "udp" {
		uri.UriParams = sip.NewParams()
		uri.UriParams.Add("transport", e.Transport)
	}
	req := sip.NewRequest(sip.OPTIONS, uri)
	req.AppendHeader(sip.NewHeader("Accept", "application/sdp"))
	start := time.Now()
	res, err := cli.Do(ctx, req)
	if err != nil {
		return nil, 0, err
	}
	return res, time.Since(start), nil
}

// doctorLocalAddr is this host's address on the route to addr (for Via
// and From); nothing is sent.
func doctorLocalAddr(addr string) string {
	c, err := net.Dial("udp", addr)
	if err != nil {
		return "127.0.0.1"
	}
	defer c.Close()
	h, _, _ := net.SplitHostPort(c.LocalAddr().String())
	return h
}

func doctorMS(d time.Duration) string {
	return strconv.FormatFloat(float64(d.Microseconds())/1000, 'f', 1, 64) + " ms"
}

// --- broker ---

func (d *doctor) checkBrokers(ctx context.Context) []doctorCheck {
	m := d.cfg.MQTT
	if len(m.Brokers) == 0 {
		return []doctorCheck{{Name: "broker", Status: doctorWarn,
			Found: "mqtt.brokers is empty: no sync, records wait in the store",
			Fix:   "set mqtt.brokers to the broker Leadport gave you (e.g. ssl://mqtt.leadport.example:8883)"}}
	}
	tlsConf, tlsErr := agent.MQTTTLS(m)
	var password string
	var pwErr error
	if m.PasswordFile != "" {
		var b []byte
		if b, pwErr = os.ReadFile(m.PasswordFile); pwErr == nil {
			password = strings.TrimRight(string(b), "\r\n")
		} else {
			pwErr = fmt.Errorf("mqtt.password_file: %w", pwErr)
		}
	}
	// Never the device id itself: the broker would take this connection
	// for the agent's and drop the running agent's session.
	deviceID := d.cfg.DeviceID
	if deviceID == "" && d.agentRunning() {
		deviceID = d.apiDeviceID
	}
	clientID := deviceID + "-doctor"
	if deviceID == "" {
		b := make([]byte, 4)
		rand.Read(b)
		clientID = "leadport-doctor-" + hex.EncodeToString(b)
	}
	results := make([]func() []doctorCheck, len(m.Brokers))
	for i, b := range m.Brokers {
		results[i] = doctorAsync(func() []doctorCheck {
			return []doctorCheck{d.checkBroker(ctx, b, clientID, tlsConf, tlsErr, password, pwErr)}
		})
	}
	var out []doctorCheck
	for _, f := range results {
		out = append(out, f()...)
	}
	return out
}

func (d *doctor) checkBroker(ctx context.Context, broker, clientID string, tlsConf *tls.Config, tlsErr error, password string, pwErr error) doctorCheck {
	r := doctorCheck{Name: "broker"}
	u, err := url.Parse(broker)
	if err != nil { // validated by config already
		r.Status, r.Found, r.Fix = doctorFail, fmt.Sprintf("%s: %v", broker, err), "correct mqtt.brokers"
		return r
	}
	secure := u.Scheme == "ssl" || u.Scheme == "wss"

	// The server certificate's dates, read on a connection of its own so
	// that an expired or untrusted certificate can still be described;
	// whether it is trusted is what the MQTT connection below finds out.
	var certNote, certStatus, certFix string
	var probeErr error
	if secure {
		host := u.Hostname()
		if tlsConf != nil && tlsConf.ServerName != "" {
			host = tlsConf.ServerName
		}
		var leaf *x509.Certificate
		if leaf, probeErr = doctorPeerCert(ctx, u.Host, host); probeErr == nil {
			d.sawCert(leaf, broker)
			left := time.Until(leaf.NotAfter)
			switch {
			case left <= 0:
				certStatus = doctorFail
				certNote = fmt.Sprintf("server certificate expired %s", doctorDate(leaf.NotAfter))
				certFix = "the broker's certificate has expired: tell Leadport support (or correct this host's clock if it is wrong)"
			case left < doctorCertWarn:
				certStatus = doctorWarn
				certNote = fmt.Sprintf("server certificate expires %s (in %s)", doctorDate(leaf.NotAfter), doctorDays(left))
				certFix = "the broker's certificate expires soon: tell Leadport support"
			default:
				certNote = fmt.Sprintf("server certificate valid until %s", doctorDate(leaf.NotAfter))
			}
		}
	}
	// Without its TLS files (even for a tcp:// broker: the agent loads
	// them before it starts sync) or password the agent cannot connect
	// either; say so, with what the certificate probe found.
	if setupErr := cmp.Or(tlsErr, pwErr); setupErr != nil {
		r.Status = doctorFail
		r.Found = fmt.Sprintf("%s: %v", broker, setupErr)
		switch {
		case certNote != "":
			r.Found += "; reachable, " + certNote
		case probeErr != nil:
			r.Found += fmt.Sprintf("; the broker is not reachable either: %v", probeErr)
		}
		switch {
		case setupErr == pwErr:
			r.Fix = "put the password Leadport gave you in mqtt.password_file (chmod 600), or correct the path"
		case errors.Is(setupErr, fs.ErrNotExist):
			r.Fix = "install the file Leadport gave you at the path in mqtt.tls, or correct the path"
		default:
			r.Fix = "correct mqtt.tls: the files must be PEM, readable by the agent, and the certificate must match its key"
		}
		return r
	}

	opts := mqtt.NewClientOptions().
		AddBroker(broker).
		SetClientID(clientID).
		SetCleanSession(true).
		SetConnectTimeout(doctorBrokerTimeout).
		SetWriteTimeout(doctorBrokerTimeout).
		SetAutoReconnect(false).
		SetConnectRetry(false)
	if secure {
		opts.SetTLSConfig(tlsConf.Clone())
	}
	if d.cfg.MQTT.Username != "" {
		opts.SetUsername(d.cfg.MQTT.Username)
		opts.SetPassword(password)
	}
	cli := mqtt.NewClient(opts)
	start := time.Now()
	tok := cli.Connect()
	var connErr error
	if !tok.WaitTimeout(doctorBrokerTimeout + 2*time.Second) {
		connErr = fmt.Errorf("%w within %s", errDoctorNoAnswer, doctorBrokerTimeout)
	} else {
		connErr = tok.Error()
	}
	rtt := time.Since(start)
	if connErr == nil {
		cli.Disconnect(0)
	}

	var notes []string
	if connErr == nil {
		notes = append(notes, fmt.Sprintf("connected in %s as %s", doctorMS(rtt), clientID))
	} else {
		// paho puts "network Error : " before what the network said.
		notes = append(notes, "cannot connect: "+strings.TrimPrefix(connErr.Error(), packets.ErrorNetworkError.Error()+" : "))
	}
	if certNote != "" {
		notes = append(notes, certNote)
	}
	r.Found = broker + ": " + strings.Join(notes, "; ")
	switch {
	case connErr != nil:
		r.Status = doctorFail
		r.Fix = doctorBrokerFix(connErr, u, clientID)
		if certStatus == doctorFail {
			r.Fix = certFix
		}
	case certStatus != "":
		r.Status, r.Fix = certStatus, certFix
	default:
		r.Status = doctorOK
	}
	return r
}

// doctorBrokerFix says what to do about a failed connection.
func doctorBrokerFix(err error, u *url.URL, clientID string) string {
	var unknownCA x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var invalid x509.CertificateInvalidError
	var dnsErr *net.DNSError
	var netErr net.Error
	switch {
	case errors.As(err, &unknownCA):
		return "this host does not trust the broker's certificate: set mqtt.tls.ca_file to the CA file Leadport gave you"
	case errors.As(err, &hostErr):
		return fmt.Sprintf("the broker's certificate is not for %s: use the broker name Leadport gave you in mqtt.brokers", u.Hostname())
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		return "the certificate is expired or not yet valid: check this host's clock, then tell Leadport support"
	case errors.Is(err, packets.ErrorRefusedBadUsernameOrPassword), errors.Is(err, packets.ErrorRefusedNotAuthorised):
		return "the broker refused this device's credentials: check mqtt.username, mqtt.password_file and the client certificate (mqtt.tls)"
	case errors.Is(err, packets.ErrorRefusedIDRejected):
		return fmt.Sprintf("the broker rejected the client id %s: tell Leadport support", clientID)
	case errors.Is(err, packets.ErrorRefusedServerUnavailable):
		return "the broker is up but not taking clients: try again later, or tell Leadport support"
	case errors.As(err, &dnsErr):
		return fmt.Sprintf("%s does not resolve: check the name in mqtt.brokers and this host's DNS", u.Hostname())
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Sprintf("nothing listens on %s: check the port in mqtt.brokers (ssl is usually 8883), or a firewall rejecting it", u.Host)
	case errors.As(err, &netErr) && netErr.Timeout(), errors.Is(err, errDoctorNoAnswer):
		return fmt.Sprintf("no answer from %s: a firewall may drop outgoing TCP to port %s; check the address in mqtt.brokers", u.Host, u.Port())
	}
	return "check mqtt.brokers, mqtt.tls and the network"
}

// doctorPeerCert reads the server's certificate without judging it.
func doctorPeerCert(ctx context.Context, addr, serverName string) (*x509.Certificate, error) {
	ctx, cancel := context.WithTimeout(ctx, doctorBrokerTimeout)
	defer cancel()
	dl := tls.Dialer{Config: &tls.Config{
		ServerName: serverName,
		// Only the dates are read here and nothing is sent; the MQTT
		// connection that follows verifies the certificate.
		InsecureSkipVerify: true, //nolint:gosec // read-only probe, see above
		MinVersion:         tls.VersionTLS12,
	}}
	conn, err := dl.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	certs := conn.(*tls.Conn).ConnectionState().PeerCertificates
	if len(certs) == 0 {
		return nil, errors.New("no certificate")
	}
	return certs[0], nil
}

func (d *doctor) sawCert(c *x509.Certificate, from string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if c.NotBefore.After(d.notBefore) {
		d.notBefore, d.notBeforeOf = c.NotBefore, from
	}
}

func doctorDate(t time.Time) string { return t.UTC().Format("2006-01-02") }

func doctorDays(d time.Duration) string {
	n := int(d.Hours() / 24)
	if n == 1 {
		return "1 day"
	}
	if n == 0 {
		return fmt.Sprintf("%d hours", int(d.Hours()))
	}
	return fmt.Sprintf("%d days", n)
}

// checkClientCert reports the client certificate's dates; ok is false
// when none is configured.
func (d *doctor) checkClientCert() (doctorCheck, bool) {
	file := d.cfg.MQTT.TLS.CertFile
	if file == "" {
		return doctorCheck{}, false
	}
	r := doctorCheck{Name: "client cert"}
	data, err := os.ReadFile(file)
	if err != nil {
		r.Status, r.Found = doctorFail, fmt.Sprintf("mqtt.tls.cert_file %s: %v", file, doctorPathErr(err))
		r.Fix = "install the client certificate Leadport gave you there, or correct mqtt.tls.cert_file"
		return r, true
	}
	var leaf *x509.Certificate
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type == "CERTIFICATE" {
			if leaf, err = x509.ParseCertificate(b.Bytes); err != nil {
				r.Status, r.Found, r.Fix = doctorFail, fmt.Sprintf("%s: %v", file, err), "install the client certificate Leadport gave you"
				return r, true
			}
			break
		}
	}
	if leaf == nil {
		r.Status, r.Found, r.Fix = doctorFail, file+" holds no PEM certificate", "install the client certificate Leadport gave you"
		return r, true
	}
	who := leaf.Subject.CommonName
	if who == "" {
		who = leaf.Subject.String()
	}
	left := time.Until(leaf.NotAfter)
	switch {
	case left <= 0:
		r.Status = doctorFail
		r.Found = fmt.Sprintf("%s (%s) expired %s", file, who, doctorDate(leaf.NotAfter))
		r.Fix = "the broker refuses an expired certificate: ask Leadport for a new one"
	case left < doctorCertWarn:
		r.Status = doctorWarn
		r.Found = fmt.Sprintf("%s (%s) expires %s (in %s)", file, who, doctorDate(leaf.NotAfter), doctorDays(left))
		r.Fix = "ask Leadport for a new client certificate before it expires: the broker refuses an expired one"
	case time.Now().Before(leaf.NotBefore):
		r.Status = doctorFail
		r.Found = fmt.Sprintf("%s (%s) is valid only from %s", file, who, doctorDate(leaf.NotBefore))
		r.Fix = "check this host's clock"
	default:
		r.Status = doctorOK
		r.Found = fmt.Sprintf("%s (%s) valid until %s", file, who, doctorDate(leaf.NotAfter))
	}
	return r, true
}

// --- clock ---

// checkClock looks for a clock that is plainly wrong. Signed commands
// carry issue and expiry times that a device accepts with at most
// synccommand.Skew (5 minutes) of difference, and TLS certificates are judged
// by the local clock too, so a device whose clock is off refuses the
// platform's erase requests and may not reach the broker. What can be told
// without another time source: a year before 2024 (a box without a
// real-time clock that booted without network time often starts in 1970
// or 2000), a time before a broker certificate's start of validity, and
// on Linux whether the system says NTP has synchronised it. Comparing with
// a server's time would need a trusted time source the device does not
// have offline, so skew itself is not measured.
func (d *doctor) checkClock() doctorCheck {
	r := doctorCheck{Name: "clock"}
	now := time.Now()
	stamp := now.UTC().Format("2006-01-02 15:04:05 UTC")
	if now.Year() < 2024 {
		r.Status = doctorFail
		r.Found = stamp + ": the clock is wrong"
		r.Fix = fmt.Sprintf("set the time and enable NTP (timedatectl set-ntp true, or the box's NTP setting): signed commands allow only %s of difference", synccommand.Skew)
		return r
	}
	d.mu.Lock()
	nb, nbOf := d.notBefore, d.notBeforeOf
	d.mu.Unlock()
	if !nb.IsZero() && now.Before(nb) {
		r.Status = doctorFail
		r.Found = fmt.Sprintf("%s: behind, the certificate of %s is valid only from %s", stamp, nbOf, nb.UTC().Format(time.RFC3339))
		r.Fix = "set the time and enable NTP (timedatectl set-ntp true, or the box's NTP setting)"
		return r
	}
	synced, how := doctorNTP()
	switch synced {
	case "yes":
		r.Status, r.Found = doctorOK, stamp+": synchronised ("+how+")"
	case "no":
		r.Status, r.Found = doctorWarn, stamp+": not synchronised ("+how+")"
		r.Fix = fmt.Sprintf("enable NTP (timedatectl set-ntp true) and let UDP 123 out: signed commands allow only %s of difference", synccommand.Skew)
	default:
		r.Status, r.Found = doctorOK, stamp+": plausible (whether NTP synchronises it cannot be told here)"
	}
	return r
}

// doctorNTP says "yes", "no" or "" (cannot tell), and from where.
func doctorNTP() (string, string) {
	if runtime.GOOS != "linux" {
		return "", ""
	}
	// systemd-timesyncd touches this file once it has synchronised.
	if _, err := os.Stat("/run/systemd/timesync/synchronized"); err == nil {
		return "yes", "systemd-timesyncd"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "timedatectl", "show", "-p", "NTPSynchronized", "--value").Output()
	if err != nil {
		return "", ""
	}
	switch strings.TrimSpace(string(out)) {
	case "yes":
		return "yes", "timedatectl"
	case "no":
		return "no", "timedatectl"
	}
	return "", ""
}
