package natsserver

import (
	"context"
	"fmt"
	"log/slog"
)

// logger routes nats-server's log lines to slog. Fatalf must not exit the
// process as the server's own logger does: the first fatal error is handed
// to Start, which shuts the server down and returns it.
type logger struct {
	log        *slog.Logger
	fatal      chan error
	violations *Violations
}

func newLogger(log *slog.Logger) *logger {
	return &logger{log: log, fatal: make(chan error, 1)}
}

func (l *logger) Noticef(format string, v ...any) { l.log.Info(fmt.Sprintf(format, v...)) }
func (l *logger) Warnf(format string, v ...any)   { l.log.Warn(fmt.Sprintf(format, v...)) }
func (l *logger) Errorf(format string, v ...any) {
	line := fmt.Sprintf(format, v...)
	l.violations.observe(line)
	l.log.Error(line)
}
func (l *logger) Debugf(format string, v ...any) { l.log.Debug(fmt.Sprintf(format, v...)) }

// Tracef is protocol tracing, far too verbose even for debug logs; it is
// only enabled together with the server's trace flag, which we never set.
func (l *logger) Tracef(format string, v ...any) { l.log.Debug(fmt.Sprintf(format, v...)) }

func (l *logger) Fatalf(format string, v ...any) {
	err := fmt.Errorf(format, v...)
	l.log.Error(err.Error())
	select {
	case l.fatal <- err:
	default:
	}
}

func (l *logger) debugEnabled() bool { return l.log.Enabled(context.Background(), slog.LevelDebug) }
