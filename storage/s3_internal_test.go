package storage

import "testing"

// Every size up to MaxObjectSize fits in S3's 10,000 parts, at every
// allowed configured part size; part sizes only grow when they must.
func TestPartSizeFor(t *testing.T) {
	for _, configured := range []int64{MinPartSize, DefaultPartSize, 64 << 20} {
		for _, size := range []int64{0, 1, configured, configured + 1, maxPartCount * configured, maxPartCount*configured + 1, MaxObjectSize - 1, MaxObjectSize} {
			ps := partSizeFor(configured, size)
			if ps < configured || ps > maxPartSize {
				t.Errorf("partSizeFor(%d, %d) = %d, outside %d to %d", configured, size, ps, configured, int64(maxPartSize))
			}
			if parts := (size + ps - 1) / ps; parts > maxPartCount {
				t.Errorf("partSizeFor(%d, %d) = %d: %d parts", configured, size, ps, parts)
			}
			if size <= maxPartCount*configured && ps != configured {
				t.Errorf("partSizeFor(%d, %d) = %d, want the configured size", configured, size, ps)
			}
		}
	}
	// 64 GiB at 5 MiB parts would be 13,108 parts.
	if ps := partSizeFor(MinPartSize, MaxObjectSize); ps != 7<<20 {
		t.Errorf("partSizeFor(5 MiB, 64 GiB) = %d, want 7 MiB", ps)
	}
}
