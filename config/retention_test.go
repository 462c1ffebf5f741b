package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestRetentionDefaults(t *testing.T) {
	g, err := Parse([]byte(head), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	r := g.Retention
	if r.LockMode != "COMPLIANCE" || r.ReaperInterval != Duration(time.Minute) || r.OutboxGrace != Duration(time.Hour) ||
		filepath.Base(r.MasterKey) != "master.key" || !r.MasterKeyCreatable() {
		t.Errorf("defaults: %+v", r)
	}
	g, err = Parse([]byte(head+"retention: {master_key: keys/m.key, lock_mode: GOVERNANCE, reaper_interval: 5s, outbox_grace: 0s}\n"), "/etc/evx")
	if err != nil {
		t.Fatal(err)
	}
	r = g.Retention
	if r.MasterKey != "/etc/evx/keys/m.key" || r.MasterKeyCreatable() || r.LockMode != "GOVERNANCE" ||
		r.ReaperInterval != Duration(5*time.Second) || r.OutboxGrace != 0 {
		t.Errorf("configured: %+v", r)
	}
}

// TestMasterKeyFile checks the master key file: the default one may be
// absent (the gateway creates it), a configured one must exist, and either
// must be a private master key file.
func TestMasterKeyFile(t *testing.T) {
	field := func(err error) string {
		for _, e := range err.(Errors) {
			if e.Field == "retention.master_key" {
				return e.Msg
			}
		}
		return ""
	}
	path, g := fixture(t)
	dir := filepath.Dir(path)
	if err := g.CheckFiles(); err != nil {
		t.Fatalf("valid fixture: %v", err)
	}
	mk := g.Retention.MasterKey
	if err := os.Remove(mk); err != nil {
		t.Fatal(err)
	}
	if err := g.CheckFiles(); err != nil {
		t.Errorf("absent default master key: %v", err)
	}

	data := readTestdata(t, "valid/gateway.yaml")
	conf, err := Parse(append(data, []byte("retention:\n  master_key: secret/master.key\n")...), dir)
	if err != nil {
		t.Fatal(err)
	}
	err = conf.CheckFiles()
	if err == nil || !strings.Contains(field(err), "no such file") {
		t.Errorf("absent configured master key: %v", err)
	}
	for _, tc := range []struct {
		name string
		data string
		mode os.FileMode
		msg  string
	}{
		{"garbage", "hello\n", 0o600, "unexpected content in master key file"},
		{"readable by others", "", 0o644, "group or others may read it"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			writeFixtures(t, conf)
			p := conf.Retention.MasterKey
			if tc.data != "" {
				if err := os.WriteFile(p, []byte(tc.data), tc.mode); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.Chmod(p, tc.mode); err != nil {
				t.Fatal(err)
			}
			err := conf.CheckFiles()
			if err == nil || !strings.Contains(field(err), tc.msg) {
				t.Errorf("got %v, want %q", err, tc.msg)
			}
			if err != nil && strings.Contains(err.Error(), "AGE-SECRET-KEY") {
				t.Errorf("error reveals the key: %v", err)
			}
		})
	}
}
