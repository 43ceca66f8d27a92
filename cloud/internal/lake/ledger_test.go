package lake

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/updraft-io/updraft/schemas"
	"github.com/updraft-io/updraft/schemas/batch"
)

func TestLedger(t *testing.T) {
	tests := []struct {
		name   string
		add    []uint64
		ranges int
	}{
		{"in order", []uint64{1, 2, 3, 4}, 1},
		{"gap then fill", []uint64{1, 3, 2}, 1},
		{"reverse", []uint64{5, 4, 3}, 1},
		{"holes", []uint64{1, 3, 5}, 3},
		{"duplicates", []uint64{7, 7, 7}, 1},
		{"extremes", []uint64{0, math.MaxUint64, math.MaxUint64 - 1, 1}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := NewLedger()
			for _, s := range tt.add {
				l.Add(batch.ID{Edge: edge1, Epoch: 1, Seq: s})
			}
			for _, s := range tt.add {
				if !l.Contains(batch.ID{Edge: edge1, Epoch: 1, Seq: s}) {
					t.Errorf("missing %d", s)
				}
				if l.Contains(batch.ID{Edge: edge1, Epoch: 2, Seq: s}) {
					t.Errorf("other epoch contains %d", s)
				}
			}
			if l.Ranges() != tt.ranges {
				t.Errorf("ranges = %d, want %d", l.Ranges(), tt.ranges)
			}
		})
	}
}

// TestLedgerMatchesASet checks the range set against a plain map under
// random inserts.
func TestLedgerMatchesASet(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	l, set := NewLedger(), map[uint64]bool{}
	for range 5000 {
		s := rng.Uint64N(2000)
		l.Add(batch.ID{Edge: edge1, Epoch: 9, Seq: s})
		set[s] = true
	}
	for s := uint64(0); s < 2100; s++ {
		if got := l.Contains(batch.ID{Edge: edge1, Epoch: 9, Seq: s}); got != set[s] {
			t.Fatalf("Contains(%d) = %v, want %v", s, got, set[s])
		}
	}
	rs := l.epochs[epochKey{edge1, 9}]
	for i := 1; i < len(rs); i++ {
		if rs[i-1].hi+1 >= rs[i].lo {
			t.Fatalf("ranges %v and %v should have merged", rs[i-1], rs[i])
		}
	}
}

func TestParseMsgID(t *testing.T) {
	for _, id := range []batch.ID{
		{Edge: edge1, Epoch: 0xdeadbeef, Seq: 17},
		{Edge: schemas.EdgeID{Region: "r", Site: "s:1", Edge: "e:2"}, Epoch: 0, Seq: math.MaxUint64},
	} {
		got, err := ParseMsgID(id.MsgID())
		if err != nil || got != id {
			t.Errorf("ParseMsgID(%s) = %+v, %v", id.MsgID(), got, err)
		}
	}
	for _, bad := range []string{"", "a.b.c", "a.b.c:1", "a.b:1:1", "a.b.c:g:1", "a.b.c:1:x", "a.b.c:01:1", "a.b.c:1:01"} {
		if _, err := ParseMsgID(bad); err == nil {
			t.Errorf("ParseMsgID(%q) accepted", bad)
		}
	}
}

// FuzzParseMsgID: batch IDs are read back from manifests on disk.
func FuzzParseMsgID(f *testing.F) {
	for _, s := range []string{"local.lab.edge-1:abc:1", "a.b.c:0:0", "a.b:c:d:1:2", "::", "a.b.c:ffffffffffffffff:18446744073709551615"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseMsgID(s)
		if err != nil {
			return
		}
		if id.MsgID() != s || strings.Count(s, ":") < 2 {
			t.Fatalf("ParseMsgID(%q) = %+v, which renders as %q", s, id, id.MsgID())
		}
	})
}
