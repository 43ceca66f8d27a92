package stack

import (
	"strings"
	"testing"
)

func TestSumSeries(t *testing.T) {
	exposition := []byte(`# HELP updraft_edge_alerts_total Alerts raised and resolved.
# TYPE updraft_edge_alerts_total counter
updraft_edge_alerts_total{rule="hot",state="firing"} 3
updraft_edge_alerts_total{rule="hot",state="resolved"} 2.5
updraft_edge_alerts_total_other 100
updraft_edge_alerts 7
`)
	got, err := SumSeries(exposition, "updraft_edge_alerts_total")
	if err != nil || got != 5.5 {
		t.Fatalf("SumSeries = %v, %v; want 5.5", got, err)
	}
	got, err = SumSeries(exposition, "updraft_edge_alerts")
	if err != nil || got != 7 {
		t.Fatalf("unlabelled series: SumSeries = %v, %v; want 7", got, err)
	}
	if _, err := SumSeries([]byte("updraft_edge_alerts_total{a=\"b\"} x\n"), "updraft_edge_alerts_total"); err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Fatalf("a sample that is not a number: err = %v, want one naming its line", err)
	}
	hist := []byte("# TYPE updraft_edge_commit_seconds histogram\nupdraft_edge_commit_seconds_bucket{le=\"+Inf\"} 1\nupdraft_edge_commit_seconds_sum 0.1\nupdraft_edge_commit_seconds_count 1\n")
	if _, err := SumSeries(hist, "updraft_edge_commit_seconds"); err == nil || !strings.Contains(err.Error(), "HISTOGRAM") {
		t.Fatalf("a histogram: err = %v, want one saying it is not a counter or gauge", err)
	}
	if got, err := SumSeries(exposition, "updraft_edge_missing_total"); err != nil || got != 0 {
		t.Fatalf("a metric the exposition lacks: SumSeries = %v, %v; want 0", got, err)
	}
}
