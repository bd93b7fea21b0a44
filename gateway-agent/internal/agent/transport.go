package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/gatehouse-project/gatehouse/gateway-agent/internal/config"
	"github.com/gatehouse-project/gatehouse/modules/sockio"
)

func loadRoots(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading roots: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no PEM certificate", path)
	}
	return pool, nil
}

// cloudTransport reaches the cloud: its roots when configured, and the
// resolve overrides (host names in lower case).
func cloudTransport(cfg config.Config, overrides map[string]netip.Addr) (*http.Transport, error) {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.CloudCA != "" {
		pool, err := loadRoots(cfg.CloudCA)
		if err != nil {
			return nil, err
		}
		t.TLSClientConfig.RootCAs = pool
	}
	d := &net.Dialer{Timeout: 15 * time.Second, KeepAlive: 30 * time.Second}
	t.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if host, port, err := net.SplitHostPort(addr); err == nil {
			if ip, ok := overrides[strings.ToLower(host)]; ok {
				addr = net.JoinHostPort(ip.String(), port)
			}
		}
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		// The tunnel's connection: each stream's hop on this side starts
		// with a read or a write of it, which through the net package
		// would first wake the runtime's sysmon (see sockio).
		return sockio.Wrap(c), nil
	}
	return t, nil
}
