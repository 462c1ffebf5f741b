// Package keyfile refuses private-key files that other users of the
// machine may read or change, as ssh does: a key that group or others can
// read may already be copied, and one they can write may be replaced.
package keyfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"runtime"
)

// ExposedError reports a key file that group or others may read or write.
type ExposedError struct {
	// Path is the file as it was named.
	Path string
	// Mode is its permission bits.
	Mode fs.FileMode
}

func (e *ExposedError) Error() string {
	return "private key file " + e.Path + " " + e.Reason()
}

// Reason is the error's message without its leading file name, for
// callers that name the file themselves.
func (e *ExposedError) Reason() string {
	return fmt.Sprintf("has mode %04o: group or others may %s it; make it private with: chmod 600 %s",
		uint32(e.Mode.Perm()), e.what(), e.Path)
}

func (e *ExposedError) what() string {
	read, write := e.Mode&0o044 != 0, e.Mode&0o022 != 0
	switch {
	case read && write:
		return "read and write"
	case write:
		return "write"
	}
	return "read"
}

// ErrNotRegular is returned for a key path that is not a regular file.
var ErrNotRegular = errors.New("not a regular file")

// Check returns an error if the file at path, after symbolic links, is not
// a regular file, or if its group or others may read or write it
// (mode & 0o077 != 0), as an *ExposedError. It reads nothing.
func Check(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return &fs.PathError{Op: "check key file", Path: path, Err: ErrNotRegular}
	}
	// Windows reports no group or other bits that mean anything; its
	// access control lists are not checked here.
	if runtime.GOOS != "windows" && fi.Mode().Perm()&0o077 != 0 {
		return &ExposedError{Path: path, Mode: fi.Mode().Perm()}
	}
	return nil
}
