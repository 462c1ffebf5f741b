package audit

import (
	"reflect"
	"testing"
	"time"
)

// The entries of retention's events are read, not counted: they change
// neither the transfers nor the refusals nor the times of a report, and
// are not reported as unread.
func TestReportReadsRetentionEvents(t *testing.T) {
	l := newTestLog(t, "DE")
	for range 2 {
		l.send(inPeriod, l.newBundle("FR", "prosecution", "H1", 10), time.Second)
		l.receive(inPeriod, l.newBundle("FR", "prosecution", "H1", 10), time.Minute)
		l.uploadRefused(inPeriod, "FR", "agreement-suspended")
	}
	without := l.report(ReportOptions{Threshold: MinThreshold})
	if len(without.Transfers) != 2 || len(without.Refusals) != 1 || len(without.DeliveryTimes) == 0 || len(without.RetrievalTimes) == 0 {
		t.Fatalf("report without the events of retention: %+v", without)
	}
	n := 0
	for _, e := range testEntries(t) {
		if formatOf(e.entry.Event) == EntryFormat3 {
			e.entry.Time = inPeriod.Add(time.Hour)
			l.add(e.entry)
			n++
		}
	}
	if n != 12 {
		t.Fatalf("%d entries of retention, want 12", n)
	}
	with := l.report(ReportOptions{Threshold: MinThreshold})
	if with.Unread != 0 {
		t.Errorf("%d entries unread", with.Unread)
	}
	if !reflect.DeepEqual(with, without) {
		t.Errorf("report with the events of retention\n%+v\nwithout them\n%+v", with, without)
	}
}

// A Tally forgets the start of a received bundle once its key is shredded
// or it is purged, and of a sent one once its records are purged: neither
// can be retrieved or delivered any more, and a log of many expired
// bundles must not fill the Tally's memory.
func TestTallyForgetsEndedBundles(t *testing.T) {
	l := newTestLog(t, "DE")
	var in, out []testBundle
	for range 3 {
		b := l.newBundle("FR", "prosecution", "H1", 10)
		l.receive(inPeriod, b, -1) // never acknowledged
		in = append(in, b)
		o := l.newBundle("FR", "prosecution", "H1", 10)
		l.uploadAccepted(inPeriod, o) // never delivered
		l.offerSent(inPeriod, o)
		out = append(out, o)
	}
	ended := func(b testBundle, ev Event) {
		l.add(l.withBundle(Entry{Time: inPeriod.Add(time.Hour), Actor: GatewayActor, Event: ev}, b))
	}
	ended(in[0], EventKeyShredded)
	ended(in[1], EventBundlePurged)
	ended(out[0], EventOutboxPurged)
	// An expiry alone, or the deletion of a delivered payload, ends
	// nothing: a hold may still make the bundle readable.
	exp := l.withBundle(Entry{Time: inPeriod.Add(time.Hour), Actor: GatewayActor, Event: EventBundleExpired, RetainUntil: inPeriod}, in[2])
	l.add(exp)
	ended(out[1], EventOutboxPayloadDeleted)

	tally, err := NewTally(ReportOptions{From: reportFrom, To: reportTo})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range l.data {
		if err := tally.AddBytes(d); err != nil {
			t.Fatal(err)
		}
	}
	for _, b := range in[:2] {
		if _, ok := tally.receiving[b.id]; ok {
			t.Errorf("the Tally still holds the start of bundle %s, whose retention ended", b.id)
		}
	}
	if _, ok := tally.receiving[in[2].id]; !ok {
		t.Errorf("the Tally forgot the start of the expired bundle %s, which a hold may keep readable", in[2].id)
	}
	if _, ok := tally.sending[out[0].id]; ok {
		t.Errorf("the Tally still holds the start of bundle %s, whose records were purged", out[0].id)
	}
	if len(tally.receiving) != 1 || len(tally.sending) != 2 {
		t.Errorf("the Tally holds %d received and %d sent bundles, want 1 and 2", len(tally.receiving), len(tally.sending))
	}
}
