package main

import (
	"archive/zip"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"

	"evx/api"

	"github.com/rogpeppe/go-internal/testscript"
)

// TestMain lets the test binary act as the evx command inside scripts, so
// that they exercise the real flag parsing, output and exit codes.
func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"evx": func() { os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr)) },
	})
}

// interopTools are the stock tools that testdata/script/age_interop.txtar
// runs. A developer machine may lack them and the script then skips; in CI a
// skip would silently drop the interoperability check, so it is an error.
var interopTools = []string{"age", "unzip"}

func TestScripts(t *testing.T) {
	if os.Getenv("CI") != "" {
		for _, tool := range interopTools {
			if _, err := exec.LookPath(tool); err != nil {
				t.Fatalf("CI is set but %q is not on PATH (scripts/test.sh installs it): %v", tool, err)
			}
		}
	}
	testscript.Run(t, testscript.Params{
		Dir:                 "testdata/script",
		RequireExplicitExec: true,
		RequireUniqueNames:  true,
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"perm":     cmdPerm,
			"grab":     cmdGrab,
			"tamper":   cmdTamper,
			"flip":     cmdFlip,
			"mkzip":    cmdMkzip,
			"randfile": cmdRandfile,
			"exits":    cmdExits,
			"fakegw":   cmdFakeGateway,
		},
	})
}

// cmdExits runs a program and checks its exit code, which "! exec" cannot
// tell apart: exits CODE PROGRAM ARGS...
func cmdExits(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 {
		ts.Fatalf("usage: exits CODE PROGRAM ARGS...")
	}
	want, err := strconv.Atoi(args[0])
	ts.Check(err)
	err = ts.Exec(args[1], args[2:]...)
	got := 0
	var exitErr *exec.ExitError
	switch {
	case errors.As(err, &exitErr):
		got = exitErr.ExitCode()
	case err != nil:
		ts.Fatalf("%s: %v", args[1], err)
	}
	if got != want {
		ts.Fatalf("%s exited %d, want %d", args[1], got, want)
	}
}

// cmdFakeGateway starts, for the rest of the script, an HTTPS server with
// the certificate of the gateway DE of an evx dev-env set-up in DIR, which
// requires a client certificate from DE's CA and answers every request
// with STATUS and an API error of CODE, and writes DIR/fake.yaml, the
// profile of USER (default DE/forensics) pointed at it:
// fakegw DIR STATUS CODE [USER].
func cmdFakeGateway(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 3 || len(args) > 4 {
		ts.Fatalf("usage: fakegw DIR STATUS CODE [USER]")
	}
	dir := ts.MkAbs(args[0])
	status, err := strconv.Atoi(args[1])
	ts.Check(err)
	user := filepath.Join(dir, "DE", "forensics")
	if len(args) == 4 {
		user = filepath.Join(dir, filepath.FromSlash(args[3]))
	}
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "DE", "gateway.pem"), filepath.Join(dir, "DE", "gateway-key.pem"))
	ts.Check(err)
	caPEM, err := os.ReadFile(filepath.Join(dir, "DE", "ca.pem"))
	ts.Check(err)
	clients := x509.NewCertPool()
	clients.AppendCertsFromPEM(caPEM)
	body, err := json.Marshal(api.ErrorBody{Error: &api.Error{Code: api.Code(args[2]), Message: "the fake gateway says no"}})
	ts.Check(err)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		w.Write(body)
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: clients}
	// The handshake errors of refused clients are expected, not news.
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	ts.Defer(srv.Close)
	profile := fmt.Sprintf("gateway: %s\nca: %s\ncert: %s\nkey: %s\nunit_key: %s\n", srv.URL,
		filepath.Join(dir, "DE", "ca.pem"), filepath.Join(user, "cert.pem"), filepath.Join(user, "cert-key.pem"), filepath.Join(user, "unit.key"))
	ts.Check(os.WriteFile(filepath.Join(dir, "fake.yaml"), []byte(profile), 0o600))
}

// cmdPerm checks a file's permission bits: perm FILE 0600.
func cmdPerm(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 2 {
		ts.Fatalf("usage: perm FILE MODE")
	}
	want, err := strconv.ParseUint(args[1], 8, 32)
	ts.Check(err)
	info, err := os.Stat(ts.MkAbs(args[0]))
	ts.Check(err)
	got := uint64(info.Mode().Perm())
	switch {
	case neg && got == want:
		ts.Fatalf("%s has mode %04o", args[0], got)
	case !neg && got != want:
		ts.Fatalf("%s has mode %04o, want %04o", args[0], got, want)
	}
}

