// Package lake writes decoded reading batches to the Updraft Parquet lake
// exactly once. A Writer is the single writer of one lake directory: it
// buffers batches, flushes them as one Parquet file per partition, and
// commits each flush with one manifest under _commits/. The manifest is the
// commit point: on Open, recovery rolls every committed flush forward and
// discards everything else, and the set of committed batch IDs is rebuilt
// from the manifests so redelivered batches are recognised and skipped.
//
// The commit protocol and the layout are described in docs/lake.md; the
// layout itself is the contract in schemas/lake.
package lake
