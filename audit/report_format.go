package audit

import (
	"bufio"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// ReportFormats are the formats a TransparencyReport is written in, by
// TransparencyReport.Write.
var ReportFormats = []string{"md", "csv", "json"}

// Write writes r in format: "md" (Markdown, for people), "csv" (one table
// of every row, for spreadsheets) or "json" (for scripts).
func (r *TransparencyReport) Write(w io.Writer, format string) error {
	switch format {
	case "md":
		return r.WriteMarkdown(w)
	case "csv":
		return r.WriteCSV(w)
	case "json":
		return r.WriteJSON(w)
	}
	return fmt.Errorf("unknown report format %q: want one of %s", format, strings.Join(ReportFormats, ", "))
}

// allPeers names the rows of medians over all peers; it is no gateway id,
// which is in capitals.
const allPeers = "all"

// dateTime writes a time of the period: a date if it is midnight UTC.
func dateTime(t time.Time) string {
	t = t.UTC()
	if t.Equal(t.Truncate(24 * time.Hour)) {
		return t.Format(time.DateOnly)
	}
	return t.Format(time.RFC3339Nano)
}

// WriteMarkdown writes r as a Markdown document.
func (r *TransparencyReport) WriteMarkdown(w io.Writer) error {
	b := bufio.NewWriter(w)
	fmt.Fprintf(b, "# Transparency report of gateway %s\n\n", mdCell(r.Gateway))
	fmt.Fprintf(b, "Period: from %s to %s, the end excluded (UTC).\n", dateTime(r.From), dateTime(r.To))
	if r.Log.Origin != "" {
		fmt.Fprintf(b, "Computed from the verified transfer log %s, checkpoint of size %d, root hash %s.\n", mdCell(r.Log.Origin), r.Log.Size, mdCell(r.Log.Hash))
	}
	fmt.Fprintf(b, "Counts below %d are shown as <%d, and their volumes are withheld; so are medians of fewer than %d times.\n", r.Threshold, r.Threshold, r.Threshold)
	if r.Unread > 0 {
		fmt.Fprintf(b, "%d entries of the log are of a newer format or an unknown event, and were not counted.\n", r.Unread)
	}

	b.WriteString("\n## Transfers\n\n")
	if len(r.Transfers) == 0 {
		b.WriteString("No bundle was delivered or received in the period.\n")
	} else {
		b.WriteString("| direction | peer | purpose | handling | outcome | bundles | volume |\n")
		b.WriteString("|-----------|------|---------|----------|---------|--------:|-------:|\n")
		for _, t := range r.Transfers {
			fmt.Fprintf(b, "| %s | %s | %s | %s | %s | %s | %s |\n", t.Direction, mdCell(t.Peer), mdCell(t.Purpose), mdCell(t.Handling),
				t.Outcome, t.Bundles, volumeText(t))
		}
	}

	b.WriteString("\n## Refusals\n\n")
	if len(r.Refusals) == 0 {
		b.WriteString("Nothing was refused in the period.\n")
	} else {
		b.WriteString("| stage | direction | peer | code | count |\n")
		b.WriteString("|-------|-----------|------|------|------:|\n")
		for _, f := range r.Refusals {
			fmt.Fprintf(b, "| %s | %s | %s | %s | %s |\n", f.Stage, orDash(string(f.Stage.Direction())), orDash(mdCell(f.Peer)), mdCell(f.Code), f.Count)
		}
	}

	b.WriteString("\n## Median times\n\n")
	if len(r.DeliveryTimes) == 0 && len(r.RetrievalTimes) == 0 {
		b.WriteString("No bundle was delivered or retrieved in the period.\n")
	} else {
		b.WriteString("| step | peer | median |\n")
		b.WriteString("|------|------|-------:|\n")
		for _, s := range []struct {
			step string
			rows []TimeRow
		}{{"delivery", r.DeliveryTimes}, {"retrieval", r.RetrievalTimes}} {
			for _, t := range s.rows {
				fmt.Fprintf(b, "| %s | %s | %s |\n", s.step, mdCell(peerOrAll(t.Peer)), medianText(t.Median))
			}
		}
		b.WriteString("\nDelivery: from the upload's acceptance (or the direct offer) to the peer's receipt, on this gateway's clock. ")
		b.WriteString("Retrieval: from the receipt this gateway issued to the recipient's acknowledgement.\n")
	}
	return b.Flush()
}

// mdCell escapes what would end a Markdown table cell or line. The
// report's text comes from checked entries (gateway ids, vocabularies,
// codes), which hold none of it: this is defence in depth.
func mdCell(s string) string {
	return strings.NewReplacer(`\`, `\\`, "|", `\|`, "\n", " ", "\r", " ").Replace(s)
}

func orDash(s string) string {
	if s == "" {
		return "—"
	}
	return s
}

func peerOrAll(p string) string {
	if p == "" {
		return allPeers
	}
	return p
}

func volumeText(t TransferRow) string {
	if t.Bundles.Suppressed() {
		return "—"
	}
	return FormatBytes(t.Bytes)
}

func medianText(m Median) string {
	if m.Suppressed() {
		return fmt.Sprintf("— (fewer than %d)", m.Below)
	}
	return FormatDuration(m.D)
}

// FormatBytes writes a volume for people: bytes below 1 KiB, else in KiB,
// MiB, GiB or TiB with one decimal.
func FormatBytes(n int64) string {
	if n < 1<<10 {
		return fmt.Sprintf("%d B", n)
	}
	v, unit := float64(n)/(1<<10), "KiB"
	for _, u := range []string{"MiB", "GiB", "TiB"} {
		if v < 1<<10 {
			break
		}
		v, unit = v/(1<<10), u
	}
	return fmt.Sprintf("%.1f %s", v, unit)
}

// FormatDuration writes a median time for people, with two units at
// most: "850 ms", "12.3 s", "4 min 5 s", "3 h 12 min", "2 d 3 h".
func FormatDuration(d time.Duration) string {
	switch {
	case d < time.Second:
		return fmt.Sprintf("%d ms", d.Milliseconds())
	case d < time.Minute:
		return fmt.Sprintf("%.1f s", d.Seconds())
	case d < time.Hour:
		return fmt.Sprintf("%d min %d s", int(d/time.Minute), int(d%time.Minute/time.Second))
	case d < 24*time.Hour:
		return fmt.Sprintf("%d h %d min", int(d/time.Hour), int(d%time.Hour/time.Minute))
	}
	return fmt.Sprintf("%d d %d h", int(d/(24*time.Hour)), int(d%(24*time.Hour)/time.Hour))
}

// csvHeader are the columns of the CSV form: every row of every table,
// each with the gateway and the period, so that the rows of several
// reports can be put in one sheet.
var csvHeader = []string{"gateway", "from", "to", "section", "direction", "peer", "purpose", "handling", "outcome", "stage", "code", "count", "bytes", "median_ms"}

// WriteCSV writes r as CSV (RFC 4180): a header line, then one line per
// row of each table, its section ("transfers", "refusals",
// "delivery-time", "retrieval-time") in the fourth column and the columns
// that do not apply to it empty. A suppressed count is "<5" (for a
// threshold of 5), as is the median of fewer times than the threshold; a
// withheld volume is empty.
func (r *TransparencyReport) WriteCSV(w io.Writer) error {
	cw := csv.NewWriter(w)
	if err := cw.Write(csvHeader); err != nil {
		return err
	}
	from, to := dateTime(r.From), dateTime(r.To)
	row := func(section string, cols map[string]string) error {
		rec := make([]string, len(csvHeader))
		rec[0], rec[1], rec[2], rec[3] = r.Gateway, from, to, section
		for i, name := range csvHeader[4:] {
			rec[4+i] = cols[name]
		}
		return cw.Write(rec)
	}
	for _, t := range r.Transfers {
		bytes := ""
		if !t.Bundles.Suppressed() {
			bytes = strconv.FormatInt(t.Bytes, 10)
		}
		if err := row("transfers", map[string]string{"direction": string(t.Direction), "peer": t.Peer, "purpose": t.Purpose,
			"handling": t.Handling, "outcome": t.Outcome, "count": t.Bundles.String(), "bytes": bytes}); err != nil {
			return err
		}
	}
	for _, f := range r.Refusals {
		if err := row("refusals", map[string]string{"direction": string(f.Stage.Direction()), "peer": f.Peer, "stage": string(f.Stage),
			"code": f.Code, "count": f.Count.String()}); err != nil {
			return err
		}
	}
	for _, s := range []struct {
		section string
		rows    []TimeRow
	}{{"delivery-time", r.DeliveryTimes}, {"retrieval-time", r.RetrievalTimes}} {
		for _, t := range s.rows {
			m := fmt.Sprintf("<%d", t.Median.Below)
			if !t.Median.Suppressed() {
				m = strconv.FormatInt(t.Median.D.Milliseconds(), 10)
			}
			if err := row(s.section, map[string]string{"peer": peerOrAll(t.Peer), "median_ms": m}); err != nil {
				return err
			}
		}
	}
	cw.Flush()
	return cw.Error()
}

// The JSON form of a report. A count is a number, or the string "<5" (for
// a threshold of 5) if it is suppressed; a withheld volume or median is
// null.
type (
	jsonReport struct {
		Gateway        string         `json:"gateway"`
		From           string         `json:"from"`
		To             string         `json:"to"`
		Threshold      int            `json:"threshold"`
		Log            *jsonLog       `json:"log,omitempty"`
		Transfers      []jsonTransfer `json:"transfers"`
		Refusals       []jsonRefusal  `json:"refusals"`
		DeliveryTimes  []jsonTime     `json:"delivery_times"`
		RetrievalTimes []jsonTime     `json:"retrieval_times"`
		Unread         int64          `json:"unread_entries"`
	}
	jsonLog struct {
		Origin   string `json:"origin"`
		Size     int64  `json:"size"`
		RootHash string `json:"root_hash"`
	}
	jsonTransfer struct {
		Direction Direction `json:"direction"`
		Peer      string    `json:"peer"`
		Purpose   string    `json:"purpose"`
		Handling  string    `json:"handling"`
		Outcome   string    `json:"outcome"`
		Bundles   Count     `json:"bundles"`
		Bytes     *int64    `json:"bytes"`
	}
	jsonRefusal struct {
		Stage     RefusalStage `json:"stage"`
		Direction Direction    `json:"direction,omitempty"`
		Peer      string       `json:"peer,omitempty"`
		Code      string       `json:"code"`
		Count     Count        `json:"count"`
	}
	jsonTime struct {
		Peer     string `json:"peer"`
		MedianMS *int64 `json:"median_ms"`
	}
)

// MarshalJSON writes c as a number, or as "<5" if it is suppressed under
// a threshold of 5.
func (c Count) MarshalJSON() ([]byte, error) {
	if c.Suppressed() {
		return []byte(`"` + c.String() + `"`), nil
	}
	return strconv.AppendInt(nil, c.N, 10), nil
}

// WriteJSON writes r as one indented JSON object.
func (r *TransparencyReport) WriteJSON(w io.Writer) error {
	j := jsonReport{Gateway: r.Gateway, From: r.From.UTC().Format(time.RFC3339Nano), To: r.To.UTC().Format(time.RFC3339Nano),
		Threshold: r.Threshold, Unread: r.Unread,
		Transfers: []jsonTransfer{}, Refusals: []jsonRefusal{}, DeliveryTimes: []jsonTime{}, RetrievalTimes: []jsonTime{}}
	if r.Log.Origin != "" {
		j.Log = &jsonLog{r.Log.Origin, r.Log.Size, r.Log.Hash}
	}
	for _, t := range r.Transfers {
		jt := jsonTransfer{t.Direction, t.Peer, t.Purpose, t.Handling, t.Outcome, t.Bundles, nil}
		if !t.Bundles.Suppressed() {
			jt.Bytes = &t.Bytes
		}
		j.Transfers = append(j.Transfers, jt)
	}
	for _, f := range r.Refusals {
		j.Refusals = append(j.Refusals, jsonRefusal{f.Stage, f.Stage.Direction(), f.Peer, f.Code, f.Count})
	}
	for _, s := range []struct {
		dst  *[]jsonTime
		rows []TimeRow
	}{{&j.DeliveryTimes, r.DeliveryTimes}, {&j.RetrievalTimes, r.RetrievalTimes}} {
		for _, t := range s.rows {
			jt := jsonTime{Peer: peerOrAll(t.Peer)}
			if !t.Median.Suppressed() {
				ms := t.Median.D.Milliseconds()
				jt.MedianMS = &ms
			}
			*s.dst = append(*s.dst, jt)
		}
	}
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	return enc.Encode(j)
}