// cmdGrab sets an environment variable to the first submatch of a
// multi-line regular expression in a file (such as stdout), so that scripts
// can pass generated keys on: grab VAR FILE REGEXP.
func cmdGrab(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 3 {
		ts.Fatalf("usage: grab VAR FILE REGEXP")
	}
	re, err := regexp.Compile("(?m)" + args[2])
	ts.Check(err)
	m := re.FindStringSubmatch(ts.ReadFile(args[1]))
	if len(m) != 2 {
		ts.Fatalf("no single submatch of %q in %s", args[2], args[1])
	}
	ts.Setenv(args[0], m[1])
}

// cmdTamper rewrites a bundle with OLD replaced by NEW in envelope.json,
// keeping the container well-formed and the signature as it was, as a
// forger who edits the envelope would: tamper BUNDLE OLD NEW.
func cmdTamper(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 3 {
		ts.Fatalf("usage: tamper BUNDLE OLD NEW")
	}
	path := ts.MkAbs(args[0])
	data, err := os.ReadFile(path)
	ts.Check(err)
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	ts.Check(err)
	var out bytes.Buffer
	zw := zip.NewWriter(&out)
	changed := false
	for _, f := range zr.File {
		rc, err := f.Open()
		ts.Check(err)
		content, err := io.ReadAll(rc)
		ts.Check(err)
		if f.Name == "envelope.json" {
			if !bytes.Contains(content, []byte(args[1])) {
				ts.Fatalf("envelope.json does not contain %q", args[1])
			}
			content = bytes.Replace(content, []byte(args[1]), []byte(args[2]), 1)
			changed = true
		}
		w, err := zw.CreateHeader(&zip.FileHeader{Name: f.Name, Method: zip.Store, Modified: f.Modified})
		ts.Check(err)
		_, err = w.Write(content)
		ts.Check(err)
	}
	ts.Check(zw.Close())
	if !changed {
		ts.Fatalf("%s has no envelope.json", args[0])
	}
	ts.Check(os.WriteFile(path, out.Bytes(), 0o644))
}

// cmdFlip inverts one byte of a stored entry inside a zip file, in place,
// at OFFSET bytes into the entry's data, or from its end if OFFSET is
// negative: flip FILE ENTRY OFFSET. The entry's zip CRC is left stale:
// evx reads payload.age by offset, and its own checks must catch the change.
func cmdFlip(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 3 {
		ts.Fatalf("usage: flip FILE ENTRY OFFSET")
	}
	path := ts.MkAbs(args[0])
	off, err := strconv.ParseInt(args[2], 10, 64)
	ts.Check(err)
	data, err := os.ReadFile(path)
	ts.Check(err)
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	ts.Check(err)
	for _, f := range zr.File {
		if f.Name != args[1] {
			continue
		}
		start, err := f.DataOffset()
		ts.Check(err)
		if off < 0 {
			off += int64(f.CompressedSize64)
		}
		if off < 0 || off >= int64(f.CompressedSize64) {
			ts.Fatalf("offset %d is outside %s (%d bytes)", off, f.Name, f.CompressedSize64)
		}
		data[start+off] ^= 0xff
		ts.Check(os.WriteFile(path, data, 0o644))
		return
	}
	ts.Fatalf("%s has no entry %q", args[0], args[1])
}

// cmdMkzip writes a plain zip archive of the named files: mkzip OUT FILE...
func cmdMkzip(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 {
		ts.Fatalf("usage: mkzip OUT FILE...")
	}
	var out bytes.Buffer
	zw := zip.NewWriter(&out)
	for _, name := range args[1:] {
		w, err := zw.Create(name)
		ts.Check(err)
		_, err = io.WriteString(w, ts.ReadFile(name))
		ts.Check(err)
	}
	ts.Check(zw.Close())
	ts.Check(os.WriteFile(ts.MkAbs(args[0]), out.Bytes(), 0o644))
}

// cmdRandfile writes SIZE bytes of deterministic pseudo-random data, so that
// a payload spans several age chunks: randfile FILE SIZE.
func cmdRandfile(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: randfile FILE SIZE")
	}
	size, err := strconv.Atoi(args[1])
	ts.Check(err)
	data := make([]byte, size)
	rand.NewChaCha8([32]byte{}).Read(data)
	path := ts.MkAbs(args[0])
	ts.Check(os.MkdirAll(filepath.Dir(path), 0o755))
	ts.Check(os.WriteFile(path, data, 0o644))
}
