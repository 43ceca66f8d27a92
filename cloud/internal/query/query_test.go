package query

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/updraft-io/updraft/cloud/internal/lake"
	"github.com/updraft-io/updraft/schemas"
	"github.com/updraft-io/updraft/schemas/batch"
)

// start is 21:00 UTC: the test data runs six hours, across midnight.
var start = time.Date(2025, 6, 30, 21, 0, 0, 0, time.UTC)

const (
	span    = 6 * time.Hour
	step    = 10 * time.Second
	devices = 5
)

// value identifies a reading by its edge, device, metric and time.
func value(edge, dev, metric int, ts time.Time) float64 {
	return float64(edge*1e12+dev*1e10+metric*1e8) + float64(ts.Sub(start)/time.Second)
}

// buildLake writes six hours of readings of two edges, five devices and two
// metrics every 10s, one flush per hour so each hour partition holds one file.
func buildLake(t testing.TB) string {
	t.Helper()
	c := lake.DefaultConfig()
	c.Dir = t.TempDir()
	c.RowGroupRows = lake.MinRowGroupRows
	w, err := lake.Open(c, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	seq := uint64(0)
	for h := start; h.Before(start.Add(span)); h = h.Add(time.Hour) {
		for e := 1; e <= 2; e++ {
			edge := schemas.EdgeID{Region: "local", Site: "lab", Edge: fmt.Sprintf("edge-%d", e)}
			seq++
			b := &batch.Batch{ID: batch.ID{Edge: edge, Epoch: 1, Seq: seq}, Kind: schemas.KindRaw}
			for ts := h; ts.Before(h.Add(time.Hour)); ts = ts.Add(step) {
				for d := range devices {
					for m, metric := range []string{"temp", "rh"} {
						r := schemas.Reading{Region: "local", Site: "lab", Edge: edge.Edge, Device: fmt.Sprintf("dev-%d", d),
							Metric: metric, TS: ts.UnixNano(), Value: value(e, d, m, ts)}
						if m == 0 {
							r.Unit = "C"
						}
						b.Readings = append(b.Readings, r)
					}
				}
			}
			w.Add(b, time.Now())
		}
		if _, err := w.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	return c.Dir
}

func TestQuery(t *testing.T) {
	e := New(buildLake(t))
	perHour := int64(2 * devices * 2 * int(time.Hour/step))
	tests := []struct {
		name                   string
		req                    Request
		points                 int
		files, maxGroups       int
		maxRows                int64
		first                  time.Time
		truncated, checkValues bool
	}{
		{
			name:   "ten minutes of one series",
			req:    Request{Device: "dev-3", Metric: "rh", From: start.Add(90 * time.Minute), To: start.Add(100 * time.Minute)},
			points: 2 * 60, files: 1, maxGroups: 2, maxRows: 2 * lake.MinRowGroupRows,
			first: start.Add(90 * time.Minute), checkValues: true,
		},
		{
			name:   "across midnight, one edge",
			req:    Request{Device: "dev-0", Metric: "temp", Site: "lab", From: start.Add(170 * time.Minute), To: start.Add(190 * time.Minute)},
			points: 2 * 120, files: 2, maxGroups: 4, maxRows: 4 * lake.MinRowGroupRows,
			first: start.Add(170 * time.Minute), checkValues: true,
		},
		{
			name:   "everything, no filters",
			req:    Request{From: start.Add(-time.Hour), To: start.Add(span + time.Hour), Limit: MaxLimit},
			points: int(6 * perHour), files: 6, maxGroups: 1000, maxRows: 6 * perHour, first: start,
		},
		{
			name:   "limit keeps the earliest",
			req:    Request{Device: "dev-1", From: start, To: start.Add(span), Limit: 7},
			points: 7, files: 1, maxGroups: 3, maxRows: 3 * lake.MinRowGroupRows, first: start, truncated: true,
		},
		{
			name:  "device not present",
			req:   Request{Device: "dev-99", From: start, To: start.Add(span)},
			files: 6, maxGroups: 0,
		},
		{
			name: "other region",
			req:  Request{Region: "eu", From: start, To: start.Add(span)},
		},
		{
			name: "before the data",
			req:  Request{From: start.Add(-48 * time.Hour), To: start},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := e.Query(context.Background(), tt.req)
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Points) != tt.points || res.Truncated != tt.truncated {
				t.Fatalf("%d points (truncated %v), want %d (%v)", len(res.Points), res.Truncated, tt.points, tt.truncated)
			}
			if res.FilesRead != tt.files || res.RowGroupsRead > tt.maxGroups || res.RowsScanned > tt.maxRows {
				t.Errorf("read %d files, %d row groups, %d rows; want %d files, at most %d groups and %d rows",
					res.FilesRead, res.RowGroupsRead, res.RowsScanned, tt.files, tt.maxGroups, tt.maxRows)
			}
			if tt.points > 0 && !res.Points[0].TS.Equal(tt.first) {
				t.Errorf("first point at %s, want %s", res.Points[0].TS, tt.first)
			}
			for i, p := range res.Points {
				if i > 0 && p.TS.Before(res.Points[i-1].TS) {
					t.Fatalf("points out of time order at %d", i)
				}
				if p.TS.Before(tt.req.From) || !p.TS.Before(tt.req.To) ||
					(tt.req.Device != "" && p.Device != tt.req.Device) || (tt.req.Metric != "" && p.Metric != tt.req.Metric) {
					t.Fatalf("point %+v does not match the request", p)
				}
				if tt.checkValues {
					var e, d, m int
					fmt.Sscanf(p.Edge, "edge-%d", &e)
					fmt.Sscanf(p.Device, "dev-%d", &d)
					if p.Metric == "rh" {
						m = 1
					}
					if want := value(e, d, m, p.TS); p.Value != want || (m == 0) != (p.Unit == "C") {
						t.Fatalf("point %+v: want value %v and unit only for temp", p, want)
					}
				}
			}
		})
	}
}

