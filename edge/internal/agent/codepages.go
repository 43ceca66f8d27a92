package agent

import (
	"context"
	"time"
)

// releaseCodeLoop runs releaseCode every code_release_interval until ctx
// ends, the first time one interval after start, once initialisation is
// over. A pass reads /proc/self/smaps and gives one madvise per mapping; the
// code in use then faults back in from the page cache.
func (a *Agent) releaseCodeLoop(ctx context.Context) {
	t := time.NewTicker(a.cfg.CodeRelease)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		start := time.Now()
		n, err := releaseCode()
		if err != nil {
			a.log.Warn("cannot release the agent's unused code pages; they stay resident", "err", err)
			return
		}
		a.log.Debug("released code pages", "resident_bytes", n, "took", time.Since(start))
	}
}
