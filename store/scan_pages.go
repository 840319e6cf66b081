package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
)

// The forensic scan reads bbolt's file itself, not through bbolt: it must
// see free and unreachable pages, which bbolt never reads, and it must not
// wait for, or take, the lock of a running agent. The layout is bbolt's
// format version 2 (go.etcd.io/bbolt internal/common/page.go, meta.go,
// bucket.go), unchanged since boltdb. Every length read from the file is
// checked against the bytes at hand: a damaged or foreign file makes the
// scan see less, never panic (FuzzScanPages).
const (
	boltMagic   = 0xED0CDAED
	boltVersion = 2

	pageHeaderSize   = 16 // id u64, flags u16, count u16, overflow u32
	leafElemSize     = 16 // flags u32, pos u32, ksize u32, vsize u32; pos counts from the element
	branchElemSize   = 16 // pos u32, ksize u32, child page id u64
	bucketHeaderSize = 16 // root page id u64 (0: the bucket's page follows inline), sequence u64
	metaOffset       = pageHeaderSize
	metaChecksumAt   = 56 // magic, version, page size, flags, root bucket, freelist, high water, txid
	metaSize         = metaChecksumAt + 8

	branchPageFlag   = 0x01
	leafPageFlag     = 0x02
	freelistPageFlag = 0x10
	bucketLeafFlag   = 0x01

	// maxNodeSpan bounds the bytes read for one page and its overflow
	// pages. Records are far smaller; a larger span is a damaged header,
	// whose bytes the raw search still covers.
	maxNodeSpan = 64 << 20
	// scanChunk is how much of the file is read at once: a scan on a
	// small device must not hold the whole file in memory next to the
	// agent's own mapping of it.
	scanChunk = 1 << 20
)

// boltFile is a bbolt file read page by page.
type boltFile struct {
	r        io.ReaderAt
	size     int64
	pageSize int64
	pages    uint64
	// order is the byte order of the machine that wrote the file: bbolt
	// writes its structures as they lie in memory, and a file from a
	// big-endian MIPS box may be scanned on a laptop.
	order binary.ByteOrder
	// inUse marks the pages the tree of the newest valid meta page
	// reaches, as bbolt counts them; every other page is free, though
	// the older meta's tree may still reach it.
	inUse []bool
}

var errNotBolt = errors.New("not a bbolt file")

// readBoltFile reads the meta pages of a bbolt file of size bytes and marks
// the pages in use. visit is called for every leaf element those pages
// hold.
func readBoltFile(r io.ReaderAt, size int64, visit func(k, v []byte)) (*boltFile, error) {
	bf := &boltFile{r: r, size: size}
	var ok bool
	if bf.order, bf.pageSize, ok = pageSizeOf(r); !ok {
		return nil, fmt.Errorf("%w: %w: no meta page", ErrCorrupt, errNotBolt)
	}
	bf.pages = uint64(bf.size / bf.pageSize)
	// The newest valid meta page names the tree in use; bbolt would fall
	// back to the other one only if this one were damaged.
	var meta []byte
	for id := int64(0); id < 2; id++ {
		m := make([]byte, metaSize)
		if _, err := r.ReadAt(m, id*bf.pageSize+metaOffset); err != nil {
			continue
		}
		if o, ok := metaOrder(m); !ok || o != bf.order || !bf.metaValid(m) {
			continue
		}
		if meta == nil || bf.order.Uint64(m[48:]) > bf.order.Uint64(meta[48:]) {
			meta = m
		}
	}
	if meta == nil {
		return nil, fmt.Errorf("%w: %w: both meta pages damaged", ErrCorrupt, errNotBolt)
	}
	bf.markInUse(meta, visit)
	return bf, nil
}

// pageSizeOf reads the page size from meta page 0 or, should that be
// damaged, from meta page 1 looked for at the usual sizes.
func pageSizeOf(r io.ReaderAt) (binary.ByteOrder, int64, bool) {
	for _, at := range []int64{0, 4096, 8192, 16384, 32768, 65536, 1024, 2048} {
		m := make([]byte, metaSize)
		if _, err := r.ReadAt(m, at+metaOffset); err != nil {
			continue
		}
		order, ok := metaOrder(m)
		if !ok {
			continue
		}
		size := int64(order.Uint32(m[8:]))
		if size >= 1024 && size <= 1<<16 && size&(size-1) == 0 && (at == 0 || size == at) {
			return order, size, true
		}
	}
	return nil, 0, false
}

