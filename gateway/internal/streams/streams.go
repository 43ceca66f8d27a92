// Package streams declares a region's JetStream streams (TELEMETRY, EVENTS,
// DEADLETTER) and reconciles the server with that declaration at start:
// missing streams are created, drifted settings are logged and updated.
package streams

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Spec is the part of a stream's configuration that Updraft manages. Every
// other setting is left as the server (or an operator) has it.
type Spec struct {
	Name     string
	Subjects []string
	// MaxAge and MaxBytes of 0 mean no limit.
	MaxAge   time.Duration
	MaxBytes int64
	// Duplicates is the window within which a repeated Nats-Msg-Id is
	// acknowledged but not stored again; 0 leaves the server's default.
	Duplicates time.Duration
	Replicas   int
	// Discard says what happens when MaxBytes is reached: DiscardNew
	// refuses new messages (publishers retry, nothing stored is lost),
	// DiscardOld deletes the oldest.
	Discard jetstream.DiscardPolicy
}

// Storage and retention are fixed for all Updraft streams: file storage, and
// limits retention so that several consumers (lake writer, replays, ad-hoc
// tools) can read the same data.
const (
	storage   = jetstream.FileStorage
	retention = jetstream.LimitsPolicy
)

// Config is the stream configuration that creates the stream.
func (s Spec) Config() jetstream.StreamConfig {
	c := jetstream.StreamConfig{
		Name:      s.Name,
		Storage:   storage,
		Retention: retention,
	}
	s.apply(&c)
	return c
}

// apply writes the managed settings into c and leaves the rest alone.
func (s Spec) apply(c *jetstream.StreamConfig) {
	c.Subjects = slices.Clone(s.Subjects)
	c.MaxAge = s.MaxAge
	c.MaxBytes = unlimited(s.MaxBytes)
	if s.Duplicates > 0 {
		c.Duplicates = s.Duplicates
	}
	c.Replicas = max(s.Replicas, 1)
	c.Discard = s.Discard
	c.Storage = storage
	c.Retention = retention
}

// unlimited maps Updraft's "0 = no limit" to the server's -1.
func unlimited(n int64) int64 {
	if n <= 0 {
		return -1
	}
	return n
}

// Change is one managed setting whose value on the server differs from the
// configuration.
type Change struct {
	Field     string
	Have      string
	Want      string
	immutable bool
}

func (c Change) String() string { return c.Field + ": " + c.Have + " -> " + c.Want }

// Drift lists the managed settings in which have differs from want.
func Drift(have jetstream.StreamConfig, want Spec) []Change {
	var out []Change
	add := func(field, h, w string, immutable bool) {
		if h != w {
			out = append(out, Change{Field: field, Have: h, Want: w, immutable: immutable})
		}
	}
	add("subjects", subjectSet(have.Subjects), subjectSet(want.Subjects), false)
	add("max_age", have.MaxAge.String(), want.MaxAge.String(), false)
	add("max_bytes", strconv.FormatInt(unlimited(have.MaxBytes), 10), strconv.FormatInt(unlimited(want.MaxBytes), 10), false)
	if want.Duplicates > 0 {
		add("duplicates", have.Duplicates.String(), want.Duplicates.String(), false)
	}
	add("replicas", strconv.Itoa(max(have.Replicas, 1)), strconv.Itoa(max(want.Replicas, 1)), false)
	add("discard", have.Discard.String(), want.Discard.String(), false)
	add("storage", have.Storage.String(), storage.String(), true)
	add("retention", have.Retention.String(), retention.String(), true)
	return out
}

func subjectSet(s []string) string {
	s = slices.Clone(s)
	slices.Sort(s)
	return strings.Join(slices.Compact(s), ",")
}

// Action is what Reconcile did to one stream.
type Action string

// Actions of Reconcile.
const (
	Created   Action = "created"
	Updated   Action = "updated"
	Unchanged Action = "unchanged"
)

// Result reports what Reconcile did to one stream.
type Result struct {
	Stream  string
	Action  Action
	Changes []Change
}

// Reconcile makes the server's streams match specs, in order. A stream that
// is missing is created; one whose managed settings drifted is updated and
// the drift logged. Storage and retention cannot change on a live stream: if
// they differ, Reconcile stops with ErrImmutable rather than delete data.
func Reconcile(ctx context.Context, js jetstream.JetStream, specs []Spec, log *slog.Logger) ([]Result, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	results := make([]Result, 0, len(specs))
	for _, sp := range specs {
		r, err := reconcile(ctx, js, sp, log)
		if err != nil {
			return results, fmt.Errorf("reconcile stream %s: %w", sp.Name, err)
		}
		results = append(results, r)
	}
	return results, nil
}

func reconcile(ctx context.Context, js jetstream.JetStream, sp Spec, log *slog.Logger) (Result, error) {
	r := Result{Stream: sp.Name}
	st, err := js.Stream(ctx, sp.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		if _, err := js.CreateStream(ctx, sp.Config()); err != nil {
			return r, fmt.Errorf("create: %w", err)
		}
		log.Info("created stream", "stream", sp.Name, "subjects", sp.Subjects, "max_age", sp.MaxAge,
			"max_bytes", sp.MaxBytes, "duplicates", sp.Duplicates, "discard", sp.Discard.String())
		r.Action = Created
		return r, nil
	}
	if err != nil {
		return r, fmt.Errorf("look up: %w", err)
	}
	have := st.CachedInfo().Config
	r.Changes = Drift(have, sp)
	if len(r.Changes) == 0 {
		r.Action = Unchanged
		log.Debug("stream matches configuration", "stream", sp.Name)
		return r, nil
	}
	for _, c := range r.Changes {
		if c.immutable {
			return r, fmt.Errorf("%w: %s; move the data elsewhere and delete the stream to recreate it", ErrImmutable, c)
		}
	}
	log.Warn("stream settings drifted from the configuration; updating", "stream", sp.Name, "changes", r.Changes)
	cfg := have
	sp.apply(&cfg)
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		return r, fmt.Errorf("update: %w", err)
	}
	r.Action = Updated
	return r, nil
}
