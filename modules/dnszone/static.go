package dnszone

import (
	"net/netip"
	"strings"

	"github.com/miekg/dns"
)

// staticNode is a name the configuration defines. Its records carry the
// canonical owner name; answers copy them under the name as asked. A node
// without records is an empty non-terminal.
type staticNode struct {
	rrs map[uint16][]dns.RR
}

// staticZone is the configured part of the zone, built once per Handler.
type staticZone struct {
	// nodes by name relative to the zone ("" is the apex).
	nodes map[string]*staticNode
	// top holds the labels right below the apex that static names use:
	// the whole subtree of such a label is static, gateways never shadow it.
	top map[string]bool
	// glue are the addresses of in-zone nameservers, for NS answers.
	glue []dns.RR
	// order lists the nodes in a stable order for zone transfers.
	order []string
}

// steered holds the parts of the static names a Steering replaces; nil
// fields keep the configuration's.
type steered struct {
	// nameservers replace the apex NS records and their glue.
	nameservers []Nameserver
	// api replaces the addresses of api.ZONE.
	api []netip.Addr
	// ttl is the TTL of the records above.
	ttl uint32
}

// buildStatic builds the static names of c, with the parts s replaces (s
// nil: the configuration alone).
func buildStatic(c Config, s *steered) *staticZone {
	z := &staticZone{nodes: map[string]*staticNode{}, top: map[string]bool{}}
	staticTTL := seconds(c.TTL.Static)
	hdr := func(rel string, t uint16, ttl uint32) dns.RR_Header {
		name := c.Zone
		if rel != "" {
			name = rel + "." + c.Zone
		}
		return dns.RR_Header{Name: name, Rrtype: t, Class: dns.ClassINET, Ttl: ttl}
	}
	add := func(rel string, rr dns.RR) {
		n := z.node(rel)
		t := rr.Header().Rrtype
		n.rrs[t] = append(n.rrs[t], rr)
	}
	addAddrsTTL := func(rel string, addrs []netip.Addr, ttl uint32) []dns.RR {
		var out []dns.RR
		for _, a := range addrs {
			var rr dns.RR
			if a = a.Unmap(); a.Is4() {
				rr = &dns.A{Hdr: hdr(rel, dns.TypeA, ttl), A: a.AsSlice()}
			} else {
				rr = &dns.AAAA{Hdr: hdr(rel, dns.TypeAAAA, ttl), AAAA: a.AsSlice()}
			}
			add(rel, rr)
			out = append(out, rr)
		}
		return out
	}
	addAddrs := func(rel string, addrs []netip.Addr) []dns.RR { return addAddrsTTL(rel, addrs, staticTTL) }

	z.node("")
	nameservers, nsTTL := c.Nameservers, staticTTL
	if s != nil && len(s.nameservers) > 0 {
		nameservers, nsTTL = s.nameservers, s.ttl
	}
	for _, ns := range nameservers {
		add("", &dns.NS{Hdr: hdr("", dns.TypeNS, nsTTL), Ns: ns.Name})
	}
	for _, ns := range nameservers {
		if rel, in := relative(ns.Name, c.Zone); in && z.nodes[rel] == nil {
			z.glue = append(z.glue, addAddrsTTL(rel, ns.Addrs, nsTTL)...)
		}
	}
	// Configured in-zone nameservers a Steering left out keep answering
	// their addresses: the SOA's MNAME names one, and the registry
	// reserves their labels whatever the cluster does.
	for _, ns := range c.Nameservers {
		if rel, in := relative(ns.Name, c.Zone); in && z.nodes[rel] == nil {
			addAddrs(rel, ns.Addrs)
		}
	}
	addAddrs("", c.ApexAddrs)
	for _, caa := range c.CAA {
		add("", &dns.CAA{Hdr: hdr("", dns.TypeCAA, staticTTL), Flag: caa.Flag, Tag: caa.Tag, Value: caa.Value})
	}
	for _, mx := range c.MX {
		add("", &dns.MX{Hdr: hdr("", dns.TypeMX, staticTTL), Preference: mx.Preference, Mx: mx.Host})
	}
	for _, txt := range c.TXT {
		add("", &dns.TXT{Hdr: hdr("", dns.TypeTXT, staticTTL), Txt: splitTXT(txt)})
	}
	if s != nil && len(s.api) > 0 {
		addAddrsTTL("api", s.api, s.ttl)
	} else {
		addAddrs("api", c.APIAddrs)
	}
	for _, h := range c.Hosts {
		addAddrs(strings.ToLower(strings.TrimSuffix(h.Name, ".")), h.Addrs)
	}

	// Parents of deeper static names exist without data of their own.
	for rel := range z.nodes {
		for i := strings.IndexByte(rel, '.'); i >= 0; i = strings.IndexByte(rel, '.') {
			rel = rel[i+1:]
			z.node(rel)
		}
	}
	for rel := range z.nodes {
		if rel != "" {
			z.top[rel[strings.LastIndexByte(rel, '.')+1:]] = true
		}
	}
	for rel := range z.nodes {
		z.order = append(z.order, rel)
	}
	sortNames(z.order)
	return z
}

func (z *staticZone) node(rel string) *staticNode {
	n := z.nodes[rel]
	if n == nil {
		n = &staticNode{rrs: map[uint16][]dns.RR{}}
		z.nodes[rel] = n
	}
	return n
}

// sortNames orders relative names apex first, then by length and text, so
// that transfers and tests are deterministic.
func sortNames(names []string) {
	for i := 1; i < len(names); i++ {
		for j := i; j > 0 && lessName(names[j], names[j-1]); j-- {
			names[j], names[j-1] = names[j-1], names[j]
		}
	}
}

func lessName(a, b string) bool {
	if len(a) != len(b) {
		return len(a) < len(b)
	}
	return a < b
}

// splitTXT cuts s into character-strings of at most 255 bytes, the most
// one can hold on the wire, in the escaped form miekg/dns packs (where a
// backslash starts an escape).
func splitTXT(s string) []string {
	out := make([]string, 0, len(s)/255+1)
	for {
		chunk := s[:min(len(s), 255)]
		s = s[len(chunk):]
		out = append(out, strings.ReplaceAll(chunk, `\`, `\\`))
		if s == "" {
			return out
		}
	}
}
