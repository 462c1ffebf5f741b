package crypto

import (
	"archive/zip"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// goZip writes n empty entries named name(i) with archive/zip, with the
// given comment, after prefix.
func goZip(t testing.TB, prefix []byte, n int, name func(int) string, comment string) []byte {
	t.Helper()
	var buf bytes.Buffer
	buf.Write(prefix)
	zw := zip.NewWriter(&buf)
	zw.SetOffset(int64(len(prefix)))
	for i := range n {
		if _, err := zw.CreateHeader(&zip.FileHeader{Name: name(i), Method: zip.Store}); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.SetComment(comment); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// goZipUnaware is goZip with offsets that ignore the prefix, as when an
// archive is appended to other data, such as a self-extractor.
func goZipUnaware(t testing.TB, prefix []byte, n int) []byte {
	t.Helper()
	return append(bytes.Clone(prefix), goZip(t, nil, n, func(i int) string { return fmt.Sprint(i) }, "")...)
}

func TestReadZipEnd(t *testing.T) {
	num := func(i int) string { return fmt.Sprint(i) }
	for _, tc := range []struct {
		name    string
		data    []byte
		entries uint64
		limit   uint64
	}{
		{"empty archive", goZip(t, nil, 0, num, ""), 0, 3},
		{"three entries", goZip(t, nil, 3, num, ""), 3, 3},
		{"comment", goZip(t, nil, 3, num, strings.Repeat("c", 1000)), 3, 3},
		{"offset archive", goZip(t, bytes.Repeat([]byte("p"), 5000), 3, num, ""), 3, 3},
		{"appended archive", goZipUnaware(t, bytes.Repeat([]byte("p"), 5000), 3), 3, 3},
		{"zip64", goZip(t, nil, 70_000, num, ""), 70_000, MaxFiles + 1},
		{"declared through zip64", withDeclaredEntries(t, goZip(t, nil, 2, num, ""), 2), 2, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := bytes.NewReader(tc.data)
			d, err := readZipEnd(r, int64(len(tc.data)))
			if err != nil {
				t.Fatal(err)
			}
			if d.entries != tc.entries {
				t.Errorf("%d entries, want %d", d.entries, tc.entries)
			}
			if err := d.check(tc.limit); err != nil {
				t.Error(err)
			}
			zr, err := newZipReader(r, int64(len(tc.data)), tc.limit)
			if err != nil {
				t.Fatal(err)
			}
			if uint64(len(zr.File)) != tc.entries {
				t.Errorf("archive/zip read %d entries", len(zr.File))
			}
		})
	}
}

func TestReadZipEndRefuses(t *testing.T) {
	three := goZip(t, nil, 3, func(i int) string { return fmt.Sprint(i) }, "")
	// An end record moved away from its directory, at the given offset.
	zip64At := func(at uint64) []byte {
		data := withDeclaredEntries(t, three, 3)
		loc := len(data) - 22 - 20
		binary.LittleEndian.PutUint64(data[loc+8:], at)
		return data
	}
	// A directory of n entries with names of l bytes, whose end record
	// declares entries.
	declaring := func(n, l int, entries uint64) []byte {
		dir := rawZipDirectory(n, func(int) string { return strings.Repeat("n", l) })
		dir = dir[:len(dir)-22]
		if n >= 0xffff {
			dir = dir[:len(dir)-76]
		}
		return append(dir, zipEndRecords(entries, uint64(len(dir)), 0, int64(len(dir)), true)...)
	}
	for _, tc := range []struct {
		name  string
		data  []byte
		limit uint64
		want  string
	}{
		{"no end record", []byte("PK\x03\x04 but nothing else"), 3, "no end of central directory record"},
		{"empty", nil, 3, "no end of central directory record"},
		{"truncated comment", append(bytes.Clone(three[:len(three)-2]), 0xff, 0x00), 3, "comment is truncated"},
		{"truncated", three[:len(three)-1], 3, "no end of central directory record"},
		{"zip64 end record elsewhere", zip64At(0), 3, "the zip64 end record at offset 0 is not just before its locator"},
		{"zip64 end record past the end", zip64At(1 << 40), 3, "is not just before its locator"},
		{"too many entries", withDeclaredEntries(t, three, 4), 3, "zip directory declares 4 entries, over the limit of 3"},
		{"directory too large", declaring(3, 5000, 3), 3, "zip directory of 15138 bytes for 3 entries, over the limit of 12288"},
		{"directory too small", declaring(3, 1, 70_000), MaxFiles + 1, "zip directory of 141 bytes cannot hold the 70000 entries it declares"},
		// archive/zip compares counts modulo 65,536 only.
		{"entries missing", declaring(4464, 676, 70_000), MaxFiles + 1, "zip directory holds 4464 entries, its end record declares 70000"},
		{"ambiguous directory", func() []byte {
			dir := rawZipDirectory(5, func(int) string { return "x" })
			dir = dir[:len(dir)-22]
			return append(dir, zipEndRecords(2, 2*47, 0, int64(len(dir)), false)...)
		}(), 3, "ambiguous central directory: a directory header at offset 0 as well as at 141"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := newZipReader(bytes.NewReader(tc.data), int64(len(tc.data)), tc.limit)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
			var limit *zipLimitError
			if isLimit := strings.Contains(tc.want, "zip directory") && !strings.Contains(tc.want, "holds"); errors.As(err, &limit) != isLimit {
				t.Errorf("%v: a limit error: %v, want %v", err, !isLimit, isLimit)
			}
		})
	}
}

// FuzzZipEnd checks readZipEnd against archive/zip: whenever readZipEnd
// and check accept an archive that archive/zip then parses, archive/zip
// read no directory headers from before the directory's start, so that it
// parsed at most the declared directory and the end records after it.
func FuzzZipEnd(f *testing.F) {
	num := func(i int) string { return fmt.Sprint(i) }
	three := goZip(f, nil, 3, num, "")
	f.Add(three)
	f.Add(goZip(f, nil, 0, num, ""))
	f.Add(goZip(f, []byte("prefix"), 2, num, "comment"))
	f.Add(goZipUnaware(f, []byte("prefix"), 2))
	f.Add(withDeclaredEntries(f, three, 3))
	f.Add(withDeclaredEntries(f, three, 1<<16+3))
	f.Add(rawZipDirectory(4, func(int) string { return "PK\x01\x02" }))
	f.Fuzz(func(t *testing.T, data []byte) {
		size := int64(len(data))
		d, err := readZipEnd(bytes.NewReader(data), size)
		if err != nil {
			return
		}
		if d.start < 0 || d.start > d.end || d.end > size || size-d.end > zipEndSearchLen+zip64EndLen+zip64LocatorLen {
			t.Fatalf("directory [%d, %d) in %d bytes", d.start, d.end, size)
		}
		if d.check(1<<20) != nil {
			return
		}
		zr, err := zip.NewReader(bytes.NewReader(data), size)
		if err != nil {
			return
		}
		var parsed int64
		for _, f := range zr.File {
			parsed += zipDirHeaderLen + int64(len(f.Name)+len(f.Extra)+len(f.Comment))
		}
		if parsed > size-d.start {
			t.Fatalf("archive/zip parsed %d bytes of directory headers, more than the %d from the directory's start to the end", parsed, size-d.start)
		}
	})
}

// Hand-made zip directories: central directory headers and end records
// only, with no local headers or data, which is all that a reader looks at
// before it refuses them.

// zipDirHeader returns a central directory header of an empty stored file.
func zipDirHeader(name string) []byte {
	h := make([]byte, 46, 46+len(name))
	binary.LittleEndian.PutUint32(h[0:], 0x02014b50)
	binary.LittleEndian.PutUint16(h[4:], 3<<8|20) // made by Unix, version 2.0
	binary.LittleEndian.PutUint16(h[6:], 20)
	binary.LittleEndian.PutUint16(h[28:], uint16(len(name)))
	binary.LittleEndian.PutUint32(h[38:], 0o100644<<16)
	return append(h, name...)
}

// zipEndRecords returns the end records of a central directory of entries
// entries and size bytes at offset: a zip64 end record and locator when the
// count needs them (or zip64 is set), then the end of central directory
// record. at is where the records start in the file.
func zipEndRecords(entries, size, offset uint64, at int64, zip64 bool) []byte {
	var b []byte
	le16 := func(v uint16) { b = binary.LittleEndian.AppendUint16(b, v) }
	le32 := func(v uint32) { b = binary.LittleEndian.AppendUint32(b, v) }
	le64 := func(v uint64) { b = binary.LittleEndian.AppendUint64(b, v) }
	zip64 = zip64 || entries >= 0xffff || size >= 0xffffffff || offset >= 0xffffffff
	if zip64 {
		le32(0x06064b50)
		le64(44)
		le16(45)
		le16(45)
		le32(0)
		le32(0)
		le64(entries)
		le64(entries)
		le64(size)
		le64(offset)
		le32(0x07064b50)
		le32(0)
		le64(uint64(at))
		le32(1)
		entries, size, offset = 0xffff, 0xffffffff, 0xffffffff
	}
	le32(0x06054b50)
	le16(0)
	le16(0)
	le16(uint16(min(entries, 0xffff)))
	le16(uint16(min(entries, 0xffff)))
	le32(uint32(min(size, 0xffffffff)))
	le32(uint32(min(offset, 0xffffffff)))
	le16(0)
	return b
}

// rawZipDirectory returns an archive of n central directory entries named
// name(i), with no local headers.
func rawZipDirectory(n int, name func(int) string) []byte {
	var b bytes.Buffer
	for i := range n {
		b.Write(zipDirHeader(name(i)))
	}
	size := uint64(b.Len())
	b.Write(zipEndRecords(uint64(n), size, 0, int64(size), false))
	return b.Bytes()
}

// withDeclaredEntries rewrites the end of a zip archive written by
// archive/zip (no comment, no zip64) so that it declares entries entries
// through a zip64 end record.
func withDeclaredEntries(t testing.TB, archive []byte, entries uint64) []byte {
	t.Helper()
	end := len(archive) - 22
	if binary.LittleEndian.Uint32(archive[end:]) != 0x06054b50 {
		t.Fatal("withDeclaredEntries: no plain end record at the end of the archive")
	}
	size := uint64(binary.LittleEndian.Uint32(archive[end+12:]))
	offset := uint64(binary.LittleEndian.Uint32(archive[end+16:]))
	return append(bytes.Clone(archive[:end]), zipEndRecords(entries, size, offset, int64(end), true)...)
}
