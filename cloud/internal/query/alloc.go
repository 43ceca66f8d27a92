package query

import (
	"math/bits"
	"sync"

	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet"
)

// pageAllocator hands the Parquet reader its page buffers (a column's pages
// decompress to about a megabyte each) from pools by power-of-two size, so
// queries reuse them instead of allocating and zeroing new ones. The
// reader frees them when a column chunk is closed.
//
// Buffers from a pool are not zeroed: the reader overwrites what it uses
// (a page is decompressed into exactly its uncompressed length), and the
// query reads only decoded values, never Arrow arrays built on them.
// Small buffers are zeroed anyway, as Go allocations are, since they cost
// nothing to clear.
type pageAllocator struct {
	pools [maxPoolClass + 1]sync.Pool
}

const (
	minPoolClass = 12 // 4 KiB
	maxPoolClass = 26 // 64 MiB; larger buffers are not pooled
	// zeroBelow is the size under which a pooled buffer is cleared.
	zeroBelow = 64 << 10
)

var pages = &pageAllocator{}

// readProps are the reader properties of every file a query reads.
var readProps = parquet.NewReaderProperties(pages)

func sizeClass(size int) int {
	if size <= 1<<minPoolClass {
		return minPoolClass
	}
	return bits.Len(uint(size - 1))
}

func (a *pageAllocator) Allocate(size int) []byte {
	c := sizeClass(size)
	if c > maxPoolClass {
		return make([]byte, size)
	}
	if b, ok := a.pools[c].Get().(*[]byte); ok {
		buf := (*b)[:size]
		if size < zeroBelow {
			clear(buf)
		}
		return buf
	}
	return make([]byte, size, 1<<c)
}

func (a *pageAllocator) Reallocate(size int, b []byte) []byte {
	if size <= cap(b) {
		return b[:size]
	}
	nb := a.Allocate(size)
	copy(nb, b)
	a.Free(b)
	return nb
}

func (a *pageAllocator) Free(b []byte) {
	c := bits.Len(uint(cap(b))) - 1
	if c < minPoolClass || c > maxPoolClass || cap(b) != 1<<c {
		return
	}
	b = b[:cap(b)]
	a.pools[c].Put(&b)
}

var _ memory.Allocator = (*pageAllocator)(nil)
