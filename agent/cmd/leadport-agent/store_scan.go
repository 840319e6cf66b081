package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"

	"github.com/leadport/leadport-agent/agent/config"
	"github.com/leadport/leadport-agent/store"
	"github.com/leadport/leadport-agent/store/phone"
)

// errSubjectFound makes the command exit 1: something of the subject can
// still be read. A scan that fails exits 1 too, so 0 always means a scan
// that ran and found nothing.
var errSubjectFound = errors.New("the subject can still be read on this device")

// maxTracesShown bounds the places printed per kind; --json has them all.
const maxTracesShown = 10

// storeCmd is `leadport-agent store scan`, the check a data-protection
// officer runs after an erase: with the device key, can anything of this
// person still be read here? Personal fields are sealed, so looking for
// the number in the file proves nothing; store.Scan opens what the key
// opens, on every page, free ones included. It reads the files and
// writes nothing, and takes no lock, so it runs whether the agent does or
// not (it needs read access to the store and the device key: root or the
// service user).
func storeCmd(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "scan" {
		return errUsage
	}
	fs := flag.NewFlagSet("store scan", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "configuration file, for data_dir, store.key_file and default_country (default: $LEADPORT_CONFIG, else "+defaultConfigPath+" when it exists)")
	subject := fs.String("subject", "", "the person's phone number, in any form (national numbers are read in default_country); required")
	asJSON := fs.Bool("json", false, "print the whole report, every place found, as JSON")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if fs.NArg() != 0 || *subject == "" {
		return errUsage
	}
	p, _ := doctorConfigFile(*path, config.DefaultPath(), defaultConfigPath)
	cfg, err := config.Load(p)
	if err != nil {
		return err
	}
	num, err := phone.Normalize(*subject, cfg.DefaultCountry)
	if err != nil {
		return fmt.Errorf("--subject: %w", err)
	}
	rep, err := store.Scan(store.Options{Dir: cfg.DataDir, KeyFile: cfg.Store.KeyFile, DefaultCountry: cfg.DefaultCountry}, num)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		out := struct {
			Subject string `json:"subject"` // masked: reports get pasted into tickets
			DataDir string `json:"data_dir"`
			Found   bool   `json:"found"`
			*store.ScanReport
		}{phone.Mask(num), cfg.DataDir, rep.Found(), rep}
		if err := enc.Encode(out); err != nil {
			return err
		}
	} else {
		printScan(stdout, phone.Mask(num), cfg.DataDir, rep)
	}
	if rep.Found() {
		return errSubjectFound
	}
	return nil
}

func printScan(w io.Writer, subject, dir string, rep *store.ScanReport) {
	fmt.Fprintf(w, "subject  %s\n", subject)
	fmt.Fprintf(w, "read     %v in %s: %d pages, %d of them free\n", rep.Files, filepath.Clean(dir), rep.Pages, rep.FreePages)
	fmt.Fprintf(w, "key      opened %d data keys and %d sealed fields of all subjects held (%d fields no key opens)\n",
		rep.KeysUnwrapped, rep.FieldsOpened, rep.Unopened)
	if !rep.Found() {
		fmt.Fprintln(w, "result   NOTHING of the subject can be read: no digest, key or field of it, nor the number in clear")
		return
	}
	fmt.Fprintln(w, "result   FOUND: the subject can still be read")
	for _, k := range []struct {
		name   string
		traces []store.Trace
	}{
		{"keyed digest (index, key table, record parts)", rep.Digests},
		{"data keys of the subject that unwrap", rep.Keys},
		{"sealed fields of the subject that open", rep.Fields},
		{"the number in clear", rep.Clear},
	} {
		if len(k.traces) == 0 {
			continue
		}
		free := 0
		for _, t := range k.traces {
			if t.Free {
				free++
			}
		}
		fmt.Fprintf(w, "  %d %s (%d on free pages)\n", len(k.traces), k.name, free)
		for i, t := range k.traces {
			if i == maxTracesShown {
				fmt.Fprintf(w, "    ... %d more (--json lists them)\n", len(k.traces)-i)
				break
			}
			fmt.Fprintf(w, "    %s\n", t)
		}
	}
}
