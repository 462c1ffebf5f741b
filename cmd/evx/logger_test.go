package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"regexp"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// TestLogger checks the gateway log's form: one JSON object a line, ISO
// 8601 UTC times with milliseconds, durations with their unit, and every
// line kept, however often a message repeats.
func TestLogger(t *testing.T) {
	var buf bytes.Buffer
	log := newLoggerTo(zapcore.AddSync(&buf))
	log.Info("bundle stored", zap.String("bundle", "0123"), zap.Duration("took", 1200*time.Millisecond))
	const repeats = 500 // zap's production sampling keeps 100 a second
	for range repeats {
		log.Warn("offer refused", zap.String("code", "bad-signature"))
	}
	log.Sync()

	sc := bufio.NewScanner(&buf)
	var lines []map[string]any
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		lines = append(lines, m)
	}
	if len(lines) != 1+repeats {
		t.Fatalf("%d lines, want %d: the log is sampled", len(lines), 1+repeats)
	}
	first := lines[0]
	ts, _ := first["ts"].(string)
	if !regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$`).MatchString(ts) {
		t.Errorf(`"ts":%q, want ISO 8601 UTC with milliseconds`, first["ts"])
	}
	if at, err := time.Parse(time.RFC3339, ts); err != nil || time.Since(at) > time.Hour || time.Since(at) < -time.Hour {
		t.Errorf(`"ts":%q does not parse as now (%v)`, ts, err)
	}
	if first["took"] != "1.2s" {
		t.Errorf(`"took":%v, want "1.2s"`, first["took"])
	}
	if first["level"] != "info" || first["msg"] != "bundle stored" || first["bundle"] != "0123" {
		t.Errorf("line %v", first)
	}
	if _, ok := first["caller"]; !ok {
		t.Errorf("line %v has no caller", first)
	}
}
