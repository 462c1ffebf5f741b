package main

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"evx/audit"

	"filippo.io/torchwood"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/mod/sumdb/note"
)

func newAuditCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "audit log|verify|proof|export",
		Short: "Review a gateway's transfer log, verified, as an auditor",
		Long: `audit reads a gateway's transfer log (docs/audit.md), which records every
transfer and refusal, and verifies it before it shows anything: the
checkpoint's signature against the log key pinned in the auditor's profile
(log_key), the peers' cosignatures against the pinned witness keys
(witness_keys), every entry against the checkpoint's Merkle tree, and that
the log extends the checkpoint verified last, which is saved beside the
profile (audit-state/<gateway>.checkpoint). The profile is an auditor's:
the gateway serves the log to the auditor role only.

  evx audit verify --profile P            verify the live log, say what was checked
  evx audit verify --dir DIR --profile P  verify an export, offline
  evx audit log --profile P [filters]     the entries, as a table or JSON lines
  evx audit proof --profile P --bundle ID the entries about a bundle, with inclusion proofs
  evx audit export --profile P -o DIR     a self-contained copy, to verify elsewhere`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return usagef("audit needs a subcommand: log, verify, proof or export")
		},
	}
	cmd.AddCommand(newAuditVerifyCmd(), newAuditLogCmd(), newAuditProofCmd(), newAuditExportCmd())
	return cmd
}

// logSourceFlags choose the log to read and the keys to verify it with.
type logSourceFlags struct {
	profile     string
	dir         string
	logKey      string
	witnessKeys []string
	saved       string
	wait        time.Duration
}

func (f *logSourceFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.profile, "profile", "", "auditor's profile `FILE`: the gateway, the pinned keys and the saved checkpoint")
	fs.StringVar(&f.dir, "dir", "", "read an export `DIR` (evx audit export) instead of a gateway")
	fs.StringVar(&f.logKey, "log-key", "", "with --dir: pin the log's verifier `KEY` (evx.transfer-log/<id>+<hash>+<key>)")
	fs.StringArrayVar(&f.witnessKeys, "witness-key", nil, "with --dir and --log-key: pin a witness's verifier `KEY`, whose cosignature is required (repeatable)")
	fs.StringVar(&f.saved, "saved", "", "with --dir and --log-key: the checkpoint `FILE` saved last; the log must extend it, and it is replaced by the verified one")
	fs.DurationVar(&f.wait, "wait", defaultCosignWait, "wait up to `D` for the witnesses to cosign the latest checkpoint of a live log")
}

// check reports usage errors in the flags, before anything is read.
func (f *logSourceFlags) check(fs *pflag.FlagSet) error {
	if f.wait < 0 {
		return usagef("--wait %s: want a duration from 0s, such as 10s", f.wait)
	}
	if f.dir == "" {
		for _, name := range []string{"log-key", "witness-key", "saved"} {
			if fs.Changed(name) {
				return usagef("--%s goes with --dir: the log of a gateway is verified with the keys its profile pins, and the checkpoint saved beside the profile", name)
			}
		}
		return nil
	}
	switch {
	case fs.Changed("wait"):
		return usagef("--wait is for a live log: an export's checkpoint does not change")
	case f.profile != "" && f.logKey != "":
		return usagef("give either --profile or --log-key to pin the keys, not both")
	case f.logKey == "" && len(f.witnessKeys) > 0:
		return usagef("--witness-key needs --log-key: pin the log key too")
	case f.logKey == "" && f.saved != "":
		return usagef("--saved needs --log-key: a checkpoint is saved only under pinned keys")
	}
	if f.logKey != "" {
		if _, err := (auditKeys{Log: f.logKey, Witnesses: f.witnessKeys}).verifyOptions(); err != nil {
			return usage(err)
		}
	}
	return nil
}

