package agent

import (
	"encoding/json"
	"net"
	"net/url"
	"path/filepath"
	"slices"
	"time"

	"github.com/gatehouse-project/gatehouse/gateway-agent/internal/cloudapi"
	"github.com/gatehouse-project/gatehouse/gateway-agent/internal/status"
	"github.com/gatehouse-project/gatehouse/modules/registry"
)

// Status implements setupui.Controller.
func (a *Agent) Status() status.Status {
	a.mu.Lock()
	st := a.st.Clone()
	regErr, pingErr := a.regErr, a.pingErr
	ping := a.ping
	addrs := a.addrs
	tuns := a.tuns
	a.mu.Unlock()

	s := status.Status{Version: a.opts.Version, Updated: time.Now().UTC(), Cloud: a.cfg.Cloud, Email: st.Email, Ping: ping}
	for _, ad := range addrs {
		s.LocalAddrs = append(s.LocalAddrs, ad.String())
	}
	if cur := st.Current; cur.Valid() {
		s.Name, s.FQDN, s.Zone, s.Provisional, s.Mode = cur.Name, cur.FQDN, cur.Zone, cur.Provisional, cur.Mode
		s.URL = status.PublicURL(cur.FQDN, a.cfg.PublicHTTPSPort())
		cs := a.certs.Status(cur.FQDN)
		s.Certificate = status.Certificate{Ready: cs.Ready, NotAfter: cs.NotAfter, Issuer: cs.Issuer, Obtaining: cs.Obtaining, LastError: cs.LastError}
		if a.cfg.Wildcard {
			s.Certificate.Wildcard = a.certs.Status("local." + cur.FQDN).Ready
		}
		if cs.Ready && a.cfg.HTTPSListen != "" {
			if _, port, err := net.SplitHostPort(a.cfg.HTTPSListen); err == nil {
				host := cur.FQDN
				if s.Certificate.Wildcard {
					host = "local." + cur.FQDN
				}
				s.LANURL = "https://" + net.JoinHostPort(host, port) + "/"
			}
		}
		if !cs.Ready && cs.LastError != "" {
			s.Problems = append(s.Problems, "the certificate cannot be obtained: "+cs.LastError)
		}
	}
	if s.Mode == "" {
		s.Mode = a.cfg.Mode
	}
	for _, r := range st.Retired {
		if r.RetireAfter.IsZero() {
			continue // given up at the next step, not reserved
		}
		s.Reserved = append(s.Reserved, status.Reserved{Name: r.Name, Until: r.RetireAfter.UTC()})
	}
	if p := st.Pending; p.Valid() {
		s.Pending = p.Name
		ps := a.certs.Status(p.FQDN)
		s.Certificate.PendingReady, s.Certificate.PendingError = ps.Ready, ps.LastError
		if ps.LastError != "" {
			s.Problems = append(s.Problems, "the certificate for "+p.FQDN+" cannot be obtained: "+ps.LastError)
		}
	}
	var runs []*tunnelRun
	if tuns != nil {
		runs = tuns.snapshot()
	}
	if tuns != nil {
		// Starting: the node list is being asked for.
		s.Tunnel.Enabled = true
	}
	if len(runs) > 0 {
		s.Tunnel = tunnelStatus(runs)
		if !s.Tunnel.Connected && s.Tunnel.Failures > 0 {
			s.Problems = append(s.Problems, "the tunnel is down: "+s.Tunnel.LastError)
		}
	}
	if tuns == nil {
		switch {
		case a.cfg.Mode == registry.ModeDynamic:
			s.Tunnel.Note = "dynamic DNS mode: the name points at the gateway's public address"
		case s.Name == "":
			s.Tunnel.Note = "opens once the gateway is registered"
		default:
			s.Tunnel.Note = "opens once the certificate is there"
		}
	}
	s.Upstream = a.upstreamStatus()
	if u := s.Upstream; !u.Healthy && !u.Checked.IsZero() {
		s.Problems = append(s.Problems, "the gateway's web app is not answering: "+u.LastError)
	}
	if regErr != nil {
		s.Problems = append(s.Problems, "registration failed: "+cloudapi.Explain(regErr))
	}
	if pingErr != nil {
		s.Problems = append(s.Problems, "the last ping failed: "+cloudapi.Explain(pingErr))
	}
	return s
}

// tunnelStatus is the state of each tunnel, summed up in the top fields by
// the first connected one (or the first one while none is).
func tunnelStatus(runs []*tunnelRun) status.Tunnel {
	t := status.Tunnel{Enabled: true}
	lead := -1
	for i, run := range runs {
		ts := run.c.State()
		c := status.TunnelConnection{Node: run.node, Connected: ts.Connected, Since: ts.Since, Failures: ts.Failures}
		if ad := run.addr(); ad.IsValid() {
			c.Addr = ad.String()
		}
		if ts.Connected {
			c.RTT = ts.RTT.Round(time.Millisecond).String()
		}
		if ts.LastError != nil {
			c.LastError = ts.LastError.Error()
		}
		t.Connections = append(t.Connections, c)
		if lead < 0 && ts.Connected {
			lead = i
		}
	}
	if lead < 0 {
		lead = 0
	}
	c := t.Connections[lead]
	t.Connected, t.Since, t.LastError, t.RTT, t.Failures = c.Connected, c.Since, c.LastError, c.RTT, c.Failures
	return t
}

// upstreamStatus is the proxy's view of the web app.
func (a *Agent) upstreamStatus() status.Upstream {
	h := a.proxy.Health()
	u := status.Upstream{URL: a.cfg.Upstream, Healthy: h.Healthy, Checked: h.Checked, LastError: h.LastError, LastErrorAt: h.LastErrorAt}
	if pu, err := url.Parse(a.cfg.Upstream); err == nil && pu.Host != "" {
		u.URL = pu.Redacted()
	}
	return u
}

func (a *Agent) statusPath() string { return filepath.Join(a.cfg.StateDir, status.FileName) }

func (a *Agent) saveStatus() {
	if err := a.Status().Save(a.statusPath()); err != nil {
		a.log.Warn("writing the status file", "error", err)
	}
}

// saveStatusIfChanged writes the status file when something other than the
// time changed, and returns what it compared.
func (a *Agent) saveStatusIfChanged(last []byte) []byte {
	s := a.Status()
	cmp := s
	cmp.Updated = time.Time{}
	cmp.Tunnel.RTT = ""
	cmp.Tunnel.Connections = slices.Clone(cmp.Tunnel.Connections)
	for i := range cmp.Tunnel.Connections {
		cmp.Tunnel.Connections[i].RTT = ""
	}
	cmp.Upstream.Checked = time.Time{}
	b, _ := json.Marshal(cmp)
	if string(b) == string(last) {
		return last
	}
	if err := s.Save(a.statusPath()); err != nil {
		a.log.Warn("writing the status file", "error", err)
	}
	return b
}
