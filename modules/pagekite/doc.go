// Package pagekite is a PageKite frontend: it lets an unmodified PageKite
// kite (pagekite.py, as run by WebThings gateways) attach to the cloud as a
// tunnel. It recognises a kite's plain-text first bytes (Sniff), answers the
// kite's frontend check (HEAD /ping), authenticates each kite of a CONNECT
// PageKite:1 request with a timestamped challenge, and then carries the
// cloud's streams over the kite's chunked connection, honouring the kite's
// SKB progress reports as flow control.
//
// The package has no Caddy import: the SNI listener hands it connections
// that Sniff accepts, and it hands each accepted kite to a Register
// callback as a hub.Tunnel. docs/pagekite.md says which parts of the
// protocol are implemented and why.
package pagekite
