package lake

import (
	"encoding/json"
	"fmt"
	"path"
	"strings"
	"time"
)

// ManifestVersion is the version of the Manifest format below.
const ManifestVersion = 1

// Manifest is the commit record of one flush, stored as
// <lake>/_commits/<seq>.json. Once it exists, every file it lists is
// committed, whether or not the file has been renamed from its temporary
// name yet, and every batch it lists is in those files.
type Manifest struct {
	Version     int            `json:"version"`
	Seq         uint64         `json:"seq"`
	CommittedAt time.Time      `json:"committed_at"`
	Rows        int64          `json:"rows"`
	Files       []ManifestFile `json:"files"`
	// Batches are the batch.ID.MsgID() of every batch in the files.
	Batches []string `json:"batches"`
}

// ManifestFile is one data file of a commit.
type ManifestFile struct {
	// Path is the final path relative to the lake root, slash separated.
	Path  string `json:"path"`
	Rows  int64  `json:"rows"`
	MinTS int64  `json:"min_ts"`
	MaxTS int64  `json:"max_ts"`
}

// ParseManifest decodes and checks a manifest. A manifest names files the
// writer will rename, so paths must stay inside the lake's raw folder.
func ParseManifest(data []byte) (*Manifest, error) {
	var m Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("parse manifest: %w", err)
	}
	if m.Version != ManifestVersion {
		return nil, fmt.Errorf("parse manifest: version %d, this build reads version %d", m.Version, ManifestVersion)
	}
	var rows int64
	for _, f := range m.Files {
		clean := path.Clean(f.Path)
		if clean != f.Path || !strings.HasPrefix(clean, RawDir+"/") || !IsDataFile(path.Base(clean)) {
			return nil, fmt.Errorf("parse manifest %d: file %q is not a data file under %s/", m.Seq, f.Path, RawDir)
		}
		if _, err := ParsePartition(path.Dir(clean)); err != nil {
			return nil, fmt.Errorf("parse manifest %d: %w", m.Seq, err)
		}
		if f.Rows <= 0 || f.MinTS > f.MaxTS {
			return nil, fmt.Errorf("parse manifest %d: file %q: rows %d, ts [%d,%d]", m.Seq, f.Path, f.Rows, f.MinTS, f.MaxTS)
		}
		rows += f.Rows
	}
	if rows != m.Rows {
		return nil, fmt.Errorf("parse manifest %d: files hold %d rows, manifest says %d", m.Seq, rows, m.Rows)
	}
	return &m, nil
}
