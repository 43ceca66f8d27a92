package gateway

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/updraft-io/updraft/schemas"
	"github.com/updraft-io/updraft/schemas/batch"
)

// testPKI is a CA with a server certificate for 127.0.0.1 and a client
// certificate, written as PEM files.
type testPKI struct {
	CA, ServerCert, ServerKey, ClientCert, ClientKey string
}

func newTestPKI(t *testing.T) testPKI {
	t.Helper()
	dir := t.TempDir()
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	key := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	now := time.Now()
	caKey := key()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "updraft test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	leaf := func(serial int64, cn string, usage x509.ExtKeyUsage) (string, string) {
		k := key()
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{usage}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kder, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return write(cn+".pem", "CERTIFICATE", der), write(cn+"-key.pem", "EC PRIVATE KEY", kder)
	}
	p := testPKI{CA: write("ca.pem", "CERTIFICATE", caDER)}
	p.ServerCert, p.ServerKey = leaf(2, "server", x509.ExtKeyUsageServerAuth)
	p.ClientCert, p.ClientKey = leaf(3, "client", x509.ExtKeyUsageClientAuth)
	return p
}

var (
	secEdge1 = schemas.EdgeID{Region: "local", Site: "lab", Edge: "edge-1"}
	secEdge2 = schemas.EdgeID{Region: "local", Site: "lab", Edge: "edge-2"}
)

