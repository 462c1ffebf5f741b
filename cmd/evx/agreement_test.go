package main

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"evx/api"

	"github.com/rogpeppe/go-internal/testscript"
)

// TestAgreementScripts runs the scripts of testdata/script/agreements: the
// commands that change and show a running gateway's agreements, as an
// operator runs them, against a fake gateway that answers what the
// script tells it to (fakeapi), so that each answer's output, exit code
// and error can be tried, the unusual and hostile ones included. The
// scripts of testdata/script/gateways run them against real gateways.
func TestAgreementScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir:                 "testdata/script/agreements",
		RequireExplicitExec: true,
		RequireUniqueNames:  true,
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"fakeapi": cmdFakeAPI,
			"exits":   cmdExits,
		},
	})
}

// cmdFakeAPI starts a fake DE gateway API from evx dev-env's files in DIR
// and writes DIR/fakeapi.yaml, DE's operator's profile for it: fakeapi DIR
// ANSWERS. Each line of the file ANSWERS is "METHOD PATH STATUS FILE": the
// request's answer is FILE's content with STATUS, as JSON; a STATUS of -
// is the status the gateway sends the API error in FILE with, or 200 for
// an answer that is not one. ANSWERS and the files are read at each
// request, so that a script can change them
// between commands. A request without a line is answered 404 without an
// API error, as by a gateway that does not know the path. Each request
// is appended to DIR/fakeapi.log as "METHOD PATH BODY".
func cmdFakeAPI(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: fakeapi DIR ANSWERS")
	}
	dir, answers := ts.MkAbs(args[0]), ts.MkAbs(args[1])
	de := filepath.Join(dir, "DE")
	cert, err := tls.LoadX509KeyPair(filepath.Join(de, "gateway.pem"), filepath.Join(de, "gateway-key.pem"))
	ts.Check(err)
	caPEM, err := os.ReadFile(filepath.Join(de, "ca.pem"))
	ts.Check(err)
	clients := x509.NewCertPool()
	clients.AppendCertsFromPEM(caPEM)
	var mu sync.Mutex
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		mu.Lock()
		defer mu.Unlock()
		if f, err := os.OpenFile(filepath.Join(dir, "fakeapi.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644); err == nil {
			fmt.Fprintf(f, "%s %s %s\n", r.Method, r.URL.Path, body)
			f.Close()
		}
		status, file, ok := fakeAnswer(answers, r.Method, r.URL.Path)
		if !ok {
			http.NotFound(w, r)
			return
		}
		data, err := os.ReadFile(filepath.Join(filepath.Dir(answers), file))
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		if status == 0 {
			status = http.StatusOK
			var e api.ErrorBody
			if json.Unmarshal(data, &e) == nil && e.Error != nil {
				status = e.Error.Code.Status()
			}
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		w.Write(data)
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: clients}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	ts.Defer(srv.Close)
	op := filepath.Join(de, "operator")
	profile := fmt.Sprintf("gateway: %s\nca: %s\ncert: %s\nkey: %s\nunit_key: %s\n", srv.URL,
		filepath.Join(de, "ca.pem"), filepath.Join(op, "cert.pem"), filepath.Join(op, "cert-key.pem"), filepath.Join(op, "unit.key"))
	ts.Check(os.WriteFile(filepath.Join(dir, "fakeapi.yaml"), []byte(profile), 0o600))
}

// fakeAnswer finds the answer to METHOD PATH in the file answers.
func fakeAnswer(answers, method, path string) (status int, file string, ok bool) {
	f, err := os.Open(answers)
	if err != nil {
		return 0, "", false
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) == 4 && fields[0] == method && fields[1] == path {
			if fields[2] == "-" {
				return 0, fields[3], true
			}
			n, err := strconv.Atoi(fields[2])
			if err != nil {
				return 0, "", false
			}
			return n, fields[3], true
		}
	}
	return 0, "", false
}

// cmdWaitFor runs a program again and again until it exits with CODE, for
// a state a gateway reaches on its own time, such as the peer's view that
// the agreement exchange brings after a start or a suspension, observed
// through the API: waitfor CODE PROGRAM ARGS.... It fails if the program
// has not exited with CODE within a minute. The script sees the last run's
// output.
func cmdWaitFor(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 {
		ts.Fatalf("usage: waitfor CODE PROGRAM ARGS...")
	}
	want, err := strconv.Atoi(args[0])
	ts.Check(err)
	deadline := time.Now().Add(time.Minute)
	for runs := 1; ; runs++ {
		err := ts.Exec(args[1], args[2:]...)
		got := 0
		var exitErr *exec.ExitError
		switch {
		case errors.As(err, &exitErr):
			got = exitErr.ExitCode()
		case err != nil:
			ts.Fatalf("%s: %v", args[1], err)
		}
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			ts.Fatalf("%s exited %d after %d runs in a minute, want %d", args[1], got, runs, want)
		}
	}
}
