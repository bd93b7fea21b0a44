package dnszone

import (
	"sync/atomic"

	"github.com/miekg/dns"
)

// Stats is a snapshot of a Handler's counters since it was built, for an
// adapter to export (for instance as Prometheus counter functions).
type Stats struct {
	// UDP and TCP count the queries that reached the handler.
	UDP, TCP uint64
	// Rcodes counts the replies sent by rcode name ("NOERROR", "NXDOMAIN",
	// "REFUSED", "FORMERR", "NOTIMP", "SERVFAIL", "BADVERS"). Rate-limited
	// slips count as NOERROR, transfers once each.
	Rcodes map[string]uint64
	// NoData counts the NOERROR replies without answer records (NODATA,
	// slips excluded).
	NoData uint64
	// Truncated counts the replies sent with TC set because they did not
	// fit (slips excluded).
	Truncated uint64
	// RateLimited counts the UDP queries dropped by rate limiting; Slipped
	// those answered with an empty truncated reply instead.
	RateLimited, Slipped uint64
	// Transfers counts the zone transfers served; TransfersRefused those
	// refused (they are also counted as REFUSED).
	Transfers, TransfersRefused uint64
	// Malformed counts the packets dropped or answered FORMERR by the server
	// before they reached the handler (see Server).
	Malformed uint64
	// Panics counts the queries that panicked (answered SERVFAIL).
	Panics uint64
	// WriteErrors counts the replies that could not be sent.
	WriteErrors uint64
}

// maxRcode is the slot where rcodes above BADCOOKIE, which this server
// never sends, would be counted.
const maxRcode = dns.RcodeBadCookie + 1

type counters struct {
	udp, tcp                    atomic.Uint64
	rcodes                      [maxRcode + 1]atomic.Uint64
	noData, truncated           atomic.Uint64
	rateLimited, slipped        atomic.Uint64
	transfers, transfersRefused atomic.Uint64
	malformed, panics           atomic.Uint64
	writeErrors                 atomic.Uint64
}

// count records one reply; a slip is counted by its rcode only.
func (c *counters) count(m *dns.Msg, slip bool) {
	c.rcodes[min(max(m.Rcode, 0), maxRcode)].Add(1)
	switch {
	case slip:
	case m.Truncated:
		c.truncated.Add(1)
	case m.Rcode == dns.RcodeSuccess && len(m.Answer) == 0:
		c.noData.Add(1)
	}
}

// Stats returns a snapshot of the counters.
func (h *Handler) Stats() Stats {
	c := &h.stats
	s := Stats{
		UDP: c.udp.Load(), TCP: c.tcp.Load(),
		// The rcodes this server sends are always present, so that an
		// exporter's label set is stable.
		Rcodes: map[string]uint64{"NOERROR": 0, "FORMERR": 0, "SERVFAIL": 0, "NXDOMAIN": 0,
			"NOTIMP": 0, "REFUSED": 0, "BADVERS": 0},
		NoData: c.noData.Load(), Truncated: c.truncated.Load(),
		RateLimited: c.rateLimited.Load(), Slipped: c.slipped.Load(),
		Transfers: c.transfers.Load(), TransfersRefused: c.transfersRefused.Load(),
		Malformed: c.malformed.Load(), Panics: c.panics.Load(),
		WriteErrors: c.writeErrors.Load(),
	}
	for i := range c.rcodes {
		if n := c.rcodes[i].Load(); n > 0 {
			name, ok := dns.RcodeToString[i]
			switch {
			case i == dns.RcodeBadVers:
				// 16 is BADSIG in TSIG and BADVERS in EDNS; this server
				// has no TSIG.
				name = "BADVERS"
			case !ok || i == maxRcode:
				name = "OTHER"
			}
			s.Rcodes[name] += n
		}
	}
	return s
}
