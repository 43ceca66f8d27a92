package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/updraft-io/updraft/tools/internal/stack"
	"github.com/updraft-io/updraft/tools/internal/verify"
)

// TestStoreForwardLimits runs the agent with a tiny buffer.max_bytes while
// the uplink is cut: under block nothing is lost (the broker holds what the
// agent does not acknowledge); under drop_oldest the buffer stays bounded and
// every reading is either in the lake once or counted as dropped.
func TestStoreForwardLimits(t *testing.T) {
	for _, policy := range []string{"block", "drop_oldest"} {
		t.Run(policy, func(t *testing.T) {
			s, proxy := sfStack(t, sfOptions{proxy: true, editEdge: func(y string) string {
				y = strings.Replace(y, "  max_bytes: 1GiB\n", "  max_bytes: 64KiB\n", 1)
				y = strings.Replace(y, "  policy: block ", "  policy: "+policy+" ", 1)
				return strings.Replace(y, "  retry_max: 10s\n", "  retry_max: 1s\n", 1)
			}})
			proxy.Cut()
			stop := make(chan struct{})
			done := make(chan *sfWorkload)
			go func() { done <- sfPublish(t, s.MQTTURL(), 1_000_000, 500, stop) }()
			var st struct {
				Buffer struct {
					Bytes    int64            `json:"buffered_bytes"`
					Blocked  bool             `json:"blocked"`
					Dropped  map[string]int64 `json:"dropped"`
					Buffered int64            `json:"buffered_readings"`
				} `json:"buffer"`
			}
			status := func() {
				if err := stack.GetJSON(context.Background(), s.URL(stack.Edge)+"/api/v1/status", &st); err != nil {
					t.Fatal(err)
				}
			}
			waitFor(t, 30*time.Second, "the limit reached", func() (bool, string) {
				status()
				if policy == "block" {
					return st.Buffer.Blocked, fmt.Sprintf("%+v", st.Buffer)
				}
				return st.Buffer.Dropped["max_bytes"] > 0, fmt.Sprintf("%+v", st.Buffer)
			})
			// Keep publishing a little longer over the limit.
			<-time.After(2 * time.Second)
			status()
			if st.Buffer.Bytes > 2*(64<<10)+(256<<10) {
				t.Errorf("buffer holds %d bytes with max_bytes 64KiB", st.Buffer.Bytes)
			}
			close(stop)
			w := <-done
			proxy.Restore()
			ctx := context.Background()
			waitFor(t, 60*time.Second, "the buffer drained", func() (bool, string) {
				snap := s.Snapshot(ctx)
				status()
				dropped := st.Buffer.Dropped["max_bytes"]
				return snap.Buffered == 0 && int(snap.InLake)+int(dropped) >= len(w.acked), snap.Line()
			})
			rows, _, err := verify.ReadLake(s.LakeDir(), "raw")
			if err != nil {
				t.Fatal(err)
			}
			status()
			dropped := int(st.Buffer.Dropped["max_bytes"])
			rep := verify.Exact(rows, w.acked)
			t.Logf("%s: %d readings acknowledged by the broker, %d in the lake, %d dropped (max_bytes); %s",
				policy, len(w.acked), len(rows), dropped, rep)
			if rep.Duplicates != 0 || rep.Unexpected != 0 || rep.WrongValue != 0 {
				t.Fatalf("lake: %s", rep)
			}
			switch policy {
			case "block":
				if rep.Missing != 0 || dropped != 0 {
					t.Fatalf("block lost readings: %d missing, %d dropped", rep.Missing, dropped)
				}
			case "drop_oldest":
				if rep.Missing != dropped || dropped == 0 {
					t.Fatalf("drop_oldest: %d readings missing from the lake, %d counted as dropped", rep.Missing, dropped)
				}
			}
		})
	}
}
