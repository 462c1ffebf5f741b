package crypto

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"filippo.io/age"
)

// OpenOptions are the recipient's choices when opening a bundle.
type OpenOptions struct {
	// ExpectSender, if set, is the signing key (in the form of
	// FormatSigningKey) that must have sealed the bundle.
	ExpectSender string
	// Only, if set, extracts just this file, reading only the parts of the
	// payload that hold it and the manifest.
	Only string
	// Progress, if set, is called with the number of file bytes extracted.
	Progress func(done int64)
}

// OpenResult summarises what was checked and extracted.
type OpenResult struct {
	Envelope *Envelope
	// Files are the manifest entries that were extracted and verified.
	Files []ManifestFile
	// PayloadVerified reports whether the whole payload was hashed and found
	// to match the envelope (not done with OpenOptions.Only).
	PayloadVerified bool
}

// ErrNotRecipient is returned when the key is not among a bundle's recipients.
var ErrNotRecipient = errors.New("this key is not a recipient of this bundle")

// ErrUnexpectedSender is returned when the bundle was signed by another key
// than OpenOptions.ExpectSender.
var ErrUnexpectedSender = errors.New("bundle was sealed by an unexpected sender")

// ErrContentMismatch is wrapped by the errors of [Bundle.Open] for a payload
// whose content is not what its sender signed: it does not decrypt, or the
// manifest, a file's size or a file's SHA-256 differs from what the signed
// envelope and manifest say. Such a bundle was damaged or forged.
var ErrContentMismatch = errors.New("the bundle's content does not match what its sender signed")

// mismatchError keeps its own message and matches [ErrContentMismatch].
type mismatchError struct{ msg string }

func (e *mismatchError) Error() string { return e.msg }
func (e *mismatchError) Unwrap() error { return ErrContentMismatch }

// mismatch returns an error with a formatted message that wraps
// ErrContentMismatch.
func mismatch(format string, args ...any) error {
	return &mismatchError{fmt.Sprintf(format, args...)}
}

// Open verifies the bundle and extracts its files into dir, which must not
// exist or be empty. Nothing is left in dir unless every check passes: files
// are written to a temporary directory beside it, which is renamed to dir at
// the end. The checks, in order: the envelope signature, the expected
// sender, that key is a recipient, the age header's limits, decryption and
// authentication of the payload, the manifest against the signed digest, the
// inner archive against the manifest, each file's SHA-256, and the whole
// payload's SHA-256 against the envelope.
func (b *Bundle) Open(ctx context.Context, key *UnitKey, dir string, opts OpenOptions) (*OpenResult, error) {
	env := b.Envelope
	if err := b.VerifySignature(); err != nil {
		return nil, err
	}
	if opts.ExpectSender != "" {
		want, err := ParseSigningKey(opts.ExpectSender)
		if err != nil {
			return nil, err
		}
		if FormatSigningKey(want) != env.Sender.Key {
			return nil, fmt.Errorf("%w: signed by %s, expected %s", ErrUnexpectedSender, env.Sender.Key, opts.ExpectSender)
		}
	}
	if env.recipientIndex(key.Recipient().String()) < 0 {
		return nil, fmt.Errorf("%w (its recipients: %s)", ErrNotRecipient, env.recipientList())
	}
	if opts.Only != "" {
		if err := checkBundlePath(opts.Only); err != nil {
			return nil, err
		}
	}
	if err := CheckOutputDir(dir); err != nil {
		return nil, err
	}

	// The full payload hash is computed, on its own core, from the reads
	// that decryption makes anyway, so the payload is read only once; its
	// verdict is awaited before anything is made visible in dir.
	var payload io.ReaderAt = b.Payload()
	payloadVerdict := func() error { return nil }
	if opts.Only == "" {
		hasher := newPayloadHasher(b.Payload())
		payload = hasher
		payloadVerdict = sync.OnceValue(func() error {
			sum, err := hasher.finish(ctx)
			if err != nil {
				return fmt.Errorf("reading payload.age: %w", err)
			}
			if sum != env.PayloadSHA256 {
				return ErrPayloadHash
			}
			return nil
		})
	}
	files, err := b.extract(ctx, key, dir, opts, payload, payloadVerdict)
	if hashErr := payloadVerdict(); hashErr != nil {
		// A forged or damaged payload explains any other failure too.
		err = hashErr
	}
	if err != nil {
		return nil, err
	}
	return &OpenResult{Envelope: env, Files: files, PayloadVerified: opts.Only == ""}, nil
}

func (e *Envelope) recipientList() string {
	var names []string
	for _, r := range e.Recipients {
		if r.Unit != "" {
			names = append(names, r.Unit)
		} else {
			names = append(names, r.Key)
		}
	}
	return strings.Join(names, ", ")
}

