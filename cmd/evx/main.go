// Command evx seals, inspects and opens evidence bundles, and runs the evx
// demo. See README.md and docs/ for what each subcommand does.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// exitError carries an exit code other than 1, after its message was printed.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// run executes the command line args and returns the process exit code.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := newRootCmd(stdout, stderr)
	root.SetArgs(args)
	root.SetIn(stdin)
	if err := root.ExecuteContext(ctx); err != nil {
		var ee exitError
		if errors.As(err, &ee) {
			return ee.code
		}
		fmt.Fprintf(stderr, "evx: %v\n", err)
		return 1
	}
	return 0
}

func newRootCmd(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "evx",
		Short: "evx exchanges sealed digital evidence across borders",
		Long: `evx seals evidence files into signed, post-quantum encrypted bundles,
and opens them on the recipient's machine.`,
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
		newConfigCmd(),
		newPushCmd(),
		newInboxCmd(),
		newPullCmd(),
		newDevEnvCmd(),
		newVersionCmd(),
	)
	return root
}
