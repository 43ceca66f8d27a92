package ingest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	crand "crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"log/slog"
	"math/big"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"

	"github.com/updraft-io/updraft/edge/internal/broker"
	"github.com/updraft-io/updraft/edge/internal/buffer"
	"github.com/updraft-io/updraft/edge/internal/decode"
	"github.com/updraft-io/updraft/schemas"
)

// recordingSink acknowledges at once and keeps what it was given.
type recordingSink struct {
	mu       sync.Mutex
	readings int
	dead     [][]byte
}

func (s *recordingSink) AppendMessage(_ string, rs []schemas.Reading, _ buffer.Message, done func(error)) {
	s.mu.Lock()
	s.readings += len(rs)
	s.mu.Unlock()
	done(nil)
}

func (s *recordingSink) AppendDeadLetter(d buffer.DeadLetter, done func(error)) {
	s.mu.Lock()
	s.dead = append(s.dead, bytes.Clone(d.Payload))
	s.mu.Unlock()
	done(nil)
}

func (s *recordingSink) counts() (int, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.readings, len(s.dead)
}

// TestBrokerSchemes receives through every kind of broker URL the agent
// accepts (plain TCP, TLS, websocket) with the buffered connection: JSON
// readings are decoded, and payloads of up to 40 KiB, longer than the read
// buffer and needing multi-byte lengths, arrive byte for byte.
func TestBrokerSchemes(t *testing.T) {
	der, key := selfSigned(t)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := mochi.New(&mochi.Options{Logger: slog.New(slog.DiscardHandler)})
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		t.Fatal(err)
	}
	tlsCfg := &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, MinVersion: tls.VersionTLS12}
	tcp := listeners.NewTCP(listeners.Config{ID: "tcp", Address: "127.0.0.1:0"})
	tlsL := listeners.NewTCP(listeners.Config{ID: "tls", Address: "127.0.0.1:0", TLSConfig: tlsCfg})
	wsAddr := freeAddr(t)
	ws := listeners.NewWebsocket(listeners.Config{ID: "ws", Address: wsAddr})
	for _, l := range []listeners.Listener{tcp, tlsL, ws} {
		if err := srv.AddListener(l); err != nil {
			t.Fatal(err)
		}
	}
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = broker.CloseServer(srv) })

	for _, tc := range []struct{ name, url, ca string }{
		{"tcp", "tcp://" + tcp.Address(), ""},
		{"ssl", "ssl://" + tlsL.Address(), caFile},
		{"ws", "ws://" + wsAddr, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			edge := schemas.EdgeID{Region: "local", Site: "lab", Edge: "edge-" + tc.name}
			dcfg := decode.DefaultConfig()
			dcfg.MaxPayloadBytes = 1 << 20
			dec, err := decode.New(dcfg, edge, time.Now)
			if err != nil {
				t.Fatal(err)
			}
			cfg := DefaultConfig()
			cfg.Broker, cfg.CAFile, cfg.ClientID = tc.url, tc.ca, "ingest-"+tc.name
			// start runs an Ingest into sink until it is subscribed; stop
			// ends it and waits for Run to return.
			start := func(sink *recordingSink) (stop func()) {
				in, stop := runIngest(t, cfg, edge, dcfg.Subscriptions, dec, sink)
				waitFor(t, "subscribed", in.Connected)
				return stop
			}
			sink := new(recordingSink)
			stop := start(sink)

			pub := mqtt.NewClient(mqtt.NewClientOptions().AddBroker("tcp://" + tcp.Address()).SetClientID("pub-" + tc.name))
			if tok := pub.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
				t.Fatalf("connect publisher: %v", tok.Error())
			}
			defer pub.Disconnect(100)
			rng := rand.New(rand.NewPCG(1, 2))
			const readingsMsgs, rawMsgs = 500, 40
			var raws [][]byte
			var toks []mqtt.Token
			for i := range readingsMsgs {
				toks = append(toks, pub.Publish(fmt.Sprintf("devices/dev-%d/telemetry", i%7), 1, false,
					fmt.Sprintf(`{"ts":%d,"temperature":%d.5,"humidity":%d}`, time.Now().UnixMilli(), i%40, i%90)))
				if i%12 == 0 && len(raws) < rawMsgs {
					p := make([]byte, 1+rng.IntN(40<<10))
					for j := range p {
						p[j] = byte(rng.Uint32())
					}
					p[0] = 0xff // never JSON: dead-lettered with its bytes
					raws = append(raws, p)
					toks = append(toks, pub.Publish("devices/raw/telemetry", 1, false, p))
				}
			}
			for _, tok := range toks {
				if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
					t.Fatalf("publish: %v", tok.Error())
				}
			}
			waitFor(t, "every message", func() bool {
				r, d := sink.counts()
				return r == 2*readingsMsgs && d == len(raws)
			})
			sink.mu.Lock()
			for i, p := range sink.dead {
				if !bytes.Equal(p, raws[i]) {
					t.Fatalf("payload %d: got %d bytes, want %d, different content", i, len(p), len(raws[i]))
				}
			}
			sink.mu.Unlock()

			// Every PUBACK reached the broker: the persistent session,
			// resumed by a new client, gets nothing re-sent.
			stop()
			again := new(recordingSink)
			stopAgain := start(again)
			time.Sleep(500 * time.Millisecond)
			stopAgain()
			if r, d := again.counts(); r != 0 || d != 0 {
				t.Errorf("the broker re-sent %d readings and %d raw payloads: their PUBACKs were lost", r, d)
			}
		})
	}
}

// runIngest runs an Ingest into sink until stop, or the end of the test.
func runIngest(t *testing.T, cfg Config, edge schemas.EdgeID, subs []decode.Subscription, dec *decode.Decoder, sink Sink) (in *Ingest, stop func()) {
	t.Helper()
	in, err := New(cfg, edge, subs, dec, sink, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- in.Run(ctx) }()
	stop = sync.OnceFunc(func() { cancel(); <-ran })
	t.Cleanup(stop)
	return in, stop
}

func selfSigned(t *testing.T) ([]byte, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), crand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "broker"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(crand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return der, key
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !ok(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// TestBufferedConnWrites writes many small packets from one goroutine, as
// paho does, some past maxPending at once, and checks that the peer reads
// every byte in order, that Close sends what is pending, and that writing
// after Close fails.
func TestBufferedConnWrites(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	got := make(chan []byte, 1)
	go func() {
		s, err := l.Accept()
		if err != nil {
			got <- nil
			return
		}
		defer s.Close()
		var all bytes.Buffer
		_, _ = all.ReadFrom(s)
		got <- all.Bytes()
	}()
	raw, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c := newBufferedConn(raw)
	var want bytes.Buffer
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range 20_000 {
		n := 4
		if i%1000 == 0 {
			n = maxPending + rng.IntN(maxPending) // sent by Write itself
		}
		p := make([]byte, n)
		for j := range p {
			p[j] = byte(rng.Uint32())
		}
		if _, err := c.Write(p); err != nil {
			t.Fatal(err)
		}
		want.Write(p)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte{1}); err == nil {
		t.Error("a write after Close succeeded")
	}
	b := <-got
	if !bytes.Equal(b, want.Bytes()) {
		t.Fatalf("peer read %d bytes, want %d, or they differ", len(b), want.Len())
	}
}
