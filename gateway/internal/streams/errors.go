package streams

import "errors"

// ErrImmutable: an existing stream's storage or retention differs from the
// configuration, and the server cannot change either on a live stream.
var ErrImmutable = errors.New("stream setting cannot be changed in place")
