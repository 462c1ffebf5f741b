package crypto

import (
	"fmt"
	"math/rand/v2"
	"path"
	"strings"
	"testing"
)

// incrementalPathSet is the path set that checkPathSet replaced: it adds
// paths one by one and records every directory of every path, which costs
// time and memory quadratic in a path's depth. It is kept as the reference
// that checkPathSet must agree with.
type incrementalPathSet struct {
	files map[string]string // case-folded path → path as given
	dirs  map[string]bool   // case-folded directory paths
}

func (s *incrementalPathSet) add(p string) error {
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

// incrementalCheck adds paths to an incrementalPathSet and returns the
// index of the first that fails, and its error.
func incrementalCheck(paths []string) (int, error) {
	s := &incrementalPathSet{files: map[string]string{}, dirs: map[string]bool{}}
	for i, p := range paths {
		if err := s.add(p); err != nil {
			return i, err
		}
	}
	return -1, nil
}

func checkPathSetAgrees(t *testing.T, paths []string) {
	t.Helper()
	wantAt, wantErr := incrementalCheck(paths)
	gotAt, gotErr := checkPathSet(paths)
	if gotAt != wantAt || fmt.Sprint(gotErr) != fmt.Sprint(wantErr) {
		t.Fatalf("paths %q:\n got %d, %v\nwant %d, %v", paths, gotAt, gotErr, wantAt, wantErr)
	}
}

func TestCheckPathSet(t *testing.T) {
	for _, tc := range []struct {
		paths []string
		at    int
		want  string
	}{
		{[]string{"a", "b", "a/b"}, 2, `file path "a/b" lies under "a", which is a file`},
		{[]string{"a/b", "b", "a"}, 2, `file path "a" is also the directory of another file`},
		{[]string{"x/y/z", "X/Y"}, 1, `file path "X/Y" is also the directory of another file`},
		{[]string{"X/y", "x/Y/z"}, 1, `file path "x/Y/z" lies under "X/y", which is a file`},
		{[]string{"a.txt", "b", "A.TXT"}, 2, `duplicate file path "A.TXT" (also "a.txt")`},
		// '-' and '.' sort before '/': "a-b" and "a.b" come between "a" and
		// "a/c" in byte order, but not in the order of paths and their
		// directories.
		{[]string{"a/c", "a-b", "a.b", "a"}, 3, `file path "a" is also the directory of another file`},
		{[]string{"a", "a-b", "a.b", "a/c"}, 3, `file path "a/c" lies under "a", which is a file`},
		// Of several conflicts, the one that adding the paths in order meets
		// first.
		{[]string{"p/q", "z", "z/1", "p"}, 2, `file path "z/1" lies under "z", which is a file`},
		{[]string{"a/b/c", "a/b/d", "a/b", "a"}, 2, `file path "a/b" is also the directory of another file`},
		{[]string{"é/x", "É"}, 1, `file path "É" is also the directory of another file`},
		{[]string{"a", "ab", "a b", "a/b/c/d", "ab/c"}, 3, `file path "a/b/c/d" lies under "a", which is a file`},
		{[]string{"a/b", "a/c", "b/a", "ab", "a-", "a.b/c"}, -1, ""},
		{nil, -1, ""},
	} {
		at, err := checkPathSet(tc.paths)
		if at != tc.at || fmt.Sprint(err) != fmt.Sprint(map[bool]any{true: nil, false: tc.want}[tc.want == ""]) {
			t.Errorf("%q: got %d, %v; want %d, %q", tc.paths, at, err, tc.at, tc.want)
		}
		checkPathSetAgrees(t, tc.paths)
	}
}

// TestCheckPathSetRandom compares checkPathSet with the incremental path set
// on random sets of short paths over a small alphabet, where duplicates,
// case collisions and files above other files are frequent.
func TestCheckPathSetRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	elems := []string{"a", "A", "b", "ab", "a-", "a.", "é", "É"}
	for range 20_000 {
		paths := make([]string, 1+rng.IntN(8))
		for i := range paths {
			parts := make([]string, 1+rng.IntN(4))
			for j := range parts {
				parts[j] = elems[rng.IntN(len(elems))]
			}
			paths[i] = strings.Join(parts, "/")
		}
		checkPathSetAgrees(t, paths)
	}
}

func FuzzCheckPathSet(f *testing.F) {
	f.Add("a\na/b\nA")
	f.Add("x/y\nx-y\nx/y/z")
	f.Add("d/e/f\nD/E\ng")
	f.Fuzz(func(t *testing.T, list string) {
		paths := strings.Split(list, "\n")
		if len(paths) > 64 {
			return
		}
		for _, p := range paths {
			// Only valid paths reach a path set.
			if checkBundlePath(p) != nil {
				return
			}
		}
		checkPathSetAgrees(t, paths)
	})
}
