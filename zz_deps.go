//go:build tools

package deps

import (
	_ "github.com/apache/arrow-go/v18/parquet/pqarrow"
	_ "github.com/apache/arrow-go/v18/parquet/file"
	_ "github.com/apache/arrow-go/v18/arrow/ipc"
	_ "github.com/dgraph-io/badger/v4"
	_ "github.com/dgraph-io/badger/v4/options"
	_ "github.com/eclipse/paho.mqtt.golang"
	_ "github.com/mochi-mqtt/server/v2"
	_ "github.com/mochi-mqtt/server/v2/hooks/auth"
	_ "github.com/mochi-mqtt/server/v2/listeners"
	_ "github.com/nats-io/nats-server/v2/server"
	_ "github.com/nats-io/nats.go/jetstream"
	_ "github.com/prometheus/client_golang/prometheus/promhttp"
	_ "github.com/prometheus/client_golang/prometheus/collectors"
	_ "github.com/prometheus/client_golang/prometheus/testutil"
	_ "go.yaml.in/yaml/v3"
	_ "github.com/parquet-go/parquet-go"
	_ "golang.org/x/sync/errgroup"
	_ "go.uber.org/goleak"
	_ "github.com/go-task/task/v3/cmd/task"
)
