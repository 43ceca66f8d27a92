// Package batch is the wire format between an edge agent and its regional
// JetStream stream: one NATS message carries one Arrow IPC stream (zstd
// compressed buffers) holding exactly one record batch of readings, plus
// headers that identify the batch so every tier can deduplicate it.
//
// See docs/wire-format.md for the full contract.
package batch
