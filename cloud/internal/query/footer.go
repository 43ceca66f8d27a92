package query

import (
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/apache/arrow-go/v18/parquet/metadata"

	lakefmt "github.com/updraft-io/updraft/schemas/lake"
)

// maxCachedFooters bounds the footers an Engine keeps: a few kB each, so a
// year of hourly files fits.
const maxCachedFooters = 16384

// footer is what a query needs from a file's footer, parsed once.
type footer struct {
	size  int64
	mtime time.Time
	md    *metadata.FileMetaData
	cols  columns
}

// footerCache keeps parsed footers across queries. A committed lake file
// never changes, but one can be deleted and another written under its name,
// so an entry counts only while the file's size and modification time are
// those it was read with.
type footerCache struct {
	mu  sync.Mutex
	max int
	m   map[string]*footer
}

func newFooterCache(max int) *footerCache {
	return &footerCache{max: max, m: make(map[string]*footer)}
}

func (c *footerCache) get(path string, fi os.FileInfo) *footer {
	c.mu.Lock()
	defer c.mu.Unlock()
	ft := c.m[path]
	if ft == nil || ft.size != fi.Size() || !ft.mtime.Equal(fi.ModTime()) {
		return nil
	}
	return ft
}

func (c *footerCache) put(path string, ft *footer) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[path]; !ok && len(c.m) >= c.max {
		// Any entry will do: a dropped footer is read again when needed.
		for k := range c.m {
			delete(c.m, k)
			if len(c.m) < c.max*3/4 {
				break
			}
		}
	}
	c.m[path] = ft
}

// columns are the leaf indices of the columns a query reads, found by name
// so files with extra columns, or columns in another order, still work.
type columns struct {
	ts, region, site, edge, device, metric, value, unit int
}

// readFooter parses the footer of the open file f, described by fi, and
// finds the query's columns in it.
func readFooter(path string, f *os.File, fi os.FileInfo) (*footer, *file.Reader, error) {
	pr, err := file.NewParquetReader(f, file.WithReadProps(readProps))
	if err != nil {
		return nil, nil, fmt.Errorf("open %s: %w", path, err)
	}
	md := pr.MetaData()
	// Computed on first use and then kept in md: compute it now, so that
	// queries sharing md only read it.
	md.WriterVersion()
	ft := &footer{size: fi.Size(), mtime: fi.ModTime(), md: md}
	for _, col := range []struct {
		name string
		dst  *int
		typ  parquet.Type
	}{
		{lakefmt.ColTS, &ft.cols.ts, parquet.Types.Int64},
		{lakefmt.ColRegion, &ft.cols.region, parquet.Types.ByteArray},
		{lakefmt.ColSite, &ft.cols.site, parquet.Types.ByteArray},
		{lakefmt.ColEdge, &ft.cols.edge, parquet.Types.ByteArray},
		{lakefmt.ColDevice, &ft.cols.device, parquet.Types.ByteArray},
		{lakefmt.ColMetric, &ft.cols.metric, parquet.Types.ByteArray},
		{lakefmt.ColValue, &ft.cols.value, parquet.Types.Double},
		{lakefmt.ColUnit, &ft.cols.unit, parquet.Types.ByteArray},
	} {
		if *col.dst = md.Schema.ColumnIndexByName(col.name); *col.dst < 0 {
			return nil, nil, fmt.Errorf("%s: no column %q", path, col.name)
		}
		d := md.Schema.Column(*col.dst)
		if d.PhysicalType() != col.typ || d.MaxRepetitionLevel() != 0 {
			return nil, nil, fmt.Errorf("%s: column %s is %s (repetition level %d), want %s", path, col.name,
				d.PhysicalType(), d.MaxRepetitionLevel(), col.typ)
		}
	}
	return ft, pr, nil
}

// footerBytes is what reading a footer costs: the Thrift metadata, its
// length and the magic number.
func footerBytes(md *metadata.FileMetaData) int64 { return int64(md.Size()) + 8 }
