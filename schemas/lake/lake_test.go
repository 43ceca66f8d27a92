package lake

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestPartition(t *testing.T) {
	ts := time.Date(2025, 3, 4, 5, 59, 59, 999_999_999, time.UTC)
	p := PartitionOf("local", ts.UnixNano())
	if got, want := p.Dir(), "raw/region=local/date=2025-03-04/hour=05"; got != want {
		t.Fatalf("Dir = %s, want %s", got, want)
	}
	if !p.Contains(ts.UnixNano()) || p.Contains(ts.UnixNano()+1) || p.Contains(p.Hour.UnixNano()-1) {
		t.Error("Contains is not the half-open hour")
	}
	back, err := ParsePartition(p.Dir())
	if err != nil || back != p {
		t.Fatalf("ParsePartition = %+v, %v; want %+v", back, err, p)
	}
	// Times before 1970 and in other zones still land in their UTC hour.
	old := PartitionOf("eu", time.Date(1969, 12, 31, 23, 30, 0, 0, time.UTC).UnixNano())
	if old.Dir() != "raw/region=eu/date=1969-12-31/hour=23" {
		t.Errorf("pre-epoch partition = %s", old.Dir())
	}
	for _, bad := range []string{"raw/region=a/date=2025-02-30/hour=01", "raw/region=a/date=2025-01-01/hour=24",
		"raw/region=a.b/date=2025-01-01/hour=01", "raw/date=2025-01-01/hour=01", "lake/region=a/date=2025-01-01/hour=01",
		"raw/region=a/date=2025-01-01/hour=1"} {
		if _, err := ParsePartition(bad); err == nil {
			t.Errorf("ParsePartition(%q) accepted", bad)
		}
	}
}

func TestOverlaps(t *testing.T) {
	p := PartitionOf("r", time.Date(2025, 1, 1, 10, 0, 0, 0, time.UTC).UnixNano())
	at := func(h, m int) time.Time { return time.Date(2025, 1, 1, h, m, 0, 0, time.UTC) }
	tests := []struct {
		from, to time.Time
		want     bool
	}{
		{at(9, 0), at(10, 0), false},
		{at(9, 0), at(10, 1), true},
		{at(10, 30), at(10, 31), true},
		{at(10, 59), at(12, 0), true},
		{at(11, 0), at(12, 0), false},
	}
	for _, tt := range tests {
		if got := p.Overlaps(tt.from, tt.to); got != tt.want {
			t.Errorf("Overlaps(%s, %s) = %v", tt.from.Format("15:04"), tt.to.Format("15:04"), got)
		}
	}
}

func TestNames(t *testing.T) {
	final := "raw/region=r/date=2025-01-01/hour=00/" + DataFileName(42, 0xbeef)
	if !strings.HasSuffix(final, "part-000000000042-0000beef.parquet") || !IsDataFile(DataFileName(1, 2)) {
		t.Fatalf("DataFileName = %s", final)
	}
	temp := TempName(final)
	if IsDataFile(temp[strings.LastIndexByte(temp, '/')+1:]) || strings.HasSuffix(temp, ".parquet") {
		t.Errorf("temporary name %s looks like data", temp)
	}
	if back, ok := FinalName(temp); !ok || back != final {
		t.Errorf("FinalName(%s) = %s, %v", temp, back, ok)
	}
	for _, n := range []string{"x.parquet", ".tmp", "..tmp", "x.tmp"} {
		if _, ok := FinalName(n); ok {
			t.Errorf("FinalName(%q) accepted", n)
		}
	}
	if seq, ok := ParseManifestName(ManifestName(7)); !ok || seq != 7 {
		t.Errorf("ParseManifestName = %d, %v", seq, ok)
	}
	if _, ok := ParseManifestName("7.json"); ok {
		t.Error("unpadded manifest name accepted")
	}
}

func validManifest() Manifest {
	return Manifest{Version: ManifestVersion, Seq: 3, CommittedAt: time.Unix(1, 0).UTC(), Rows: 10,
		Files:   []ManifestFile{{Path: "raw/region=r/date=2025-01-01/hour=00/" + DataFileName(3, 1), Rows: 10, MinTS: 1, MaxTS: 2}},
		Batches: []string{"r.s.e:1:1"}}
}

func TestParseManifest(t *testing.T) {
	tests := []struct {
		name string
		mut  func(*Manifest)
		ok   bool
	}{
		{"valid", func(*Manifest) {}, true},
		{"version", func(m *Manifest) { m.Version = 2 }, false},
		{"escape", func(m *Manifest) { m.Files[0].Path = "raw/../../etc/" + DataFileName(3, 1) }, false},
		{"not raw", func(m *Manifest) { m.Files[0].Path = "_commits/x.parquet" }, false},
		{"temp", func(m *Manifest) { m.Files[0].Path = TempName(m.Files[0].Path) }, false},
		{"rows", func(m *Manifest) { m.Rows = 11 }, false},
		{"range", func(m *Manifest) { m.Files[0].MinTS = 3 }, false},
	}
	for _, tt := range tests {
		m := validManifest()
		tt.mut(&m)
		data, _ := json.Marshal(m)
		if _, err := ParseManifest(data); (err == nil) != tt.ok {
			t.Errorf("%s: ParseManifest = %v", tt.name, err)
		}
	}
}

// FuzzParseManifest: manifests are read back from disk, where anything may
// have happened to them; a bad one must be an error, never a panic or a path
// outside raw/.
func FuzzParseManifest(f *testing.F) {
	data, _ := json.Marshal(validManifest())
	f.Add(data)
	f.Add([]byte(`{"version":1,"files":[{"path":"raw/region=a/date=2025-01-01/hour=00/../../../x.parquet","rows":1}],"rows":1}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := ParseManifest(data)
		if err != nil {
			return
		}
		for _, file := range m.Files {
			if !strings.HasPrefix(file.Path, RawDir+"/") || strings.Contains(file.Path, "..") {
				t.Fatalf("accepted path %q", file.Path)
			}
		}
	})
}
