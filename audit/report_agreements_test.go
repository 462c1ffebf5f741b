package audit

import (
	"reflect"
	"testing"
)

// The entries of the agreements' changes, suspensions and resumptions
// are read, not counted: they change neither the transfers nor the
// refusals of a report, and are not reported as unread.
func TestReportReadsAgreementEvents(t *testing.T) {
	l := newTestLog(t, "DE")
	for range 2 {
		l.send(inPeriod, l.newBundle("FR", "prosecution", "H1", 10), 0)
		l.uploadRefused(inPeriod, "FR", "agreement-suspended")
	}
	without := l.report(ReportOptions{Threshold: MinThreshold})
	if len(without.Transfers) != 1 || len(without.Refusals) != 1 {
		t.Fatalf("report without the agreements' events: %+v", without)
	}
	for _, n := range testEntries(t) {
		switch n.entry.Event {
		case EventConfigReloaded, EventAgreementChanged, EventAgreementSuspended, EventAgreementResumed:
			e := n.entry
			e.Time = inPeriod
			l.add(e)
		}
	}
	with := l.report(ReportOptions{Threshold: MinThreshold})
	if with.Unread != 0 {
		t.Errorf("%d entries unread", with.Unread)
	}
	if !reflect.DeepEqual(with, without) {
		t.Errorf("report with the agreements' events\n%+v\nwithout them\n%+v", with, without)
	}
}
