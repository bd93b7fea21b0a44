package gatehouseapp

import "github.com/gatehouse-project/gatehouse/modules/regapi"

// NodeLister is the cluster membership the registration API lists in
// GET /v1/nodes; nil while the node runs alone (the API answers an empty
// list and agents keep one tunnel through DNS).
func (a *App) NodeLister() regapi.NodeLister { return nil }
