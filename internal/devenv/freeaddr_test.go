package devenv

import (
	"net"
	"strconv"
	"testing"
)

// FreeAddr picks ports below the ephemeral range, where no outgoing
// socket of another program can take them, and the ports are free.
func TestFreeAddr(t *testing.T) {
	low := ephemeralLow()
	for _, network := range []string{"udp", "tcp"} {
		for range 20 {
			a, err := FreeAddr(network)
			if err != nil {
				t.Fatal(err)
			}
			_, p, err := net.SplitHostPort(a)
			if err != nil {
				t.Fatal(err)
			}
			port, _ := strconv.Atoi(p)
			if port < minListenPort || port >= low {
				t.Fatalf("FreeAddr(%q) = %s, want a port from %d to %d", network, a, minListenPort, low-1)
			}
			if _, err := listenOnce(network, a); err != nil {
				t.Fatalf("FreeAddr(%q) = %s, which is not free: %v", network, a, err)
			}
		}
	}
}
