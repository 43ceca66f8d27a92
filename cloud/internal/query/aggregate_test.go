package query

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
)

func TestStepAggregate(t *testing.T) {
	e := New(buildLake(t))
	from := start.Add(30 * time.Minute)
	base := Request{Device: "dev-1", Metric: "temp", Site: "lab", From: from, To: from.Add(10 * time.Minute), Step: time.Minute}
	// edge-1, dev-1, temp: one reading every 10s, value = offset from start in seconds + a constant.
	c := value(1, 1, 0, start)
	for _, tc := range []struct {
		agg  string
		want func(minute int) float64
	}{
		{"avg", func(m int) float64 { return c + float64(30*60+m*60) + 25 }},
		{"min", func(m int) float64 { return c + float64(30*60+m*60) }},
		{"max", func(m int) float64 { return c + float64(30*60+m*60) + 50 }},
		{"last", func(m int) float64 { return c + float64(30*60+m*60) + 50 }},
		{"count", func(int) float64 { return 6 }},
	} {
		req := base
		req.Aggregate = tc.agg
		res, err := e.Query(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		// Two edges, 10 one-minute steps.
		if len(res.Points) != 20 {
			t.Fatalf("%s: %d points, want 20", tc.agg, len(res.Points))
		}
		for _, p := range res.Points {
			if p.Edge != "edge-1" {
				continue
			}
			m := int(p.TS.Sub(from) / time.Minute)
			if p.TS != from.Add(time.Duration(m)*time.Minute) || p.Value != tc.want(m) {
				t.Errorf("%s: point %+v, want value %v at minute %d", tc.agg, p, tc.want(m), m)
			}
			if (tc.agg == "count") != (p.Unit == "") {
				t.Errorf("%s: unit %q", tc.agg, p.Unit)
			}
		}
	}
}

func TestHandlerArrowAndSeries(t *testing.T) {
	e := New(buildLake(t))
	mux := http.NewServeMux()
	mux.Handle("GET /api/v1/query", e.Handler(nil))
	mux.Handle("GET /api/v1/series", e.SeriesHandler(nil))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	from, to := start.Format(time.RFC3339), start.Add(time.Hour).Format(time.RFC3339)

	req, _ := http.NewRequest("GET", srv.URL+"/api/v1/query?device=dev-2&metric=rh&from="+from+"&to="+to+"&step=10m&aggregate=count", nil)
	req.Header.Set("Accept", "application/json, "+ArrowStreamType)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != ArrowStreamType || resp.Header.Get("Updraft-Files-Read") == "" {
		t.Fatalf("arrow response: %d %v", resp.StatusCode, resp.Header)
	}
	rd, err := ipc.NewReader(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Release()
	rows := 0
	for rd.Next() {
		rec := rd.RecordBatch()
		if !rec.Schema().Equal(PointSchema) {
			t.Fatalf("schema %s", rec.Schema())
		}
		vals := rec.Column(1).(*array.Float64)
		for i := 0; i < int(rec.NumRows()); i++ {
			if vals.Value(i) != 60 || !rec.Column(2).IsNull(i) {
				t.Errorf("row %d: count %v", i, vals.Value(i))
			}
		}
		rows += int(rec.NumRows())
	}
	if rows != 2*6 { // two edges, six 10-minute steps
		t.Errorf("arrow rows = %d, want 12", rows)
	}

	get := func(path string) (int, map[string]any) {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body map[string]any
		json.NewDecoder(resp.Body).Decode(&body)
		return resp.StatusCode, body
	}
	code, body := get("/api/v1/series?site=lab&from=" + from + "&to=" + to)
	series, _ := body["series"].([]any)
	if code != 200 || len(series) != 2*devices*2 {
		t.Fatalf("series: %d, %d series, want %d", code, len(series), 2*devices*2)
	}
	first := series[0].(map[string]any)
	if first["device"] != "dev-0" || first["metric"] != "rh" || first["points"].(float64) != 360 || first["unit"] != nil {
		t.Errorf("first series = %v", first)
	}
	for path, param := range map[string]string{
		"/api/v1/query?step=fast":                "step",
		"/api/v1/query?step=1m&aggregate=median": "aggregate",
		"/api/v1/query?aggregate=max":            "aggregate",
		"/api/v1/query?step=1ms&from=0&to=9e18":  "to",
		"/api/v1/query?step=1ns":                 "step",
		"/api/v1/series?limit=5":                 "limit",
		"/api/v1/series?device=a*":               "device",
	} {
		code, body := get(path)
		if code != 400 || body["param"] != param || !strings.Contains(body["error"].(string), param) {
			t.Errorf("%s: %d %v, want 400 naming %s", path, code, body, param)
		}
	}
}
