// Package status is the agent's report on itself: the name it serves, its
// tunnel, certificate and last ping, and what is wrong in plain words. The
// agent builds it, the setup page shows it, the local status endpoint and
// the status file carry it as JSON, and the status command prints it.
//
// It never holds a token.
package status

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/gatehouse-project/gatehouse/gateway-agent/internal/state"

	"github.com/gatehouse-project/gatehouse/modules/registry"
)

// FileName is the status file in the state directory.
const FileName = "status.json"

// Status is a snapshot of the agent.
type Status struct {
	// Version of the agent.
	Version string `json:"version"`
	// Updated is when the snapshot was taken.
	Updated time.Time `json:"updated"`
	// Cloud is the registration API.
	Cloud string `json:"cloud"`
	// Name and FQDN are the name served; Provisional when it is the one
	// derived from the MAC address.
	Name        string        `json:"name,omitempty"`
	Zone        string        `json:"zone,omitempty"`
	FQDN        string        `json:"fqdn,omitempty"`
	Provisional bool          `json:"provisional,omitempty"`
	Mode        registry.Mode `json:"mode,omitempty"`
	// URL is https://NAME.ZONE/, with the public port when it is not
	// 443 (PublicURL).
	URL string `json:"url,omitempty"`
	// Pending is a name being switched to, waiting for its certificate.
	Pending string `json:"pending,omitempty"`
	// Reserved are names renamed away from that this gateway still holds
	// (the rename grace period): the owner can switch back to them.
	Reserved []Reserved `json:"reserved,omitempty"`
	// Email is the owner's email, as sent to the cloud.
	Email string `json:"email,omitempty"`

	Tunnel      Tunnel      `json:"tunnel"`
	Certificate Certificate `json:"certificate"`
	Ping        Ping        `json:"ping"`
	Upstream    Upstream    `json:"upstream"`

	// LocalAddrs are the LAN addresses last reported.
	LocalAddrs []string `json:"local_addrs,omitempty"`
	// LANURL is where LAN browsers reach the gateway over HTTPS.
	LANURL string `json:"lan_url,omitempty"`
	// Problems are what is wrong, in plain words; empty when all is well.
	Problems []string `json:"problems,omitempty"`
}

// Reserved is a name held for its owner after a rename.
type Reserved struct {
	Name string `json:"name"`
	// Until is when it is given up.
	Until time.Time `json:"until"`
}

// Tunnel is the tunnel's state (tunnel mode).
type Tunnel struct {
	// Enabled is false in dynamic DNS mode, and before the certificate
	// is there.
	Enabled   bool      `json:"enabled"`
	Connected bool      `json:"connected"`
	Since     time.Time `json:"since,omitzero"`
	LastError string    `json:"last_error,omitempty"`
	RTT       string    `json:"rtt,omitempty"`
	Failures  int       `json:"failures,omitempty"`
	// Note says why a tunnel that is not enabled is not.
	Note string `json:"note,omitempty"`
	// Connections are the tunnels one by one: one through DNS, or one
	// per cloud node (tunnel_connections). The fields above sum them up:
	// connected while any is, and the first connected one's details (or
	// the first one's while none is).
	Connections []TunnelConnection `json:"connections,omitempty"`
}

// TunnelConnection is one tunnel to the cloud.
type TunnelConnection struct {
	// Node is the cloud node it goes to, "" for the one dialed through
	// DNS; Addr is the node's address it dials.
	Node      string    `json:"node,omitempty"`
	Addr      string    `json:"addr,omitempty"`
	Connected bool      `json:"connected"`
	Since     time.Time `json:"since,omitzero"`
	LastError string    `json:"last_error,omitempty"`
	RTT       string    `json:"rtt,omitempty"`
	Failures  int       `json:"failures,omitempty"`
}

// Certificate is the served name's certificate.
type Certificate struct {
	Ready     bool      `json:"ready"`
	NotAfter  time.Time `json:"not_after,omitzero"`
	Issuer    string    `json:"issuer,omitempty"`
	Obtaining bool      `json:"obtaining,omitempty"`
	LastError string    `json:"last_error,omitempty"`
	// Wildcard tells whether *.NAME.ZONE (covering local.NAME.ZONE) is
	// there too.
	Wildcard bool `json:"wildcard,omitempty"`
	// PendingReady tells whether the pending name's certificate is there,
	// and PendingError why it is not.
	PendingReady bool   `json:"pending_ready,omitempty"`
	PendingError string `json:"pending_error,omitempty"`
}

