package main

import (
	"net"
	"path/filepath"
	"testing"
	"time"
)

// notifyReady sends READY=1 to the socket NOTIFY_SOCKET names, path or
// abstract, and does nothing without it.
func TestNotifyReady(t *testing.T) {
	if err := notifyReady(func(string) string { return "" }); err != nil {
		t.Fatalf("without NOTIFY_SOCKET: %v", err)
	}
	for _, name := range []string{filepath.Join(t.TempDir(), "notify"), "@evx-test-notify-" + t.Name()} {
		addr := name
		if addr[0] == '@' {
			addr = "\x00" + addr[1:]
		}
		l, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: addr, Net: "unixgram"})
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		if err := notifyReady(func(string) string { return name }); err != nil {
			t.Fatalf("NOTIFY_SOCKET=%s: %v", name, err)
		}
		buf := make([]byte, 64)
		l.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, _, err := l.ReadFrom(buf)
		if err != nil || string(buf[:n]) != "READY=1" {
			t.Errorf("NOTIFY_SOCKET=%s: got %q, %v; want READY=1", name, buf[:n], err)
		}
	}
	if err := notifyReady(func(string) string { return filepath.Join(t.TempDir(), "absent") }); err == nil {
		t.Error("a NOTIFY_SOCKET nobody listens on is not reported")
	}
}
