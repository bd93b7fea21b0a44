package main

import (
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"os/exec"

	"github.com/gatehouse-project/gatehouse/internal/testtools/cloudtest"
)

// The floor path: two processes of bench/tunnel/floorrelay, a tunnel that
// does only what any encrypted tunnel must (one read, one AES-128-GCM pass
// and one write per side, one TCP connection between the relays per
// client connection, no multiplexing), in front of the same gateway TLS
// server. Its CPU per GiB is about the least a userspace encrypted tunnel
// can spend here, which says how far the other paths are from it and
// whether a target is below what any such tunnel can do.
var floorBin = flag.String("floor", "", "the floor relay's binary, bench/tunnel/floorrelay; empty skips the floor path")

func (b *bench) startFloor(gwAddr string) (*path, error) {
	key := make([]byte, 16)
	_, _ = rand.Read(key)
	env := tunnelEnv("FLOORRELAY_KEY=" + hex.EncodeToString(key))
	var addrs [2]string
	for i := range addrs {
		p, err := cloudtest.FreeTCPPort()
		if err != nil {
			return nil, err
		}
		addrs[i] = fmt.Sprintf("127.0.0.1:%d", p)
	}
	back, err := b.Start("floor-back", env, *floorBin, "-mode", "back", "-listen", addrs[0], "-to", gwAddr)
	if err != nil {
		return nil, err
	}
	front, err := b.Start("floor-front", env, *floorBin, "-mode", "front", "-listen", addrs[1], "-to", addrs[0])
	if err != nil {
		return nil, err
	}
	return &path{name: "floor", addr: addrs[1], host: "bench." + zone, procs: []*exec.Cmd{front, back}}, nil
}
