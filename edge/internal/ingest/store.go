package ingest

import (
	"strings"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
)

// sessionStore is paho's store for the agent's client: it keeps what the
// client sends (subscriptions awaiting their SUBACK) in a MemoryStore and
// does not keep the QoS 1 messages it receives.
//
// paho records every received QoS 1 PUBLISH ("i." keys) until its PUBACK is
// sent, and has no use for the record: on a reconnect it discards received
// PUBLISH records from its store (logging each as invalid). What makes an
// unacknowledged message survive is the broker's persistent session, which
// sends it again, and the buffer, which recognises the re-delivery
// (docs/buffer.md). Keeping the records cost a map insert and delete under a
// lock, and allocations in the store's debug logging, for every message.
type sessionStore struct{ *mqtt.MemoryStore }

func newSessionStore() sessionStore { return sessionStore{mqtt.NewMemoryStore()} }

func inbound(key string) bool { return strings.HasPrefix(key, "i.") }

func (s sessionStore) Put(key string, p packets.ControlPacket) {
	if !inbound(key) {
		s.MemoryStore.Put(key, p)
	}
}

func (s sessionStore) Del(key string) {
	if !inbound(key) {
		s.MemoryStore.Del(key)
	}
}
