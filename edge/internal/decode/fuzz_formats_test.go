package decode

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/updraft-io/updraft/schemas"
)

// fuzzSeeds adds the golden inputs whose topic is one of topics, with the
// index of that topic.
func fuzzSeeds(f *testing.F, topics []string) {
	files, _ := filepath.Glob(filepath.Join("testdata", "golden", "*.txt"))
	for _, file := range files {
		in, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		topic, payload, _ := strings.Cut(string(in), "\n")
		for i, t := range topics {
			if strings.HasPrefix(topic, strings.SplitN(t, "/", 2)[0]) {
				f.Add(uint8(i), []byte(strings.TrimSuffix(payload, "\n")))
			}
		}
	}
}

// fuzzCheck decodes and checks what every format promises: no panic, a
// reject leaves dst alone, accepted readings are valid and this edge's.
func fuzzCheck(t *testing.T, d *Decoder, topic string, payload []byte) {
	dst := make([]schemas.Reading, 1, 4)
	out, err := d.Decode(dst, topic, payload)
	if err != nil {
		var rej *Reject
		if !errors.As(err, &rej) {
			t.Fatalf("error is not a *Reject: %v", err)
		}
		if len(out) != 1 {
			t.Fatalf("reject %v changed dst to %d readings", err, len(out))
		}
		return
	}
	for _, r := range out[1:] {
		if err := r.Validate(); err != nil {
			t.Fatalf("%s %q: accepted reading %+v fails validation: %v", topic, payload, r, err)
		}
		if r.Region != testEdge.Region || r.Site != testEdge.Site || r.Edge != testEdge.Edge {
			t.Fatalf("reading %+v has the wrong identity", r)
		}
		if r.TS-testNow.UnixNano() > int64(testConfig().MaxClockSkew) {
			t.Fatalf("reading %+v is beyond the clock skew", r)
		}
	}
}

var (
	fuzzNestedTopics = []string{"nested/d1/telemetry", "tele/t1/SENSOR", "zigbee2mqtt/room/lamp"}
	fuzzSenMLTopics  = []string{"senml/d1", "senml-base"}
	fuzzTextTopics   = []string{"homie/5/d1/node/prop", "homie/5/d1/$description", "plain/d1/level"}
)

// FuzzDecodeNested covers flattened JSON with arrays, Tasmota and
// Zigbee2MQTT payloads.
func FuzzDecodeNested(f *testing.F) {
	fuzzSeeds(f, fuzzNestedTopics)
	d := newTestDecoder(f)
	f.Fuzz(func(t *testing.T, which uint8, payload []byte) {
		fuzzCheck(t, d, fuzzNestedTopics[int(which)%len(fuzzNestedTopics)], payload)
	})
}

// FuzzDecodeSenML covers SenML packs, with the device from the topic or
// from the base name.
func FuzzDecodeSenML(f *testing.F) {
	fuzzSeeds(f, fuzzSenMLTopics)
	d := newTestDecoder(f)
	f.Fuzz(func(t *testing.T, which uint8, payload []byte) {
		fuzzCheck(t, d, fuzzSenMLTopics[int(which)%len(fuzzSenMLTopics)], payload)
	})
}

// FuzzDecodeText covers Homie values and descriptions and plain numbers.
func FuzzDecodeText(f *testing.F) {
	fuzzSeeds(f, fuzzTextTopics)
	f.Add(uint8(1), []byte(`{"homie":"5.0","nodes":{"node":{"properties":{"prop":{"datatype":"float","unit":"°C"}}}}}`))
	d := newTestDecoder(f)
	f.Fuzz(func(t *testing.T, which uint8, payload []byte) {
		fuzzCheck(t, d, fuzzTextTopics[int(which)%len(fuzzTextTopics)], payload)
	})
}

// FuzzDecodeSparkplug decodes a payload as each Sparkplug message type on
// a decoder that has seen the node's and device's births, so aliases
// resolve.
func FuzzDecodeSparkplug(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "sparkplug", "*.bin"))
	if len(files) == 0 {
		f.Fatal("no seeds under testdata/sparkplug (go test -run TestSparkplugFixtures -update)")
	}
	var births [][2]string
	for _, file := range files {
		in, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		topic, payload, _ := strings.Cut(string(in), "\n")
		if strings.Contains(topic, "BIRTH") {
			births = append(births, [2]string{topic, payload})
		}
		for i, typ := range []string{"NBIRTH", "DBIRTH", "NDATA", "DDATA", "NDEATH", "DDEATH"} {
			if strings.Contains(topic, "/"+typ+"/") {
				f.Add(uint8(i), []byte(payload))
			}
		}
	}
	// NBIRTH before DBIRTH.
	if len(births) == 2 && strings.Contains(births[0][0], "DBIRTH") {
		births[0], births[1] = births[1], births[0]
	}
	topics := []string{"spBv1.0/plant/NBIRTH/gw 1", "spBv1.0/plant/DBIRTH/gw 1/pump.1", "spBv1.0/plant/NDATA/gw 1",
		"spBv1.0/plant/DDATA/gw 1/pump.1", "spBv1.0/plant/NDEATH/gw 1", "spBv1.0/plant/DDEATH/gw 1/pump.1"}
	f.Fuzz(func(t *testing.T, which uint8, payload []byte) {
		d := newTestDecoder(t)
		for _, b := range births {
			if _, err := d.Decode(nil, b[0], []byte(b[1])); err != nil {
				t.Fatalf("birth %s: %v", b[0], err)
			}
		}
		fuzzCheck(t, d, topics[int(which)%len(topics)], payload)
	})
}
