// Package buffer is the edge agent's durable buffer: every reading is
// written here, in a group commit with one fsync, before its MQTT message is
// acknowledged, and leaves only after JetStream acknowledged the sealed batch
// holding it. It is a Badger database laid out in segments so that forwarded
// data gives its disk space back; docs/buffer.md describes the key layout,
// sealing, reclamation, the limits and their policies, and encryption.
package buffer
