package schemas

import "errors"

var (
	// ErrBadToken: a subject token (region, site, edge, device, metric, kind)
	// is empty, too long, or holds a space, dot, wildcard or control character.
	ErrBadToken = errors.New("invalid token")
	// ErrNonFinite: a reading's value is NaN or infinite.
	ErrNonFinite = errors.New("value is not finite")
	// ErrBadTimestamp: a reading's time is unset or outside the accepted range.
	ErrBadTimestamp = errors.New("invalid timestamp")
	// ErrBadSubject: a subject does not follow the Updraft namespace.
	ErrBadSubject = errors.New("invalid subject")
)
