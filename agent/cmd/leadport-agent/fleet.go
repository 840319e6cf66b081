package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/leadport/leadport-agent/agent"
	"github.com/leadport/leadport-agent/agent/config"
	lpcommand "github.com/leadport/leadport-agent/sync/command"
)

// fleetCmd holds the platform-side tools: what the platform team and the
// tests use to make keys, sign and send commands, watch a device, list
// the fleet, erase a subject across it and collect the records.
func fleetCmd(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return errUsage
	}
	switch args[0] {
	case "keygen":
		return fleetKeygen(args[1:], stdout, stderr)
	case "sign":
		return fleetSign(args[1:], stdout, stderr)
	case "send":
		return fleetSend(args[1:], stdout, stderr)
	case "tail":
		return fleetTail(args[1:], stdout, stderr)
	case "verify":
		return fleetVerify(args[1:], stdout, stderr)
	case "devices":
		return fleetDevices(args[1:], stdout, stderr)
	case "erase":
		return fleetErase(args[1:], stdout, stderr)
	case "collect":
		return fleetCollect(args[1:], stdout, stderr)
	}
	return errUsage
}

// fleetKeygen makes an Ed25519 key pair: the private key (base64 of its
// 32-byte seed) into a 0600 file, and on stdout the kid and the public key
// as commands.trusted_keys takes them.
func fleetKeygen(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("fleet keygen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("out", "", "file for the private key (mode 0600); required")
	kid := fs.String("kid", "", "key id; default: platform-<first 8 hex digits of the public key's SHA-256>")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" || fs.NArg() != 0 {
		return errUsage
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	if *kid == "" {
		sum := sha256.Sum256(pub)
		*kid = "platform-" + hex.EncodeToString(sum[:4])
	}
	f, err := os.OpenFile(*out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintln(f, base64.StdEncoding.EncodeToString(priv.Seed())); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return json.NewEncoder(stdout).Encode(map[string]string{
		"kid": *kid, "public_key": base64.StdEncoding.EncodeToString(pub), "private_key_file": *out,
	})
}

func readPrivateKey(path string) (ed25519.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	seed, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("%s: not a base64 Ed25519 seed (fleet keygen writes one)", path)
	}
	return ed25519.NewKeyFromSeed(seed), nil
}

// fleetSign builds a command from flags (or a JSON file) and prints its
// compact JWS.
func fleetSign(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("fleet sign", flag.ContinueOnError)
	fs.SetOutput(stderr)
	keyFile := fs.String("key", "", "private key file from fleet keygen; required")
	kid := fs.String("kid", "", "key id the device trusts; required")
	typ := fs.String("type", "", "erase | export | policy | ping")
	device := fs.String("device", "", `device id, or "*" for the fleet`)
	argsJSON := fs.String("args", "", `args as JSON, e.g. '{"subject":"+15551234567"}'; for policy the policy document`)
	id := fs.String("id", "", "command id; default: a random one")
	ttl := fs.Duration("ttl", 24*time.Hour, "validity from now")
	from := fs.String("json", "", "read the whole command (id, type, device, issued_at, expires_at, args) from this JSON file instead; - for stdin")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *keyFile == "" || *kid == "" || fs.NArg() != 0 {
		return errUsage
	}
	key, err := readPrivateKey(*keyFile)
	if err != nil {
		return err
	}
	var c lpcommand.Command
	if *from != "" {
		b, err := readFileOrStdin(*from)
		if err != nil {
			return err
		}
		if err := json.Unmarshal(b, &c); err != nil {
			return fmt.Errorf("%s: %w", *from, err)
		}
	} else {
		if *typ == "" || *device == "" {
			return errors.New("--type and --device are required (or --json)")
		}
		now := time.Now().UTC().Truncate(time.Second)
		c = lpcommand.Command{ID: *id, Type: *typ, Device: *device, IssuedAt: now, ExpiresAt: now.Add(*ttl)}
		if *argsJSON != "" {
			if !json.Valid([]byte(*argsJSON)) {
				return errors.New("--args is not valid JSON")
			}
			c.Args = json.RawMessage(*argsJSON)
		}
	}
	if c.ID == "" {
		b := make([]byte, 12)
		rand.Read(b)
		c.ID = "cmd-" + hex.EncodeToString(b)
	}
	token, err := lpcommand.Sign(c, *kid, key)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, token)
	return err
}

// brokerFlags are the connection flags fleet send and tail share.
type brokerFlags struct {
	broker, prefix, user, passFile, ca, cert, key, clientID string
}

func (b *brokerFlags) add(fs *flag.FlagSet) {
	fs.StringVar(&b.broker, "broker", "", "broker URL (tcp://, ssl://, ws://, wss://); required")
	fs.StringVar(&b.prefix, "prefix", config.DefaultTopicPrefix, "topic prefix")
	fs.StringVar(&b.user, "username", "", "username")
	fs.StringVar(&b.passFile, "password-file", "", "file holding the password")
	fs.StringVar(&b.ca, "ca", "", "CA bundle (PEM) to trust")
	fs.StringVar(&b.cert, "cert", "", "client certificate (PEM)")
	fs.StringVar(&b.key, "cert-key", "", "client certificate's key (PEM)")
	fs.StringVar(&b.clientID, "client-id", "", "client id; default: a random one")
}

func (b *brokerFlags) connect() (mqtt.Client, error) { return b.connectWith(nil) }

