// Command caddy is Caddy with the Gatehouse modules, built with plain
// `go build` for development and tests. Releases are built by
// xcaddy-build.sh, which produces the same program through xcaddy.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/gatehouse-project/gatehouse"
)

func main() {
	caddycmd.Main()
}
