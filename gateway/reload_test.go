package gateway

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"evx/agreement"
	"evx/api"
	"evx/audit"
	"evx/crypto"
	"evx/internal/evxtest"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// reloadable is what a test's Options.Reload gives the gateway: the
// settings set last, or the error.
type reloadable struct {
	next atomic.Pointer[Settings]
	err  atomic.Pointer[error]
}

func (r *reloadable) reload(context.Context) (*Settings, error) {
	if err := r.err.Load(); err != nil {
		return nil, *err
	}
	s := *r.next.Load()
	return &s, nil
}

// settingsOf returns o's reloadable settings, under digest.
func settingsOf(o *Options, digest byte) *Settings {
	return &Settings{Peers: slices.Clone(o.Peers), Users: slices.Clone(o.Users), Agreements: slices.Clone(o.Agreements),
		ConfigSHA256: [32]byte{digest}}
}

// TestReload checks a reload as an operator makes it through the API: a
// broken configuration is refused whole with its reason and the running
// agreement keeps deciding; a changed agreement decides the next upload
// at once, with its new version, and the change is in the log with the
// old and new versions and the readable diff; a removed user's next
// request is refused; a reload that changes nothing logs nothing.
func TestReload(t *testing.T) {
	var rl reloadable
	var base *Settings
	tw := newTestWorld(t, diskStore, func(id string, o *Options) {
		if id == "DE" {
			base = settingsOf(o, 1)
			o.ConfigSHA256 = base.ConfigSHA256
			o.Reload = rl.reload
		}
	})
	tw.Start(t, "DE")
	tw.Start(t, "FR")
	ctx := t.Context()
	de := tw.gw("DE")
	op, _ := tw.Client("DE", "operator")
	forensics, deKey := tw.Client("DE", "forensics")
	fr := []crypto.PublicKey{tw.recipientKey("FR", "prosecutor")}

	// A broken file: refused whole, with the field and line, and the
	// agreement in force still allows.
	broken := errors.New(`gateway.yaml:41: agreements[0].outbound[2]: unknown purpose "fishing"`)
	rl.err.Store(&broken)
	_, err := op.ReloadConfig(ctx)
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Code != api.CodeInvalidConfig || ae.HTTPStatus != http.StatusUnprocessableEntity ||
		!strings.Contains(ae.Message, `gateway.yaml:41: agreements[0].outbound[2]`) || !strings.Contains(ae.Message, "the running one stays") {
		t.Fatalf("broken reload: %v, want 422 invalid-config naming the line and field", err)
	}
	rl.err.Store(nil)
	if st, err := uploadMode(ctx, forensics, evxtest.Seal(t, deKey, fr, 100), api.Direct); err != nil || st.State != api.StateDelivered {
		t.Fatalf("upload after a refused reload: %+v, %v; want it delivered under the running agreement", st, err)
	}

	// Nothing changed: nothing applies, nothing is logged.
	rl.next.Store(base)
	r, err := op.ReloadConfig(ctx)
	if err != nil || r.Changed || len(r.Changes) != 0 {
		t.Fatalf("reload of the same settings: %+v, %v; want changed false", r, err)
	}
	if n := countEvents(logEntries(t, de), audit.EventConfigReloaded); n != 0 {
		t.Fatalf("%d config-reloaded entries after reloads that applied nothing", n)
	}

	// Version 2 no longer allows mutual-legal-assistance outbound.
	next := settingsOf(&Options{Peers: base.Peers, Users: base.Users}, 2)
	next.Agreements = []*agreement.Agreement{agreementWith("FR", func(a *agreement.Agreement) {
		a.Version, a.Ref = 2, "2026/120"
		a.Outbound = slices.DeleteFunc(slices.Clone(a.Outbound), func(p string) bool { return p == "mutual-legal-assistance" })
	})}
	rl.next.Store(next)
	r, err = op.ReloadConfig(ctx)
	if err != nil || !r.Changed {
		t.Fatalf("reload: %+v, %v", r, err)
	}
	for _, want := range []string{"agreement FR: version 1 → 2 (ref dev-env → 2026/120)", "agreement FR: outbound purposes - mutual-legal-assistance"} {
		if !slices.Contains(r.Changes, want) {
			t.Errorf("reload's changes %q lack %q", r.Changes, want)
		}
	}
	b := evxtest.Seal(t, deKey, fr, 100)
	_, err = upload(ctx, forensics, b)
	if !errors.As(err, &ae) || ae.Code != api.CodePurposeNotAllowed || !strings.Contains(ae.Message, "agreement DE→FR v2 (ref 2026/120)") {
		t.Fatalf("upload after the reload: %v, want purpose-not-allowed under v2", err)
	}
	es := logEntries(t, de)
	var reloaded, changed *audit.Entry
	for _, e := range es {
		switch e.Event {
		case audit.EventConfigReloaded:
			reloaded = e
		case audit.EventAgreementChanged:
			changed = e
		}
	}
	if reloaded == nil || reloaded.OldConfigSHA256 != base.ConfigSHA256 || reloaded.ConfigSHA256 != next.ConfigSHA256 ||
		reloaded.Actor != audit.UnitActor("DE/operator") || !slices.Equal(reloaded.Changes, r.Changes) {
		t.Errorf("config-reloaded entry: %+v", reloaded)
	}
	if changed == nil || changed.Peer != "FR" || changed.OldAgreementVersion != 1 || changed.AgreementVersion != 2 ||
		changed.AgreementRef != "2026/120" || len(changed.Changes) != 2 {
		t.Errorf("agreement-changed entry: %+v", changed)
	}
	if ds := decisions(t, de, b.Env.BundleID); len(ds) != 1 || ds[0].AgreementVersion != 2 {
		t.Errorf("the refusal's decision: %+v, want one under version 2", ds)
	}

	// A user removed: its next request is refused.
	gone := *next
	gone.ConfigSHA256 = [32]byte{3}
	gone.Users = slices.DeleteFunc(slices.Clone(next.Users), func(u User) bool { return u.Unit == "DE/forensics" })
	rl.next.Store(&gone)
	if r, err = op.ReloadConfig(ctx); err != nil || !slices.Contains(r.Changes, "user DE/forensics removed") {
		t.Fatalf("reload removing a user: %+v, %v", r, err)
	}
	if _, err := forensics.WhoAmI(ctx); !errors.As(err, &ae) || ae.Code != api.CodeNoRole {
		t.Fatalf("removed user's request: %v, want no-role", err)
	}

	for outcome, want := range map[string]float64{reloadRefused: 1, reloadUnchanged: 1, reloadApplied: 2} {
		if got := testutil.ToFloat64(de.metrics.reloads.WithLabelValues(outcome)); got != want {
			t.Errorf("evx_config_reloads_total{outcome=%q} = %v, want %v", outcome, got, want)
		}
	}

	// Only operators reload.
	if _, err := forensics.ReloadConfig(ctx); !errors.As(err, &ae) || ae.HTTPStatus != http.StatusForbidden {
		t.Fatalf("reload by a removed submitter: %v, want 403", err)
	}
}

// TestReloadUnavailable: a gateway without a configuration file to read
// again says so.
func TestReloadUnavailable(t *testing.T) {
	tw := startWorld(t, diskStore)
	op, _ := tw.Client("DE", "operator")
	_, err := op.ReloadConfig(t.Context())
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Code != api.CodeReloadUnavailable {
		t.Fatalf("reload: %v, want reload-unavailable", err)
	}
}

func countEvents(es []*audit.Entry, ev audit.Event) int {
	n := 0
	for _, e := range es {
		if e.Event == ev {
			n++
		}
	}
	return n
}
