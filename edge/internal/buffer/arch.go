package buffer

import (
	"fmt"
	"runtime"
	"strconv"
)

// CheckPlatform refuses to run on a 32-bit build: the agent calls it while
// validating its configuration, so even --check-config says so.
func CheckPlatform() error { return checkArch(strconv.IntSize) }

// checkArch refuses 32-bit platforms. Badger v4 silently loses data there:
// writing 200,000 keys on GOARCH=386 or arm read back 74,180, without an
// error (docs/buffer.md). Open passes strconv.IntSize; tests pass 32.
func checkArch(intSize int) error {
	if intSize == 64 {
		return nil
	}
	return fmt.Errorf("%w: this is a %d-bit build (GOARCH=%s), and Badger loses data on 32-bit platforms "+
		"(it is the edge buffer's storage engine); the agent supports linux/arm64 (Raspberry Pi OS 64-bit) and linux/amd64",
		ErrUnsupportedPlatform, intSize, runtime.GOARCH)
}
