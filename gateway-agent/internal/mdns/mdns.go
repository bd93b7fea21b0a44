// Package mdns advertises the setup page on the LAN with multicast DNS
// (github.com/hashicorp/mdns): the host name HOST.local answers with the
// gateway's LAN addresses, and an _http._tcp service points browsers and
// service browsers at the setup port.
//
// It answers queries only; it does not browse, and it does not resolve
// conflicts with another device of the same name.
package mdns

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"

	hmdns "github.com/hashicorp/mdns"
)

// Service is the DNS-SD service type advertised.
const Service = "_http._tcp"

// Advertiser keeps one mDNS responder up to date with the addresses.
type Advertiser struct {
	// Host is the host name without .local, e.g. "gateway".
	Host string
	// Port is the setup page's port.
	Port int
	// Instance is the service instance name people see.
	Instance string
	Logger   *slog.Logger

	mu     sync.Mutex
	addrs  []netip.Addr
	server *hmdns.Server
}

// Zone builds the records answered for addrs.
func (a *Advertiser) Zone(addrs []netip.Addr) (*hmdns.MDNSService, error) {
	if len(addrs) == 0 {
		return nil, errors.New("mdns: no address to advertise")
	}
	ips := make([]net.IP, 0, len(addrs))
	for _, ad := range addrs {
		ips = append(ips, net.IP(ad.AsSlice()))
	}
	inst := a.Instance
	if inst == "" {
		inst = "Gateway setup"
	}
	return hmdns.NewMDNSService(inst, Service, "local.", a.Host+".local.", a.Port, ips, []string{"path=/"})
}

// Update (re)starts the responder when addrs changed. The responder binds
// the system's default multicast interface.
func (a *Advertiser) Update(addrs []netip.Addr) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.server != nil && slices.Equal(addrs, a.addrs) {
		return nil
	}
	zone, err := a.Zone(addrs)
	if err != nil {
		return err
	}
	if a.server != nil {
		_ = a.server.Shutdown()
		a.server = nil
	}
	log := a.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	srv, err := hmdns.NewServer(&hmdns.Config{Zone: zone, Logger: slog.NewLogLogger(log.Handler(), slog.LevelDebug)})
	if err != nil {
		return fmt.Errorf("mdns: %w", err)
	}
	a.server, a.addrs = srv, slices.Clone(addrs)
	log.Info("advertising with mDNS", "host", a.Host+".local", "port", a.Port, "addrs", addrs)
	return nil
}

// Close stops the responder.
func (a *Advertiser) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.server == nil {
		return nil
	}
	err := a.server.Shutdown()
	a.server = nil
	return err
}
