package main

import (
	"crypto/rand"
	"encoding/hex"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"time"

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
	// Each relay listens on a port the kernel picks and writes it to a
	// file: a port picked here and bound later could be taken meanwhile.
	start := func(mode, to string) (*exec.Cmd, string, error) {
		file := filepath.Join(b.Dir, "floor-"+mode+".addr")
		cmd, err := b.Start("floor-"+mode, env, *floorBin, "-mode", mode, "-listen", "127.0.0.1:0", "-to", to, "-addr-file", file)
		if err != nil {
			return nil, "", err
		}
		var addr []byte
		err = cloudtest.WaitFor("the floor's "+mode+" relay", 10*time.Second, 10*time.Millisecond, func() bool {
			addr, err = os.ReadFile(file)
			return err == nil
		})
		return cmd, string(addr), err
	}
	back, backAddr, err := start("back", gwAddr)
	if err != nil {
		return nil, err
	}
	front, frontAddr, err := start("front", backAddr)
	if err != nil {
		return nil, err
	}
	return &path{name: "floor", addr: frontAddr, host: "bench." + zone, procs: []*exec.Cmd{front, back}}, nil
}
