package natsserver

import (
	"cmp"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// StreamState is what a stream holds now.
type StreamState struct {
	Account   string    `json:"account"`
	Name      string    `json:"name"`
	Subjects  []string  `json:"subjects"`
	Messages  uint64    `json:"messages"`
	Bytes     uint64    `json:"bytes"`
	FirstSeq  uint64    `json:"first_seq"`
	LastSeq   uint64    `json:"last_seq"`
	FirstTime time.Time `json:"first_time,omitzero"`
	LastTime  time.Time `json:"last_time,omitzero"`
	Consumers int       `json:"consumers"`
}

// Streams reads every stream of every account from the server's own
// bookkeeping (no client round trip), sorted by account and name.
func Streams(srv *server.Server) ([]StreamState, error) {
	info, err := srv.Jsz(&server.JSzOptions{Streams: true, Config: true})
	if err != nil {
		return nil, fmt.Errorf("read jetstream state: %w", err)
	}
	return streamsOf(info), nil
}

func streamsOf(info *server.JSInfo) []StreamState {
	var out []StreamState
	for _, acc := range info.AccountDetails {
		for _, s := range acc.Streams {
			st := StreamState{
				Account:   acc.Name,
				Name:      s.Name,
				Messages:  s.State.Msgs,
				Bytes:     s.State.Bytes,
				FirstSeq:  s.State.FirstSeq,
				LastSeq:   s.State.LastSeq,
				FirstTime: s.State.FirstTime,
				LastTime:  s.State.LastTime,
				Consumers: s.State.Consumers,
			}
			if s.Config != nil {
				st.Subjects = s.Config.Subjects
			}
			out = append(out, st)
		}
	}
	slices.SortFunc(out, func(a, b StreamState) int {
		return cmp.Or(cmp.Compare(a.Account, b.Account), cmp.Compare(a.Name, b.Name))
	})
	return out
}
