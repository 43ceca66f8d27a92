package batch

import (
	"errors"
	"fmt"
)

// Sentinels a DecodeError wraps; test with errors.Is.
var (
	// ErrHeader: a required header is missing or malformed.
	ErrHeader = errors.New("bad batch header")
	// ErrPayload: the body is not a well-formed Arrow IPC stream with one record batch.
	ErrPayload = errors.New("bad batch payload")
	// ErrSchema: the Arrow schema is not the one this version of the contract defines.
	ErrSchema = errors.New("unexpected batch schema")
	// ErrMismatch: the headers disagree with the payload (count, time range).
	ErrMismatch = errors.New("batch headers disagree with payload")
	// ErrReading: a reading in the batch is invalid (bad token, non-finite value).
	ErrReading = errors.New("invalid reading in batch")
	// ErrTooLarge: the batch exceeds a decoding limit.
	ErrTooLarge = errors.New("batch too large")
)

// DecodeError is the typed error Decode returns for any bad input. Part names
// where the problem is ("header Updraft-Count", "payload", "row 17").
type DecodeError struct {
	Part string
	Err  error
}

func (e *DecodeError) Error() string { return fmt.Sprintf("decode batch: %s: %v", e.Part, e.Err) }
func (e *DecodeError) Unwrap() error { return e.Err }

func decodeErr(part string, sentinel error, format string, args ...any) error {
	return &DecodeError{Part: part, Err: fmt.Errorf("%w: %s", sentinel, fmt.Sprintf(format, args...))}
}