func metaOrder(m []byte) (binary.ByteOrder, bool) {
	for _, o := range []binary.ByteOrder{binary.LittleEndian, binary.BigEndian} {
		if o.Uint32(m) == boltMagic && o.Uint32(m[4:]) == boltVersion {
			return o, true
		}
	}
	return nil, false
}

func (bf *boltFile) metaValid(m []byte) bool {
	h := fnv.New64a()
	h.Write(m[:metaChecksumAt])
	return bf.order.Uint64(m[metaChecksumAt:]) == h.Sum64()
}

type pageHeader struct {
	id       uint64
	flags    uint16
	count    uint16
	overflow uint32
}

func (bf *boltFile) header(p []byte) pageHeader {
	return pageHeader{bf.order.Uint64(p), bf.order.Uint16(p[8:]), bf.order.Uint16(p[10:]), bf.order.Uint32(p[12:])}
}

// span is how many bytes page id and its overflow pages take, within the
// file.
func (bf *boltFile) span(id uint64, h pageHeader) int64 {
	n := (int64(h.overflow) + 1) * bf.pageSize
	return min(n, bf.size-int64(id)*bf.pageSize)
}

// node reads page id with its overflow pages if it is the head of a branch
// or leaf page: one that names itself. Continuation pages of a large value
// and zeroed pages do not.
func (bf *boltFile) node(id uint64) ([]byte, pageHeader, bool) {
	hb := make([]byte, pageHeaderSize)
	if _, err := bf.r.ReadAt(hb, int64(id)*bf.pageSize); err != nil {
		return nil, pageHeader{}, false
	}
	h := bf.header(hb)
	if h.id != id || (h.flags != branchPageFlag && h.flags != leafPageFlag) {
		return nil, h, false
	}
	n := bf.span(id, h)
	if n > maxNodeSpan {
		return nil, h, false
	}
	p := make([]byte, n)
	if _, err := bf.r.ReadAt(p, int64(id)*bf.pageSize); err != nil && !errors.Is(err, io.EOF) {
		return nil, h, false
	}
	return p, h, true
}

// markInUse walks the tree of the meta page.
func (bf *boltFile) markInUse(meta []byte, visit func(k, v []byte)) {
	bf.inUse = make([]bool, bf.pages)
	for id := uint64(0); id < min(2, bf.pages); id++ {
		bf.inUse[id] = true
	}
	stack := []uint64{bf.order.Uint64(meta[16:])} // the root bucket's page
	// The freelist, when bbolt writes one (the store does not): page ids
	// only, nothing to read.
	if fl := bf.order.Uint64(meta[32:]); fl >= 2 && fl < bf.pages {
		bf.markSpan(fl, freelistPageFlag)
	}
	for len(stack) > 0 {
		id := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if id < 2 || id >= bf.pages || bf.inUse[id] {
			continue
		}
		p, h, ok := bf.node(id)
		if !ok {
			continue
		}
		bf.mark(id, h.overflow)
		if h.flags == branchPageFlag {
			bf.eachBranch(p, func(child uint64) { stack = append(stack, child) })
			continue
		}
		bf.eachLeaf(p, func(k, v []byte) { visit(k, v) }, func(root uint64) { stack = append(stack, root) })
	}
}

// markSpan marks page id and its overflow pages in use if it is a page of
// the given type that names itself.
func (bf *boltFile) markSpan(id uint64, flags uint16) {
	hb := make([]byte, pageHeaderSize)
	if _, err := bf.r.ReadAt(hb, int64(id)*bf.pageSize); err != nil {
		return
	}
	if h := bf.header(hb); h.id == id && h.flags == flags {
		bf.mark(id, h.overflow)
	}
}

func (bf *boltFile) mark(id uint64, overflow uint32) {
	for j := id; j < bf.pages && j <= id+uint64(overflow); j++ {
		bf.inUse[j] = true
	}
}

func (bf *boltFile) eachBranch(p []byte, child func(id uint64)) {
	h := bf.header(p)
	for i := range uint64(h.count) {
		e := pageHeaderSize + i*branchElemSize
		if e+branchElemSize > uint64(len(p)) {
			return
		}
		child(bf.order.Uint64(p[e+8:]))
	}
}

