// Command leadport-agent is the Leadport edge agent: a daemon on a PBX or
// softphone host that enforces Leadport's terms on SIP signalling, meters
// usage, keeps consent records and syncs them to the platform.
//
// Usage (`leadport-agent help` prints the same list from the commands
// themselves):
//
//	leadport-agent run [--config FILE]
//	leadport-agent config check FILE
//	leadport-agent version
//	leadport-agent status [--json] [--socket PATH]
//	leadport-agent consent add --subject N --purpose P --method M [...]
//	leadport-agent identity [--json] [--config FILE]
//	leadport-agent doctor [--config FILE] [--json]
//	leadport-agent analyze [--policy FILE] [--lines +1555...,...] [--json] [--unmasked] FILE...
//	leadport-agent install [--config FILE] | uninstall | start | stop | restart
//	leadport-agent fleet keygen --out FILE [--kid ID]
//	leadport-agent fleet sign --key FILE --kid ID --type T --device D [--args JSON]
//	leadport-agent fleet send --broker URL (--device D | --fleet) [--policy] < token
//	leadport-agent fleet tail --broker URL [--device D] [-n N] [--for DURATION]
//	leadport-agent fleet verify --key PEM [--at TIME] [FILE|-]
//	leadport-agent fleet devices --broker URL [--json]
//	leadport-agent fleet erase --broker URL --key FILE --kid ID (--subject N | --all-data) (--device D ... | --all) --wait DURATION [--ledger FILE] [--json]
//	leadport-agent fleet collect --broker URL --out DIR [--group G] [--instance NAME] [--json]
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
)

// command is one subcommand; each lives in its own file.
type command struct {
	name  string
	usage string
	run   func(args []string, stdout, stderr io.Writer) error
}

func commands() []command {
	return []command{
		{"run", "run [--config FILE]        run the agent in the foreground", runCmd},
		{"config", "config check FILE          validate a configuration file without starting", configCmd},
		{"version", "version                    print version, commit and Go version", versionCmd},
		{"status", "status [--json] [--socket PATH]  what the running agent is doing (through its local API)", statusCmd},
		{"consent", "consent add --subject N --purpose P --method M [--state granted|withdrawn] [--evidence REF] [--line L]  record a consent through the local API", consentCmd},
		{"identity", "identity [--json] [--config FILE]  the call-signing public key, key id and algorithm: what the platform enrols", identityCmd},
		{"doctor", "doctor [--config FILE] [--json]  check the installation: config, data directory, ports, upstream, broker, keys, clock", doctorCmd},
		{"analyze", "analyze [--policy FILE] [--lines +1555...,...] [--json] [--unmasked] FILE...  replay captures (pcap, pcapng) or trace files through the rules, in simulated time", analyzeCmd},
		{"store", "store scan --subject NUMBER [--config FILE] [--json]  can anything of this person still be read here, with the device key? exit 1 if so", storeCmd},
		{"install", "install [--config FILE]    install the system service (systemd, OpenWrt procd, launchd, Windows)", serviceCmd("install")},
		{"uninstall", "uninstall                  remove the system service (data is kept)", serviceCmd("uninstall")},
		{"start", "start                      start the system service", serviceCmd("start")},
		{"stop", "stop                       stop the system service", serviceCmd("stop")},
		{"restart", "restart                    restart the system service", serviceCmd("restart")},
		{"fleet", "fleet keygen|sign|send|tail|verify|devices|erase|collect  platform-side tools: keys, signed commands, watching a device, checking a call's Identity, the roster, a fleet-wide erase, collecting the records", fleetCmd},
	}
}

// errUsage makes main print usage and exit 2 without repeating an error.
var errUsage = errors.New("usage")

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage(stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		err := c.run(args[1:], stdout, stderr)
		switch {
		case err == nil:
			return 0
		case errors.Is(err, errUsage), errors.Is(err, flag.ErrHelp):
			fmt.Fprintf(stderr, "usage: leadport-agent %s\n", c.usage)
			return 2
		default:
			fmt.Fprintf(stderr, "leadport-agent %s: %v\n", c.name, err)
			return 1
		}
	}
	fmt.Fprintf(stderr, "leadport-agent: unknown command %q\n", args[0])
	usage(stderr)
	return 2
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: leadport-agent <command> [arguments]")
	fmt.Fprintln(w)
	for _, c := range commands() {
		fmt.Fprintf(w, "  %s\n", c.usage)
	}
}
