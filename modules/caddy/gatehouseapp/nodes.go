package gatehouseapp

import "github.com/gatehouse-project/gatehouse/modules/regapi"

// NodeLister is the cluster membership the registration API lists in
// GET /v1/nodes. The handler asks for it when it is provisioned, before
// the app starts and joins the cluster, so the lister reads the
// membership on each call; a node that runs alone (no cluster section)
// lists none, and agents keep one tunnel through DNS.
func (a *App) NodeLister() regapi.NodeLister { return clusterNodes{a} }

// clusterNodes lists the live cluster members for the agents.
type clusterNodes struct{ a *App }

func (l clusterNodes) Nodes() []regapi.Node {
	if l.a.node == nil {
		return nil
	}
	c := l.a.node.Cluster()
	if c == nil {
		return nil
	}
	members := c.Nodes()
	out := make([]regapi.Node, 0, len(members))
	for _, m := range members {
		out = append(out, regapi.Node{Name: m.Name, Addrs: m.PublicAddrs})
	}
	return out
}
