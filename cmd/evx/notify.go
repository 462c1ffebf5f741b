package main

import (
	"fmt"
	"net"
)

// notifyReady tells a service manager that the gateway serves, as
// systemd's Type=notify services do: it sends "READY=1" to the datagram
// socket that the NOTIFY_SOCKET variable names (a path, or an abstract
// socket written with a leading '@'). Without the variable it does
// nothing. Supervisors and tests learn of readiness from it rather than by
// probing ports.
func notifyReady(getenv func(string) string) error {
	addr := getenv("NOTIFY_SOCKET")
	if addr == "" {
		return nil
	}
	if addr[0] == '@' {
		addr = "\x00" + addr[1:]
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("NOTIFY_SOCKET: %w", err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("READY=1")); err != nil {
		return fmt.Errorf("NOTIFY_SOCKET: %w", err)
	}
	return nil
}
