package agent

import (
	"context"
	"errors"
	"net/netip"
	"time"

	"github.com/gatehouse-project/gatehouse/gateway-agent/internal/cloudapi"
	"github.com/gatehouse-project/gatehouse/gateway-agent/internal/mdns"
	"github.com/gatehouse-project/gatehouse/gateway-agent/internal/netinfo"
)

func (a *Agent) localAddrs() ([]netip.Addr, error) {
	if len(a.set.LocalAddrs) > 0 {
		return a.set.LocalAddrs, nil
	}
	return netinfo.LocalAddrs()
}

// doPing reports to the cloud with the current name's token.
func (a *Agent) doPing(ctx context.Context, addrs []netip.Addr) error {
	a.mu.Lock()
	cur := a.st.Current.Clone()
	a.mu.Unlock()
	if !cur.Valid() {
		return errors.New("not registered yet")
	}
	info, err := a.api.Ping(ctx, cur.Token, addrs)
	a.mu.Lock()
	defer a.mu.Unlock()
	a.addrs = addrs
	a.pingErr = err
	if err != nil {
		a.ping.LastError = cloudapi.Explain(err)
		return err
	}
	a.ping.Last = time.Now()
	a.ping.LastError = ""
	a.ping.PublicIP = info.PublicIPv4
	if a.ping.PublicIP == "" {
		a.ping.PublicIP = info.PublicIPv6
	}
	return nil
}

// advertise keeps the mDNS responder in step with the LAN addresses.
func (a *Agent) advertise(ctx context.Context, adv *mdns.Advertiser) {
	defer adv.Close()
	t := time.NewTicker(10 * time.Second)
	defer t.Stop()
	warned := false
	for {
		addrs, err := a.localAddrs()
		if err == nil {
			err = adv.Update(addrs)
		}
		if err != nil && !warned {
			// Not fatal: the page is still reachable by address.
			a.log.Warn("mDNS advertisement unavailable", "error", err)
			warned = true
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
