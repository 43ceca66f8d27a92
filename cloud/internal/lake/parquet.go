package lake

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"os"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/compress"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"

	lakefmt "github.com/updraft-io/updraft/schemas/lake"
)

// RawSchema is the Arrow schema of raw reading files. The timestamp's "UTC"
// zone makes Parquet mark it isAdjustedToUTC.
var RawSchema = arrow.NewSchema([]arrow.Field{
	{Name: lakefmt.ColTS, Type: &arrow.TimestampType{Unit: arrow.Nanosecond, TimeZone: "UTC"}},
	{Name: lakefmt.ColRegion, Type: arrow.BinaryTypes.String},
	{Name: lakefmt.ColSite, Type: arrow.BinaryTypes.String},
	{Name: lakefmt.ColEdge, Type: arrow.BinaryTypes.String},
	{Name: lakefmt.ColDevice, Type: arrow.BinaryTypes.String},
	{Name: lakefmt.ColMetric, Type: arrow.BinaryTypes.String},
	{Name: lakefmt.ColValue, Type: arrow.PrimitiveTypes.Float64},
	{Name: lakefmt.ColUnit, Type: arrow.BinaryTypes.String, Nullable: true},
}, nil)

// Column positions in RawSchema.
const (
	colTS = iota
	colRegion
	colSite
	colEdge
	colDevice
	colMetric
	colValue
	colUnit
)

func writerProperties(rowGroupRows int) *parquet.WriterProperties {
	return parquet.NewWriterProperties(
		parquet.WithCompression(compress.Codecs.Zstd),
		parquet.WithStats(true),
		parquet.WithDictionaryDefault(true),
		// Times and values rarely repeat: a dictionary would be built only to
		// be abandoned.
		parquet.WithDictionaryFor(lakefmt.ColTS, false),
		parquet.WithDictionaryFor(lakefmt.ColValue, false),
		parquet.WithMaxRowGroupLength(int64(rowGroupRows)),
		// Hand each column chunk to the encoders in one piece: in batches
		// their buffers grow (and are copied) step by step. Pages still
		// close at the default page size.
		parquet.WithBatchSize(int64(rowGroupRows)),
		parquet.WithSortingColumns([]parquet.SortingColumn{
			{ColumnIdx: colDevice}, {ColumnIdx: colMetric}, {ColumnIdx: colTS},
		}),
		parquet.WithCreatedBy("updraft-cloud"),
	)
}

// fileInfo summarises a written data file.
type fileInfo struct {
	rows         int64
	minTS, maxTS int64
	bytes        int64
}

// noCloseWriter hides Close from pqarrow, which would otherwise close the
// file before it can be fsynced.
type noCloseWriter struct{ io.Writer }

// writeParquetFile writes rows, already sorted, in row groups of
// rowGroupRows built by build, to a new file at path, and fsyncs it. On any
// error the file is removed: a half-written file never stays behind.
func writeParquetFile[T any](path string, schema *arrow.Schema, props *parquet.WriterProperties, rows []T, rowGroupRows int,
	build func([]T, *fileInfo) arrow.RecordBatch) (fileInfo, error) {
	info := fileInfo{rows: int64(len(rows)), minTS: math.MaxInt64, maxTS: math.MinInt64}
	err := createSynced(path, &info, func(w io.Writer) error {
		pw, err := pqarrow.NewFileWriter(schema, w, props, pqarrow.NewArrowWriterProperties(pqarrow.WithStoreSchema()))
		if err != nil {
			return fmt.Errorf("parquet writer %s: %w", path, err)
		}
		for start := 0; start < len(rows); start += rowGroupRows {
			rec := build(rows[start:min(start+rowGroupRows, len(rows))], &info)
			err := pw.Write(rec)
			rec.Release()
			if err != nil {
				pw.Close()
				return fmt.Errorf("write parquet %s: %w", path, err)
			}
		}
		if err := pw.Close(); err != nil {
			return fmt.Errorf("close parquet %s: %w", path, err)
		}
		return nil
	})
	return info, err
}

// createSynced creates path (it must not exist), lets write fill it through
// a buffer, then fsyncs and closes it and records its size in info. On any
// error the file is removed: a half-written file never stays behind.
func createSynced(path string, info *fileInfo, write func(io.Writer) error) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	fail := func(err error) error {
		f.Close()
		os.Remove(path)
		return err
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	if err := write(noCloseWriter{bw}); err != nil {
		return fail(err)
	}
	if err := bw.Flush(); err != nil {
		return fail(fmt.Errorf("write %s: %w", path, err))
	}
	if err := f.Sync(); err != nil {
		return fail(fmt.Errorf("sync %s: %w", path, err))
	}
	if fi, err := f.Stat(); err == nil {
		info.bytes = fi.Size()
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return fmt.Errorf("close %s: %w", path, err)
	}
	return nil
}
