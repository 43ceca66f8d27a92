//go:build race

package e2e

// The binaries under test are built with the race detector when the tests are.
const raceFlag = "-race"
