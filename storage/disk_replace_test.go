package storage_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"evx/storage"
	"evx/storage/storagetest"
)

// Replace's versions survive a new instance on the same root: a process
// that restarts reads the version and replaces with it.
func TestDiskReplaceReopen(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	d1, err := storage.NewDisk(dir)
	if err != nil {
		t.Fatal(err)
	}
	v1, err := d1.Replace(ctx, "log/checkpoint", []byte("size 1"), "")
	if err != nil {
		t.Fatal(err)
	}
	d2, err := storage.NewDisk(dir)
	if err != nil {
		t.Fatal(err)
	}
	data, v, err := d2.ReadVersion(ctx, "log/checkpoint", 100)
	if err != nil || string(data) != "size 1" || v != v1 {
		t.Fatalf("ReadVersion from a second instance = %q, %q, %v; want %q, %q", data, v, err, "size 1", v1)
	}
	if _, err := d2.Replace(ctx, "log/checkpoint", []byte("size 2"), v1); err != nil {
		t.Fatalf("Replace from a second instance: %v", err)
	}
	if _, err := d1.Replace(ctx, "log/checkpoint", []byte("size 2'"), v1); !errors.Is(err, storage.ErrVersionMismatch) {
		t.Errorf("Replace from the first instance with the old version = %v, want ErrVersionMismatch", err)
	}
	// Lock files are not objects, and no temporary file is left.
	infos, err := d1.List(ctx, "")
	if err != nil || len(infos) != 1 || infos[0].Key != "log/checkpoint" {
		t.Errorf("List = %v, %v; want only log/checkpoint", infos, err)
	}
	if entries, err := os.ReadDir(filepath.Join(dir, ".tmp")); err != nil || len(entries) != 0 {
		t.Errorf("temporary files left behind: %v, %v", entries, err)
	}
	fi, err := os.Stat(filepath.Join(dir, "log", "checkpoint"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("object mode %v, %v; want 0600", fi, err)
	}
}

// Replace refuses a key that is a directory of other keys, or below an
// object, without taking it for a version mismatch.
func TestDiskReplaceKeyAndDirectory(t *testing.T) {
	ctx := t.Context()
	d := newDisk(t)
	if err := d.Create(ctx, "a/b", strings.NewReader("x"), 1); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"a", "a/b/c"} {
		_, err := d.Replace(ctx, key, []byte("y"), "")
		if err == nil || errors.Is(err, storage.ErrVersionMismatch) || errors.Is(err, storage.ErrExist) {
			t.Errorf("Replace(%q) = %v, want another error", key, err)
		}
	}
	if data, _, err := d.ReadVersion(ctx, "a/b", 10); err != nil || string(data) != "x" {
		t.Errorf("a/b = %q, %v", data, err)
	}
}

// Two Disk instances on one root in one process share no in-process lock:
// only the lock files keep their Replaces in turn.
func TestDiskReplaceTwoInstances(t *testing.T) {
	dir := t.TempDir()
	var disks [2]*storage.Disk
	for i := range disks {
		d, err := storage.NewDisk(dir)
		if err != nil {
			t.Fatal(err)
		}
		disks[i] = d
	}
	const writers, rounds = 4, 10
	var want []string
	var wg sync.WaitGroup
	for i, d := range disks {
		for w := range writers {
			marks := make([]string, rounds)
			for r := range rounds {
				marks[r] = fmt.Sprintf("d%d.w%d.%d", i, w, r)
			}
			want = append(want, marks...)
			wg.Go(func() {
				for _, m := range marks {
					if _, err := storagetest.Increment(t.Context(), d, "counter", m); err != nil {
						t.Errorf("increment %s: %v", m, err)
						return
					}
				}
			})
		}
	}
	wg.Wait()
	storagetest.CheckCounter(t, disks[0], "counter", want)
}

// The child process of TestDiskReplaceProcesses: see there.
const (
	childDirEnv = "EVX_TEST_REPLACE_DIR"
	childIDEnv  = "EVX_TEST_REPLACE_ID"
)

