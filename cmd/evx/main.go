// Command evx is evx's one binary: units seal, inspect and open evidence
// bundles (keygen, seal, inspect, open) and push, follow and pull them
// through their gateway (push, status, outbox, inbox, pull, whoami);
// operators run and check a gateway (gateway, config check, dev-env); demo
// shows it all on loopback. It parses flags, calls the packages and prints:
// it is the only place that wires configuration, storage, the daemon and
// metrics together. See README.md and docs/.
package main

import (
	"context"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// run executes the command line args and returns the process exit code,
// as exitCodes documents. A failure is reported on stderr, as one JSON
// object when the command was given --json.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := newRootCmd(stdout, stderr)
	root.SetArgs(args)
	root.SetIn(stdin)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return exitOK
	}
	exit, code := classify(err)
	if cmd == root && exit == exitFailure {
		// The root command runs nothing itself: what fails there is
		// the choice of a subcommand, such as an unknown one.
		exit, code = exitUsage, category(exitUsage)
	}
	reportError(stderr, err, exit, code, wantsJSON(cmd, args))
	return exit
}

// wantsJSON reports whether the command line asked for JSON output: the
// command's --json flag, or, when the flags could not all be parsed, a
// --json among the arguments.
func wantsJSON(cmd *cobra.Command, args []string) bool {
	if cmd != nil {
		if f := cmd.Flags().Lookup("json"); f != nil && f.Value.String() == "true" {
			return true
		}
	}
	for _, a := range args {
		switch a {
		case "--":
			return false
		case "--json", "--json=true":
			return true
		}
	}
	return false
}

func newRootCmd(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "evx",
		Short: "evx exchanges sealed digital evidence across borders",
		Long: `evx seals evidence files into signed, post-quantum encrypted bundles,
and opens them on the recipient's machine. Each country's gateway (evx
gateway) carries bundles to the gateways of other countries over QUIC with
mutual TLS; units push bundles to their gateway and pull those addressed
to them, with a profile (--profile, EVX_PROFILE, or
$XDG_CONFIG_HOME/evx/profile.yaml).

` + exitHelp(),
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	// --version prints what "evx version" does. Cobra reads the template
	// as text/template: the text has no actions, so it prints as it is.
	info := readBuildInfo()
	root.Version = info.Version
	root.SetVersionTemplate(info.String())
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.AddCommand(
		newKeygenCmd(),
		newSealCmd(),
		newInspectCmd(),
		newOpenCmd(),
		newDemoCmd(),
		newGatewayCmd(),
		newLogKeysCmd(),
		newAuditCmd(),
		newReportCmd(),
		newConfigCmd(),
		newAgreementCmd(),
		newPushCmd(),
		newInboxCmd(),
		newPullCmd(),
		newWhoamiCmd(),
		newStatusCmd(),
		newOutboxCmd(),
		newHoldCmd(),
		newRecallCmd(),
		newDevEnvCmd(),
		newVersionCmd(),
	)
	markUsageErrors(root)
	return root
}

// markUsageErrors makes cobra's own errors about the command line (a flag
// it cannot parse, a wrong number of arguments) usage errors, which exit
// 2, for cmd and every command below it.
func markUsageErrors(cmd *cobra.Command) {
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usage(err) })
	if args := cmd.Args; args != nil {
		cmd.Args = func(c *cobra.Command, a []string) error { return usage(args(c, a)) }
	}
	for _, c := range cmd.Commands() {
		markUsageErrors(c)
	}
}
