// Package gatehouse registers every Gatehouse Caddy module, so that
// `xcaddy build --with github.com/gatehouse-project/gatehouse=.` builds a
// Caddy that is the registration server, the zone's DNS server and the
// tunnel frontend.
package gatehouse

import (
	// The Caddy modules; each registers itself in init.
	_ "github.com/gatehouse-project/gatehouse/modules/caddy/gatehouseadmin"
	_ "github.com/gatehouse-project/gatehouse/modules/caddy/gatehouseapp"
	_ "github.com/gatehouse-project/gatehouse/modules/caddy/gatehousecmd"
	_ "github.com/gatehouse-project/gatehouse/modules/caddy/gatehousedns"
	_ "github.com/gatehouse-project/gatehouse/modules/caddy/gatehousehandler"
	_ "github.com/gatehouse-project/gatehouse/modules/caddy/gatehouselistener"
	_ "github.com/gatehouse-project/gatehouse/modules/caddy/storagepostgres"
	_ "github.com/gatehouse-project/gatehouse/modules/caddy/storagesqlite"
)
