// Package e2e holds the end-to-end tests: the real binaries, run as separate
// processes on loopback, from MQTT publish to Parquet files read back.
package e2e
