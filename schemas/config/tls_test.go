package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestClientTLS(t *testing.T) {
	if tc, err := ClientTLS("nats", "", "", ""); tc != nil || err != nil {
		t.Fatalf("nothing set: %v, %v; want nil, nil", tc, err)
	}
	dir := t.TempDir()
	bad := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(bad, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := ClientTLS("mqtt", bad, "", "")
	var cerr *Error
	if !errors.As(err, &cerr) || cerr.Key != "mqtt.ca_file" {
		t.Fatalf("a CA file without certificates: %v, want an error naming mqtt.ca_file", err)
	}
	if _, err := ClientTLS("nats", filepath.Join(dir, "missing.pem"), "", ""); err == nil || !strings.Contains(err.Error(), "nats.ca_file") {
		t.Fatalf("a missing CA file: %v, want an error naming nats.ca_file", err)
	}
	if _, err := ClientTLS("nats", "", bad, bad); err == nil || !strings.Contains(err.Error(), "nats client certificate") {
		t.Fatalf("a bad client certificate: %v", err)
	}
}