// open verifies the log the flags choose.
func (f *logSourceFlags) open(cmd *cobra.Command) (*auditedLog, error) {
	ctx := cmd.Context()
	if f.dir == "" {
		o := auditOptions{Wait: f.wait, Progress: cmd.ErrOrStderr()}
		if f.wait == 0 {
			o.Wait = -1
		}
		return verifyProfileLog(ctx, f.profile, o)
	}
	keys, state := auditKeys{}, ""
	switch {
	case f.profile != "":
		p, k, err := profileAuditKeys(f.profile)
		if err != nil {
			return nil, err
		}
		opts, err := k.verifyOptions()
		if err != nil {
			return nil, p.Errorf("log_key", "%v", err)
		}
		gw, _ := logGateway(opts.Log.Name())
		keys, state = k, auditStatePath(p, gw)
	case f.logKey != "":
		keys, state = auditKeys{Log: f.logKey, Witnesses: f.witnessKeys, From: "--log-key"}, f.saved
	}
	l, err := verifyExportLog(ctx, f.dir, keys, state)
	if err == nil && !l.Keys.Pinned() {
		fmt.Fprintf(cmd.ErrOrStderr(), "warning: no keys pinned (--profile or --log-key): the export was verified against its own keys file, which whoever made the export wrote. This shows that the export is intact and consistent, not that it is the log of gateway %s.\n", l.Gateway)
	}
	return l, err
}