// eachLeaf calls kv for every element of the leaf page p that is not a
// bucket, and sub for the root page of every bucket it holds. Small buckets
// lie inline in their parent's element, their page after the bucket
// header; their elements are visited too.
func (bf *boltFile) eachLeaf(p []byte, kv func(k, v []byte), sub func(root uint64)) {
	// Each element of a sound page, inline pages' included, has 16
	// bytes of its own; a damaged one whose elements all point at one
	// inline page would otherwise be walked exponentially often.
	budget := len(p) / leafElemSize
	bf.leafElems(p, &budget, kv, sub)
}

func (bf *boltFile) leafElems(p []byte, budget *int, kv func(k, v []byte), sub func(root uint64)) {
	h := bf.header(p)
	for i := range uint64(h.count) {
		e := pageHeaderSize + i*leafElemSize
		if e+leafElemSize > uint64(len(p)) || *budget <= 0 {
			return
		}
		*budget--
		flags := bf.order.Uint32(p[e:])
		ks, vs := uint64(bf.order.Uint32(p[e+8:])), uint64(bf.order.Uint32(p[e+12:]))
		ki := e + uint64(bf.order.Uint32(p[e+4:]))
		if ki+ks+vs > uint64(len(p)) {
			continue
		}
		k, v := p[ki:ki+ks], p[ki+ks:ki+ks+vs]
		if flags&bucketLeafFlag == 0 {
			kv(k, v)
			continue
		}
		if len(v) < bucketHeaderSize {
			continue
		}
		if root := bf.order.Uint64(v); root != 0 {
			sub(root)
			continue
		}
		if in := v[bucketHeaderSize:]; len(in) >= pageHeaderSize && bf.header(in).flags == leafPageFlag {
			bf.leafElems(in, budget, kv, sub)
		}
	}
}

// rawHit is a needle found in the file's bytes.
type rawHit struct {
	needle int
	off    int64
}

// scanPages reads every page of the file in order, free ones included, and
// reports every needle found in the raw bytes and every leaf element of
// every page that names itself a leaf: in use, freed and not yet reused,
// or beyond the tree's end.
func (bf *boltFile) scanPages(needles [][]byte, hit func(rawHit), kv func(page uint64, k, v []byte)) error {
	carry := 0
	for _, n := range needles {
		carry = max(carry, len(n)-1)
	}
	per := max(1, scanChunk/bf.pageSize) // pages a chunk
	chunkLen := int(min(per*bf.pageSize, bf.size))
	buf := make([]byte, carry+chunkLen)
	have := 0 // bytes of the previous chunk kept at the front of buf
	// Chunks run to the end of the file, a trailing partial page
	// included, though only whole pages can be parsed.
	for first := uint64(0); int64(first)*bf.pageSize < bf.size; first += uint64(per) {
		start := int64(first) * bf.pageSize
		n, err := bf.r.ReadAt(buf[have:have+chunkLen], start)
		if err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		win := buf[:have+n]
		for i, nd := range needles {
			for from := 0; ; {
				j := bytes.Index(win[from:], nd)
				if j < 0 {
					break
				}
				at := from + j
				// A match wholly in the kept bytes was reported with
				// the previous chunk.
				if at+len(nd) > have {
					hit(rawHit{i, start - int64(have) + int64(at)})
				}
				from = at + 1
			}
		}
		chunk := win[have:]
		for id := first; id < first+uint64(per) && id < bf.pages; id++ {
			off := int64(id-first) * bf.pageSize
			if off+pageHeaderSize > int64(len(chunk)) {
				break
			}
			h := bf.header(chunk[off:])
			if h.id != id || h.flags != leafPageFlag {
				continue
			}
			var p []byte
			if end := off + bf.span(id, h); end <= int64(len(chunk)) {
				p = chunk[off:end]
			} else if p, _, _ = bf.node(id); p == nil {
				continue
			}
			bf.eachLeaf(p, func(k, v []byte) { kv(id, k, v) }, func(uint64) {})
		}
		keep := min(carry, len(win))
		copy(buf, win[len(win)-keep:])
		have = keep
	}
	return nil
}
