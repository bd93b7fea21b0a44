package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/gatehouse-project/gatehouse/internal/testtools/cloudtest"
)

// startFrp runs frps and frpc (built from bench/frp, a module of its own
// that pins them) as people deploy frp for HTTPS: frps's https vhost routes
// by SNI without terminating TLS, and frpc's connection to frps uses TLS
// (frp's default since 0.50), everything else at its defaults.
func (b *bench) startFrp(gwAddr string) (*path, error) {
	var ports [2]int
	for i := range ports {
		p, err := cloudtest.FreeTCPPort()
		if err != nil {
			return nil, err
		}
		ports[i] = p
	}
	dir := filepath.Join(b.Dir, "frp")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	host, port, _ := net.SplitHostPort(gwAddr)
	srvCfg := fmt.Sprintf(`bindAddr = "127.0.0.1"
bindPort = %d
vhostHTTPSPort = %d
auth.token = "benchsecret"
log.level = "error"
`, ports[0], ports[1])
	cliCfg := fmt.Sprintf(`serverAddr = "127.0.0.1"
serverPort = %d
auth.token = "benchsecret"
log.level = "error"
transport.tls.enable = true
# frps may not listen yet when frpc starts: retry rather than exit.
loginFailExit = false

[[proxies]]
name = "bench"
type = "https"
localIP = %q
localPort = %s
customDomains = ["bench.%s"]
`, ports[0], host, port, zone)
	sf, cf := filepath.Join(dir, "frps.toml"), filepath.Join(dir, "frpc.toml")
	if err := os.WriteFile(sf, []byte(srvCfg), 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(cf, []byte(cliCfg), 0o600); err != nil {
		return nil, err
	}
	s, err := b.Start("frps", tunnelEnv(), filepath.Join(*frpDir, "frps"), "-c", sf)
	if err != nil {
		return nil, err
	}
	c, err := b.Start("frpc", tunnelEnv(), filepath.Join(*frpDir, "frpc"), "-c", cf)
	if err != nil {
		return nil, err
	}
	return &path{name: "frp", addr: fmt.Sprintf("127.0.0.1:%d", ports[1]), host: "bench." + zone, procs: []*exec.Cmd{s, c}}, nil
}