func newAuditVerifyCmd() *cobra.Command {
	var f logSourceFlags
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "verify --profile P | --dir DIR [--profile P | --log-key K [--witness-key W]... [--saved FILE]] [--json]",
		Short: "Verify a gateway's transfer log, live or exported, and say what was checked",
		Long: `verify fetches the transfer log's latest checkpoint and every tile and
entry bundle, and checks, failing on the first check that fails and naming
it (docs/audit.md section 6):

  - the checkpoint is signed by the pinned log key;
  - it is not older than the checkpoint saved after the last verification;
  - the hash tiles give its root, and the entry bundles hold exactly the
    tree's entries, in order;
  - the tree extends the saved checkpoint and every earlier checkpoint the
    log holds (no history rewritten);
  - each pinned witness has cosigned it;
  - every entry reads (an entry of a newer evx is reported, not failed).

It then saves the verified checkpoint for next time. With --profile it
reads the gateway named by the auditor's profile, with the keys the profile
pins (log_key, witness_keys), and keeps the saved checkpoint beside it. A
gateway asks its peers to cosign each new checkpoint within seconds; verify
waits up to --wait for the cosignatures of the latest one.

With --dir it verifies an export (evx audit export) offline. Pin the keys
with --profile (an auditor's profile, whose saved checkpoint is used too)
or with --log-key and --witness-key, as the gateway's operator handed them
over. Without either it can only check the export against the keys file
inside it, which whoever made the export wrote: the export is then shown
to be intact, not to be that gateway's log.

It exits 0 only if every check passed.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if f.profile == "" && f.dir == "" && os.Getenv(profileEnv) == "" {
				if p := defaultProfilePath(os.Getenv); p == "" || !fileExists(p) {
					return usagef("give --profile FILE (an auditor's profile) or --dir DIR (an export)")
				}
			}
			if err := f.check(cmd.Flags()); err != nil {
				return err
			}
			l, err := f.open(cmd)
			if err != nil {
				return err
			}
			sum, err := checkEntries(cmd, l)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), verifyJSON(l, sum))
			}
			printVerified(cmd.OutOrStdout(), l, sum)
			return nil
		},
	}
	f.register(cmd.Flags())
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// entrySummary is what reading every entry of a verified log found.
type entrySummary struct {
	Entries int64
	// Unreadable counts entries of a format or event this evx does not
	// know, by reason.
	Unreadable map[string]int64
}

// checkEntries reads every entry of l: an entry of a format or an event
// this evx does not know is counted, a malformed one, or one of another
// gateway, fails.
func checkEntries(cmd *cobra.Command, l *auditedLog) (entrySummary, error) {
	sum := entrySummary{Unreadable: map[string]int64{}}
	for e, err := range l.Entries(cmd.Context()) {
		if err != nil {
			return sum, &verifyFailure{fmt.Sprintf("the transfer log of %s (%s)", l.Gateway, l.Where), err}
		}
		sum.Entries++
		switch {
		case errors.Is(e.Err, audit.ErrUnsupportedFormat):
			sum.Unreadable["format unknown to this evx"]++
		case errors.Is(e.Err, audit.ErrUnknownEvent):
			sum.Unreadable["event unknown to this evx"]++
		case e.Err != nil:
			return sum, &verifyFailure{fmt.Sprintf("the transfer log of %s (%s)", l.Gateway, l.Where),
				fmt.Errorf("entry %d is in the tree but is not a valid entry: %v", e.Index, e.Err)}
		case e.Entry.Gateway != l.Gateway:
			return sum, &verifyFailure{fmt.Sprintf("the transfer log of %s (%s)", l.Gateway, l.Where),
				fmt.Errorf("entry %d is in the tree but says it is of gateway %s", e.Index, printable(e.Entry.Gateway))}
		}
	}
	return sum, nil
}

// cosigner is a witness whose cosignature verified, with its time.
type cosigner struct {
	Name string    `json:"name"`
	Time time.Time `json:"time"`
}

// cosigners returns the verified cosignatures of l's checkpoint.
func cosigners(l *auditedLog) []cosigner {
	var out []cosigner
	for _, w := range l.opts.Witnesses {
		if !slices.Contains(l.Cosigners, w.Name()) {
			continue
		}
		c := cosigner{Name: w.Name()}
		if n, err := note.Open(l.Checkpoint, note.VerifierList(l.opts.Log, w)); err == nil {
			for _, s := range n.Sigs {
				if s.Name == w.Name() && s.Hash == w.KeyHash() {
					if ts, err := torchwood.CosignatureTimestamp(s); err == nil {
						c.Time = time.Unix(ts, 0).UTC()
					}
				}
			}
		}
		out = append(out, c)
	}
	return out
}

// keysNote says how the export's keys file compares with the keys pinned.
func keysNote(l *auditedLog) string {
	switch {
	case l.ExportKeys == nil || !l.Keys.Pinned():
		return ""
	case l.ExportKeys.Log == l.Keys.Log && slices.Equal(l.ExportKeys.Witnesses, l.Keys.Witnesses):
		return "names the keys pinned"
	}
	var other []string
	if l.ExportKeys.Log != l.Keys.Log {
		other = append(other, "log "+keyID(l.ExportKeys.Log))
	}
	for _, w := range l.ExportKeys.Witnesses {
		if !slices.Contains(l.Keys.Witnesses, w) {
			other = append(other, "witness "+keyID(w))
		}
	}
	if len(other) == 0 {
		return "names fewer keys than pinned (not used)"
	}
	return "names other keys than pinned, not used: " + strings.Join(other, ", ")
}

func printVerified(w io.Writer, l *auditedLog, sum entrySummary) {
	w = printableWriter{w}
	fmt.Fprintf(w, "transfer log %s verified (%s)\n", l.Origin, l.Where)
	row := func(k, format string, args ...any) { fmt.Fprintf(w, "  %-12s %s\n", k, fmt.Sprintf(format, args...)) }
	row("checkpoint", "size %d, root hash %s", l.N, l.Hash)
	if l.Keys.Pinned() {
		row("signed by", "%s, the log key pinned by %s", keyID(l.Keys.Log), l.Keys.From)
	} else {
		row("signed by", "%s, the log key in the export's own keys file: NOT PINNED", keyID(l.Keys.Log))
	}
	if n := keysNote(l); n != "" {
		row("keys file", "%s", n)
	}
	cos := cosigners(l)
	switch {
	case len(l.opts.Witnesses) == 0:
		row("cosigned by", "no witness required: no witness key is pinned, so a split view (another history shown to others) goes unnoticed")
	default:
		var names []string
		for _, c := range cos {
			names = append(names, fmt.Sprintf("%s at %s", c.Name, formatTime(c.Time)))
		}
		row("cosigned by", "%s (%d of %d pinned witnesses)", strings.Join(names, ", "), len(cos), len(l.opts.Witnesses))
	}
	switch {
	case l.SavedBefore:
		row("consistent", "extends the checkpoint of size %d saved before", l.SavedSize)
	case l.StatePath != "":
		row("consistent", "no checkpoint saved before: this is the first verification, a rewritten history is caught from the next one on")
	default:
		row("consistent", "no saved checkpoint given (--saved): a rewritten history cannot be told from the real one")
	}
	row("history", "%d earlier checkpoints of the log are prefixes of this tree", l.History)
	entries := fmt.Sprintf("%d entries, each the tree's leaf, in order", sum.Entries)
	var unread []string
	for reason, n := range sum.Unreadable {
		unread = append(unread, fmt.Sprintf("%d of a %s", n, reason))
	}
	slices.Sort(unread)
	if len(unread) > 0 {
		entries += "; not readable by this evx (verified, not shown): " + strings.Join(unread, ", ")
	} else {
		entries += "; all readable"
	}
	row("entries", "%s", entries)
	if l.StatePath != "" {
		row("saved", "checkpoint of size %d in %s", l.N, l.StatePath)
	}
}

// verifyJSON is the JSON form of a verification.
func verifyJSON(l *auditedLog, sum entrySummary) any {
	type out struct {
		Verified          bool             `json:"verified"`
		Origin            string           `json:"origin"`
		Gateway           string           `json:"gateway"`
		Source            string           `json:"source"`
		Size              int64            `json:"size"`
		RootHash          string           `json:"root_hash"`
		LogKey            string           `json:"log_key"`
		KeysPinned        bool             `json:"keys_pinned"`
		KeysFrom          string           `json:"keys_from,omitempty"`
		WitnessesRequired int              `json:"witnesses_required"`
		Cosigners         []cosigner       `json:"cosigners"`
		SavedSize         *int64           `json:"saved_size"`
		History           int              `json:"history"`
		Entries           int64            `json:"entries"`
		Unreadable        map[string]int64 `json:"unreadable"`
		SavedIn           string           `json:"saved_in,omitempty"`
	}
	o := out{Verified: true, Origin: l.Origin, Gateway: l.Gateway, Source: l.Where, Size: l.N,
		RootHash: base64.StdEncoding.EncodeToString(l.Hash[:]), LogKey: l.Keys.Log, KeysPinned: l.Keys.Pinned(),
		KeysFrom: l.Keys.From, WitnessesRequired: len(l.opts.Witnesses), Cosigners: cosigners(l),
		History: l.History, Entries: sum.Entries, Unreadable: sum.Unreadable, SavedIn: l.StatePath}
	if o.Cosigners == nil {
		o.Cosigners = []cosigner{}
	}
	if l.SavedBefore {
		o.SavedSize = &l.SavedSize
	}
	return o
}

// entryFilter selects entries for evx audit log.
type entryFilter struct {
	since, until time.Time
	bundle       string
	events       []audit.Event
}

func (f entryFilter) none() bool {
	return f.since.IsZero() && f.until.IsZero() && f.bundle == "" && len(f.events) == 0
}

func (f entryFilter) match(e *audit.Entry) bool {
	switch {
	case !f.since.IsZero() && e.Time.Before(f.since),
		!f.until.IsZero() && !e.Time.Before(f.until),
		f.bundle != "" && e.BundleID != f.bundle,
		len(f.events) > 0 && !slices.Contains(f.events, e.Event):
		return false
	}
	return true
}

var bundleIDPattern = regexp.MustCompile(`^[0-9a-f]{32}$`)

// parseFilter checks the filter flags of evx audit log.
func parseFilter(since, until, bundle string, events []string, now time.Time) (entryFilter, error) {
	var f entryFilter
	var err error
	if since != "" {
		if f.since, err = parseWhen("--since", since, now); err != nil {
			return f, err
		}
	}
	if until != "" {
		if f.until, err = parseWhen("--until", until, now); err != nil {
			return f, err
		}
	}
	if !f.since.IsZero() && !f.until.IsZero() && !f.since.Before(f.until) {
		return f, usagef("--since %s is not before --until %s: no entry could match", since, until)
	}
	if bundle != "" {
		if !bundleIDPattern.MatchString(bundle) {
			return f, usagef("--bundle %q: want a bundle id, 32 lowercase hex digits", printable(bundle))
		}
		f.bundle = bundle
	}
	for _, list := range events {
		for _, name := range strings.Split(list, ",") {
			ev := audit.Event(strings.TrimSpace(name))
			if !audit.ValidEvent(ev) {
				return f, usagef("--event %q: not an event of the transfer log; the events are %s", printable(string(ev)), strings.Join(eventNames(), ", "))
			}
			if !slices.Contains(f.events, ev) {
				f.events = append(f.events, ev)
			}
		}
	}
	return f, nil
}

func eventNames() []string {
	var names []string
	for _, e := range audit.Events() {
		names = append(names, string(e.Event))
	}
	return names
}

// parseWhen parses a time flag: an RFC 3339 time, a date (midnight UTC)
// or a duration before now such as 90m, 36h or 7d.
func parseWhen(flag, s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t.UTC(), nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t, nil
	}
	if n, ok := strings.CutSuffix(s, "d"); ok {
		if days, err := strconv.Atoi(n); err == nil && days >= 0 && days <= 100*366 {
			return now.Add(-time.Duration(days) * 24 * time.Hour).UTC(), nil
		}
	} else if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d).UTC(), nil
	}
	return time.Time{}, usagef("%s %q: want a time such as 2026-12-03T14:00:00Z, a date such as 2026-12-03 (midnight UTC), or a time ago such as 90m, 36h or 7d", flag, printable(s))
}

func newAuditLogCmd() *cobra.Command {
	var f logSourceFlags
	var since, until, bundle string
	var events []string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "log --profile P [--since T] [--until T] [--bundle ID] [--event E]... [--json]",
		Short: "List the entries of a gateway's transfer log, after verifying it",
		Long: `log verifies the transfer log as evx audit verify does (and saves its
checkpoint), then lists its entries in order: a table for a person, or with
--json one JSON object a line, {"index": N, "entry": {...}} with the entry
as logged, for a script. Only entries of the verified tree are shown, each
checked against it as it is read.

  --since T, --until T  entries logged from T on, and before T: a time
                        (2026-12-03T14:00:00Z), a date (2026-12-03, midnight
                        UTC) or a time ago (90m, 36h, 7d), by the gateway's
                        clock, as the entry says
  --bundle ID           entries about one bundle
  --event E             entries of these events (repeat, or separate by
                        commas)

An entry this evx cannot read (of a newer evx) is listed only without
filters. With --dir it lists an export's entries, with the keys pinned as
for evx audit verify --dir.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			filter, err := parseFilter(since, until, bundle, events, time.Now())
			if err != nil {
				return err
			}
			if err := f.check(cmd.Flags()); err != nil {
				return err
			}
			l, err := f.open(cmd)
			if err != nil {
				return err
			}
			return printLog(cmd, l, filter, asJSON)
		},
	}
	f.register(cmd.Flags())
	fs := cmd.Flags()
	fs.StringVar(&since, "since", "", "list entries logged at `T` or later")
	fs.StringVar(&until, "until", "", "list entries logged before `T`")
	fs.StringVar(&bundle, "bundle", "", "list entries about bundle `ID`")
	fs.StringArrayVar(&events, "event", nil, "list entries of event `E` (repeatable)")
	fs.BoolVar(&asJSON, "json", false, "print one JSON object a line")
	return cmd
}

