package gatehouselistener

import (
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

func TestUnmarshalCaddyfile(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want ListenerWrapper
		err  bool
	}{
		{in: "gatehouse", want: ListenerWrapper{}},
		{in: "gatehouse {\n}", want: ListenerWrapper{}},
		{in: "gatehouse {\n peek_timeout 3s\n max_hello_bytes 4096\n open_timeout 2s\n}", want: ListenerWrapper{
			PeekTimeout: caddy.Duration(3 * time.Second), MaxHelloBytes: 4096, OpenTimeout: caddy.Duration(2 * time.Second)}},
		{in: "gatehouse {\n max_streams_per_gateway 100\n max_streams_per_client 10\n client_prefix 24 56\n offline_page off\n no_sni caddy\n log_interval 1m\n}", want: ListenerWrapper{
			MaxStreamsPerGateway: 100, MaxStreamsPerClient: 10, ClientPrefixV4: 24, ClientPrefixV6: 56,
			NoOfflinePage: true, NoSNIToCaddy: true, LogInterval: caddy.Duration(time.Minute)}},
		{in: "gatehouse {\n offline_page on\n no_sni alert\n}", want: ListenerWrapper{}},
		{in: "gatehouse extra", err: true},
		{in: "gatehouse {\n client_prefix 24\n}", err: true},
		{in: "gatehouse {\n client_prefix 33 64\n}", err: true},
		{in: "gatehouse {\n offline_page maybe\n}", err: true},
		{in: "gatehouse {\n no_sni drop\n}", err: true},
		{in: "gatehouse {\n max_streams_per_client 0\n}", err: true},
		{in: "gatehouse {\n peek_timeout\n}", err: true},
		{in: "gatehouse {\n peek_timeout -1s\n}", err: true},
		{in: "gatehouse {\n max_hello_bytes lots\n}", err: true},
		{in: "gatehouse {\n frobnicate 1\n}", err: true},
	} {
		var lw ListenerWrapper
		err := lw.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.in))
		if (err != nil) != tc.err {
			t.Errorf("%q: error %v, want error %v", tc.in, err, tc.err)
			continue
		}
		if err == nil && lw != tc.want {
			t.Errorf("%q: got %+v, want %+v", tc.in, lw, tc.want)
		}
	}
}

func TestValidate(t *testing.T) {
	for _, lw := range []ListenerWrapper{{PeekTimeout: -1}, {OpenTimeout: -1}, {MaxHelloBytes: -1}, {MaxHelloBytes: 100},
		{MaxStreamsPerClient: -1}, {ClientPrefixV4: 33}, {ClientPrefixV6: 129}, {LogInterval: -1}} {
		if lw.Validate() == nil {
			t.Errorf("%+v validated", lw)
		}
	}
	if err := (&ListenerWrapper{MaxHelloBytes: 4096}).Validate(); err != nil {
		t.Error(err)
	}
}
