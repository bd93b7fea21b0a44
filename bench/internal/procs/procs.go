// Package procs keeps the processes and other pieces a benchmark run
// starts, and stops them all at the end, the last started first.
package procs

import (
	"fmt"
	"io"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Group starts programs with their output in log files under Dir.
type Group struct {
	Dir string

	mu    sync.Mutex
	stops []func()
}

// Start runs bin with args and env added to this process's environment,
// in Dir, its output going to Dir/NAME.log.
func (g *Group) Start(name string, env []string, bin string, args ...string) (*exec.Cmd, error) {
	cmd := exec.Command(bin, args...)
	cmd.Dir = g.Dir
	cmd.Env = append(os.Environ(), env...)
	f, err := os.Create(filepath.Join(g.Dir, name+".log"))
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = f, f
	dieWithParent(cmd)
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, err
	}
	g.OnStop(func() { Stop(cmd); f.Close() })
	return cmd, nil
}

// OnStop adds f to what StopAll runs.
func (g *Group) OnStop(f func()) {
	g.mu.Lock()
	g.stops = append(g.stops, f)
	g.mu.Unlock()
}

// Close adds c to what StopAll closes.
func (g *Group) Close(c io.Closer) { g.OnStop(func() { _ = c.Close() }) }

// StopAll ends what the run started, the last started first.
func (g *Group) StopAll() {
	g.mu.Lock()
	stops := g.stops
	g.stops = nil
	g.mu.Unlock()
	for i := len(stops) - 1; i >= 0; i-- {
		stops[i]()
	}
}

// Stop interrupts p and waits for it, killing it after ten seconds. A
// process already stopped is left alone.
func Stop(p *exec.Cmd) {
	if p.Process == nil || p.ProcessState != nil {
		return
	}
	_ = p.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { _ = p.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = p.Process.Kill()
		<-done
	}
}

// CPUSeconds is a process's user and system CPU time so far, in seconds,
// from /proc/PID/stat (fields 14 and 15, in clock ticks of 1/100 s on
// Linux); 0 when the process is gone. A benchmark takes the difference
// across a run to get the CPU a process spent on it.
func CPUSeconds(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name (field 2) may hold spaces; fields count from
	// after its closing parenthesis.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseFloat(f[11], 64)
	k, _ := strconv.ParseFloat(f[12], 64)
	return (u + k) / 100
}

// Main runs one benchmark program's work in a Group of its own, in a new
// scratch folder named after the program: when run returns, every process
// the group started is stopped; the folder is removed after a success and
// kept (and named) after a failure, for its processes' logs. A failure
// ends the program through log.Fatal, which is why nothing here is
// deferred.
func Main(program string, run func(g *Group) error) {
	dir, err := os.MkdirTemp("", program+"-")
	if err != nil {
		log.Fatal(err)
	}
	g := &Group{Dir: dir}
	err = run(g)
	g.StopAll()
	if err != nil {
		log.Printf("logs kept in %s", dir)
		log.Fatal(err)
	}
	_ = os.RemoveAll(dir)
}

// Counters are a process's kernel counters that explain CPU per byte in a
// loopback benchmark: read- and write-family system calls (syscr and
// syscw of /proc/PID/io) and context switches (voluntary and involuntary,
// summed over its threads from /proc/PID/task/*/status). Zero when the
// process is gone.
type Counters struct {
	ReadCalls, WriteCalls, Switches float64
}

// Sub is c minus o, for the counters of a span of a run.
func (c Counters) Sub(o Counters) Counters {
	return Counters{c.ReadCalls - o.ReadCalls, c.WriteCalls - o.WriteCalls, c.Switches - o.Switches}
}

// Add is c plus o, for the counters of several processes.
func (c Counters) Add(o Counters) Counters {
	return Counters{c.ReadCalls + o.ReadCalls, c.WriteCalls + o.WriteCalls, c.Switches + o.Switches}
}

// ReadCounters reads pid's Counters.
func ReadCounters(pid int) Counters {
	var c Counters
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid)); err == nil {
		c.ReadCalls = procField(string(b), "syscr:")
		c.WriteCalls = procField(string(b), "syscw:")
	}
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
	for _, t := range tasks {
		if b, err := os.ReadFile(t); err == nil {
			c.Switches += procField(string(b), "voluntary_ctxt_switches:") +
				procField(string(b), "nonvoluntary_ctxt_switches:")
		}
	}
	return c
}

// procField is the number after key at the start of a line of s.
func procField(s, key string) float64 {
	for line := range strings.SplitSeq(s, "\n") {
		if v, ok := strings.CutPrefix(line, key); ok {
			f, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f
		}
	}
	return 0
}

// TimeLimit bounds a benchmark run: each part checks it before it starts,
// so a run on a slow or busy machine ends with an error rather than going
// on for hours.
type TimeLimit struct {
	limit    time.Duration
	deadline time.Time
}

// NewTimeLimit starts a limit of d from now.
func NewTimeLimit(d time.Duration) TimeLimit {
	return TimeLimit{limit: d, deadline: time.Now().Add(d)}
}

// Passed reports whether the limit is reached.
func (t TimeLimit) Passed() bool { return time.Now().After(t.deadline) }

// Check is an error once the limit is reached.
func (t TimeLimit) Check() error {
	if t.Passed() {
		return fmt.Errorf("time limit %v reached", t.limit)
	}
	return nil
}
