package gateway

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"evx/api"
	"evx/crypto"
	"evx/storage"
	"evx/transfer"

	"go.uber.org/zap"
	"golang.org/x/sync/singleflight"
)

// Peer directories. A peer's signed unit directory is fetched over the peer
// protocol when first needed, trusted for peerDirectoryTTL, and fetched
// again early when a lookup misses, but never more than once per
// peerDirectoryMinRefresh: lookups are made on behalf of local users and of
// peers, who must not be able to make this gateway dial a peer once per
// request. Concurrent fetches of one peer's directory are one fetch.
//
// Every directory whose units differ from the last one kept is kept in
// storage as the signed document received (see records.go), so that after
// a restart, and whenever the peer cannot be reached, lookups and sender
// checks work from the last copy the peer signed. It is loaded from storage
// when first needed after start, before the first fetch.
const (
	// peerDirectoryTTL is how long a peer's unit directory is trusted
	// before being fetched again.
	peerDirectoryTTL = 5 * time.Minute
	// peerDirectoryMinRefresh is the least time between two fetches of a
	// peer's directory, successful or not. A lookup that misses within it
	// answers from the copy at hand.
	peerDirectoryMinRefresh = 10 * time.Second
	// directoryFetchTimeout bounds a fetch once the peer is reached
	// (reaching it is bounded by Options.DirectConnectTimeout). A fetch is
	// shared by concurrent lookups, so it does not end with the context of
	// the one that started it.
	directoryFetchTimeout = 30 * time.Second
)

// peerDirectories holds what a gateway knows of its peers' directories. The
// zero value is empty and ready to use.
type peerDirectories struct {
	mu    sync.Mutex
	peers map[string]*peerDirectoryState
	// flight makes concurrent fetches of one peer's directory one.
	flight singleflight.Group
	// served counts the directories this gateway signed for its peers.
	served atomic.Int64
}

// peerDirectoryState is one peer's entry in peerDirectories.
type peerDirectoryState struct {
	cur *peerDirectory // nil until fetched or loaded from storage
	// loaded is set once storage has been read for a kept copy.
	loaded bool
	// fetched is when a fetch last confirmed cur's units; attempted is
	// when the last fetch ended, and err its error (nil on success).
	fetched, attempted time.Time
	err                error
	// announced is set once the peer took this gateway's agreement
	// summary before a fetch (announceBeforeFetch).
	announced bool
}

// peerDirectory is a peer's verified unit directory. It is never modified:
// a new directory replaces it.
type peerDirectory struct {
	dir *crypto.Directory
	// signed is the document as the peer signed it.
	signed *crypto.Signed
	// key is where signed is kept in storage, "" if it is not.
	key string
	// kept is set on a copy answered while the last fetch failed: the
	// peer could not confirm it.
	kept bool
}

// answer returns the directory to answer with; the caller holds
// g.dirs.mu.
func (st *peerDirectoryState) answer() *peerDirectory {
	if st.cur == nil || st.err == nil {
		return st.cur
	}
	d := *st.cur
	d.kept = true
	return &d
}

// now is the gateway's clock for directory caching.
func (g *Gateway) now() time.Time {
	if g.opts.Now != nil {
		return g.opts.Now()
	}
	return time.Now()
}

// Directory implements transfer.Receiver: this gateway's signed directory of
// local units, for peers; with the recipients' purposes for a peer known
// to read them (recipients.go).
func (g *Gateway) Directory(ctx context.Context, peer string) (*crypto.Signed, error) {
	g.dirs.served.Add(1)
	d := g.localDirectory()
	if !g.readsPurposes(peer) {
		d = withoutPurposes(d)
	}
	return g.opts.SigningKey.SignDirectory(d)
}

func (g *Gateway) localDirectory() crypto.Directory {
	d := crypto.Directory{Format: crypto.DirectoryFormat, Gateway: g.opts.ID,
		Issued: time.Now().UTC().Format(time.RFC3339)}
	for _, u := range g.settings().userList {
		e := crypto.DirectoryEntry{Unit: u.Unit, Role: string(u.Role)}
		switch u.Role {
		case api.RoleSubmitter:
			e.SigningKey = u.Key.SigningKey
		case api.RoleRecipient:
			e.AgeRecipient = u.Key.AgeRecipient
			e.Purposes = u.Purposes
		default:
			continue
		}
		d.Units = append(d.Units, e)
	}
	return d
}

