package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-project/gatehouse/modules/dnsprovider"
)

// loopbackClient is an HTTP client that trusts the PEM roots in rootFiles
// and dials every name under the test zone (api.box.test, acme.box.test,
// …) on 127.0.0.1, keeping the port: the test machine's resolver knows
// nothing of box.test, and the URLs, the SNI and the certificates stay
// those of the real names.
func loopbackClient(t *testing.T, rootFiles ...string) *http.Client {
	t.Helper()
	pool := x509.NewCertPool()
	for _, f := range rootFiles {
		pem, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if !pool.AppendCertsFromPEM(pem) {
			t.Fatalf("no certificate in %s", f)
		}
	}
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	tr := &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool},
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			host, port, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			if host == "box.test" || strings.HasSuffix(host, ".box.test") {
				addr = net.JoinHostPort("127.0.0.1", port)
			}
			return dialer.DialContext(ctx, network, addr)
		},
		ForceAttemptHTTP2: true,
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// provider returns the libdns provider of the cloud's API, as a gateway
// (or the operator) with token.
func (c *cloud) provider(token string) *dnsprovider.Provider {
	return &dnsprovider.Provider{
		Endpoint:   fmt.Sprintf("https://api.box.test:%d", c.https),
		Token:      token,
		HTTPClient: loopbackClient(c.t, c.rootCA()),
	}
}
