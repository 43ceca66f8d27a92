package natsserver

import (
	"fmt"
	"strings"
	"sync/atomic"

	"github.com/nats-io/nats-server/v2/server"
)

// TLS is the server side of TLS on a listener. With CertFile set, every
// connection to the listener must use TLS: plaintext is refused.
type TLS struct {
	CertFile, KeyFile string
	// CAFile holds the CAs that sign client certificates; with
	// VerifyClients the server demands one (mutual TLS).
	CAFile        string
	VerifyClients bool
}

// Enabled reports whether TLS is configured.
func (t TLS) Enabled() bool { return t.CertFile != "" }

func (t TLS) serverConfig() (*server.TLSConfigOpts, error) {
	if t.CertFile == "" || t.KeyFile == "" {
		return nil, fmt.Errorf("tls needs both a certificate and a key file")
	}
	if t.VerifyClients && t.CAFile == "" {
		return nil, fmt.Errorf("verifying client certificates needs a CA file")
	}
	return &server.TLSConfigOpts{CertFile: t.CertFile, KeyFile: t.KeyFile, CaFile: t.CAFile, Verify: t.VerifyClients}, nil
}

// User is one client identity: a user name and password, or a public NKey.
// Allow lists the subjects it may publish to; a nil Allow grants everything
// (services such as the cloud's lake writer and operators).
type User struct {
	Name     string
	Password string // a bcrypt hash ("$2a$...") or the password itself
	NKey     string // public user NKey, "U..."
	// PublishAllow, when not nil, is the only subjects the user may publish
	// to; it may then subscribe only to SubscribeAllow.
	PublishAllow   []string
	SubscribeAllow []string
}

func (u User) permissions() *server.Permissions {
	if u.PublishAllow == nil {
		return nil
	}
	return &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: u.PublishAllow},
		Subscribe: &server.SubjectPermission{Allow: u.SubscribeAllow},
	}
}

// applyUsers adds users to opts; with any user the server refuses clients
// without valid credentials.
func applyUsers(opts *server.Options, users []User) {
	for _, u := range users {
		if u.NKey != "" {
			opts.Nkeys = append(opts.Nkeys, &server.NkeyUser{Nkey: u.NKey, Permissions: u.permissions()})
			continue
		}
		opts.Users = append(opts.Users, &server.User{Username: u.Name, Password: u.Password, Permissions: u.permissions()})
	}
}

// Violations counts what the server refused: publishes and subscriptions
// outside a client's permissions, and connections with bad credentials. The
// server only logs these, so they are counted from its log lines.
type Violations struct {
	Publish, Subscribe, Auth atomic.Int64
}

func (v *Violations) observe(line string) {
	if v == nil {
		return
	}
	switch {
	case strings.Contains(line, "Publish Violation"):
		v.Publish.Add(1)
	case strings.Contains(line, "Subscription Violation"):
		v.Subscribe.Add(1)
	case strings.Contains(line, server.ErrAuthentication.Error()):
		v.Auth.Add(1)
	}
}