// dirState returns peer's entry; the caller holds g.dirs.mu.
func (g *Gateway) dirState(peer string) *peerDirectoryState {
	if g.dirs.peers == nil {
		g.dirs.peers = map[string]*peerDirectoryState{}
	}
	st := g.dirs.peers[peer]
	if st == nil {
		st = &peerDirectoryState{}
		g.dirs.peers[peer] = st
	}
	return st
}

// cachedDirectory answers from what is at hand if it may: when the copy is
// fresh and no refresh is asked for, or when the last fetch ended less
// than peerDirectoryMinRefresh ago (with its error if there is no copy).
// ok is false when a fetch is due.
func (g *Gateway) cachedDirectory(peer string, refresh bool) (d *peerDirectory, err error, ok bool) {
	now := g.now()
	g.dirs.mu.Lock()
	defer g.dirs.mu.Unlock()
	st := g.dirState(peer)
	switch {
	case st.cur != nil && !refresh && !st.fetched.IsZero() && now.Sub(st.fetched) < peerDirectoryTTL:
		return st.answer(), nil, true
	case !st.attempted.IsZero() && now.Sub(st.attempted) < peerDirectoryMinRefresh:
		if st.cur != nil {
			return st.answer(), nil, true
		}
		return nil, st.err, true
	}
	return nil, nil, false
}

// peerDirectory returns peer's unit directory: the cached copy while it is
// fresh, else (or when refresh is set) a newly fetched one, within the
// limits described at the top of this file. When the peer cannot be
// reached it returns the copy at hand, or the one kept in storage, if any.
func (g *Gateway) peerDirectory(ctx context.Context, peer string, refresh bool) (*peerDirectory, error) {
	p, ok := g.settings().peers[peer]
	if !ok {
		return nil, fmt.Errorf("%q is not a peer of gateway %s", peer, g.opts.ID)
	}
	if d, err, ok := g.cachedDirectory(peer, refresh); ok {
		return d, err
	}
	v, err, _ := g.dirs.flight.Do(peer, func() (any, error) {
		// A fetch that ended while this caller waited to start one
		// answers it too.
		if d, err, ok := g.cachedDirectory(peer, refresh); ok {
			return d, err
		}
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), directoryFetchTimeout)
		defer cancel()
		return g.refreshDirectory(fctx, p)
	})
	if err != nil {
		return nil, err
	}
	return v.(*peerDirectory), nil
}

// refreshDirectory fetches p's directory and records the outcome. The
// first time, it first loads the copy kept in storage, so that a directory
// whose units have not changed is not stored again, and so that a peer
// down at start does not leave this gateway without one.
func (g *Gateway) refreshDirectory(ctx context.Context, p transfer.Peer) (*peerDirectory, error) {
	g.dirs.mu.Lock()
	st := g.dirState(p.ID)
	cur, loaded := st.cur, st.loaded
	g.dirs.mu.Unlock()
	if cur == nil && !loaded {
		kept, err := g.loadDirectory(ctx, p)
		if err != nil {
			g.log.Error("reading the kept directory of a peer", zap.String("peer", p.ID), zap.Error(err))
		}
		g.dirs.mu.Lock()
		st.loaded = err == nil
		if kept != nil && st.cur == nil {
			st.cur = kept
		}
		cur = st.cur
		g.dirs.mu.Unlock()
	}

	d, err := g.fetchDirectory(ctx, p)
	now := g.now()
	if err != nil {
		g.dirs.mu.Lock()
		st.attempted, st.err = now, err
		kept := st.answer()
		g.dirs.mu.Unlock()
		if kept == nil {
			logFetchFailure(g.log, p.ID, err, "fetching peer directory")
			return nil, err
		}
		// The last copy the peer signed stands in while it cannot be
		// reached: lookups keep working, and checks against it hold.
		logFetchFailure(g.log, p.ID, err, "fetching peer directory; using the copy issued "+kept.dir.Issued)
		return kept, nil
	}
	if cur != nil && sameUnits(cur.dir, d.dir) {
		// The peer signs its directory afresh for each request: keep the
		// first document that lists these units, stored once.
		if cur.key == "" && cur.signed != nil {
			keep := *cur
			keep.key = g.storeDirectory(ctx, p.ID, cur.signed, now)
			cur = &keep
		}
		d = cur
	} else if d.signed != nil {
		d.key = g.storeDirectory(ctx, p.ID, d.signed, now)
	}
	g.dirs.mu.Lock()
	st.cur, st.fetched, st.attempted, st.err = d, now, now, nil
	g.dirs.mu.Unlock()
	return d, nil
}

