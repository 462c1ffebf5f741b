package crypto

import (
	"archive/zip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// archive/zip parses a whole central directory before its caller can count
// anything: it reads directory headers from the directory's start until one
// fails to parse, whatever the end record declares, and compares its count
// with the declared one modulo 65,536 only. So before an untrusted archive
// is handed to zip.NewReader, its end records are read here, the same way
// archive/zip reads them, and the declared entry count and directory size
// are bounded; the directory must also lie where archive/zip will start
// reading it, just before the end records, so that what it parses is the
// declared directory and at most the end records and comment after it.

// Layout of the records (PKWARE APPNOTE 6.3.10, sections 4.3.12–4.3.16).
const (
	zipDirHeaderSig   = 0x02014b50
	zipEndSig         = 0x06054b50
	zip64EndSig       = 0x06064b50
	zip64LocatorSig   = 0x07064b50
	zipDirHeaderLen   = 46 // + name, extra fields, comment
	zipEndLen         = 22 // + comment
	zip64EndLen       = 56 // without extensible data
	zip64LocatorLen   = 20
	zipMaxCommentLen  = 0xffff
	zipEndSearchLen   = 65 << 10 // how far from the end archive/zip looks for the end record
	maxZipDirEntryLen = 4 << 10  // a directory header with its name, extra fields and comment
)

// zipEnd is what an archive's end records say about its central directory.
type zipEnd struct {
	entries uint64 // declared number of entries
	size    uint64 // declared size of the central directory
	// start is where archive/zip starts reading the central directory;
	// end is where the end records start, so the declared directory is
	// [start, end).
	start, end int64
}

// readZipEnd locates the end records of the zip archive in r, of the given
// size, and reads the central directory's declared place, size and entry
// count as archive/zip does. It reads at most 65 KiB and 76 bytes, and
// refuses archives whose central directory archive/zip would read from
// elsewhere than just before the end records.
func readZipEnd(r io.ReaderAt, size int64) (*zipEnd, error) {
	// The last end record signature in the last 65 KiB, as archive/zip
	// finds it; it must be followed by its whole comment.
	n := min(size, zipEndSearchLen)
	buf := make([]byte, n)
	if _, err := r.ReadAt(buf, size-n); err != nil && err != io.EOF {
		return nil, err
	}
	i := len(buf) - zipEndLen
	for ; i >= 0; i-- {
		if binary.LittleEndian.Uint32(buf[i:]) == zipEndSig {
			break
		}
	}
	if i < 0 {
		return nil, errors.New("no end of central directory record")
	}
	rec := buf[i : i+zipEndLen]
	if comment := int(binary.LittleEndian.Uint16(rec[20:])); i+zipEndLen+comment > len(buf) {
		return nil, errors.New("the end of central directory record's comment is truncated")
	}
	d := &zipEnd{
		entries: uint64(binary.LittleEndian.Uint16(rec[10:])),
		size:    uint64(binary.LittleEndian.Uint32(rec[12:])),
		end:     size - n + int64(i),
	}
	offset := uint64(binary.LittleEndian.Uint32(rec[16:]))

	// archive/zip looks for zip64 records when any of these fields is
	// saturated (comparing the size with 0xffff, not 0xffffffff), and uses
	// them when a locator with disk numbers 0 and 1 precedes the end
	// record, wherever the locator says the zip64 end record is.
	if d.entries == 0xffff || d.size == 0xffff || offset == 0xffffffff {
		if loc := d.end - zip64LocatorLen; loc >= 0 {
			var l [zip64LocatorLen]byte
			if _, err := r.ReadAt(l[:], loc); err != nil {
				return nil, fmt.Errorf("reading the zip64 locator: %v", err)
			}
			if binary.LittleEndian.Uint32(l[0:]) == zip64LocatorSig &&
				binary.LittleEndian.Uint32(l[4:]) == 0 && binary.LittleEndian.Uint32(l[16:]) == 1 {
				// Anywhere else, archive/zip would read the directory
				// from a place the bounds below do not cover.
				at := binary.LittleEndian.Uint64(l[8:])
				if loc < zip64EndLen || at != uint64(loc-zip64EndLen) {
					return nil, fmt.Errorf("the zip64 end record at offset %d is not just before its locator at %d", at, loc)
				}
				var e [zip64EndLen]byte
				if _, err := r.ReadAt(e[:], int64(at)); err != nil {
					return nil, fmt.Errorf("reading the zip64 end record: %v", err)
				}
				if binary.LittleEndian.Uint32(e[0:]) != zip64EndSig {
					return nil, errors.New("malformed zip64 end record")
				}
				d.entries = binary.LittleEndian.Uint64(e[32:])
				d.size = binary.LittleEndian.Uint64(e[40:])
				offset = binary.LittleEndian.Uint64(e[48:])
				d.end = int64(at)
			}
		}
	}

	// archive/zip reads the directory from its declared size back from
	// the end records, whatever the declared offset (an archive may follow
	// other data), except when that offset holds a directory header too:
	// then it reads from the offset, and could read far more.
	if d.size > uint64(d.end) || offset > 1<<63-1 {
		return nil, fmt.Errorf("a central directory of %d bytes at offset %d does not fit before the end records at %d", d.size, offset, d.end)
	}
	d.start = d.end - int64(d.size)
	if int64(offset) < d.start {
		var sig [4]byte
		if _, err := r.ReadAt(sig[:], int64(offset)); err == nil && binary.LittleEndian.Uint32(sig[:]) == zipDirHeaderSig {
			return nil, fmt.Errorf("ambiguous central directory: a directory header at offset %d as well as at %d, %d bytes before the end records", offset, d.start, d.size)
		}
	}
	return d, nil
}

// check bounds the declared entry count by limit, and the declared
// directory size by what that many entries can fill.
func (d *zipEnd) check(limit uint64) error {
	if d.entries > limit {
		return fmt.Errorf("zip directory declares %d entries, over the limit of %d", d.entries, limit)
	}
	if max := d.entries * maxZipDirEntryLen; d.size > max {
		return fmt.Errorf("zip directory of %d bytes for %d entries, over the limit of %d", d.size, d.entries, max)
	}
	if d.size < d.entries*zipDirHeaderLen {
		return fmt.Errorf("zip directory of %d bytes cannot hold the %d entries it declares", d.size, d.entries)
	}
	return nil
}

// zipLimitError reports an archive whose declared directory is over the
// limits of check.
type zipLimitError struct{ err error }

func (e *zipLimitError) Error() string { return e.err.Error() }

// newZipReader is zip.NewReader for an untrusted archive of at most
// maxEntries entries: it bounds the central directory before archive/zip
// parses it, and requires the parsed entries to be exactly those declared.
// Limits broken are reported as a *zipLimitError.
func newZipReader(r io.ReaderAt, size int64, maxEntries uint64) (*zip.Reader, error) {
	d, err := readZipEnd(r, size)
	if err != nil {
		return nil, err
	}
	if err := d.check(maxEntries); err != nil {
		return nil, &zipLimitError{err}
	}
	zr, err := zip.NewReader(r, size)
	if err != nil {
		return nil, err
	}
	if uint64(len(zr.File)) != d.entries {
		return nil, fmt.Errorf("zip directory holds %d entries, its end record declares %d", len(zr.File), d.entries)
	}
	return zr, nil
}
