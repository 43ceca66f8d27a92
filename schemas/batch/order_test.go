package batch_test

import (
	"cmp"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/updraft-io/updraft/schemas/batch"
)

func TestSeriesOrder(t *testing.T) {
	for _, tt := range []struct {
		name       string
		n          int
		nDev, nMet int
		bySeries   bool
	}{
		{"few series", 5000, 50, 4, true},
		{"one row", 1, 1, 1, true},
		{"more series than a table of counts allows", 2000, 500, 500, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(3, 4))
			dev, met, ts := make([]int32, tt.n), make([]int32, tt.n), make([]int64, tt.n)
			for i := range tt.n {
				dev[i], met[i] = rng.Int32N(int32(tt.nDev)), rng.Int32N(int32(tt.nMet))
				ts[i] = int64(i)
				if i%10 == 0 {
					ts[i] = rng.Int64N(int64(tt.n)) // some out of time order
				}
				ts[i] /= 3 // and some equal
			}
			less := func(a, b int32) int { return cmp.Compare(ts[a], ts[b]) }
			perm, ends, bySeries := batch.SeriesOrder(make([]int32, 3), nil, dev, met, tt.nDev, tt.nMet, less)
			if bySeries != tt.bySeries {
				t.Fatalf("bySeries %v, want %v", bySeries, tt.bySeries)
			}
			want := make([]int32, tt.n)
			for i := range want {
				want[i] = int32(i)
			}
			slices.SortStableFunc(want, func(a, b int32) int {
				return cmp.Or(cmp.Compare(dev[a], dev[b]), cmp.Compare(met[a], met[b]), less(a, b))
			})
			if !slices.Equal(perm, want) {
				t.Fatal("order differs from a stable sort by device, metric and time")
			}
			if !bySeries {
				return
			}
			for s, end := range ends[:tt.nDev*tt.nMet] {
				start := int32(0)
				if s > 0 {
					start = ends[s-1]
				}
				for _, i := range perm[start:end] {
					if int(dev[i])*tt.nMet+int(met[i]) != s {
						t.Fatalf("row %d of series %d lies within series %d's end", i, int(dev[i])*tt.nMet+int(met[i]), s)
					}
				}
			}
			if got := ends[tt.nDev*tt.nMet-1]; got != int32(tt.n) {
				t.Fatalf("last series ends at %d, want %d", got, tt.n)
			}
		})
	}
}

func TestInterner(t *testing.T) {
	var n batch.Interner
	for _, s := range []string{"b", "c", "a", "b", "c"} {
		n.ID(s)
	}
	if !slices.Equal(n.Words, []string{"b", "c", "a"}) {
		t.Fatalf("words %q", n.Words)
	}
	order, rank := n.Ranks(nil)
	if !slices.Equal(order, []int32{2, 0, 1}) || !slices.Equal(rank, []int32{1, 2, 0}) {
		t.Fatalf("order %v rank %v", order, rank)
	}
	n.Reset()
	if n.ID("z") != 0 || len(n.Words) != 1 {
		t.Fatal("Reset kept the old strings")
	}
}