// processWriters and processRounds shape TestDiskReplaceProcesses: each
// process runs processWriters goroutines that increment processRounds
// times each.
const processWriters, processRounds = 4, 10

// Two processes, each with several goroutines, increment one counter on
// one Disk root with read-modify-Replace loops, and no increment is lost:
// the lock files keep Replaces in turn across processes. The processes are
// this test binary run again; both have opened the root and wait until
// the test lets them go together.
func TestDiskReplaceProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	dir := t.TempDir()
	if _, err := storage.NewDisk(dir); err != nil {
		t.Fatal(err)
	}
	type child struct {
		cmd    *exec.Cmd
		out    bytes.Buffer
		ready  *os.File // the child writes a line on it when it is ready
		goW    *os.File // closing it lets the child go
		readyW *os.File
		goR    *os.File
	}
	var children [2]*child
	for i := range children {
		c := &child{}
		var err error
		if c.ready, c.readyW, err = os.Pipe(); err != nil {
			t.Fatal(err)
		}
		if c.goR, c.goW, err = os.Pipe(); err != nil {
			t.Fatal(err)
		}
		c.cmd = exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestDiskReplaceChild$", "-test.count=1")
		c.cmd.Env = append(os.Environ(), childDirEnv+"="+dir, childIDEnv+"="+strconv.Itoa(i))
		c.cmd.Stdout = &c.out
		c.cmd.Stderr = &c.out
		// Descriptors 3 and 4 of the child.
		c.cmd.ExtraFiles = []*os.File{c.readyW, c.goR}
		if err := c.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		c.readyW.Close()
		c.goR.Close()
		children[i] = c
	}
	for i, c := range children {
		line, err := bufio.NewReader(c.ready).ReadString('\n')
		c.ready.Close()
		if line != "ready\n" {
			c.goW.Close()
			c.cmd.Wait()
			t.Fatalf("child %d did not get ready (%q, %v):\n%s", i, line, err, c.out.String())
		}
	}
	for _, c := range children {
		c.goW.Close()
	}
	for i, c := range children {
		if err := c.cmd.Wait(); err != nil {
			t.Errorf("child %d: %v:\n%s", i, err, c.out.String())
		} else {
			t.Logf("child %d: %s", i, refusedLine(c.out.String()))
		}
	}
	d, err := storage.NewDisk(dir)
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for i := range children {
		for w := range processWriters {
			for r := range processRounds {
				want = append(want, fmt.Sprintf("p%d.w%d.%d", i, w, r))
			}
		}
	}
	storagetest.CheckCounter(t, d, "counter", want)
}

// refusedLine returns the line of a child's output that says how many
// versions its Replaces found changed.
func refusedLine(out string) string {
	for l := range strings.Lines(out) {
		if strings.HasPrefix(l, "refused ") {
			return strings.TrimSpace(l)
		}
	}
	return "(no count)"
}

