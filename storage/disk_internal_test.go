package storage

import (
	"errors"
	"io/fs"
	"os"
	"syscall"
	"testing"
)

// Which file system errors mean that the storage failed. TestDiskFull and
// TestDiskReadOnly produce ENOSPC and EROFS for real; an I/O error cannot
// be produced without a failing device.
func TestDiskUnavailable(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{&fs.PathError{Op: "write", Path: "/s/.tmp/create-1", Err: syscall.EIO}, true},
		{&fs.PathError{Op: "write", Path: "/s/.tmp/create-1", Err: syscall.ENOSPC}, true},
		{&fs.PathError{Op: "write", Path: "/s/.tmp/create-1", Err: syscall.EDQUOT}, true},
		{&fs.PathError{Op: "open", Path: "/s/.tmp/create-1", Err: syscall.EROFS}, true},
		{&fs.PathError{Op: "open", Path: "/s/k", Err: syscall.EMFILE}, true},
		{&os.LinkError{Op: "link", Old: "/s/.tmp/create-1", New: "/s/k", Err: syscall.ENFILE}, true},
		{&fs.PathError{Op: "open", Path: "/s/k", Err: syscall.EACCES}, false},
		{&fs.PathError{Op: "open", Path: "/s/k", Err: syscall.EPERM}, false},
		{&fs.PathError{Op: "open", Path: "/s/k", Err: syscall.ENOENT}, false},
		{&os.LinkError{Op: "link", Old: "/s/.tmp/create-1", New: "/s/k", Err: syscall.EEXIST}, false},
		{errors.New("a parent of the key is itself an object"), false},
	} {
		err := diskFailure(tc.err)
		if got := errors.Is(err, ErrUnavailable); got != tc.want {
			t.Errorf("diskFailure(%v) = %v, unavailable %v; want %v", tc.err, err, got, tc.want)
		}
		if !errors.Is(err, tc.err) {
			t.Errorf("diskFailure(%v) = %v, which does not wrap it", tc.err, err)
		}
	}
}
