package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/updraft-io/updraft/edge/internal/ingest"
	"github.com/updraft-io/updraft/schemas/config"
)

// localPublisher publishes alerts and aggregates as JSON on the site's MQTT
// broker. It is a client of its own, so that publishing never waits behind
// ingest's ordered, manually acknowledged subscription.
type localPublisher struct {
	client mqtt.Client
	log    *slog.Logger
}

func newLocalPublisher(c ingest.Config, clientID string, log *slog.Logger) (*localPublisher, error) {
	o := mqtt.NewClientOptions().
		AddBroker(c.Broker).
		SetClientID(clientID).
		SetCleanSession(true).
		SetOrderMatters(false).
		SetKeepAlive(c.KeepAlive).
		SetAutoReconnect(true).
		SetConnectRetry(true).
		SetConnectRetryInterval(time.Second).
		SetMaxReconnectInterval(10 * time.Second).
		SetWriteTimeout(5 * time.Second)
	if c.Username != "" {
		o.SetUsername(c.Username)
	}
	if c.PasswordFile != "" {
		pw, err := os.ReadFile(c.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("read mqtt.password_file: %w", err)
		}
		o.SetPassword(strings.TrimRight(string(pw), "\r\n"))
	}
	tc, err := config.ClientTLS("mqtt", c.CAFile, c.CertFile, c.KeyFile)
	if err != nil {
		return nil, err
	}
	if tc != nil {
		o.SetTLSConfig(tc)
	}
	return &localPublisher{client: mqtt.NewClient(o), log: log}, nil
}

// Run connects (retrying) and stays connected until ctx ends.
func (p *localPublisher) Run(ctx context.Context) error {
	p.client.Connect()
	<-ctx.Done()
	p.client.Disconnect(250)
	return nil
}

// publish sends v as JSON without waiting for the broker: the caller is on
// the ingest path.
func (p *localPublisher) publish(topic string, qos byte, retained bool, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		p.log.Warn("local publish: encode", "topic", topic, "err", err)
		return
	}
	// While the client reconnects, paho keeps QoS 1 messages (alerts) and
	// sends them once connected; QoS 0 ones (aggregates) are dropped.
	tok := p.client.Publish(topic, qos, retained, data)
	if tok.Error() != nil {
		p.log.Debug("local publish failed", "topic", topic, "err", tok.Error())
	}
}