// TestDiskReplaceChild is the child process of TestDiskReplaceProcesses,
// and skips when run otherwise.
func TestDiskReplaceChild(t *testing.T) {
	dir, id := os.Getenv(childDirEnv), os.Getenv(childIDEnv)
	if dir == "" {
		t.Skip("run by TestDiskReplaceProcesses")
	}
	ready, goR := os.NewFile(3, "ready"), os.NewFile(4, "go")
	d, err := storage.NewDisk(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ready.WriteString("ready\n"); err != nil {
		t.Fatal(err)
	}
	ready.Close()
	// The parent closes its end when every child is ready.
	if _, err := io.Copy(io.Discard, goR); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	refused := 0
	var wg sync.WaitGroup
	for w := range processWriters {
		wg.Go(func() {
			for r := range processRounds {
				n, err := storagetest.Increment(t.Context(), d, "counter", fmt.Sprintf("p%s.w%d.%d", id, w, r))
				if err != nil {
					t.Errorf("increment: %v", err)
					return
				}
				mu.Lock()
				refused += n
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	fmt.Printf("refused %d versions\n", refused)
}

// lockKeyFile takes the flock of key's lock file under root, as another
// process's Replace would, until t ends or the returned func is called.
func lockKeyFile(t *testing.T, root, key string) (unlock func()) {
	t.Helper()
	sum := sha256.Sum256([]byte(key))
	f, err := os.OpenFile(filepath.Join(root, ".lock", hex.EncodeToString(sum[:])), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	unlock = func() { once.Do(func() { f.Close() }) }
	t.Cleanup(unlock)
	return unlock
}

// While another process holds a key's lock, Replace and Delete of the key
// wait for it, as long as their ctx lets them, and change nothing; once it
// is released, they go ahead. Deleting a key that Replace never wrote
// takes no lock and leaves no lock file.
func TestDiskReplaceWaitsForLock(t *testing.T) {
	d := newDisk(t)
	v1, err := d.Replace(t.Context(), "pointer", []byte("one"), "")
	if err != nil {
		t.Fatal(err)
	}
	unlock := lockKeyFile(t, d.Root(), "pointer")
	for _, call := range []struct {
		name string
		f    func(ctx context.Context) error
	}{
		{"Replace", func(ctx context.Context) error {
			_, err := d.Replace(ctx, "pointer", []byte("two"), v1)
			return err
		}},
		{"Delete", func(ctx context.Context) error { return d.Delete(ctx, "pointer") }},
	} {
		ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
		err := call.f(ctx)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), `"pointer"`) {
			t.Errorf("%s while another process holds the lock = %v, want context.DeadlineExceeded", call.name, err)
		}
		if data, v, err := d.ReadVersion(t.Context(), "pointer", 10); err != nil || string(data) != "one" || v != v1 {
			t.Errorf("after %s gave up, ReadVersion = %q, %q, %v; want the old object", call.name, data, v, err)
		}
	}
	// Reading takes no lock.
	if _, _, err := d.ReadVersion(t.Context(), "pointer", 10); err != nil {
		t.Errorf("ReadVersion while the lock is held: %v", err)
	}
	unlock()
	if _, err := d.Replace(t.Context(), "pointer", []byte("two"), v1); err != nil {
		t.Errorf("Replace once the lock is released: %v", err)
	}
	if err := d.Delete(t.Context(), "pointer"); err != nil {
		t.Errorf("Delete once the lock is released: %v", err)
	}

	if err := d.Create(t.Context(), "created", strings.NewReader("x"), 1); err != nil {
		t.Fatal(err)
	}
	if err := d.Delete(t.Context(), "created"); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(filepath.Join(d.Root(), ".lock"))
	if err != nil || len(entries) != 1 {
		t.Errorf("lock files: %v, %v; want only the one of pointer", entries, err)
	}
}

// An object larger than Replace stores (which only Create can have
// stored, against the contract) matches no version: Replace neither reads
// it whole nor replaces it.
func TestDiskReplaceOversizedObject(t *testing.T) {
	ctx := t.Context()
	d := newDisk(t)
	const n = storage.MaxReplaceSize + 1
	if err := d.Create(ctx, "big", storagetest.DataReader(1, n), n); err != nil {
		t.Fatal(err)
	}
	_, v, err := d.ReadVersion(ctx, "big", storage.MaxReplaceSize)
	if !errors.Is(err, storage.ErrTooLarge) || v != "" {
		t.Errorf("ReadVersion of %d bytes = %q, %v; want ErrTooLarge", n, v, err)
	}
	full := storagetest.Data(1, n)
	sum := sha256.Sum256(full)
	for _, ifVersion := range []string{"", hex.EncodeToString(sum[:]), "none", "none: 1048577 bytes, over the limit"} {
		if _, err := d.Replace(ctx, "big", []byte("small"), ifVersion); !errors.Is(err, storage.ErrVersionMismatch) {
			t.Errorf("Replace of an oversized object with version %q = %v, want ErrVersionMismatch", ifVersion, err)
		}
	}
	if info, err := d.Stat(ctx, "big"); err != nil || info.Size != n {
		t.Errorf("Stat = %v, %v; want the oversized object", info, err)
	}
}
