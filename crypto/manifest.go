package crypto

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
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

func parseManifest(data []byte, bundleID string) (*Manifest, error) {
	var m Manifest
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("malformed manifest: %v", err)
	}
	if m.Format != ManifestFormat {
		return nil, fmt.Errorf("unsupported manifest format %q", m.Format)
	}
	if m.BundleID != bundleID {
		return nil, fmt.Errorf("manifest belongs to bundle %q, not %q", m.BundleID, bundleID)
	}
	if len(m.Files) != m.TotalFiles || len(m.Files) > MaxFiles {
		return nil, fmt.Errorf("manifest lists %d files, total_files says %d (limit %d)", len(m.Files), m.TotalFiles, MaxFiles)
	}
	var total int64
	paths := newPathSet()
	for i := range m.Files {
		f := &m.Files[i]
		if err := checkBundlePath(f.Path); err != nil {
			return nil, fmt.Errorf("manifest: %w", err)
		}
		if err := paths.add(f.Path); err != nil {
			return nil, fmt.Errorf("manifest: %w", err)
		}
		if f.Size < 0 || f.Size > MaxPayloadSize {
			return nil, fmt.Errorf("manifest: file %q: size %d out of range", f.Path, f.Size)
		}
		var d [32]byte
		if err := decodeDigest(&d, f.SHA256); err != nil {
			return nil, fmt.Errorf("manifest: file %q: %w", f.Path, err)
		}
		if _, err := f.fileMode(); err != nil {
			return nil, fmt.Errorf("manifest: %w", err)
		}
		if _, err := time.Parse(time.RFC3339Nano, f.Modified); err != nil {
			return nil, fmt.Errorf("manifest: file %q: malformed modification time %q", f.Path, f.Modified)
		}
		total += f.Size
	}
	if total != m.TotalSize {
		return nil, fmt.Errorf("manifest: files add up to %d bytes, total_size says %d", total, m.TotalSize)
	}
	return &m, nil
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
	for _, elem := range strings.Split(p, "/") {
		switch {
		case elem == "" || elem == "." || elem == "..":
			return fmt.Errorf("file path %q has an empty, \".\" or \"..\" element", p)
		case len(elem) > maxPathElem:
			return fmt.Errorf("file path %q has an element longer than %d bytes", p, maxPathElem)
		}
	}
	return nil
}

// pathSet detects duplicate paths, including paths that differ only in case
// (they would collide on case-insensitive file systems), and paths that are
// both a file and the directory of another file.
type pathSet struct {
	files map[string]string // case-folded path → path as given
	dirs  map[string]bool   // case-folded directory paths
}

func newPathSet() *pathSet {
	return &pathSet{files: map[string]string{}, dirs: map[string]bool{}}
}

func (s *pathSet) add(p string) error {
	folded := strings.ToLower(p)
	if prev, ok := s.files[folded]; ok {
		return fmt.Errorf("duplicate file path %q (also %q)", p, prev)
	}
	if s.dirs[folded] {
		return fmt.Errorf("file path %q is also the directory of another file", p)
	}
	for d := path.Dir(folded); d != "."; d = path.Dir(d) {
		if prev, ok := s.files[d]; ok {
			return fmt.Errorf("file path %q lies under %q, which is a file", p, prev)
		}
		s.dirs[d] = true
	}
	s.files[folded] = p
	return nil
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
	paths := newPathSet()
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
		if err := paths.add(bundlePath); err != nil {
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
	if len(out) == 0 {
		// A bundle of nothing is almost certainly a mistake, such as an
		// empty directory given by error.
		return nil, fmt.Errorf("no files to seal: %q holds no regular files", args)
	}
	return out, nil
}