// connectWith connects after adjust changed the options (fleet erase keeps
// a session).
func (b *brokerFlags) connectWith(adjust func(*mqtt.ClientOptions)) (mqtt.Client, error) {
	if b.broker == "" {
		return nil, errors.New("--broker is required")
	}
	opts := mqtt.NewClientOptions().AddBroker(b.broker).SetCleanSession(true).SetConnectTimeout(15 * time.Second)
	id := b.clientID
	if id == "" {
		r := make([]byte, 6)
		rand.Read(r)
		id = "leadport-fleet-" + hex.EncodeToString(r)
	}
	opts.SetClientID(id)
	if b.user != "" {
		opts.SetUsername(b.user)
	}
	if b.passFile != "" {
		p, err := os.ReadFile(b.passFile)
		if err != nil {
			return nil, err
		}
		opts.SetPassword(strings.TrimRight(string(p), "\r\n"))
	}
	if b.ca != "" || b.cert != "" {
		// The same TLS the agent makes from mqtt.tls.
		conf, err := agent.MQTTTLS(config.MQTT{TLS: config.MQTTTLS{CAFile: b.ca, CertFile: b.cert, KeyFile: b.key}})
		if err != nil {
			return nil, err
		}
		opts.SetTLSConfig(conf)
	}
	if adjust != nil {
		adjust(opts)
	}
	c := mqtt.NewClient(opts)
	t := c.Connect()
	if !t.WaitTimeout(20 * time.Second) {
		return nil, errors.New("broker did not answer within 20 s")
	}
	if err := t.Error(); err != nil {
		return nil, err
	}
	return c, nil
}

// fleetSend publishes a signed command (or policy) to a device or the
// fleet, QoS 1; policies are retained.
func fleetSend(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("fleet send", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var b brokerFlags
	b.add(fs)
	device := fs.String("device", "", "device id; or --fleet")
	fleet := fs.Bool("fleet", false, "send to every device")
	asPolicy := fs.Bool("policy", false, "publish to the policy topic, retained, instead of the command topic")
	tokenFile := fs.String("token", "-", "file holding the signed command (fleet sign's output); - for stdin")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if (*device == "") == !*fleet || fs.NArg() != 0 {
		return errors.New("give --device ID or --fleet")
	}
	token, err := readFileOrStdin(*tokenFile)
	if err != nil {
		return err
	}
	token = []byte(strings.TrimSpace(string(token)))
	leaf := "cmd"
	if *asPolicy {
		leaf = "policy"
	}
	topic := b.prefix + "/dev/" + *device + "/" + leaf
	if *fleet {
		topic = b.prefix + "/fleet/" + leaf
	}
	c, err := b.connect()
	if err != nil {
		return err
	}
	defer c.Disconnect(250)
	t := c.Publish(topic, 1, *asPolicy, token)
	if !t.WaitTimeout(20 * time.Second) {
		return errors.New("no PUBACK within 20 s")
	}
	if err := t.Error(); err != nil {
		return err
	}
	return json.NewEncoder(stdout).Encode(map[string]string{"topic": topic, "sent": "ok"})
}

// fleetTail prints a device's records, receipts and status as JSON lines:
// {"topic":..., "kind":"usage|consent|violation|receipt|status", "batch":..., "record":{...}}.
func fleetTail(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("fleet tail", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var b brokerFlags
	b.add(fs)
	device := fs.String("device", "+", "device id; + for every device")
	limit := fs.Int("n", 0, "stop after this many lines; 0: until interrupted")
	wait := fs.Duration("for", 0, "stop after this long; 0: until interrupted")
	if err := fs.Parse(args); err != nil {
		return err
	}
	c, err := b.connect()
	if err != nil {
		return err
	}
	defer c.Disconnect(250)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *wait > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *wait)
		defer cancel()
	}
	lines := make(chan []byte, 1024)
	enc := func(v any) {
		if b, err := json.Marshal(v); err == nil {
			select {
			case lines <- b:
			case <-ctx.Done():
			}
		}
	}
	handler := func(_ mqtt.Client, m mqtt.Message) {
		topic := m.Topic()
		kind := topic[strings.LastIndexByte(topic, '/')+1:]
		if kind == "cmd" || kind == "policy" {
			return // down, not what the device publishes (but for its barriers)
		}
		if kind == "status" {
			enc(map[string]any{"topic": topic, "kind": kind, "status": json.RawMessage(m.Payload())})
			return
		}
		var batch struct {
			Batch   string            `json:"batch"`
			Records []json.RawMessage `json:"records"`
		}
		if err := json.Unmarshal(m.Payload(), &batch); err != nil {
			enc(map[string]any{"topic": topic, "kind": kind, "error": "not a batch: " + err.Error()})
			return
		}
		for _, r := range batch.Records {
			enc(map[string]any{"topic": topic, "kind": kind, "batch": batch.Batch, "record": r})
		}
	}
	topic := b.prefix + "/dev/" + *device + "/+"
	t := c.Subscribe(topic, 1, handler)
	if !t.WaitTimeout(20*time.Second) || t.Error() != nil {
		return fmt.Errorf("subscribe %s: %v", topic, t.Error())
	}
	n := 0
	for {
		select {
		case <-ctx.Done():
			return nil
		case l := <-lines:
			if _, err := fmt.Fprintf(stdout, "%s\n", l); err != nil {
				return err
			}
			n++
			if *limit > 0 && n >= *limit {
				return nil
			}
		}
	}
}

// readFileOrStdin reads the file at path, or standard input for "-".
func readFileOrStdin(path string) ([]byte, error) {
	if path == "-" {
		return io.ReadAll(os.Stdin)
	}
	return os.ReadFile(path)
}