func secBatch(t *testing.T, id schemas.EdgeID, seq uint64) *batch.Message {
	t.Helper()
	m, err := batch.Encode(batch.ID{Edge: id, Epoch: 1, Seq: seq}, schemas.KindRaw, false, []schemas.Reading{{
		Region: id.Region, Site: id.Site, Edge: id.Edge, Device: "d", Metric: "m", TS: time.Now().UnixNano(), Value: 1}})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestSecurity runs a gateway that requires TLS and credentials: edge-1
// with a password, edge-2 with an NKey, and a full-access service user.
func TestSecurity(t *testing.T) {
	pki := newTestPKI(t)
	edge2Key, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	edge2Pub, _ := edge2Key.PublicKey()
	edge2Seed, _ := edge2Key.Seed()

	cfg := testConfig(t)
	cfg.NATS.TLS = TLSConfig{CertFile: pki.ServerCert, KeyFile: pki.ServerKey}
	cfg.Auth = AuthConfig{
		Edges: []EdgeCredential{
			{Site: "lab", Edge: "edge-1", User: "edge-1", Password: "edge-1-secret"},
			{Site: "lab", Edge: "edge-2", NKey: edge2Pub},
		},
		Services: []ServiceCredential{{User: "cloud", Password: "cloud-secret"}},
	}
	g := start(t, cfg)
	url := g.ClientURL()
	ca := nats.RootCAs(pki.CA)
	ctx := context.Background()

	t.Run("plaintext refused", func(t *testing.T) {
		// A client that does not speak TLS at all.
		conn, err := net.Dial("tcp", strings.TrimPrefix(strings.TrimPrefix(url, "tls://"), "nats://"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 4096)
		n, _ := conn.Read(buf)
		if !strings.Contains(string(buf[:n]), `"tls_required":true`) {
			t.Fatalf("server INFO does not require TLS: %s", buf[:n])
		}
		conn.Write([]byte("CONNECT {\"user\":\"edge-1\",\"pass\":\"edge-1-secret\"}\r\nPUB telemetry.local.lab.edge-1.raw 2\r\nhi\r\nPING\r\n"))
		n, err = conn.Read(buf)
		if err == nil && strings.Contains(string(buf[:n]), "PONG") {
			t.Fatalf("plaintext client was served: %q", buf[:n])
		}
	})

	t.Run("wrong credentials refused", func(t *testing.T) {
		before := g.violations.Auth.Load()
		for name, opt := range map[string]nats.Option{
			"wrong password": nats.UserInfo("edge-1", "guess"),
			"unknown user":   nats.UserInfo("mallory", "edge-1-secret"),
			"no credentials": nats.Name("anonymous"),
		} {
			nc, err := nats.Connect(url, ca, opt, nats.MaxReconnects(0))
			if err == nil {
				nc.Close()
				t.Errorf("%s: connected", name)
				continue
			}
			if !errors.Is(err, nats.ErrAuthorization) && !strings.Contains(strings.ToLower(err.Error()), "authorization") {
				t.Errorf("%s: %v, want an authorization error", name, err)
			}
		}
		waitFor(t, 5*time.Second, func() error {
			if n := g.violations.Auth.Load() - before; n < 3 {
				return errors.New("auth failures not counted yet")
			}
			return nil
		})
	})

	// Each edge can publish its own batches through JetStream and get acks.
	edgeConn := func(t *testing.T, opt nats.Option, errs chan<- error) jetstream.JetStream {
		nc, err := nats.Connect(url, ca, opt, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			select {
			case errs <- err:
			default:
			}
		}))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		js, err := jetstream.NewWithDomain(nc, "local")
		if err != nil {
			t.Fatal(err)
		}
		return js
	}
	errs1 := make(chan error, 8)
	js1 := edgeConn(t, nats.UserInfo("edge-1", "edge-1-secret"), errs1)
	errs2 := make(chan error, 8)
	js2 := edgeConn(t, nats.Nkey(edge2Pub, func(nonce []byte) ([]byte, error) {
		kp, err := nkeys.FromSeed(edge2Seed)
		if err != nil {
			return nil, err
		}
		return kp.Sign(nonce)
	}), errs2)

	t.Run("own subjects allowed", func(t *testing.T) {
		for _, c := range []struct {
			js jetstream.JetStream
			id schemas.EdgeID
		}{{js1, secEdge1}, {js2, secEdge2}} {
			if _, err := publish(ctx, c.js, secBatch(t, c.id, 1)); err != nil {
				t.Errorf("%s publishing its own batch: %v", c.id, err)
			}
			if _, err := c.js.Publish(ctx, schemas.EventSubject(c.id, "boot"), []byte("{}")); err != nil {
				t.Errorf("%s publishing its own event: %v", c.id, err)
			}
		}
	})

	t.Run("other edge's subject denied and counted", func(t *testing.T) {
		before := g.violations.Publish.Load()
		forged := secBatch(t, secEdge2, 2)
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := publish(pctx, js1, forged)
		cancel()
		if err == nil {
			t.Fatal("edge-1 published as edge-2")
		}
		otherSite := schemas.EdgeID{Region: "local", Site: "plant", Edge: "edge-1"}
		pctx, cancel = context.WithTimeout(ctx, time.Second)
		_, err = js1.Publish(pctx, schemas.RawSubject(otherSite), []byte("x"))
		cancel()
		if err == nil {
			t.Fatal("edge-1 published as another site")
		}
		pctx, cancel = context.WithTimeout(ctx, time.Second)
		_, err = js1.Stream(pctx, "TELEMETRY") // the JetStream API is not an edge's business
		cancel()
		if err == nil {
			t.Error("edge-1 used the JetStream API")
		}
		select {
		case err := <-errs1:
			if !errors.Is(err, nats.ErrPermissionViolation) && !strings.Contains(err.Error(), "Permissions Violation") {
				t.Errorf("edge-1 was told %v, want a permissions violation", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("edge-1 was not told of the permissions violation")
		}
		waitFor(t, 5*time.Second, func() error {
			if n := g.violations.Publish.Load() - before; n < 3 {
				return errors.New("publish violations not counted yet")
			}
			return nil
		})
		// The service user sees only what the edges were allowed to store.
		nc, err := nats.Connect(url, ca, nats.UserInfo("cloud", "cloud-secret"))
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		js, _ := jetstream.NewWithDomain(nc, "local")
		s, err := js.Stream(ctx, "TELEMETRY")
		if err != nil {
			t.Fatal(err)
		}
		if n := s.CachedInfo().State.Msgs; n != 2 {
			t.Errorf("TELEMETRY holds %d messages, want the 2 allowed batches", n)
		}
		if _, resp := get(t, g.HTTPURL()+"/metrics"); !strings.Contains(resp, "updraft_gateway_publish_violations_total") {
			t.Error("/metrics lacks updraft_gateway_publish_violations_total")
		}
	})
}

// TestMutualTLS refuses a client without a certificate signed by the CA.
func TestMutualTLS(t *testing.T) {
	pki := newTestPKI(t)
	cfg := testConfig(t)
	cfg.NATS.TLS = TLSConfig{CertFile: pki.ServerCert, KeyFile: pki.ServerKey, CAFile: pki.CA, VerifyClients: true}
	g := start(t, cfg)
	if nc, err := nats.Connect(g.ClientURL(), nats.RootCAs(pki.CA), nats.MaxReconnects(0)); err == nil {
		nc.Close()
		t.Fatal("client without a certificate connected")
	}
	nc, err := nats.Connect(g.ClientURL(), nats.RootCAs(pki.CA), nats.ClientCert(pki.ClientCert, pki.ClientKey))
	if err != nil {
		t.Fatalf("client with a certificate: %v", err)
	}
	nc.Close()
}