// CheckOutputDir checks that dir does not exist or is an empty directory,
// as Open requires of its output directory: callers check it before work
// that Open would otherwise waste.
func CheckOutputDir(dir string) error {
	entries, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("output directory: %w", err)
	case len(entries) > 0:
		return fmt.Errorf("output directory %q is not empty", dir)
	}
	return nil
}

// Buffers between decrypting a file and hashing and writing it: large reads
// amortise the per-call costs of age.DecryptReaderAt and of write(2).
const (
	extractBufSize  = 1 << 20
	extractBufCount = 4
)

// bufSizeFor returns the size of the buffers for opening a payload of n
// bytes. Fresh memory is expensive (each page is faulted in), so a small
// payload gets small buffers; extractBufSize is reached from 64 MiB up.
func bufSizeFor(n int64) int {
	return int(min(extractBufSize, max(64<<10, n/64)))
}

// extract decrypts the payload with random access, checks the inner archive
// and extracts the selected files into a temporary directory, renamed to dir
// once all is well, including payloadVerdict, the check of the whole
// payload. The directory keeps MkdirTemp's mode 0700: evidence is readable by
// its recipient only until they decide otherwise.
func (b *Bundle) extract(ctx context.Context, key *UnitKey, dir string, opts OpenOptions, payload io.ReaderAt, payloadVerdict func() error) ([]ManifestFile, error) {
	env := b.Envelope
	if err := checkAgeHeader(b.payload, b.payload.Size()); err != nil {
		return nil, err
	}
	plain, plainSize, err := age.DecryptReaderAt(payload, b.payload.Size(), key.Identity())
	if err != nil {
		var noMatch *age.NoIdentityMatchError
		if errors.As(err, &noMatch) {
			return nil, ErrNotRecipient
		}
		return nil, mismatch("decrypting payload.age: %v", err)
	}
	plain = &chunkReaderAt{r: plain, size: plainSize}
	inner, err := newZipReader(plain, plainSize, MaxFiles+1)
	if err != nil {
		var limit *zipLimitError
		if errors.As(err, &limit) {
			return nil, fmt.Errorf("inner archive: %w", err)
		}
		return nil, fmt.Errorf("decrypted payload is not a valid inner archive: %w", err)
	}
	entries, manifestEntry, err := checkInnerEntries(inner)
	if err != nil {
		return nil, err
	}
	m, err := readManifest(manifestEntry, env, len(entries))
	if err != nil {
		return nil, err
	}
	var selected []ManifestFile
	for _, mf := range m.Files {
		e := entries[mf.Path]
		if e == nil {
			return nil, mismatch("file %q is in the manifest but not in the inner archive", mf.Path)
		}
		if int64(e.UncompressedSize64) != mf.Size {
			return nil, mismatch("file %q is %d bytes in the inner archive, %d in the manifest", mf.Path, e.UncompressedSize64, mf.Size)
		}
		if opts.Only == "" || mf.Path == opts.Only {
			selected = append(selected, mf)
		}
	}
	if len(m.Files) == 0 {
		// Seal refuses to make such a bundle; opening one yields nothing.
		return nil, errors.New("the bundle holds no files")
	}
	if len(selected) == 0 {
		return nil, fmt.Errorf("no file %q in this bundle", opts.Only)
	}

	tmp, err := os.MkdirTemp(filepath.Dir(filepath.Clean(dir)), ".evx-open-*")
	if err != nil {
		return nil, fmt.Errorf("creating temporary directory beside %q: %w", dir, err)
	}
	ok := false
	defer func() {
		if !ok {
			os.RemoveAll(tmp)
		}
	}()
	bufs := make([][]byte, extractBufCount)
	for i := range bufs {
		bufs[i] = make([]byte, bufSizeFor(plainSize))
	}
	var done int64
	for _, mf := range selected {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if err := extractFile(ctx, tmp, entries[mf.Path], mf, bufs, func(n int64) {
			if opts.Progress != nil {
				opts.Progress(done + n)
			}
		}); err != nil {
			return nil, err
		}
		done += mf.Size
	}
	if err := payloadVerdict(); err != nil {
		return nil, err
	}
	if err := moveIntoPlace(tmp, dir); err != nil {
		return nil, err
	}
	ok = true
	return selected, nil
}

// chunkReaderAt serves small reads of a payload's plaintext from a copy of
// the last age chunk read. age's DecryptReaderAt allocates a whole chunk
// (64 KiB) on every call, however few bytes are read, and archive/zip reads
// the central directory 4 KiB at a time and a small file in one small read:
// without the copy, reading the inner archive's directory would allocate 16
// times its size, and each small file 64 KiB.
type chunkReaderAt struct {
	r    io.ReaderAt
	size int64

	mu   sync.Mutex
	buf  []byte // the plaintext of the chunk at off, once read
	off  int64
	used bool
}