// logFlushRows is how many rows of the table are aligned together.
const logFlushRows = 1000

func printLog(cmd *cobra.Command, l *auditedLog, filter entryFilter, asJSON bool) error {
	fmt.Fprintf(printableWriter{cmd.ErrOrStderr()}, "%s\n", verifiedLine(l))
	out := cmd.OutOrStdout()
	enc := json.NewEncoder(out)
	enc.SetEscapeHTML(false)
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	if !asJSON {
		fmt.Fprintln(tw, "INDEX\tTIME\tEVENT\tACTOR\tBUNDLE\tPEER\tDIRECTION\tOUTCOME\tDETAILS")
	}
	var shown, unreadable, rows int64
	for e, err := range l.Entries(cmd.Context()) {
		if err != nil {
			tw.Flush()
			return &verifyFailure{fmt.Sprintf("the transfer log of %s (%s)", l.Gateway, l.Where), err}
		}
		if e.Entry == nil {
			unreadable++
			if !filter.none() {
				continue
			}
		} else if !filter.match(e.Entry) {
			continue
		}
		shown++
		if asJSON {
			if err := enc.Encode(entryJSON(e)); err != nil {
				return err
			}
			continue
		}
		fmt.Fprintln(tw, entryRow(e))
		if rows++; rows%logFlushRows == 0 {
			if err := tw.Flush(); err != nil {
				return err
			}
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	note := fmt.Sprintf("%d of %d entries shown", shown, l.N)
	if unreadable > 0 {
		note += fmt.Sprintf("; %d not readable by this evx (written by a newer one)", unreadable)
		if !filter.none() {
			note += ", left out by the filters"
		}
	}
	fmt.Fprintln(cmd.ErrOrStderr(), note)
	return nil
}

// verifiedLine says briefly what was verified, for the commands that
// show entries.
func verifiedLine(l *auditedLog) string {
	var b strings.Builder
	fmt.Fprintf(&b, "verified: transfer log of %s, checkpoint of size %d", l.Gateway, l.N)
	if len(l.Cosigners) > 0 {
		fmt.Fprintf(&b, " cosigned by %s", strings.Join(l.Cosigners, ", "))
	}
	if l.SavedBefore {
		fmt.Fprintf(&b, ", extending the checkpoint of size %d saved before", l.SavedSize)
	}
	if !l.Keys.Pinned() {
		b.WriteString(", against the export's own keys (NOT PINNED)")
	}
	return b.String()
}

// entryRow is an entry as a row of evx audit log's table.
func entryRow(e auditEntry) string {
	if e.Entry == nil {
		return fmt.Sprintf("%d\t-\t(unreadable)\t-\t-\t-\t-\t-\t%s", e.Index, printable(e.Err.Error()))
	}
	x := e.Entry
	dash := func(s string) string {
		if s == "" {
			return "-"
		}
		return printable(s)
	}
	outcome := string(x.Outcome())
	switch {
	case x.Code != "":
		outcome += " (" + x.Code + ")"
	case x.Kind != "":
		outcome += " (" + string(x.Kind) + ")"
	}
	return fmt.Sprintf("%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s", e.Index, x.Time.UTC().Format("2006-01-02T15:04:05.000Z"),
		dash(string(x.Event)), dash(x.Actor), dash(x.BundleID), dash(x.Peer), dash(string(x.Direction())),
		dash(outcome), dash(entryDetails(x)))
}

// entryDetails are the members of an entry the table has no column for,
// as name=value.
func entryDetails(x *audit.Entry) string {
	var d []string
	add := func(name, v string) {
		if v != "" {
			d = append(d, name+"="+v)
		}
	}
	var zero [32]byte
	hex := func(h [32]byte) string {
		if h == zero {
			return ""
		}
		return fmt.Sprintf("%x…", h[:6])
	}
	add("purpose", x.Purpose)
	add("handling", x.Handling)
	if x.PayloadSize > 0 {
		add("size", strconv.FormatInt(x.PayloadSize, 10))
	}
	add("legal_basis", quoteIf(x.LegalBasis))
	if x.Receipt != nil {
		add("receipt", "signed")
	}
	if x.Count > 0 {
		add("count", strconv.FormatInt(x.Count, 10))
		add("source", x.Source)
		add("window", x.WindowStart.UTC().Format("15:04:05")+"–"+x.WindowEnd.UTC().Format("15:04:05"))
	}
	add("config", hex(x.ConfigSHA256))
	add("old_config", hex(x.OldConfigSHA256))
	if x.OldAgreementVersion > 0 {
		add("old_agreement", "v"+strconv.FormatInt(x.OldAgreementVersion, 10))
	}
	if x.AgreementVersion > 0 {
		add("agreement", "v"+strconv.FormatInt(x.AgreementVersion, 10))
	}
	add("ref", quoteIf(x.AgreementRef))
	if !x.RetainUntil.IsZero() {
		add("retain_until", x.RetainUntil.UTC().Format("2006-01-02T15:04:05.000Z"))
	}
	add("reference", quoteIf(x.Reference))
	add("reason", quoteIf(x.Reason))
	if len(x.Changes) > 0 {
		lines := make([]string, len(x.Changes))
		for i, l := range x.Changes {
			lines[i] = strconv.Quote(l)
		}
		add("changes", strings.Join(lines, ","))
	}
	return strings.Join(d, " ")
}

func quoteIf(s string) string {
	if s == "" {
		return ""
	}
	return strconv.Quote(s)
}

// entryJSON is an entry as a line of evx audit log --json.
func entryJSON(e auditEntry) any {
	if e.Entry == nil {
		return struct {
			Index int64  `json:"index"`
			Error string `json:"error"`
			Data  []byte `json:"data"`
		}{e.Index, e.Err.Error(), e.Data}
	}
	return struct {
		Index int64           `json:"index"`
		Entry json.RawMessage `json:"entry"`
	}{e.Index, e.Data}
}

func newAuditProofCmd() *cobra.Command {
	var f logSourceFlags
	var bundle string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "proof --profile P --bundle ID [--json]",
		Short: "Print every entry about a bundle with its inclusion proof",
		Long: `proof verifies the transfer log as evx audit verify does (and saves its
checkpoint), then prints, for every entry about the bundle, a proof that the
entry is in the log, in the C2SP tlog-proof format (docs/audit.md 4.4): the
entry's index, its inclusion proof and the verified checkpoint with its
cosignatures, with the entry's bytes as the proof's extra data, so that each
proof stands alone. Proofs are separated by an empty line. Whoever holds
the log key can check one offline: the entry's leaf hash, the index and the
proof's hashes must give the checkpoint's root.

With --json it prints one JSON object a line: {"index": N, "entry": {...},
"proof": "<the proof's text>"}. A list of the entries goes to stderr.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if bundle == "" {
				return usagef("--bundle is required: the id of the bundle whose entries to prove")
			}
			if !bundleIDPattern.MatchString(bundle) {
				return usagef("--bundle %q: want a bundle id, 32 lowercase hex digits", printable(bundle))
			}
			if err := f.check(cmd.Flags()); err != nil {
				return err
			}
			l, err := f.open(cmd)
			if err != nil {
				return err
			}
			return printProofs(cmd, l, bundle, asJSON)
		},
	}
	f.register(cmd.Flags())
	cmd.Flags().StringVar(&bundle, "bundle", "", "prove the entries about bundle `ID`")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object a line")
	return cmd
}

func printProofs(cmd *cobra.Command, l *auditedLog, bundle string, asJSON bool) error {
	ctx := cmd.Context()
	var found []auditEntry
	for e, err := range l.Entries(ctx) {
		if err != nil {
			return &verifyFailure{fmt.Sprintf("the transfer log of %s (%s)", l.Gateway, l.Where), err}
		}
		if e.Entry != nil && e.Entry.BundleID == bundle {
			found = append(found, e)
		}
	}
	stderr := printableWriter{cmd.ErrOrStderr()}
	fmt.Fprintf(stderr, "%s\n", verifiedLine(l))
	if len(found) == 0 {
		return fmt.Errorf("no entry of the transfer log of %s is about bundle %s", l.Gateway, bundle)
	}
	out := cmd.OutOrStdout()
	enc := json.NewEncoder(out)
	enc.SetEscapeHTML(false)
	for i, e := range found {
		p, err := l.Prove(ctx, e.Index, e.Data)
		if err != nil {
			return &verifyFailure{fmt.Sprintf("the transfer log of %s (%s)", l.Gateway, l.Where), err}
		}
		text := audit.FormatProof(p)
		if asJSON {
			err = enc.Encode(struct {
				Index int64           `json:"index"`
				Entry json.RawMessage `json:"entry"`
				Proof string          `json:"proof"`
			}{e.Index, e.Data, string(text)})
		} else {
			if i > 0 {
				fmt.Fprintln(out)
			}
			_, err = out.Write(text)
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(stderr, "entry %d  %s  %s  %s\n", e.Index, e.Entry.Time.UTC().Format("2006-01-02T15:04:05.000Z"), e.Entry.Event, e.Entry.Actor)
	}
	fmt.Fprintf(stderr, "%d entries about bundle %s, each proved in the checkpoint of size %d\n", len(found), bundle, l.N)
	return nil
}

func newAuditExportCmd() *cobra.Command {
	var profile, dir string
	var wait time.Duration
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "export --profile P -o DIR [--json]",
		Short: "Copy a gateway's transfer log into a directory that verifies offline",
		Long: `export copies the transfer log of the profile's gateway into DIR, which
must not exist or be empty: the latest checkpoint with its cosignatures,
every tile and entry bundle, the earlier checkpoints, and a keys file with
the keys the profile pins (docs/audit.md 4.6). It then verifies the copy
as evx audit verify --dir DIR --profile P does, and saves its checkpoint
beside the profile. The directory is self-contained: evx audit verify
--dir DIR verifies it on another machine, with no gateway. Whoever
verifies it there must pin the keys themselves (--log-key and
--witness-key, as the gateway's operator hands them over): the keys file
in the export only says which keys the exporter used.

If the copy does not verify, DIR keeps it, as evidence, and export fails
naming the failure.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if dir == "" {
				return usagef("-o DIR is required: the directory to export into")
			}
			if wait < 0 {
				return usagef("--wait %s: want a duration from 0s, such as 10s", wait)
			}
			o := auditOptions{Wait: wait, Progress: cmd.ErrOrStderr()}
			if wait == 0 {
				o.Wait = -1
			}
			l, err := exportProfileLog(cmd.Context(), profile, dir, o)
			if err != nil {
				return err
			}
			sum, err := checkEntries(cmd, l)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), map[string]any{"dir": dir, "verification": verifyJSON(l, sum)})
			}
			w := printableWriter{cmd.OutOrStdout()}
			fmt.Fprintf(w, "exported the transfer log of %s to %s: %d entries, %d earlier checkpoints\n", l.Gateway, dir, l.N, l.History)
			printVerified(w, l, sum)
			fmt.Fprintf(w, "verify it elsewhere, with the keys pinned there:\n  evx audit verify --dir %s --log-key %s", shellQuote(dir), l.Keys.Log)
			for _, k := range l.Keys.Witnesses {
				fmt.Fprintf(w, " --witness-key %s", k)
			}
			fmt.Fprintln(w)
			return nil
		},
	}
	cmd.Flags().StringVar(&profile, "profile", "", "auditor's profile `FILE`")
	cmd.Flags().StringVarP(&dir, "output", "o", "", "export into `DIR`, which must not exist or be empty")
	cmd.Flags().DurationVar(&wait, "wait", defaultCosignWait, "wait up to `D` for the witnesses to cosign the latest checkpoint")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// shellQuote quotes s for a shell command line if it needs it.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
