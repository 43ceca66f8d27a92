package query

import (
	"mime"
	"net/http"
	"strconv"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// ArrowStreamType is the media type of an Arrow IPC stream.
const ArrowStreamType = "application/vnd.apache.arrow.stream"

// PointSchema is the Arrow schema of query results.
var PointSchema = arrow.NewSchema([]arrow.Field{
	{Name: "ts", Type: &arrow.TimestampType{Unit: arrow.Nanosecond, TimeZone: "UTC"}},
	{Name: "value", Type: arrow.PrimitiveTypes.Float64},
	{Name: "unit", Type: arrow.BinaryTypes.String, Nullable: true},
	{Name: "region", Type: arrow.BinaryTypes.String},
	{Name: "site", Type: arrow.BinaryTypes.String},
	{Name: "edge", Type: arrow.BinaryTypes.String},
	{Name: "device", Type: arrow.BinaryTypes.String},
	{Name: "metric", Type: arrow.BinaryTypes.String},
}, nil)

func wantsArrow(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept"), ",") {
		if mt, _, err := mime.ParseMediaType(strings.TrimSpace(part)); err == nil && mt == ArrowStreamType {
			return true
		}
	}
	return false
}

// writeArrow answers with the points as one Arrow IPC stream; what the
// query read goes in headers, since the stream holds only rows.
func writeArrow(w http.ResponseWriter, res *Result) error {
	h := w.Header()
	h.Set("Content-Type", ArrowStreamType)
	h.Set("Updraft-Files-Read", strconv.Itoa(res.FilesRead))
	h.Set("Updraft-Row-Groups-Read", strconv.Itoa(res.RowGroupsRead))
	h.Set("Updraft-Rows-Scanned", strconv.FormatInt(res.RowsScanned, 10))
	h.Set("Updraft-Truncated", strconv.FormatBool(res.Truncated))
	b := array.NewRecordBuilder(memory.DefaultAllocator, PointSchema)
	defer b.Release()
	b.Reserve(len(res.Points))
	ts := b.Field(0).(*array.TimestampBuilder)
	val := b.Field(1).(*array.Float64Builder)
	unit := b.Field(2).(*array.StringBuilder)
	strs := []*array.StringBuilder{b.Field(3).(*array.StringBuilder), b.Field(4).(*array.StringBuilder),
		b.Field(5).(*array.StringBuilder), b.Field(6).(*array.StringBuilder), b.Field(7).(*array.StringBuilder)}
	for _, p := range res.Points {
		ts.Append(arrow.Timestamp(p.TS.UnixNano()))
		val.Append(p.Value)
		if p.Unit == "" {
			unit.AppendNull()
		} else {
			unit.Append(p.Unit)
		}
		for i, s := range []string{p.Region, p.Site, p.Edge, p.Device, p.Metric} {
			strs[i].Append(s)
		}
	}
	rec := b.NewRecordBatch()
	defer rec.Release()
	w.WriteHeader(http.StatusOK)
	iw := ipc.NewWriter(w, ipc.WithSchema(PointSchema))
	if err := iw.Write(rec); err != nil {
		iw.Close()
		return err
	}
	return iw.Close()
}
