package gatehouseapp

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics exports the app's counters through Caddy's metrics registry. The
// counters themselves live in the plain packages (dnszone, hub), which know
// nothing of Prometheus; this collector reads their snapshots on scrape.
type metrics struct {
	app *App

	gateways, sessions                          *prometheus.Desc
	sessionsTotal, sessionsReplaced, refused    *prometheus.Desc
	dnsQueries, dnsResponses, dnsLimited, dnsTC *prometheus.Desc
	forwards, forwardBytes                      *prometheus.Desc
	byKind, byKindTotal                         *prometheus.Desc
	clusterNodes, clusterMember, clusterHeld    *prometheus.Desc
	clusterWrites, clusterResyncs, linkSessions *prometheus.Desc
	relayStreams, relayRefused, relayBytes      *prometheus.Desc
	nodeHeld, linkCertNotAfter                  *prometheus.Desc
}

func registerMetrics(reg *prometheus.Registry, a *App) (*metrics, error) {
	const ns = "gatehouse"
	m := &metrics{
		app:              a,
		gateways:         prometheus.NewDesc(ns+"_zone_gateways", "Live gateways answered by DNS.", nil, nil),
		sessions:         prometheus.NewDesc(ns+"_tunnel_sessions", "Live tunnel sessions.", nil, nil),
		sessionsTotal:    prometheus.NewDesc(ns+"_tunnel_sessions_total", "Tunnel sessions registered.", nil, nil),
		sessionsReplaced: prometheus.NewDesc(ns+"_tunnel_sessions_replaced_total", "Tunnel sessions closed because a newer one took the name.", nil, nil),
		refused:          prometheus.NewDesc(ns+"_tunnel_handshakes_refused_total", "Tunnel handshakes refused.", nil, nil),
		dnsQueries:       prometheus.NewDesc(ns+"_dns_queries_total", "DNS queries received.", []string{"proto"}, nil),
		dnsResponses:     prometheus.NewDesc(ns+"_dns_responses_total", "DNS responses sent.", []string{"rcode"}, nil),
		dnsLimited:       prometheus.NewDesc(ns+"_dns_rate_limited_total", "UDP responses withheld (dropped) or slipped by rate limiting.", []string{"action"}, nil),
		dnsTC:            prometheus.NewDesc(ns+"_dns_truncated_total", "UDP responses truncated because they did not fit.", nil, nil),
		forwards:         prometheus.NewDesc(ns+"_forward_streams_total", "Agent-to-agent streams by outcome.", []string{"outcome"}, nil),
		forwardBytes:     prometheus.NewDesc(ns+"_forward_bytes_total", "Bytes relayed between agents.", []string{"direction"}, nil),
		byKind:           prometheus.NewDesc(ns+"_tunnels", "Live tunnels by kind (websocket, pagekite, ...).", []string{"kind"}, nil),
		byKindTotal:      prometheus.NewDesc(ns+"_tunnels_total", "Tunnels registered, by kind.", []string{"kind"}, nil),
		clusterNodes:     prometheus.NewDesc(ns+"_cluster_nodes", "Live cluster members, this node included.", nil, nil),
		clusterMember:    prometheus.NewDesc(ns+"_cluster_member", "1 for each live cluster member, by name.", []string{"node"}, nil),
		clusterHeld:      prometheus.NewDesc(ns+"_cluster_gateways_held", "Gateways whose tunnel this node holds, as published in the directory.", nil, nil),
		clusterWrites:    prometheus.NewDesc(ns+"_cluster_directory_writes_total", "Directory write transactions (each carries every change gathered meanwhile).", nil, nil),
		clusterResyncs:   prometheus.NewDesc(ns+"_cluster_resyncs_total", "Full reloads of the cluster view after a lost notification connection.", nil, nil),
		linkSessions:     prometheus.NewDesc(ns+"_cluster_link_sessions", "Live node-to-node link sessions.", nil, nil),
		relayStreams:     prometheus.NewDesc(ns+"_cluster_relay_streams_total", "Streams relayed between nodes: out (to a gateway another node holds), in (from another node to a gateway held here).", []string{"direction"}, nil),
		relayRefused:     prometheus.NewDesc(ns+"_cluster_relay_refused_total", "Relayed streams from other nodes refused here.", nil, nil),
		relayBytes:       prometheus.NewDesc(ns+"_cluster_relay_bytes_total", "Bytes relayed for other nodes: to_gateway (to a gateway held here) and from_gateway.", []string{"direction"}, nil),
		nodeHeld:         prometheus.NewDesc(ns+"_cluster_node_gateways_held", "Gateways each live node holds, as this node's in-memory directory shows them.", []string{"node"}, nil),
		linkCertNotAfter: prometheus.NewDesc(ns+"_cluster_link_certificate_not_after_seconds", "When the link certificate new link sessions present expires (Unix time); it is renewed or reloaded well before.", nil, nil),
	}
	if reg == nil {
		return m, nil
	}
	return m, reg.Register(m)
}

