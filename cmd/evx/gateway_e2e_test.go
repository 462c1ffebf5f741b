package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"evx/api"
	"evx/storage"
	"evx/storage/storagetest"
)

// TestGatewayProcesses drives the built evx binary exactly as a user
// would: dev-env writes a two-country set-up, two gateway processes run
// it, DE's forensic unit pushes files, and FR's prosecutor lists, pulls
// and opens them. It runs with local-disk storage and with MinIO.
func TestGatewayProcesses(t *testing.T) {
	bin := procBuild(t)
	t.Run("Disk", func(t *testing.T) { testGatewayProcesses(t, bin, nil) })
	t.Run("S3", func(t *testing.T) {
		s3 := storagetest.S3Env(t)
		testGatewayProcesses(t, bin, &s3)
	})
}

// procBuild builds the evx command into a temporary directory.
func procBuild(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "evx")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// procRun runs evx with args and extra environment, and returns its
// standard output and error.
func procRun(t *testing.T, bin string, env []string, args ...string) (string, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}

// procMust runs evx and fails the test unless it succeeds.
func procMust(t *testing.T, bin string, args ...string) string {
	t.Helper()
	stdout, stderr, err := procRun(t, bin, nil, args...)
	if err != nil {
		t.Fatalf("evx %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, stdout, stderr)
	}
	return stdout
}

// procGateway runs `evx gateway --config cfg` until stop or the end of the
// test, and waits until its API port accepts connections. stop ends the
// gateway as an operator would, with SIGTERM, and expects a clean exit;
// once it has returned, the gateway's log is complete. procGateway returns
// the path of that log.
func procGateway(t *testing.T, bin, cfg string) (logPath string, stop func()) {
	t.Helper()
	_, logPath, stop = procStartGateway(t, bin, cfg)
	return logPath, stop
}

// procStartGateway is procGateway that also returns the gateway's process
// id, for signals.
func procStartGateway(t *testing.T, bin, cfg string) (pid int, logPath string, stop func()) {
	t.Helper()
	data, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^\s+api:\s*(\S+)\s*$`).FindSubmatch(data)
	if m == nil {
		t.Fatalf("no listen.api in %s", cfg)
	}
	api := string(m[1])
	logPath = filepath.Join(filepath.Dir(cfg), "gateway.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	// The gateway says when it is ready on a NOTIFY_SOCKET, as under
	// systemd.
	notify, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: filepath.Join(t.TempDir(), "notify"), Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer notify.Close()
	cmd := exec.Command(bin, "gateway", "--config", cfg)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+notify.LocalAddr().String())
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	logFile.Close()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	showLog := func() {
		data, _ := os.ReadFile(logPath)
		t.Logf("log of %s:\n%s", cfg, data)
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cmd.Process.Signal(syscall.SIGTERM)
			select {
			case err := <-exited:
				if err != nil {
					t.Errorf("gateway %s exited with %v after SIGTERM", cfg, err)
					showLog()
				}
			case <-time.After(20 * time.Second):
				cmd.Process.Kill()
				<-exited
				t.Errorf("gateway %s did not stop within 20 s of SIGTERM", cfg)
				showLog()
			}
		})
	}
	t.Cleanup(stop)
	ready := make(chan string, 1)
	go func() {
		buf := make([]byte, 64)
		notify.SetReadDeadline(time.Now().Add(30 * time.Second))
		n, _, err := notify.ReadFrom(buf)
		if err != nil {
			ready <- err.Error()
			return
		}
		ready <- string(buf[:n])
	}()
	select {
	case msg := <-ready:
		if msg != "READY=1" {
			showLog()
			t.Fatalf("gateway %s: notification %q, want READY=1", cfg, msg)
		}
	case err := <-exited:
		exited <- err // for the cleanup
		showLog()
		t.Fatalf("gateway %s exited at start: %v", cfg, err)
	}
	// Ready means listening: the API answers at once.
	c, err := net.DialTimeout("tcp", api, 5*time.Second)
	if err != nil {
		t.Fatalf("gateway %s said it was ready, but its API at %s: %v", cfg, api, err)
	}
	c.Close()
	return cmd.Process.Pid, logPath, stop
}

func testGatewayProcesses(t *testing.T, bin string, s3 *storage.S3Config) {
	dir := filepath.Join(t.TempDir(), "dev")
	args := []string{"dev-env", "--dir", dir}
	var env []string
	if s3 != nil {
		args = append(args, "--s3", "http://"+s3.Endpoint)
		env = []string{"AWS_ACCESS_KEY_ID=" + s3.AccessKey, "AWS_SECRET_ACCESS_KEY=" + s3.SecretKey}
		procRemoveBuckets(t, *s3, "evx-de", "evx-fr")
	}
	stdout, stderr, err := procRun(t, bin, env, args...)
	if err != nil {
		t.Fatalf("evx dev-env: %v\n%s", err, stderr)
	}
	if !strings.Contains(stdout, "evx gateway --config "+filepath.Join(dir, "DE", "gateway.yaml")) {
		t.Errorf("dev-env does not print how to start the gateways:\n%s", stdout)
	}
	deLog, stopDE := procGateway(t, bin, filepath.Join(dir, "DE", "gateway.yaml"))
	frLog, stopFR := procGateway(t, bin, filepath.Join(dir, "FR", "gateway.yaml"))

	// Evidence: a file over several age chunks and a small one.
	evidence := t.TempDir()
	files := map[string][]byte{"scene.raw": make([]byte, 1<<20+17), "notes.txt": []byte("seized 2026-11-27, 14:02\n")}
	rng := rand.New(rand.NewChaCha8([32]byte{'e', 'v', 'x'}))
	for i := range files["scene.raw"] {
		files["scene.raw"][i] = byte(rng.Uint32())
	}
	var paths []string
	for name, data := range files {
		p := filepath.Join(evidence, name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}

	deForensics := filepath.Join(dir, "DE", "forensics", "profile.yaml")
	frProsecutor := filepath.Join(dir, "FR", "prosecutor", "profile.yaml")
	out := procMust(t, bin, append([]string{"push", "--profile", deForensics, "--to", "FR/prosecutor",
		"--purpose", "mutual-legal-assistance", "--legal-basis", "EIO 2026/17", "--json"}, paths...)...)
	var pushed struct {
		BundleID string          `json:"bundle_id"`
		State    string          `json:"state"`
		Receipt  json.RawMessage `json:"receipt"`
	}
	if err := json.Unmarshal([]byte(out), &pushed); err != nil {
		t.Fatalf("push --json printed %q: %v", out, err)
	}
	if pushed.BundleID == "" || pushed.State != "delivered" || len(pushed.Receipt) == 0 || string(pushed.Receipt) == "null" {
		t.Fatalf("push: %s; want a delivered bundle with a receipt", out)
	}

	inbox := func() api.InboxEntry {
		t.Helper()
		var list []api.InboxEntry
		out := procMust(t, bin, "inbox", "--profile", frProsecutor, "--json")
		if err := json.Unmarshal([]byte(out), &list); err != nil {
			t.Fatalf("inbox --json printed %q: %v", out, err)
		}
		for _, e := range list {
			if e.BundleID == pushed.BundleID {
				return e
			}
		}
		t.Fatalf("bundle %s is not in FR/prosecutor's inbox: %s", pushed.BundleID, out)
		return api.InboxEntry{}
	}
	e := inbox()
	if e.From != "DE" || e.Sender != "DE/forensics" || e.Purpose != "mutual-legal-assistance" || e.LegalBasis != "EIO 2026/17" || e.Acknowledged {
		t.Errorf("inbox entry %+v", e)
	}

	opened := filepath.Join(t.TempDir(), "evidence")
	out = procMust(t, bin, "pull", "--profile", frProsecutor, pushed.BundleID, "-o", opened)
	for _, want := range []string{pushed.BundleID, "sender check", "directory of DE", "retrieval acknowledged"} {
		if !strings.Contains(out, want) {
			t.Errorf("pull output lacks %q:\n%s", want, out)
		}
	}
	for name, want := range files {
		got, err := os.ReadFile(filepath.Join(opened, name))
		if err != nil {
			t.Error(err)
			continue
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s pulled differs from the file pushed", name)
		}
	}
	if !inbox().Acknowledged {
		t.Error("the inbox does not show the retrieval acknowledged")
	}

	// A submitter cannot list an inbox: refused (exit 3) with its code,
	// and logged.
	_, stderr, err = procRun(t, bin, nil, "inbox", "--profile", deForensics)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != exitRefused || !strings.Contains(stderr, "forbidden") {
		t.Errorf("inbox as DE/forensics: %v, stderr %q; want exit 3 and forbidden", err, stderr)
	}
	// The logs are complete once the gateways have exited: DE may log a
	// delivery just after it answers the push.
	stopDE()
	stopFR()
	procWantLog(t, deLog, `"code":"forbidden"`)
	procWantLog(t, deLog, `"msg":"bundle delivered"`)
	procWantLog(t, frLog, `"msg":"bundle stored"`)
	procWantLog(t, frLog, `"msg":"retrieval acknowledged"`)
}

// procWantLog checks that a gateway's log holds s.
func procWantLog(t *testing.T, path, s string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(data, []byte(s)) {
		t.Errorf("%s lacks %s:\n%s", path, s, data)
	}
}

// procRemoveBuckets removes, when the test ends, the buckets dev-env names
// if they do not exist yet: whatever the gateways stored there is the
// test's. Buckets that exist already are left alone.
func procRemoveBuckets(t *testing.T, s3 storage.S3Config, buckets ...string) {
	t.Helper()
	c := storagetest.AdminClient(t, s3)
	for _, b := range buckets {
		ok, err := c.BucketExists(t.Context(), b)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			t.Logf("bucket %s exists already: it is used and kept", b)
			continue
		}
		t.Cleanup(func() { storagetest.RemoveBucket(t, c, b) })
	}
}
