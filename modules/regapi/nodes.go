package regapi

import (
	"net/http"
	"net/netip"
	"slices"
	"strings"

	"github.com/gatehouse-project/gatehouse/modules/registry"
)

// Node is one live cloud node as agents see it: its name and the public
// addresses its tunnel endpoint answers on.
type Node struct {
	Name  string
	Addrs []netip.Addr
}

// NodeLister lists the live cloud nodes (the cluster membership). It must
// not wait on a database: GET /v1/nodes calls it on every request.
type NodeLister interface {
	Nodes() []Node
}

type nodeJSON struct {
	Name  string   `json:"name"`
	Addrs []string `json:"addrs"`
}

// v1Nodes answers the live nodes, sorted by name, so that an agent can keep
// tunnels to several of them. It asks for a gateway's token although the
// addresses are public in DNS anyway: it keeps the endpoint out of
// anonymous enumeration, and the agents that use it have one. A cloud
// without a lister (a single node) answers an empty list.
func (a *API) v1Nodes(w http.ResponseWriter, _ *http.Request, _ *registry.Gateway) {
	out := []nodeJSON{}
	if a.cfg.Nodes != nil {
		for _, n := range a.cfg.Nodes.Nodes() {
			nj := nodeJSON{Name: n.Name, Addrs: make([]string, 0, len(n.Addrs))}
			for _, ad := range n.Addrs {
				if ad.IsValid() {
					nj.Addrs = append(nj.Addrs, ad.Unmap().String())
				}
			}
			out = append(out, nj)
		}
	}
	slices.SortFunc(out, func(x, y nodeJSON) int { return strings.Compare(x.Name, y.Name) })
	writeJSON(w, http.StatusOK, map[string][]nodeJSON{"nodes": out})
}
