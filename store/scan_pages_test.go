package store

import (
	"bytes"
	"encoding/binary"
	"slices"
	"testing"
)

// The raw search reads the file in chunks: a needle across a chunk's edge
// is found once, as is one in a trailing partial page.
func TestScanPagesChunkEdges(t *testing.T) {
	needle := make([]byte, 32) // no prefix of it is a suffix: copies side by side match only where put
	for i := range needle {
		needle[i] = byte(0x80 + i)
	}
	size := int64(3*scanChunk + 100)
	want := []int64{100, scanChunk - 10, 2*scanChunk - 32, 2 * scanChunk, size - 32}
	data := make([]byte, size)
	for _, at := range want {
		copy(data[at:], needle)
	}
	bf := &boltFile{r: bytes.NewReader(data), size: size, pageSize: 4096, order: binary.LittleEndian}
	bf.pages = uint64(size / bf.pageSize)
	bf.inUse = make([]bool, bf.pages)
	var got []int64
	err := bf.scanPages([][]byte{needle}, func(h rawHit) { got = append(got, h.off) }, func(uint64, []byte, []byte) {})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, want) {
		t.Errorf("found at %v, want %v", got, want)
	}
}
