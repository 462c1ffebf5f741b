package config

import (
	"time"
)

// validateRetention checks the retention section: the lock mode, the
// intervals, and that each hold unit is a local user.
func (g *Gateway) validateRetention() Errors {
	var errs Errors
	add := func(e *Error) {
		if e != nil {
			errs = append(errs, e)
		}
	}
	// Zero values, in a Gateway built in code, mean the defaults.
	r := g.Retention
	if r.LockMode != "" && r.LockMode != "COMPLIANCE" && r.LockMode != "GOVERNANCE" {
		add(g.badValue("retention.lock_mode", r.LockMode, "want COMPLIANCE, or GOVERNANCE for test environments"))
	}
	if d := r.ReaperInterval; d != 0 && (d < Duration(time.Second) || d > Duration(time.Hour)) {
		add(g.badValue("retention.reaper_interval", d.String(), "want from 1s to 1h"))
	}
	if d := r.OutboxGrace; d < 0 || d > Duration(30*24*time.Hour) {
		add(g.badValue("retention.outbox_grace", d.String(), "want from 0s to 30d"))
	}
	users := make(map[string]bool, len(g.Users))
	for _, u := range g.Users {
		users[u.Identity] = true
	}
	seen := make(map[string]bool, len(r.HoldUnits))
	for i, u := range r.HoldUnits {
		f := index("retention.hold_units", i)
		switch {
		case !users[u]:
			add(g.badValue(f, u, "not a unit in users"))
		case seen[u]:
			add(g.badValue(f, u, "listed twice"))
		}
		seen[u] = true
	}
	return errs
}