// Describe implements prometheus.Collector.
func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{m.gateways, m.sessions, m.sessionsTotal, m.sessionsReplaced, m.refused, m.dnsQueries, m.dnsResponses, m.dnsLimited, m.dnsTC, m.forwards, m.forwardBytes, m.byKind, m.byKindTotal,
		m.clusterNodes, m.clusterMember, m.clusterHeld, m.clusterWrites, m.clusterResyncs, m.linkSessions, m.relayStreams, m.relayRefused, m.relayBytes, m.nodeHeld, m.linkCertNotAfter} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	n := m.app.node
	if n == nil {
		return
	}
	hs := n.Hub().Stats()
	ch <- prometheus.MustNewConstMetric(m.sessions, prometheus.GaugeValue, float64(hs.Live))
	ch <- prometheus.MustNewConstMetric(m.sessionsTotal, prometheus.CounterValue, float64(hs.Registered))
	ch <- prometheus.MustNewConstMetric(m.sessionsReplaced, prometheus.CounterValue, float64(hs.Replaced))
	ch <- prometheus.MustNewConstMetric(m.refused, prometheus.CounterValue, float64(hs.Refused))
	for kind, ks := range hs.Kinds {
		ch <- prometheus.MustNewConstMetric(m.byKind, prometheus.GaugeValue, float64(ks.Live), kind)
		ch <- prometheus.MustNewConstMetric(m.byKindTotal, prometheus.CounterValue, float64(ks.Registered), kind)
	}
	if r := n.Relay(); r != nil {
		ch <- prometheus.MustNewConstMetric(m.forwards, prometheus.CounterValue, float64(r.Opened.Load()), "opened")
		ch <- prometheus.MustNewConstMetric(m.forwards, prometheus.CounterValue, float64(r.Refused.Load()), "refused")
		ch <- prometheus.MustNewConstMetric(m.forwardBytes, prometheus.CounterValue, float64(r.BytesUp.Load()), "to_target")
		ch <- prometheus.MustNewConstMetric(m.forwardBytes, prometheus.CounterValue, float64(r.BytesDown.Load()), "to_initiator")
	}
	m.collectCluster(ch)
	if n.DNSHandler() == nil {
		return
	}
	ch <- prometheus.MustNewConstMetric(m.gateways, prometheus.GaugeValue, float64(n.Index().Len()))
	s := n.DNSHandler().Stats()
	ch <- prometheus.MustNewConstMetric(m.dnsQueries, prometheus.CounterValue, float64(s.UDP), "udp")
	ch <- prometheus.MustNewConstMetric(m.dnsQueries, prometheus.CounterValue, float64(s.TCP), "tcp")
	for rcode, n := range s.Rcodes {
		ch <- prometheus.MustNewConstMetric(m.dnsResponses, prometheus.CounterValue, float64(n), rcode)
	}
	ch <- prometheus.MustNewConstMetric(m.dnsLimited, prometheus.CounterValue, float64(s.RateLimited), "drop")
	ch <- prometheus.MustNewConstMetric(m.dnsLimited, prometheus.CounterValue, float64(s.Slipped), "slip")
	ch <- prometheus.MustNewConstMetric(m.dnsTC, prometheus.CounterValue, float64(s.Truncated))
}

// collectCluster exports the cluster's figures, when the node is in one.
func (m *metrics) collectCluster(ch chan<- prometheus.Metric) {
	c := m.app.node.Cluster()
	if c == nil {
		return
	}
	cs := c.Member().Stats()
	ch <- prometheus.MustNewConstMetric(m.clusterNodes, prometheus.GaugeValue, float64(cs.Nodes))
	for _, n := range c.Nodes() {
		ch <- prometheus.MustNewConstMetric(m.clusterMember, prometheus.GaugeValue, 1, n.Name)
	}
	ch <- prometheus.MustNewConstMetric(m.clusterHeld, prometheus.GaugeValue, float64(cs.Held))
	for name, held := range c.HeldCounts() {
		ch <- prometheus.MustNewConstMetric(m.nodeHeld, prometheus.GaugeValue, float64(held), name)
	}
	if leaf, err := c.Link().Certificate(); err == nil {
		ch <- prometheus.MustNewConstMetric(m.linkCertNotAfter, prometheus.GaugeValue, float64(leaf.NotAfter.Unix()))
	}
	ch <- prometheus.MustNewConstMetric(m.clusterWrites, prometheus.CounterValue, float64(cs.Batches))
	ch <- prometheus.MustNewConstMetric(m.clusterResyncs, prometheus.CounterValue, float64(cs.Resyncs))
	ls := c.Link().Stats()
	ch <- prometheus.MustNewConstMetric(m.linkSessions, prometheus.GaugeValue, float64(ls.Sessions))
	ch <- prometheus.MustNewConstMetric(m.relayStreams, prometheus.CounterValue, float64(ls.StreamsOut), "out")
	ch <- prometheus.MustNewConstMetric(m.relayStreams, prometheus.CounterValue, float64(ls.StreamsIn), "in")
	ch <- prometheus.MustNewConstMetric(m.relayRefused, prometheus.CounterValue, float64(ls.Refused))
	ch <- prometheus.MustNewConstMetric(m.relayBytes, prometheus.CounterValue, float64(ls.BytesIn), "to_gateway")
	ch <- prometheus.MustNewConstMetric(m.relayBytes, prometheus.CounterValue, float64(ls.BytesOut), "from_gateway")
}
