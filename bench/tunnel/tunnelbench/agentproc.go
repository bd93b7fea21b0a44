package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/gatehouse-project/gatehouse/internal/testtools/cloudtest"
)

// The agent runs in a process of its own, so that its CPU time is
// measured apart from the client's and the servers': -agent names the
// binary, gateway-agent/internal/benchagent, a tunnel client whose streams
// the gateway agent's own proxy package serves (the real code of both
// modes: passthrough relays each stream to the gateway's TLS server;
// terminate ends TLS on it and proxies each request to the app over HTTP).
var agentBin = flag.String("agent", "", "the agent process's binary, gateway-agent/internal/benchagent (required)")

type agentProc struct {
	cmd   *exec.Cmd
	debug string
}

func (b *bench) startAgentProc(c *cloud, name, token, mode, upstream, certFile, keyFile string) (*agentProc, error) {
	port, err := cloudtest.FreeTCPPort()
	if err != nil {
		return nil, err
	}
	debug := fmt.Sprintf("127.0.0.1:%d", port)
	cmd, err := b.Start("agent-"+name, []string{"TUNNELBENCH_TOKEN=" + token}, *agentBin,
		"-mode", mode, "-url", fmt.Sprintf("wss://api.box.test:%d/v1/tunnel", c.https),
		"-name", name, "-upstream", upstream,
		"-cloud", fmt.Sprintf("127.0.0.1:%d", c.https), "-ca", cloudtest.LocalCARoot(c.dir),
		"-cert", certFile, "-key", keyFile, "-debug", debug)
	if err != nil {
		return nil, err
	}
	return &agentProc{cmd: cmd, debug: debug}, nil
}

// profile writes CPU profiles of the cloud and of an agent process (the
// passthrough one, or per TUNNELBENCH_PROFILE_AGENT) during its download into the folder TUNNELBENCH_PROFILE
// names, for finding where the time goes.
func profile(c *cloud, a *agentProc) (stop func()) {
	out := os.Getenv("TUNNELBENCH_PROFILE")
	if out == "" {
		return func() {}
	}
	secs := os.Getenv("TUNNELBENCH_PROFILE_SECONDS")
	if secs == "" {
		secs = "2"
	}
	done := make(chan struct{}, 2)
	get := func(u, file string) {
		defer func() { done <- struct{}{} }()
		resp, err := http.Get(u)
		if err != nil {
			log.Printf("profile: %v", err)
			return
		}
		defer resp.Body.Close()
		f, err := os.Create(filepath.Join(out, file))
		if err != nil {
			return
		}
		defer f.Close()
		_, _ = io.Copy(f, resp.Body)
	}
	go get(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/profile?seconds=%s", c.admin, secs), "cloud.pprof")
	go get(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%s", a.debug, secs), "agent.pprof")
	return func() { <-done; <-done }
}
