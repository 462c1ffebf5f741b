package crypto

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// ManifestFormat is the value of the manifest's "format" field.
const ManifestFormat = "evx-manifest/1"

// Names inside the inner archive: the evidence files live under filesPrefix
// so that no file can collide with the manifest.
const (
	manifestName = "manifest.json"
	filesPrefix  = "files/"
)

// Limits on the inner archive.
const (
	MaxFiles        = 100_000
	MaxManifestSize = 64 << 20
	maxPathLen      = 1024
	maxPathElem     = 255
)

// Manifest lists the evidence files inside a bundle's encrypted payload.
type Manifest struct {
	Format     string         `json:"format"`
	BundleID   string         `json:"bundle_id"`
	Salt       string         `json:"salt"`
	Files      []ManifestFile `json:"files"`
	TotalFiles int            `json:"total_files"`
	TotalSize  int64          `json:"total_size"`
}

// ManifestFile describes one evidence file.
type ManifestFile struct {
	Path     string `json:"path"`
	Size     int64  `json:"size"`
	SHA256   string `json:"sha256"`
	Mode     string `json:"mode"`
	Modified string `json:"modified"`
}

func newSalt() string {
	b := make([]byte, 32)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// fileMode parses the octal permission string of a manifest entry.
func (f *ManifestFile) fileMode() (fs.FileMode, error) {
	m, err := strconv.ParseUint(f.Mode, 8, 32)
	if err != nil || len(f.Mode) != 4 || m&^0o777 != 0 {
		return 0, fmt.Errorf("file %q: malformed mode %q (want four octal digits, permission bits only)", f.Path, f.Mode)
	}
	return fs.FileMode(m), nil
}

// Bounds on manifest.json beyond MaxManifestSize. A reader decodes the
// manifest as it decompresses it, and holds one value at a time.
const (
	// maxManifestValue bounds each element of "files" and each other
	// member's key and value. A canonical element is at most about 2.2 KB
	// (a path of 1,024 bytes escapes to at most 2,048); written with every
	// character escaped as \uXXXX, the largest valid element is under
	// 7,000 bytes, which leaves room for some white space.
	maxManifestValue = 8 << 10
	// manifestHeadroom is what the members other than "files" may take.
	manifestHeadroom = 4 << 10
)

// manifestLimit returns the size of the largest manifest.json that a
// reader accepts beside an inner archive of the given number of files.
func manifestLimit(files int) int64 {
	return min(MaxManifestSize, manifestHeadroom+int64(files)*maxManifestValue)
}

// tooManyFilesError reports a manifest that lists more files than the
// inner archive holds; decoding stops at the first one too many.
type tooManyFilesError struct{ files int }

func (e *tooManyFilesError) Error() string {
	return fmt.Sprintf("inner archive holds %d files, the manifest lists more", e.files)
}

func (e *tooManyFilesError) Unwrap() error { return ErrContentMismatch }

// decodeManifest decodes a manifest from r, listing at most maxFiles files.
// It decodes as it reads, one value at a time, each value at most
// maxManifestValue bytes: a manifest of millions of entries costs no more
// than its first maxFiles+1. It checks the JSON's shape only (see
// Manifest.validate). Like encoding/json, it matches member names without
// regard to case, lets a repeated member replace an earlier one and ignores
// what follows the object.
func decodeManifest(r io.Reader, maxFiles int) (*Manifest, error) {
	src := &valueBound{r: r}
	dec := json.NewDecoder(src)
	dec.DisallowUnknownFields()
	src.dec = dec
	m, err := decodeManifestObject(dec, src, maxFiles)
	if err != nil {
		var tooMany *tooManyFilesError
		if errors.As(err, &tooMany) {
			return nil, err
		}
		return nil, fmt.Errorf("malformed manifest: %w", err)
	}
	return m, nil
}

func decodeManifestObject(dec *json.Decoder, src *valueBound, maxFiles int) (*Manifest, error) {
	src.next()
	if tok, err := dec.Token(); err != nil {
		return nil, err
	} else if tok != json.Delim('{') {
		return nil, fmt.Errorf("the manifest is %v, not a JSON object", tok)
	}
	var m Manifest
	for {
		src.next()
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		if tok == json.Delim('}') {
			return &m, nil
		}
		key, _ := tok.(string) // in an object, Token returns keys or '}'
		src.next()
		switch {
		case strings.EqualFold(key, "files"):
			m.Files, err = decodeManifestFiles(dec, src, maxFiles)
		case strings.EqualFold(key, "format"):
			err = dec.Decode(&m.Format)
		case strings.EqualFold(key, "bundle_id"):
			err = dec.Decode(&m.BundleID)
		case strings.EqualFold(key, "salt"):
			err = dec.Decode(&m.Salt)
		case strings.EqualFold(key, "total_files"):
			err = dec.Decode(&m.TotalFiles)
		case strings.EqualFold(key, "total_size"):
			err = dec.Decode(&m.TotalSize)
		default:
			err = fmt.Errorf("json: unknown field %q", key)
		}
		if err != nil {
			return nil, err
		}
	}
}

func decodeManifestFiles(dec *json.Decoder, src *valueBound, maxFiles int) ([]ManifestFile, error) {
	tok, err := dec.Token()
	switch {
	case err != nil:
		return nil, err
	case tok == nil:
		return nil, nil
	case tok != json.Delim('['):
		return nil, fmt.Errorf("files is %v, not an array", tok)
	}
	files := []ManifestFile{}
	for {
		src.next()
		if !dec.More() {
			break
		}
		if len(files) == maxFiles {
			return nil, &tooManyFilesError{maxFiles}
		}
		var f ManifestFile
		if err := dec.Decode(&f); err != nil {
			return nil, err
		}
		files = append(files, f)
	}
	// More reports a read error as the end of the array: Token returns it.
	if tok, err := dec.Token(); err != nil {
		return nil, err
	} else if tok != json.Delim(']') {
		return nil, fmt.Errorf("unexpected %v in files", tok)
	}
	return files, nil
}

// valueBound is the manifest decoder's source. json.Decoder reads a whole
// value into its buffer before decoding it, so valueBound delivers at most
// maxManifestValue bytes past the decoder's position when it started on
// the current value (set by next).
type valueBound struct {
	r     io.Reader
	dec   *json.Decoder
	read  int64 // bytes delivered
	start int64 // the decoder's position at the start of the current value
}

func (b *valueBound) next() { b.start = b.dec.InputOffset() }

func (b *valueBound) Read(p []byte) (int, error) {
	limit := b.start + maxManifestValue
	if b.read >= limit {
		return 0, fmt.Errorf("the value at offset %d is longer than %d bytes", b.start, maxManifestValue)
	}
	n, err := b.r.Read(p[:min(int64(len(p)), limit-b.read)])
	b.read += int64(n)
	return n, err
}

// validate checks a decoded manifest: that it belongs to the bundle, lists
// exactly the inner archive's number of files, and that every value is
// valid and the paths form a valid set. The counts are compared first, as
// they bound the work on the paths.
func (m *Manifest) validate(bundleID string, files int) error {
	if m.Format != ManifestFormat {
		return fmt.Errorf("unsupported manifest format %q", m.Format)
	}
	if m.BundleID != bundleID {
		return mismatch("manifest belongs to bundle %q, not %q", m.BundleID, bundleID)
	}
	if len(m.Files) != files {
		return mismatch("inner archive holds %d files, the manifest lists %d", files, len(m.Files))
	}
	if len(m.Files) != m.TotalFiles || len(m.Files) > MaxFiles {
		return fmt.Errorf("manifest lists %d files, total_files says %d (limit %d)", len(m.Files), m.TotalFiles, MaxFiles)
	}
	paths := make([]string, len(m.Files))
	for i, f := range m.Files {
		if err := checkBundlePath(f.Path); err != nil {
			return fmt.Errorf("manifest: %w", err)
		}
		paths[i] = f.Path
	}
	if _, err := checkPathSet(paths); err != nil {
		return fmt.Errorf("manifest: %w", err)
	}
	var total int64
	for i := range m.Files {
		f := &m.Files[i]
		if f.Size < 0 || f.Size > MaxPayloadSize {
			return fmt.Errorf("manifest: file %q: size %d out of range", f.Path, f.Size)
		}
		var d [32]byte
		if err := decodeDigest(&d, f.SHA256); err != nil {
			return fmt.Errorf("manifest: file %q: %w", f.Path, err)
		}
		if _, err := f.fileMode(); err != nil {
			return fmt.Errorf("manifest: %w", err)
		}
		if _, err := time.Parse(time.RFC3339Nano, f.Modified); err != nil {
			return fmt.Errorf("manifest: file %q: malformed modification time %q", f.Path, f.Modified)
		}
		total += f.Size
	}
	if total != m.TotalSize {
		return fmt.Errorf("manifest: files add up to %d bytes, total_size says %d", total, m.TotalSize)
	}
	return nil
}

// checkBundlePath admits the relative, slash-separated paths that a bundle
// may carry: no absolute paths, no "." or ".." elements, no backslashes or
// control characters, nothing that could escape the output directory on any
// common operating system.
func checkBundlePath(p string) error {
	switch {
	case p == "":
		return errors.New("empty file path")
	case len(p) > maxPathLen:
		return fmt.Errorf("file path %q is longer than %d bytes", p, maxPathLen)
	case !utf8.ValidString(p):
		return fmt.Errorf("file path %q is not valid UTF-8", p)
	case strings.HasPrefix(p, "/"):
		return fmt.Errorf("file path %q is absolute", p)
	case strings.Contains(p, `\`):
		return fmt.Errorf("file path %q contains a backslash", p)
	case len(p) >= 2 && p[1] == ':':
		return fmt.Errorf("file path %q looks like a drive letter", p)
	}
	for _, r := range p {
		if unicode.IsControl(r) {
			return fmt.Errorf("file path %q contains a control character", p)
		}
	}
	for elem := range strings.SplitSeq(p, "/") {
		switch {
		case elem == "" || elem == "." || elem == "..":
			return fmt.Errorf("file path %q has an empty, \".\" or \"..\" element", p)
		case len(elem) > maxPathElem:
			return fmt.Errorf("file path %q has an element longer than %d bytes", p, maxPathElem)
		}
	}
	return nil
}

// checkPathSet checks that paths form a valid set (bundle-format.md
// section 4.3): no two paths have the same fold (duplicates, and paths that
// would collide on a case-insensitive file system), and no path's fold is
// the fold of a directory of another (a path cannot be both a file and a
// directory). On failure it returns the index of the first path, in the
// order given, that conflicts with one before it, and the error that adding
// the paths one by one would give.
//
// It never builds the set of directories, which for deep paths would hold
// hundreds of entries per path: it sorts the folded paths so that each is
// followed by the paths equal to it or below it, and finds every conflict
// in one pass over the sorted paths. That costs O(n log n) comparisons of
// paths, memory for n indices, and a copy of each path that has upper-case
// letters.
func checkPathSet(paths []string) (int, error) {
	folded := make([]string, len(paths))
	for i, p := range paths {
		folded[i] = strings.ToLower(p)
	}
	// Sorted by fold(p)+"/", the paths equal to p or below it are exactly
	// those whose key has p's key as a prefix, and they come right after p.
	order := make([]int, len(paths))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return compareDirKeys(folded[a], folded[b]) })

	// A conflict between paths i and j makes adding paths one by one fail
	// at max(i, j); the first failure is the conflict with the least such
	// index. Each path on the stack below is equal to or a directory of
	// the ones above it; low is the least index among the paths that came
	// after it in the sorted order and conflict with it, or -1.
	type frame struct{ i, low int }
	var stack []frame
	fail, a, b := len(paths), -1, -1 // the first failure and its pair
	pop := func() {
		f := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if f.low < 0 {
			return
		}
		if at := max(f.i, f.low); at < fail {
			fail, a, b = at, f.i, f.low
		}
		if len(stack) > 0 {
			// Whatever conflicts with f conflicts with the path below it.
			top := &stack[len(stack)-1]
			for _, i := range []int{f.i, f.low} {
				if top.low < 0 || i < top.low {
					top.low = i
				}
			}
		}
	}
	for _, i := range order {
		for len(stack) > 0 && !isDirKeyPrefix(folded[stack[len(stack)-1].i], folded[i]) {
			pop()
		}
		if len(stack) > 0 {
			top := &stack[len(stack)-1]
			if top.low < 0 || i < top.low {
				top.low = i
			}
		}
		stack = append(stack, frame{i: i, low: -1})
	}
	for len(stack) > 0 {
		pop()
	}
	if a < 0 {
		return -1, nil
	}
	// a is equal to b or one of its directories. At the first failure, the
	// path added conflicts with only one earlier path, or (when it is a
	// directory of earlier paths) only in one way.
	switch {
	case folded[a] == folded[b]:
		p, prev := paths[max(a, b)], paths[min(a, b)]
		return max(a, b), fmt.Errorf("duplicate file path %q (also %q)", p, prev)
	case a < b:
		return b, fmt.Errorf("file path %q lies under %q, which is a file", paths[b], paths[a])
	default:
		return a, fmt.Errorf("file path %q is also the directory of another file", paths[a])
	}
}

// compareDirKeys compares a+"/" with b+"/".
func compareDirKeys(a, b string) int {
	n := min(len(a), len(b))
	if c := strings.Compare(a[:n], b[:n]); c != 0 {
		return c
	}
	switch {
	case len(a) == len(b):
		return 0
	case len(a) < len(b):
		// a+"/" against b[n:]: a+"/" is smaller unless b[n] is below '/'.
		if b[n] < '/' {
			return 1
		}
		return -1
	default:
		if a[n] < '/' {
			return -1
		}
		return 1
	}
}

// isDirKeyPrefix reports whether a+"/" is a prefix of b+"/": whether a is
// b or one of its directories.
func isDirKeyPrefix(a, b string) bool {
	return len(a) <= len(b) && b[:len(a)] == a && (len(a) == len(b) || b[len(a)] == '/')
}

// SourceFile is one file to seal: where it is on disk and the path it gets
// inside the bundle.
type SourceFile struct {
	Path    string // slash-separated path inside the bundle
	OSPath  string
	Size    int64
	Mode    fs.FileMode
	ModTime time.Time
}

// CollectFiles lists the regular files named by args, walking directories.
// A file is sealed under its base name, a directory's files under the
// directory's base name. Symbolic links, devices and other special files are
// refused rather than followed or skipped, so that nothing is left out or
// added silently.
func CollectFiles(args []string) ([]SourceFile, error) {
	if len(args) == 0 {
		return nil, errors.New("no files to seal")
	}
	var out []SourceFile
	add := func(bundlePath, osPath string, info fs.FileInfo) error {
		switch {
		case info.Mode()&fs.ModeSymlink != 0:
			return fmt.Errorf("%q is a symbolic link: evx seals regular files only and does not follow links", osPath)
		case !info.Mode().IsRegular():
			return fmt.Errorf("%q is not a regular file (%v)", osPath, info.Mode().Type())
		}
		if err := checkBundlePath(bundlePath); err != nil {
			return fmt.Errorf("%q: %w", osPath, err)
		}
		if len(out) >= MaxFiles {
			return fmt.Errorf("more than %d files", MaxFiles)
		}
		out = append(out, SourceFile{Path: bundlePath, OSPath: osPath, Size: info.Size(),
			Mode: info.Mode().Perm(), ModTime: info.ModTime()})
		return nil
	}
	for _, arg := range args {
		info, err := os.Lstat(arg)
		if err != nil {
			return nil, err
		}
		if !info.IsDir() {
			if err := add(filepath.Base(arg), arg, info); err != nil {
				return nil, err
			}
			continue
		}
		base := filepath.Base(filepath.Clean(arg))
		err = filepath.WalkDir(arg, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() {
				return nil
			}
			info, err := d.Info()
			if err != nil {
				return err
			}
			rel, err := filepath.Rel(arg, p)
			if err != nil {
				return err
			}
			bundlePath := filepath.ToSlash(rel)
			if base != "." && base != string(filepath.Separator) {
				bundlePath = base + "/" + bundlePath
			}
			return add(bundlePath, p, info)
		})
		if err != nil {
			return nil, err
		}
	}
	paths := make([]string, len(out))
	for i, f := range out {
		paths[i] = f.Path
	}
	if i, err := checkPathSet(paths); err != nil {
		return nil, fmt.Errorf("%q: %w", out[i].OSPath, err)
	}
	if len(out) == 0 {
		// A bundle of nothing is almost certainly a mistake, such as an
		// empty directory given by error.
		return nil, fmt.Errorf("no files to seal: %q holds no regular files", args)
	}
	return out, nil
}