// Upstream is the gateway's web app as the proxy last found it. The error
// text is for the owner: visitors never see it.
type Upstream struct {
	// URL is the upstream, without credentials.
	URL         string    `json:"url,omitempty"`
	Healthy     bool      `json:"healthy"`
	Checked     time.Time `json:"checked,omitzero"`
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
}

// PublicURL is the HTTPS URL of host on port: the port is left out when it
// is 443, so the URL is the one a browser shows.
func PublicURL(host string, port int) string {
	if port == 0 || port == 443 {
		return "https://" + host + "/"
	}
	return "https://" + net.JoinHostPort(host, strconv.Itoa(port)) + "/"
}

// Ping is the last report to the cloud.
type Ping struct {
	Last      time.Time `json:"last,omitzero"`
	LastError string    `json:"last_error,omitempty"`
	// PublicIP is the address the cloud saw.
	PublicIP string `json:"public_ip,omitempty"`
}

// Write writes st as indented JSON.
func (st Status) Write(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(st)
}

// Save writes st to path atomically, readable by its owner only (it shows
// the owner's email).
func (st Status) Save(path string) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return state.WriteFileAtomic(path, append(b, '\n'), 0o600)
}

// Load reads a status file.
func Load(path string) (Status, error) {
	var st Status
	b, err := os.ReadFile(path)
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("status file %s: %w", path, err)
	}
	return st, nil
}

// Text renders st for a terminal.
func (st Status) Text() string {
	var b strings.Builder
	line := func(k, format string, args ...any) {
		fmt.Fprintf(&b, "%-13s %s\n", k+":", fmt.Sprintf(format, args...))
	}
	name := st.FQDN
	if name == "" {
		name = "(not registered yet)"
	}
	if st.Provisional {
		name += " (provisional: choose a name in the setup page)"
	}
	line("name", "%s", name)
	if st.Pending != "" {
		line("switching to", "%s (waiting for its certificate)", st.Pending)
	}
	for _, r := range st.Reserved {
		line("reserved", "%s until %s (choose it again to switch back)", r.Name, r.Until.Format(time.RFC3339))
	}
	line("mode", "%s", st.Mode)
	switch {
	case !st.Tunnel.Enabled:
		line("tunnel", "off%s", paren(st.Tunnel.Note))
	case st.Tunnel.Connected:
		line("tunnel", "connected since %s (rtt %s)", st.Tunnel.Since.Format(time.RFC3339), st.Tunnel.RTT)
	default:
		line("tunnel", "down: %s", orNone(st.Tunnel.LastError))
	}
	// One line per node once there are several tunnels (the single
	// tunnel through DNS is the line above).
	for _, c := range st.Tunnel.Connections {
		if c.Node == "" {
			continue
		}
		if c.Connected {
			line("  to "+c.Node, "%s connected since %s (rtt %s)", c.Addr, c.Since.Format(time.RFC3339), c.RTT)
		} else {
			line("  to "+c.Node, "%s down: %s", c.Addr, orNone(c.LastError))
		}
	}
	switch {
	case st.Certificate.Ready:
		line("certificate", "valid until %s (%s)", st.Certificate.NotAfter.Format(time.RFC3339), st.Certificate.Issuer)
	case st.Certificate.Obtaining:
		line("certificate", "being obtained")
	default:
		line("certificate", "none: %s", orNone(st.Certificate.LastError))
	}
	if st.Ping.Last.IsZero() {
		line("last ping", "never")
	} else {
		line("last ping", "%s from %s", st.Ping.Last.Format(time.RFC3339), orNone(st.Ping.PublicIP))
	}
	line("local addrs", "%s", orNone(strings.Join(st.LocalAddrs, ", ")))
	switch u := st.Upstream; {
	case u.URL == "":
	case u.Checked.IsZero():
		line("app", "%s (not checked yet)", u.URL)
	case u.Healthy:
		line("app", "%s answering", u.URL)
	default:
		line("app", "%s not answering since %s: %s", u.URL, u.LastErrorAt.Format(time.RFC3339), orNone(u.LastError))
	}
	if st.URL != "" {
		line("url", "%s", st.URL)
	}
	if st.LANURL != "" {
		line("lan url", "%s", st.LANURL)
	}
	if st.Email != "" {
		line("email", "%s", st.Email)
	}
	if len(st.Problems) == 0 {
		line("problems", "none")
	}
	for _, p := range st.Problems {
		line("problem", "%s", p)
	}
	line("as of", "%s", st.Updated.Format(time.RFC3339))
	return b.String()
}

func paren(s string) string {
	if s == "" {
		return ""
	}
	return " (" + s + ")"
}

func orNone(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
