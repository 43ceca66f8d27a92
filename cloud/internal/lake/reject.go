package lake

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"time"

	lakefmt "github.com/updraft-io/updraft/schemas/lake"
)

// Rejected is a message that could not be decoded, kept so nothing that
// reached the region is silently lost.
type Rejected struct {
	Stream     string              `json:"stream"`
	StreamSeq  uint64              `json:"stream_seq"`
	Subject    string              `json:"subject"`
	Header     map[string][]string `json:"headers"`
	Reason     string              `json:"reason"`
	Error      string              `json:"error"`
	ReceivedAt time.Time           `json:"received_at"`
	BodyFile   string              `json:"body_file"`
	BodyBytes  int                 `json:"body_bytes"`
	Body       []byte              `json:"-"`
}

// Reject stores r under _rejected/ as <stream>-<seq>.bin (the body exactly
// as received) and <stream>-<seq>.json (everything else), both durable when
// it returns. Naming by stream sequence makes a redelivered reject overwrite
// its earlier copy instead of adding another. It returns the .json path.
func (w *Writer) Reject(r Rejected) (string, error) {
	if w.lock == nil {
		return "", ErrClosed
	}
	base := fmt.Sprintf("%s-%020d", r.Stream, r.StreamSeq)
	if r.Stream == "" {
		base = fmt.Sprintf("unknown-%d", r.ReceivedAt.UnixNano())
	}
	dir := filepath.Join(w.dir, lakefmt.RejectedDir)
	r.BodyFile, r.BodyBytes = base+".bin", len(r.Body)
	if err := writeFileAtomic(filepath.Join(dir, r.BodyFile), r.Body); err != nil {
		return "", fmt.Errorf("quarantine message %s: %w", base, err)
	}
	meta, err := json.MarshalIndent(&r, "", "  ")
	if err != nil {
		return "", fmt.Errorf("quarantine message %s: %w", base, err)
	}
	path := filepath.Join(dir, base+".json")
	if err := writeFileAtomic(path, meta); err != nil {
		return "", fmt.Errorf("quarantine message %s: %w", base, err)
	}
	return path, nil
}
