// Package sparkplug holds the Sparkplug B payload type,
// org.eclipse.tahu.protobuf.Payload, generated from sparkplug_b.proto.
//
// sparkplug_b.pb.go was made by protoc 3.21.12 (Debian package
// protobuf-compiler) with protoc-gen-go v1.36.12, the version of
// google.golang.org/protobuf in go.mod:
//
//	apt-get install protobuf-compiler
//	go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
//	go generate ./edge/internal/decode/sparkplug
package sparkplug

//go:generate protoc --go_out=. --go_opt=paths=source_relative sparkplug_b.proto
