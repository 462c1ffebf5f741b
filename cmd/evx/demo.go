package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"evx/audit"
	"evx/client"
	"evx/config"
	"evx/crypto"
	"evx/gateway"
	"evx/internal/devenv"

	"github.com/spf13/cobra"
	"go.uber.org/zap"
)

func newDemoCmd() *cobra.Command {
	var keep, verbose bool
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run two gateways on loopback and send a bundle from DE to FR",
		Long: `demo shows evx's main job with nothing but this binary: it makes the keys
and certificates of two countries, DE and FR, starts their gateways on
loopback with local-disk storage in a temporary directory, has DE's
forensic unit push sample evidence to FR's prosecutor, and has the
prosecutor pull and open it. It ends as an auditor of each country would,
verifying both gateways' transfer logs and listing their entries about the
bundle. Each step is printed with its timing.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			dir, err := os.MkdirTemp("", "evx-demo-*")
			if err != nil {
				return err
			}
			if keep {
				fmt.Fprintf(cmd.OutOrStdout(), "working in %s (kept)\n", dir)
			} else {
				defer os.RemoveAll(dir)
			}
			log := zap.NewNop()
			if verbose {
				if log, err = newLogger(); err != nil {
					return err
				}
			}
			return runDemo(cmd, dir, log)
		},
	}
	cmd.Flags().BoolVar(&keep, "keep", false, "keep the temporary directory and print its path")
	cmd.Flags().BoolVar(&verbose, "verbose", false, "show the gateways' logs on stderr")
	return cmd
}

// demoStep prints numbered steps with their durations.
type demoStep struct {
	cmd *cobra.Command
	n   int
}

func (s *demoStep) run(title string, f func() (string, error)) error {
	s.n++
	start := time.Now()
	detail, err := f()
	if err != nil {
		return fmt.Errorf("step %d (%s): %w", s.n, title, err)
	}
	w := s.cmd.OutOrStdout()
	fmt.Fprintf(w, "%d. %-66s %8s\n", s.n, title, time.Since(start).Round(100*time.Microsecond))
	for _, line := range bytes.SplitAfter([]byte(detail), []byte("\n")) {
		if len(line) > 0 {
			fmt.Fprintf(w, "     %s", line)
		}
	}
	return nil
}

func runDemo(cmd *cobra.Command, dir string, log *zap.Logger) error {
	ctx, cancel := context.WithCancel(cmd.Context())
	defer cancel()
	step := &demoStep{cmd: cmd}

	if err := step.run("keys and certificates: a CA, gateway and units per country", func() (string, error) {
		world, err := devenv.New("DE", "FR")
		if err != nil {
			return "", err
		}
		// The demo runs from the files a deployment has, as evx dev-env
		// writes them: configurations, keys, certificates and profiles.
		if err := world.WriteFiles(dir, nil); err != nil {
			return "", err
		}
		return "DE and FR each: CA, gateway certificate and signing key, forensics,\nprosecutor, auditor and operator with unit keys and client certificates;\nthe auditors pin their gateway's log key and the other's witness key\n", nil
	}); err != nil {
		return err
	}

	gateways := map[string]*gateway.Gateway{}
	done := make(chan error, 2)
	if err := step.run("start gateways DE and FR on loopback (local-disk storage)", func() (string, error) {
		var detail string
		for _, id := range []string{"DE", "FR"} {
			cfg, err := config.Load(filepath.Join(dir, id, "gateway.yaml"))
			if err != nil {
				return "", err
			}
			opts, err := gatewayOptions(ctx, cfg, log.Named(id))
			if err != nil {
				return "", err
			}
			g, err := gateway.New(opts)
			if err != nil {
				return "", err
			}
			gateways[id] = g
			go func() { done <- g.Run(ctx) }()
			detail += fmt.Sprintf("%s: peers on %s (QUIC, mutual TLS), units on https://%s\n", id, g.PeerAddr(), g.APIAddr())
		}
		return detail, nil
	}); err != nil {
		return err
	}
	defer func() {
		cancel()
		for range gateways {
			<-done
		}
	}()
	profile := func(country, user string) (*client.Client, *crypto.UnitKey, error) {
		return loadProfile(filepath.Join(dir, country, user, "profile.yaml"))
	}

	evidence := filepath.Join(dir, "case-4711")
	if err := step.run("write sample evidence at DE/forensics (3 files, 8 MiB)", func() (string, error) {
		return "", writeSampleEvidence(evidence)
	}); err != nil {
		return err
	}

	var pushed *client.PushResult
	if err := step.run("push: seal at DE/forensics, upload, deliver DE → FR", func() (string, error) {
		de, key, err := profile("DE", "forensics")
		if err != nil {
			return "", err
		}
		files, err := crypto.CollectFiles([]string{evidence})
		if err != nil {
			return "", err
		}
		pushed, err = client.Push(ctx, de, client.PushRequest{
			Key: key, To: []string{"FR/prosecutor"}, Files: files, TempDir: dir, Wait: time.Minute,
			Seal: crypto.SealOptions{Purpose: "mutual-legal-assistance", Handling: "H2", TLP: "TLP:AMBER",
				LegalBasis: "EIO FR-2026-0042 (Directive 2014/41/EU)", Case: "case-4711", Retain: 90 * 24 * time.Hour},
		})
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("bundle %s, %d bytes sealed to FR/prosecutor\nreceipt signed by FR: %s\n",
			pushed.Envelope.BundleID, pushed.Envelope.PayloadSize, pushed.Status.Receipt.Body), nil
	}); err != nil {
		return err
	}

	fr, frKey, err := profile("FR", "prosecutor")
	if err != nil {
		return err
	}
	if err := step.run("inbox at FR/prosecutor: what the gateway knows (envelope only)", func() (string, error) {
		list, err := fr.Inbox(ctx)
		if err != nil {
			return "", err
		}
		var b bytes.Buffer
		for _, e := range list {
			fmt.Fprintf(&b, "%s from %s, %s, legal basis %q, %d bytes\nsender check: %s\n",
				e.BundleID, e.Sender, e.Purpose, e.LegalBasis, e.Size, e.SenderCheck)
		}
		return b.String(), nil
	}); err != nil {
		return err
	}

	out := filepath.Join(dir, "opened")
	if err := step.run("pull: download, verify and open at FR/prosecutor, acknowledge", func() (string, error) {
		res, err := client.Pull(ctx, fr, frKey, pushed.Envelope.BundleID, out, "", nil)
		if err != nil {
			return "", err
		}
		var b bytes.Buffer
		printOpenSummary(&b, res.Open, res.SenderPinned, out)
		return b.String(), compareTrees(evidence, filepath.Join(out, "case-4711"))
	}); err != nil {
		return err
	}

	auditor := func(country string) string { return filepath.Join(dir, country, "auditor", "profile.yaml") }
	if err := step.run("audit log --bundle at DE/auditor and FR/auditor: the transfer logs", func() (string, error) {
		var b bytes.Buffer
		tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
		// Each side's last event about the bundle: the entries are in a
		// cosigned checkpoint once it is.
		for _, side := range []struct {
			country string
			last    audit.Event
		}{{"DE", audit.EventDelivered}, {"FR", audit.EventRetrievalAcknowledged}} {
			entries, err := demoBundleEntries(ctx, auditor(side.country), pushed.Envelope.BundleID, side.last)
			if err != nil {
				return "", fmt.Errorf("transfer log of %s: %w", side.country, err)
			}
			for _, e := range entries {
				fmt.Fprintf(tw, "%s #%d\t%s\t%s\t%s\t%s\n", side.country, e.Index, e.Entry.Time.UTC().Format("15:04:05.000Z"),
					e.Entry.Event, e.Entry.Actor, e.Entry.Outcome())
			}
		}
		err := tw.Flush()
		return b.String(), err
	}); err != nil {
		return err
	}

	return step.run("audit verify at DE/auditor and FR/auditor", func() (string, error) {
		var b bytes.Buffer
		for _, country := range []string{"DE", "FR"} {
			l, err := verifyProfileLog(ctx, auditor(country), auditOptions{})
			if err != nil {
				return "", err
			}
			fmt.Fprintf(&b, "%s: %d entries, checkpoint signed by %s (pinned), cosigned by %s,\n    extends the checkpoint of size %d the auditor saved before\n",
				country, l.N, keyID(l.Keys.Log), strings.Join(l.Cosigners, ", "), l.SavedSize)
		}
		return b.String(), nil
	})
}

// demoBundleEntries verifies the transfer log of the auditor's gateway and
// returns its entries about bundle id, once they include the event last: a
// gateway integrates an entry into a checkpoint, and its peer cosigns it,
// a moment after the request that logged it was answered.
func demoBundleEntries(ctx context.Context, profile, id string, last audit.Event) ([]auditEntry, error) {
	p, keys, c, err := profileAuditClient(profile)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(demoLogWait)
	for {
		l, err := verifyProfileClient(ctx, p, keys, c, auditOptions{})
		if err != nil {
			return nil, err
		}
		var found []auditEntry
		done := false
		for e, err := range l.Entries(ctx) {
			if err != nil {
				return nil, err
			}
			if e.Entry != nil && e.Entry.BundleID == id {
				found = append(found, e)
				done = done || e.Entry.Event == last
			}
		}
		if done {
			return found, nil
		}
		if !time.Now().Before(deadline) {
			return nil, fmt.Errorf("no %s entry about bundle %s in the verified log after %s", last, id, demoLogWait)
		}
		t := time.NewTimer(cosignPoll)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
	}
}

// demoLogWait bounds how long the demo waits for the bundle's entries to
// be in a cosigned checkpoint.
const demoLogWait = 20 * time.Second

func writeSampleEvidence(dir string) error {
	if err := os.MkdirAll(filepath.Join(dir, "chat-export"), 0o755); err != nil {
		return err
	}
	img := make([]byte, 8<<20)
	rand.Read(img)
	files := map[string][]byte{
		"disk-image.raw":           img,
		"chat-export/messages.txt": []byte("2026-11-02 21:14 alice: the files are on the usual server\n"),
		"notes.txt":                []byte("Seized 2026-11-03, chain of custody form 17.\n"),
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// compareTrees checks that every file under want has identical content under got.
func compareTrees(want, got string) error {
	return filepath.Walk(want, func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(want, p)
		a, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		b, err := os.ReadFile(filepath.Join(got, rel))
		if err != nil {
			return err
		}
		if !bytes.Equal(a, b) {
			return fmt.Errorf("extracted %s differs from the original", rel)
		}
		return nil
	})
}
