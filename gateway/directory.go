package gateway

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"evx/api"
	"evx/crypto"
)

// peerDirectories caches the unit directories of peers. The zero value is
// empty and ready to use.
type peerDirectories struct {
	mu   sync.Mutex
	dirs map[string]*peerDirectory
}

type peerDirectory struct {
	dir     *crypto.Directory
	fetched time.Time
}

// peerDirectoryTTL is how long a peer's unit directory is trusted before
// being fetched again; a lookup that misses fetches at once.
const peerDirectoryTTL = 5 * time.Minute

// Directory implements transfer.Receiver: this gateway's signed directory of
// local units, for peers.
func (g *Gateway) Directory(ctx context.Context, peer string) (*crypto.Signed, error) {
	return g.opts.SigningKey.SignDirectory(g.localDirectory())
}

func (g *Gateway) localDirectory() crypto.Directory {
	d := crypto.Directory{Format: crypto.DirectoryFormat, Gateway: g.opts.ID,
		Issued: time.Now().UTC().Format(time.RFC3339)}
	for _, u := range g.opts.Users {
		e := crypto.DirectoryEntry{Unit: u.Unit, Role: string(u.Role)}
		switch u.Role {
		case api.RoleSubmitter:
			e.SigningKey = u.Key.SigningKey
		case api.RoleRecipient:
			e.AgeRecipient = u.Key.AgeRecipient
		default:
			continue
		}
		d.Units = append(d.Units, e)
	}
	return d
}

// peerDirectory returns peer's unit directory, fetching it when the cached
// copy is stale or when refresh is set.
func (g *Gateway) peerDirectory(ctx context.Context, peer string, refresh bool) (*crypto.Directory, error) {
	p, ok := g.peers[peer]
	if !ok {
		return nil, fmt.Errorf("%q is not a peer of gateway %s", peer, g.opts.ID)
	}
	g.dirs.mu.Lock()
	cached := g.dirs.dirs[peer]
	g.dirs.mu.Unlock()
	if cached != nil && !refresh && time.Since(cached.fetched) < peerDirectoryTTL {
		return cached.dir, nil
	}
	d, err := g.client.FetchDirectory(ctx, p)
	if err != nil {
		return nil, err
	}
	g.dirs.mu.Lock()
	if g.dirs.dirs == nil {
		g.dirs.dirs = map[string]*peerDirectory{}
	}
	g.dirs.dirs[peer] = &peerDirectory{dir: d, fetched: time.Now()}
	g.dirs.mu.Unlock()
	return d, nil
}

// Errors of lookupUnit.
var (
	// errPeerUnavailable is wrapped by lookups that could not reach a peer.
	errPeerUnavailable = errors.New("the peer gateway's directory cannot be fetched now")
	// errUnknownUnit is wrapped by lookups of units that do not exist.
	errUnknownUnit = errors.New("unknown unit")
)

// lookupUnit resolves a unit id, local or at a peer, to its directory
// entry. A miss in a cached peer directory fetches it again, so a unit
// added at a peer is found at once.
func (g *Gateway) lookupUnit(ctx context.Context, unit string) (crypto.DirectoryEntry, error) {
	country, _, _ := strings.Cut(unit, "/")
	if country == g.opts.ID {
		if e, ok := g.localDirectory().Lookup(unit); ok {
			return e, nil
		}
		return crypto.DirectoryEntry{}, fmt.Errorf("%w: no unit %q at gateway %s", errUnknownUnit, unit, g.opts.ID)
	}
	if _, ok := g.peers[country]; !ok {
		return crypto.DirectoryEntry{}, fmt.Errorf("%w: %q is not a peer of gateway %s", errUnknownUnit, country, g.opts.ID)
	}
	for _, refresh := range []bool{false, true} {
		d, err := g.peerDirectory(ctx, country, refresh)
		if err != nil {
			return crypto.DirectoryEntry{}, fmt.Errorf("%w: %v", errPeerUnavailable, err)
		}
		if e, ok := d.Lookup(unit); ok {
			return e, nil
		}
	}
	return crypto.DirectoryEntry{}, fmt.Errorf("%w: no unit %q in the directory of gateway %s", errUnknownUnit, unit, country)
}
