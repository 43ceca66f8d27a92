package query

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/updraft-io/updraft/schemas"
)

// Limits of the HTTP API.
const (
	DefaultLimit = 10_000
	MaxLimit     = 100_000
	// DefaultRange is how far back a query without from looks.
	DefaultRange = time.Hour
)

// ParamError is a bad query parameter; the API answers it with 400.
type ParamError struct {
	Param string
	Value string
	Why   string
}

func (e *ParamError) Error() string {
	return fmt.Sprintf("parameter %s=%q: %s", e.Param, e.Value, e.Why)
}

var knownParams = []string{"device", "metric", "region", "site", "from", "to", "limit", "step", "aggregate"}

// ParseRequest reads a request from URL parameters: device, metric, region
// and site filters, from and to as RFC 3339 or Unix nanoseconds (defaults:
// the hour before now), and limit.
func ParseRequest(v url.Values, now time.Time) (Request, error) {
	for k := range v {
		if !slices.Contains(knownParams, k) {
			return Request{}, &ParamError{k, v.Get(k), "unknown parameter; known: " + strings.Join(knownParams, ", ")}
		}
		if len(v[k]) > 1 {
			return Request{}, &ParamError{k, v.Get(k), "given more than once"}
		}
	}
	req := Request{Limit: DefaultLimit}
	for _, f := range []struct {
		name string
		dst  *string
	}{{"device", &req.Device}, {"metric", &req.Metric}, {"region", &req.Region}, {"site", &req.Site}} {
		s := v.Get(f.name)
		if s == "" {
			continue
		}
		if err := schemas.ValidateToken(f.name, s); err != nil {
			return Request{}, &ParamError{f.name, s, err.Error()}
		}
		*f.dst = s
	}
	var err error
	req.To = now
	if s := v.Get("to"); s != "" {
		if req.To, err = parseTime(s); err != nil {
			return Request{}, &ParamError{"to", s, err.Error()}
		}
	}
	req.From = req.To.Add(-DefaultRange)
	if s := v.Get("from"); s != "" {
		if req.From, err = parseTime(s); err != nil {
			return Request{}, &ParamError{"from", s, err.Error()}
		}
	}
	if !req.From.Before(req.To) {
		return Request{}, &ParamError{"from", v.Get("from"), fmt.Sprintf("must be before to (%s)", req.To.Format(time.RFC3339Nano))}
	}
	if s := v.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > MaxLimit {
			return Request{}, &ParamError{"limit", s, fmt.Sprintf("want a number from 1 to %d", MaxLimit)}
		}
		req.Limit = n
	}
	if s := v.Get("step"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d < time.Millisecond {
			return Request{}, &ParamError{"step", s, "want a duration of at least 1ms, such as 1m or 1h"}
		}
		if req.To.Sub(req.From)/d > MaxLimit*10 {
			return Request{}, &ParamError{"step", s, fmt.Sprintf("too small for the range: at most %d steps", MaxLimit*10)}
		}
		req.Step, req.Aggregate = d, "avg"
	}
	if s := v.Get("aggregate"); s != "" {
		if !slices.Contains(Aggregates, s) {
			return Request{}, &ParamError{"aggregate", s, "want one of " + strings.Join(Aggregates, ", ")}
		}
		if req.Step == 0 {
			return Request{}, &ParamError{"aggregate", s, "needs step (e.g. step=1m)"}
		}
		req.Aggregate = s
	}
	return req, nil
}

// parseTime accepts RFC 3339 (with optional fractional seconds) or an
// integer count of nanoseconds since the Unix epoch.
func parseTime(s string) (time.Time, error) {
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return time.Unix(0, n).UTC(), nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("want RFC 3339 (2006-01-02T15:04:05Z) or Unix nanoseconds")
	}
	return t.UTC(), nil
}

// Handler serves GET /api/v1/query. log may be nil.
func (e *Engine) Handler(log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req, err := ParseRequest(r.URL.Query(), time.Now())
		if err != nil {
			pe := err.(*ParamError)
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error(), "param": pe.Param})
			return
		}
		res, err := e.Query(r.Context(), req)
		if err != nil {
			log.Error("query failed", "err", err, "query", r.URL.RawQuery)
			writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
			return
		}
		if wantsArrow(r) {
			if err := writeArrow(w, res); err != nil {
				log.Warn("arrow response failed", "err", err)
			}
			return
		}
		writeJSON(w, http.StatusOK, res)
	})
}

// SeriesHandler serves GET /api/v1/series: the series with points in the
// time range (same parameters and defaults as /api/v1/query, without
// limit, step and aggregate). log may be nil.
func (e *Engine) SeriesHandler(log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, p := range []string{"limit", "step", "aggregate"} {
			if r.URL.Query().Has(p) {
				writeJSON(w, http.StatusBadRequest, map[string]string{"error": "parameter " + p + " is not used by /api/v1/series", "param": p})
				return
			}
		}
		req, err := ParseRequest(r.URL.Query(), time.Now())
		if err != nil {
			pe := err.(*ParamError)
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error(), "param": pe.Param})
			return
		}
		res, err := e.Series(r.Context(), req)
		if err != nil {
			log.Error("series failed", "err", err, "query", r.URL.RawQuery)
			writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, res)
	})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}
