package buffer

import "errors"

var (
	// ErrClosed: the buffer is closed, or Run has returned.
	ErrClosed = errors.New("buffer closed")
	// ErrCorrupt: a record on disk does not decode. Checksums make this rare;
	// a corrupt batch is skipped and counted as dropped with reason "corrupt".
	ErrCorrupt = errors.New("buffer record corrupt")
	// ErrEncryptionKey: the encryption key file is malformed, missing for an
	// encrypted buffer, given for an unencrypted one, or not the buffer's key.
	ErrEncryptionKey = errors.New("buffer encryption key")
	// ErrNotBuffer: the directory holds something other than an Updraft buffer.
	ErrNotBuffer = errors.New("not an Updraft buffer")
	// ErrUnsupportedPlatform: the platform is 32-bit, where Badger loses data.
	ErrUnsupportedPlatform = errors.New("unsupported platform")
	// ErrBadReading: Append was given a reading that is invalid or belongs to
	// another edge; nothing of that call was stored.
	ErrBadReading = errors.New("reading not accepted by the buffer")
	// ErrBadEvent: AppendEvent was given an event without a kind, or one too
	// large; it was not stored.
	ErrBadEvent = errors.New("event not accepted by the buffer")
	// ErrUnknownSeq: Ack named a sequence this buffer has not issued.
	ErrUnknownSeq = errors.New("unknown sequence")
)