// ageChunk is the plaintext size of an age payload chunk.
const ageChunk = 64 << 10

func (c *chunkReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if len(p) >= ageChunk || off < 0 || off >= c.size {
		return c.r.ReadAt(p, off)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for n < len(p) && off < c.size {
		start := off - off%ageChunk
		if !c.used || c.off != start {
			if c.buf == nil {
				c.buf = make([]byte, ageChunk)
			}
			want := min(ageChunk, c.size-start)
			m, err := c.r.ReadAt(c.buf[:want], start)
			if int64(m) < want {
				c.used = false
				if err == nil || err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
				return n, err
			}
			c.buf, c.off, c.used = c.buf[:want], start, true
		}
		k := copy(p[n:], c.buf[off-start:])
		n += k
		off += int64(k)
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// moveIntoPlace renames the temporary directory tmp to dir. os.Rename
// refuses to replace even an empty directory, so an empty dir is removed
// first; removing fails on a directory filled meanwhile, which is thus never
// overwritten.
func moveIntoPlace(tmp, dir string) error {
	if info, err := os.Lstat(dir); err == nil {
		if !info.IsDir() {
			return fmt.Errorf("output directory %q is not a directory", dir)
		}
		if err := os.Remove(dir); err != nil {
			return fmt.Errorf("output directory %q: %w", dir, err)
		}
	}
	if err := os.Rename(tmp, dir); err != nil {
		return fmt.Errorf("moving extracted files into place: %w", err)
	}
	return nil
}

// readManifest reads manifest.json from the inner archive, whose number of
// files is given, checks it against the signed digest and validates it.
// Its size is bounded before it is decompressed by what that many files can
// need, and it is decoded as it is read, up to the first file too many, so
// that a deflated manifest of millions of entries costs no more than one of
// as many entries as the archive holds. A manifest that does not decode is
// refused as malformed; one that does must match the signed digest before
// any of its values is checked.
func readManifest(f *zip.File, env *Envelope, files int) (*Manifest, error) {
	limit := manifestLimit(files)
	if f.UncompressedSize64 > uint64(limit) {
		return nil, fmt.Errorf("manifest.json is %d bytes, over the limit of %d for %d files", f.UncompressedSize64, limit, files)
	}
	rc, err := f.Open()
	if err != nil {
		return nil, fmt.Errorf("malformed bundle: manifest.json: %v", err)
	}
	defer rc.Close()
	// archive/zip reads no more than the declared size: the limit holds
	// twice.
	h := sha256.New()
	src := &readRecorder{r: io.TeeReader(io.LimitReader(rc, limit), h)}
	m, err := decodeManifest(src, files)
	if err == nil {
		// The digest covers all of the entry, also what follows the JSON.
		_, err = io.Copy(io.Discard, src)
	}
	if src.err != nil {
		return nil, fmt.Errorf("malformed bundle: manifest.json: %v", src.err)
	}
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(h.Sum(nil), env.ManifestSHA256[:]) {
		return nil, mismatch("manifest does not match the digest in the signed envelope")
	}
	if err := m.validate(env.BundleID, files); err != nil {
		return nil, err
	}
	return m, nil
}

// readRecorder keeps the first error of its reader other than io.EOF, so
// that a failure to read can be told from one to decode what was read.
type readRecorder struct {
	r   io.Reader
	err error
}

func (r *readRecorder) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if err != nil && err != io.EOF && r.err == nil {
		r.err = err
	}
	return n, err
}

// checkInnerEntries rejects inner archives with entries that could escape
// the output directory or are not regular files, and indexes the files.
func checkInnerEntries(inner *zip.Reader) (map[string]*zip.File, *zip.File, error) {
	if len(inner.File) > MaxFiles+1 {
		return nil, nil, fmt.Errorf("inner archive has %d entries, over the limit of %d", len(inner.File), MaxFiles+1)
	}
	entries := map[string]*zip.File{}
	var paths []string
	var manifest *zip.File
	for _, f := range inner.File {
		if f.Name == manifestName {
			if manifest != nil {
				return nil, nil, fmt.Errorf("inner archive: duplicate entry %q", f.Name)
			}
			manifest = f
			continue
		}
		p, ok := strings.CutPrefix(f.Name, filesPrefix)
		if !ok {
			return nil, nil, fmt.Errorf("inner archive: unexpected entry %q outside %s", f.Name, filesPrefix)
		}
		if err := checkBundlePath(p); err != nil {
			return nil, nil, fmt.Errorf("inner archive: %w", err)
		}
		if !f.Mode().IsRegular() {
			return nil, nil, fmt.Errorf("inner archive: entry %q is not a regular file (%v)", f.Name, f.Mode().Type())
		}
		if f.Method != zip.Store && f.Method != zip.Deflate {
			return nil, nil, fmt.Errorf("inner archive: entry %q uses unsupported compression method %d", f.Name, f.Method)
		}
		entries[p] = f
		paths = append(paths, p)
	}
	if manifest == nil {
		return nil, nil, fmt.Errorf("inner archive has no %s", manifestName)
	}
	if _, err := checkPathSet(paths); err != nil {
		return nil, nil, fmt.Errorf("inner archive: %w", err)
	}
	return entries, manifest, nil
}

// extractFile writes one file below root and checks its SHA-256.
func extractFile(ctx context.Context, root string, e *zip.File, mf ManifestFile, bufs [][]byte, progress func(int64)) error {
	target := filepath.Join(root, filepath.FromSlash(mf.Path))
	if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
		return err
	}
	out, err := os.OpenFile(target, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	defer out.Close()
	rc, err := e.Open()
	if err != nil {
		return fmt.Errorf("file %q: %w", mf.Path, err)
	}
	defer rc.Close()
	// Decryption runs ahead on another core while this one hashes and
	// writes. One byte past the manifest's size is enough to notice a
	// longer file.
	ra := NewReadAhead(io.LimitReader(rc, mf.Size+1), bufs)
	defer ra.Close()
	h := sha256.New()
	var n int64
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		data, rerr := ra.Next()
		if len(data) > 0 {
			n += int64(len(data))
			if n > mf.Size {
				return mismatch("file %q is longer than the manifest says", mf.Path)
			}
			h.Write(data)
			if _, err := out.Write(data); err != nil {
				return err
			}
			progress(n)
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return fmt.Errorf("file %q: %w", mf.Path, rerr)
		}
	}
	if n != mf.Size {
		return mismatch("file %q is %d bytes, the manifest says %d", mf.Path, n, mf.Size)
	}
	if hex.EncodeToString(h.Sum(nil)) != mf.SHA256 {
		return mismatch("file %q does not match its SHA-256 in the manifest", mf.Path)
	}
	if err := out.Close(); err != nil {
		return err
	}
	mode, _ := mf.fileMode()
	if err := os.Chmod(target, mode); err != nil {
		return err
	}
	mtime, _ := time.Parse(time.RFC3339Nano, mf.Modified)
	return os.Chtimes(target, mtime, mtime)
}

// payloadHasher is an io.ReaderAt of the payload that computes its SHA-256
// from the reads made through it: each read that extends the hashed prefix
// [0, next) is copied to a goroutine that hashes it. Extraction reads the
// payload nearly in order, so finish has little left to read: the end of
// the inner archive, read first, and whatever an archive in another order
// made the reads skip.
type payloadHasher struct {
	src *io.SectionReader
	h   hash.Hash

	mu   sync.Mutex
	next int64
	w    *asyncWriter // nil once finished
}

func newPayloadHasher(src *io.SectionReader) *payloadHasher {
	h := sha256.New()
	return &payloadHasher{src: src, h: h, w: newAsyncWriter(h, bufSizeFor(src.Size()), extractBufCount)}
}

func (p *payloadHasher) ReadAt(b []byte, off int64) (int, error) {
	n, err := p.src.ReadAt(b, off)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.w != nil && off <= p.next && off+int64(n) > p.next {
		// Writes to a hash cannot fail.
		p.w.Write(b[p.next-off : n])
		p.next = off + int64(n)
	}
	return n, err
}

// finish hashes the rest of the payload and returns the SHA-256 of all of
// it. Later reads are passed through unhashed.
func (p *payloadHasher) finish(ctx context.Context) ([32]byte, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	w := p.w
	if w == nil {
		return [32]byte{}, errors.New("payload hash already finished")
	}
	p.w = nil
	size := p.src.Size()
	buf := make([]byte, min(extractBufSize, size-p.next))
	var err error
	for p.next < size && err == nil {
		if err = ctx.Err(); err != nil {
			break
		}
		var n int
		n, err = p.src.ReadAt(buf[:min(int64(len(buf)), size-p.next)], p.next)
		w.Write(buf[:n])
		p.next += int64(n)
		switch {
		case err == io.EOF && p.next == size:
			err = nil
		case err == nil && n == 0:
			err = io.ErrUnexpectedEOF
		}
	}
	w.Close()
	if err != nil {
		return [32]byte{}, err
	}
	var sum [32]byte
	p.h.Sum(sum[:0])
	return sum, nil
}

// ManifestSummary returns one line per file: its SHA-256, size and path.
func ManifestSummary(files []ManifestFile) string {
	var b bytes.Buffer
	for _, f := range files {
		fmt.Fprintf(&b, "%s  %12d  %s\n", f.SHA256, f.Size, path.Clean(f.Path))
	}
	return b.String()
}