func TestHandler(t *testing.T) {
	srv := httptest.NewServer(New(buildLake(t)).Handler(nil))
	defer srv.Close()
	get := func(q string) (int, map[string]any) {
		t.Helper()
		resp, err := http.Get(srv.URL + "/?" + q)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, body
	}

	from := start.Add(30 * time.Minute)
	code, body := get(url.Values{"device": {"dev-2"}, "metric": {"temp"}, "from": {from.Format(time.RFC3339)},
		"to": {fmt.Sprint(from.Add(time.Minute).UnixNano())}}.Encode())
	if code != 200 {
		t.Fatalf("status %d: %v", code, body)
	}
	points := body["points"].([]any)
	if len(points) != 12 || body["files_read"].(float64) != 1 || body["rows_scanned"].(float64) == 0 {
		t.Fatalf("body = %v", body)
	}
	p := points[0].(map[string]any)
	if p["ts"] != "2025-06-30T21:30:00Z" || p["unit"] != "C" || p["device"] != "dev-2" || p["metric"] != "temp" || p["value"] == nil {
		t.Errorf("first point = %v", p)
	}

	for _, tt := range []struct{ query, param string }{
		{"from=yesterday", "from"},
		{"to=2025-13-01T00:00:00Z", "to"},
		{"from=2025-07-01T00:00:00Z&to=2025-06-30T00:00:00Z", "from"},
		{"device=a.b", "device"},
		{"metric=" + url.QueryEscape("t*"), "metric"},
		{"site=" + url.QueryEscape("a b"), "site"},
		{"limit=0", "limit"},
		{"limit=many", "limit"},
		{"devcie=x", "devcie"},
		{"device=a&device=b", "device"},
	} {
		code, body := get(tt.query)
		msg, _ := body["error"].(string)
		if code != http.StatusBadRequest || body["param"] != tt.param || !strings.Contains(msg, tt.param) {
			t.Errorf("%s: %d %v, want 400 naming %s", tt.query, code, body, tt.param)
		}
	}
}

func TestParseRequestDefaults(t *testing.T) {
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	req, err := ParseRequest(url.Values{}, now)
	if err != nil {
		t.Fatal(err)
	}
	if !req.To.Equal(now) || !req.From.Equal(now.Add(-time.Hour)) || req.Limit != DefaultLimit {
		t.Errorf("defaults = %+v", req)
	}
	req, err = ParseRequest(url.Values{"to": {"2025-01-01T00:00:00.5+01:00"}}, now)
	if err != nil || !req.To.Equal(time.Date(2024, 12, 31, 23, 0, 0, 5e8, time.UTC)) || !req.From.Equal(req.To.Add(-time.Hour)) {
		t.Errorf("to with zone = %+v, %v", req, err)
	}
}

func FuzzParseRequest(f *testing.F) {
	for _, s := range []string{
		"", "device=d&metric=m", "from=2025-01-01T00:00:00Z&to=1735689600000000000", "limit=5", "from=-1",
		"to=9223372036854775807", "site=%00", "device=" + strings.Repeat("x", 200),
	} {
		f.Add(s)
	}
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	f.Fuzz(func(t *testing.T, q string) {
		v, err := url.ParseQuery(q)
		if err != nil {
			return
		}
		req, err := ParseRequest(v, now)
		if err != nil {
			if _, ok := err.(*ParamError); !ok {
				t.Fatalf("error %T is not a *ParamError", err)
			}
			return
		}
		if !req.From.Before(req.To) || req.Limit < 1 || req.Limit > MaxLimit {
			t.Fatalf("accepted an invalid request %+v", req)
		}
	})
}