// fetchDirectory fetches p's signed directory over the peer protocol and
// verifies it against p's configured signing key.
func (g *Gateway) fetchDirectory(ctx context.Context, p transfer.Peer) (*peerDirectory, error) {
	// Reaching the peer gets the shorter deadline of a caller that waits,
	// as for direct delivery: a peer that is down costs that, not the
	// handshake timeout, before the kept copy answers.
	cctx, cancel := context.WithTimeout(ctx, g.opts.DirectConnectTimeout)
	err := g.client.Connect(cctx, p)
	cancel()
	if err != nil {
		return nil, err
	}
	g.announceBeforeFetch(ctx, p)
	signed, d, err := g.fetchSignedDirectory(ctx, p)
	if err != nil {
		return nil, err
	}
	return &peerDirectory{dir: d, signed: signed}, nil
}

// fetchSignedDirectory returns p's directory, verified, and the signed
// document as received, to be kept in storage.
func (g *Gateway) fetchSignedDirectory(ctx context.Context, p transfer.Peer) (*crypto.Signed, *crypto.Directory, error) {
	if g.opts.directoryFault != nil {
		if err := g.opts.directoryFault(p.ID); err != nil {
			return nil, nil, err
		}
	}
	return g.client.FetchSignedDirectory(ctx, p)
}

// sameUnits reports whether a and b list the same units with the same
// roles, keys and purposes, in any order.
func sameUnits(a, b *crypto.Directory) bool {
	if a.Gateway != b.Gateway || len(a.Units) != len(b.Units) {
		return false
	}
	sorted := func(u []crypto.DirectoryEntry) []crypto.DirectoryEntry {
		u = slices.Clone(u)
		slices.SortFunc(u, func(x, y crypto.DirectoryEntry) int { return strings.Compare(x.Unit, y.Unit) })
		return u
	}
	return slices.EqualFunc(sorted(a.Units), sorted(b.Units), func(x, y crypto.DirectoryEntry) bool {
		return x.Unit == y.Unit && x.Role == y.Role && x.AgeRecipient == y.AgeRecipient &&
			x.SigningKey == y.SigningKey && slices.Equal(x.Purposes, y.Purposes)
	})
}

// storeDirectory keeps a peer's signed directory in storage and returns its
// key, or "" if it could not be stored: the directory is still used, and
// storing it is tried again after the next fetch.
func (g *Gateway) storeDirectory(ctx context.Context, peer string, signed *crypto.Signed, now time.Time) string {
	k := directoryKey(peer, signed, now)
	err := putJSON(ctx, g.opts.Storage, k, signed)
	if err != nil && !errors.Is(err, storage.ErrExist) {
		g.log.Error("keeping peer directory", zap.String("peer", peer), zap.String("key", k), zap.Error(err))
		return ""
	}
	g.log.Info("peer directory kept", zap.String("peer", peer), zap.String("key", k))
	return k
}

// loadDirectory returns the latest directory of p kept in storage, verified
// again against p's configured signing key since storage is not trusted, or
// nil if there is none. A kept copy that does not verify is logged and
// treated as absent; older copies are not read.
func (g *Gateway) loadDirectory(ctx context.Context, p transfer.Peer) (*peerDirectory, error) {
	infos, err := g.opts.Storage.List(ctx, directoryPrefix(p.ID))
	if err != nil {
		return nil, fmt.Errorf("listing kept directories of %s: %w", p.ID, err)
	}
	var latest string
	for _, in := range infos {
		if isDirectoryKey(p.ID, in.Key) {
			latest = in.Key // List sorts by key: the latest comes last
		}
	}
	if latest == "" {
		return nil, nil
	}
	signed, d, err := g.readDirectory(ctx, p, latest)
	switch {
	case errors.Is(err, storage.ErrNotExist):
		return nil, nil
	case errors.Is(err, errBadKeptDirectory):
		g.log.Error("kept peer directory refused", zap.String("peer", p.ID), zap.String("key", latest), zap.Error(err))
		return nil, nil
	case err != nil:
		return nil, err
	}
	g.log.Info("peer directory loaded from storage", zap.String("peer", p.ID), zap.String("key", latest), zap.String("issued", d.Issued))
	return &peerDirectory{dir: d, signed: signed, key: latest}, nil
}

// errBadKeptDirectory is wrapped by readDirectory's errors for a kept
// directory that is not what its key says, or whose signature does not
// verify.
var errBadKeptDirectory = errors.New("kept directory refused")

