package hub

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// tlsFiles writes a CA, a server certificate for 127.0.0.1 and a client
// certificate, returning their PEM paths.
func tlsFiles(t *testing.T) (ca, srvCert, srvKey, cliCert, cliKey string) {
	t.Helper()
	dir := t.TempDir()
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	now := time.Now()
	caKey := newKey()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "hub test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	leaf := func(serial int64, cn string, usage x509.ExtKeyUsage) (string, string) {
		k := newKey()
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{usage}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kder, _ := x509.MarshalECPrivateKey(k)
		return write(cn+".pem", "CERTIFICATE", der), write(cn+"-key.pem", "EC PRIVATE KEY", kder)
	}
	ca = write("ca.pem", "CERTIFICATE", caDER)
	srvCert, srvKey = leaf(2, "hub", x509.ExtKeyUsageServerAuth)
	cliCert, cliKey = leaf(3, "gw", x509.ExtKeyUsageClientAuth)
	return ca, srvCert, srvKey, cliCert, cliKey
}

// leafServer runs a region server whose only leaf remote is the hub, with
// the given client TLS settings.
func leafServer(t *testing.T, hubURL string, tc *tls.Config) *server.Server {
	t.Helper()
	u, _ := url.Parse(hubURL)
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true,
		LeafNode: server.LeafNodeOpts{ReconnectInterval: 100 * time.Millisecond,
			Remotes: []*server.RemoteLeafOpts{{URLs: []*url.URL{u}, TLS: tc != nil, TLSConfig: tc}}}})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return s
}

// TestLeafTLS: with leaf_tls and verify_clients, a gateway presenting a
// certificate signed by the CA joins; one without a certificate, or without
// TLS, never does.
func TestLeafTLS(t *testing.T) {
	ca, srvCert, srvKey, cliCert, cliKey := tlsFiles(t)
	cfg := DefaultConfig()
	cfg.Enabled = true
	cfg.Listen, cfg.LeafListen, cfg.StoreDir = "127.0.0.1:0", "127.0.0.1:0", t.TempDir()
	cfg.LeafTLS = TLSConfig{CertFile: srvCert, KeyFile: srvKey, CAFile: ca, VerifyClients: true}
	h := runHub(t, cfg)
	leafURL := h.LeafURL()
	if !strings.HasPrefix(leafURL, "tls://") {
		t.Fatalf("leaf URL %q", leafURL)
	}

	pool := x509.NewCertPool()
	pem, _ := os.ReadFile(ca)
	pool.AppendCertsFromPEM(pem)
	cert, err := tls.LoadX509KeyPair(cliCert, cliKey)
	if err != nil {
		t.Fatal(err)
	}
	noCert := leafServer(t, leafURL, &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12})
	plain := leafServer(t, strings.Replace(leafURL, "tls://", "nats-leaf://", 1), nil)
	good := leafServer(t, leafURL, &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	deadline := time.Now().Add(10 * time.Second)
	for good.NumLeafNodes() != 1 {
		if time.Now().After(deadline) {
			t.Fatal("gateway with a client certificate did not join the hub")
		}
		<-time.After(20 * time.Millisecond)
	}
	// The refused ones retry every 100ms: watch them for a second more.
	for end := time.Now().Add(time.Second); time.Now().Before(end); <-time.After(20 * time.Millisecond) {
		if noCert.NumLeafNodes() != 0 || plain.NumLeafNodes() != 0 {
			t.Fatal("a gateway without a client certificate or without TLS joined the hub")
		}
	}
	if n := h.srv.Load().NumLeafNodes(); n != 1 {
		t.Errorf("hub has %d leaf nodes, want 1", n)
	}
}
