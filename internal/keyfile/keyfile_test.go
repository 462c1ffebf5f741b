package keyfile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("permission bits are not checked on Windows")
	}
	dir := t.TempDir()
	key := filepath.Join(dir, "unit.key")
	if err := os.WriteFile(key, []byte("secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, mode := range []fs.FileMode{0o600, 0o400, 0o700, 0o200} {
		if err := os.Chmod(key, mode); err != nil {
			t.Fatal(err)
		}
		if err := Check(key); err != nil {
			t.Errorf("mode %04o: %v", mode, err)
		}
	}
	for _, tc := range []struct {
		mode fs.FileMode
		msg  string
	}{
		{0o644, "private key file " + key + " has mode 0644: group or others may read it; make it private with: chmod 600 " + key},
		{0o640, "has mode 0640: group or others may read it"},
		{0o604, "has mode 0604: group or others may read it"},
		{0o620, "has mode 0620: group or others may write it"},
		{0o602, "has mode 0602: group or others may write it"},
		{0o666, "has mode 0666: group or others may read and write it"},
		{0o610, "has mode 0610: group or others may read it"},
		{0o601, "has mode 0601: group or others may read it"},
	} {
		if err := os.Chmod(key, tc.mode); err != nil {
			t.Fatal(err)
		}
		err := Check(key)
		var exposed *ExposedError
		if !errors.As(err, &exposed) || exposed.Mode != tc.mode || exposed.Path != key {
			t.Fatalf("mode %04o: %v, want an ExposedError", tc.mode, err)
		}
		if got := err.Error(); !strings.Contains(got, tc.msg) {
			t.Errorf("mode %04o: %q lacks %q", tc.mode, got, tc.msg)
		}
	}

	// Symbolic links are followed: the target's mode is what counts.
	if err := os.Chmod(key, 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link.key")
	if err := os.Symlink(key, link); err != nil {
		t.Fatal(err)
	}
	if err := Check(link); err != nil {
		t.Errorf("link to a 0600 file: %v", err)
	}

	// Not a regular file, or no file at all.
	if err := Check(dir); !errors.Is(err, ErrNotRegular) {
		t.Errorf("directory: %v", err)
	}
	if err := Check(filepath.Join(dir, "missing.key")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}
