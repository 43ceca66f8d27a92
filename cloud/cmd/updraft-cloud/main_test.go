package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/updraft-io/updraft/schemas/config"
)

func TestCommandLine(t *testing.T) {
	tests := []struct {
		args     []string
		code     int
		contains string
	}{
		{[]string{"--config", "../../../deploy/local/cloud.yaml", "--check-config"}, 0, "configuration OK"},
		{[]string{"--lake-dir", "", "--check-config"}, 2, "lake.dir"},
		{[]string{"--region", "eu.west", "--check-config"}, 2, "region"},
		{[]string{"--help"}, 0, "lake.roll_interval"},
		{[]string{"--version"}, 0, "updraft-cloud"},
	}
	for _, tt := range tests {
		var out, errOut bytes.Buffer
		code := config.Main(tt.args, cmd, &out, &errOut)
		if code != tt.code || !strings.Contains(out.String()+errOut.String(), tt.contains) {
			t.Errorf("%v: exit %d, output %q %q; want exit %d mentioning %q", tt.args, code, out.String(), errOut.String(), tt.code, tt.contains)
		}
	}
}
