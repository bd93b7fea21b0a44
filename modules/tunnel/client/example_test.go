package client_test

import (
	"context"
	"net"
	"os"
	"time"

	"github.com/gatehouse-project/gatehouse/modules/relay"
	"github.com/gatehouse-project/gatehouse/modules/tunnel"
	"github.com/gatehouse-project/gatehouse/modules/tunnel/client"
)

// The agent keeps its tunnel up and relays each stream to its local TLS
// server, telling it the original client's address with a PROXY header.
func ExampleClient() {
	c := &client.Client{
		URL:   "wss://api.box.example.org/v1/tunnel",
		Name:  "myhome",
		Token: os.Getenv("GATEHOUSE_TOKEN"),
		Handler: func(st *tunnel.Stream) {
			up, err := net.DialTimeout("tcp", "127.0.0.1:8443", 5*time.Second)
			if err != nil {
				// The cloud's Open fails with this reason and can show
				// its "gateway offline" page.
				_ = st.Ack(false, "upstream unreachable")
				return
			}
			defer up.Close()
			if err := st.Ack(true, ""); err != nil {
				return
			}
			if _, err := up.Write(client.StreamProxyHeader(st)); err != nil {
				return
			}
			relay.Conns(context.Background(), st, up, relay.Counts{})
		},
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_ = c.Run(ctx) // returns when ctx ends
}