// readDirectory reads the signed directory of p kept under k and verifies it.
func (g *Gateway) readDirectory(ctx context.Context, p transfer.Peer, k string) (*crypto.Signed, *crypto.Directory, error) {
	var signed crypto.Signed
	if err := getJSONLimit(ctx, g.opts.Storage, k, &signed, maxDirectorySize); err != nil {
		if errors.Is(err, errMalformedRecord) {
			return nil, nil, fmt.Errorf("%w: %w", errBadKeptDirectory, err)
		}
		return nil, nil, err
	}
	if !directoryKeyMatches(k, &signed) {
		return nil, nil, fmt.Errorf("%w: %q does not hold the document its name gives the hash of", errBadKeptDirectory, k)
	}
	d, err := crypto.VerifyDirectory(&signed, p.SigningKey, p.ID)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %q: %w", errBadKeptDirectory, k, err)
	}
	return &signed, d, nil
}

// Errors of lookupUnit.
var (
	// errPeerUnavailable is wrapped by lookups that could not reach a peer.
	errPeerUnavailable = errors.New("the peer gateway's directory cannot be fetched now")
	// errUnknownUnit is wrapped by lookups of units that do not exist.
	errUnknownUnit = errors.New("unknown unit")
)

// lookupUnit resolves a unit id, local or at a peer, to its directory
// entry. A miss in a cached peer directory fetches it again (at most once
// per peerDirectoryMinRefresh), so a unit added at a peer is found soon.
// A peer whose certificate this gateway refuses is a configuration problem,
// not a temporary one: the error is an *api.Error with CodePeerRefused.
func (g *Gateway) lookupUnit(ctx context.Context, unit string) (crypto.DirectoryEntry, error) {
	country, _, _ := strings.Cut(unit, "/")
	if country == g.opts.ID {
		if e, ok := g.localDirectory().Lookup(unit); ok {
			return e, nil
		}
		return crypto.DirectoryEntry{}, fmt.Errorf("%w: no unit %q at gateway %s", errUnknownUnit, unit, g.opts.ID)
	}
	if _, ok := g.settings().peers[country]; !ok {
		return crypto.DirectoryEntry{}, fmt.Errorf("%w: %q is not a peer of gateway %s", errUnknownUnit, country, g.opts.ID)
	}
	for _, refresh := range []bool{false, true} {
		d, err := g.peerDirectory(ctx, country, refresh)
		if err != nil {
			if msg, ok := peerRefusal(country, err); ok {
				return crypto.DirectoryEntry{}, api.Errorf(api.CodePeerRefused, "%s", msg)
			}
			return crypto.DirectoryEntry{}, fmt.Errorf("%w: %v", errPeerUnavailable, err)
		}
		if e, ok := d.dir.Lookup(unit); ok {
			return e, nil
		}
	}
	return crypto.DirectoryEntry{}, fmt.Errorf("%w: no unit %q in the directory of gateway %s", errUnknownUnit, unit, country)
}

// peers answers GET /v1/peers: the configured peer gateways and their
// public signing keys, with which recipients verify the signed directories
// the inbox keeps (GET /v1/inbox/{id}). The keys come from this gateway's
// configuration, never from storage or from the peers themselves.
func (g *Gateway) peerList(_ http.ResponseWriter, _ *http.Request, _ User) (any, error) {
	out := []api.Peer{}
	for _, p := range g.settings().peers {
		out = append(out, api.Peer{ID: p.ID, SigningKey: p.SigningKey})
	}
	slices.SortFunc(out, func(a, b api.Peer) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// senderDirectory returns the kept signed directory that the inbox record
// of bundle id names as the one its sender was checked against, or nil if
// there is none to give. The record comes from storage, which is not
// trusted: the key must be one of the sending gateway's kept directories,
// and the document must verify against that gateway's configured key. A
// recipient verifies it again itself.
func (g *Gateway) senderDirectory(ctx context.Context, id string, rec *inboxRecord) *crypto.Signed {
	if rec.SenderDirectory == "" {
		return nil
	}
	log := g.log.With(zap.String("bundle", id), zap.String("peer", rec.From), zap.String("key", rec.SenderDirectory))
	p, ok := g.settings().peers[rec.From]
	if !ok {
		log.Warn("inbox record from a gateway that is no longer a peer")
		return nil
	}
	if !isDirectoryKey(p.ID, rec.SenderDirectory) {
		log.Error("inbox record names a sender directory outside the peer's kept directories")
		return nil
	}
	signed, _, err := g.readDirectory(ctx, p, rec.SenderDirectory)
	if err != nil {
		log.Error("reading the sender directory of an inbox record", zap.Error(err))
		return nil
	}
	return signed
}
