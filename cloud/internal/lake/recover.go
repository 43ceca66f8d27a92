package lake

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	lakefmt "github.com/updraft-io/updraft/schemas/lake"
)

// recover rolls the lake forward to its last commit. For every manifest,
// data files still under their temporary names are renamed; then every
// temporary file left is removed, since no manifest names it; finally the
// ledger and totals are rebuilt from the manifests.
func (w *Writer) recover() error {
	commits := filepath.Join(w.dir, lakefmt.CommitsDir)
	for _, d := range []string{commits, filepath.Join(w.dir, lakefmt.RawDir), filepath.Join(w.dir, AggDir), filepath.Join(w.dir, lakefmt.RejectedDir)} {
		if err := mkdirDurable(w.dir, d); err != nil {
			return err
		}
	}
	entries, err := os.ReadDir(commits)
	if err != nil {
		return fmt.Errorf("list %s: %w", commits, err)
	}
	var seqs []uint64
	removed := false
	for _, e := range entries {
		name := e.Name()
		if seq, ok := lakefmt.ParseManifestName(name); ok && e.Type().IsRegular() {
			seqs = append(seqs, seq)
			continue
		}
		if isTemp(name) {
			// A manifest that never became durable: its flush did not commit.
			if err := os.Remove(filepath.Join(commits, name)); err != nil {
				return fmt.Errorf("remove uncommitted manifest: %w", err)
			}
			removed = true
			continue
		}
		w.log.Warn("ignoring unexpected file in commit log", "file", filepath.Join(commits, name))
	}
	if removed {
		if err := syncDir(commits); err != nil {
			return err
		}
	}
	slices.Sort(seqs)
	renamedIn := map[string]bool{}
	for _, seq := range seqs {
		if err := w.replay(commits, seq, renamedIn); err != nil {
			return err
		}
		w.nextSeq = seq + 1
	}
	for d := range renamedIn {
		if err := syncDir(d); err != nil {
			return err
		}
	}
	orphans, err := w.removeTemps(filepath.Join(w.dir, lakefmt.RawDir))
	if err != nil {
		return err
	}
	aggOrphans, err := w.removeTemps(filepath.Join(w.dir, AggDir))
	if err != nil {
		return err
	}
	rejected, err := w.removeTemps(filepath.Join(w.dir, lakefmt.RejectedDir))
	if err != nil {
		return err
	}
	orphans += aggOrphans
	w.log.Info("lake recovered",
		"dir", w.dir, "commits", w.totals.Commits, "rows", w.totals.Rows, "batches", w.totals.Batches,
		"files", w.totals.Files, "rolled_forward", len(renamedIn) > 0, "orphans_removed", orphans+rejected,
		"ledger_ranges", w.ledger.Ranges())
	return nil
}

// replay applies one manifest: finishes its renames and loads its batches.
func (w *Writer) replay(commits string, seq uint64, renamedIn map[string]bool) error {
	name := filepath.Join(commits, lakefmt.ManifestName(seq))
	data, err := os.ReadFile(name)
	if err != nil {
		return fmt.Errorf("read manifest: %w", err)
	}
	m, err := parseManifest(data)
	if err != nil {
		// Manifests appear atomically, so a bad one is damage from outside;
		// guessing could lose or duplicate data, so a person must look.
		return fmt.Errorf("manifest %s is damaged (%w); move it aside only after checking the files it names", name, err)
	}
	if m.Seq != seq {
		return fmt.Errorf("manifest %s holds sequence %d", name, m.Seq)
	}
	for _, f := range m.allFiles() {
		final := filepath.Join(w.dir, filepath.FromSlash(f.Path))
		if _, err := os.Stat(final); err == nil {
			continue
		} else if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("check %s: %w", final, err)
		}
		temp := lakefmt.TempName(final)
		if err := os.Rename(temp, final); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				w.totals.MissingFiles++
				w.log.Error("committed data file is missing; its rows are lost from the lake",
					"err", ErrMissingFile, "file", final, "manifest", name, "rows", f.Rows)
				continue
			}
			return fmt.Errorf("roll forward %s: %w", final, err)
		}
		renamedIn[filepath.Dir(final)] = true
		w.log.Info("rolled forward committed file", "file", final, "manifest", name)
	}
	for _, s := range m.Batches {
		id, err := ParseMsgID(s)
		if err != nil {
			return fmt.Errorf("manifest %s: %w", name, err)
		}
		w.ledger.Add(id)
	}
	w.totals.Commits++
	w.totals.Rows += m.Rows + m.AggRows
	w.totals.Batches += int64(len(m.Batches))
	w.totals.Files += int64(len(m.Files) + len(m.AggFiles))
	if m.CommittedAt.After(w.totals.LastCommit) {
		w.totals.LastCommit = m.CommittedAt
	}
	return nil
}

// removeTemps deletes every temporary file under root and reports how many.
func (w *Writer) removeTemps(root string) (int, error) {
	n := 0
	dirs := map[string]bool{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() && isTemp(d.Name()) {
			if err := os.Remove(p); err != nil {
				return err
			}
			w.log.Info("removed uncommitted file", "file", p)
			dirs[filepath.Dir(p)] = true
			n++
		}
		return nil
	})
	if err != nil {
		return n, fmt.Errorf("remove uncommitted files under %s: %w", root, err)
	}
	for d := range dirs {
		if err := syncDir(d); err != nil {
			return n, err
		}
	}
	return n, nil
}

func isTemp(base string) bool {
	_, ok := lakefmt.FinalName(base)
	return ok
}
