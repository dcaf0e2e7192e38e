package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// benchProc is a child process of `livenessq bench`: a service (redis-server,
// versitygw), the emulator, a worker or an enqueuer. Its stderr (and stdout, unless
// captured) goes to a log file of its own; its CPU time and peak memory are read from
// /proc while it runs and from its rusage once it has exited.
type benchProc struct {
	name   string
	cmd    *exec.Cmd
	log    string // path of its log file
	stdout *stdoutTee
	done   chan struct{}
	err    error // Wait's error, once done is closed
}

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat: 100 on every
// Linux architecture Go supports.
const clockTicks = 100

// startProc starts path with args and env (added to the bench's own environment), its
// output appended to logDir/name.log; its stdout is also kept (see firstLine and output).
// The child is killed if the bench process dies (Pdeathsig).
func startProc(name, logDir, path string, args, env []string) (*benchProc, error) {
	logPath := filepath.Join(logDir, name+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	cmd := exec.Command(path, args...)
	cmd.Env = append(os.Environ(), env...)
	out := newStdoutTee(f)
	cmd.Stderr = f
	cmd.Stdout = out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s (%s): %w", name, path, err)
	}
	p := &benchProc{name: name, cmd: cmd, log: logPath, stdout: out, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return p, nil
}

// pid returns the child's process id.
func (p *benchProc) pid() int { return p.cmd.Process.Pid }

// exited reports whether the child has exited.
func (p *benchProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM and waits up to grace for the child to exit, then kills it. It
// returns Wait's error, except for an exit by the SIGTERM itself.
func (p *benchProc) stop(grace time.Duration) error {
	if !p.exited() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
	}
	select {
	case <-p.done:
		var ee *exec.ExitError
		if errors.As(p.err, &ee) {
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGTERM {
				return nil
			}
		}
		return p.err
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("%s did not stop within %v after SIGTERM: killed", p.name, grace)
	}
}

// kill sends SIGKILL and waits for the child.
func (p *benchProc) kill() {
	if !p.exited() {
		_ = p.cmd.Process.Kill()
	}
	<-p.done
}

// wait waits for the child to exit, or for ctx.
func (p *benchProc) wait(ctx context.Context) error {
	select {
	case <-p.done:
		if p.err != nil {
			return fmt.Errorf("%s: %w (log: %s%s)", p.name, p.err, p.log, p.logTail())
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// logTail returns the last lines of the child's log, for an error message.
func (p *benchProc) logTail() string {
	b, err := os.ReadFile(p.log)
	if err != nil || len(b) == 0 {
		return ""
	}
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return "\n" + strings.TrimSpace(string(b))
}

// cpuTime returns the CPU time (user + system, all threads) the child has used so far,
// from /proc/PID/stat.
func (p *benchProc) cpuTime() (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.pid()))
	if err != nil {
		return 0, fmt.Errorf("%s: read CPU time: %w", p.name, err)
	}
	return parseProcStatCPU(b)
}

// parseProcStatCPU reads utime + stime from the text of /proc/PID/stat. The command name
// (field 2) is in parentheses and may hold spaces, so fields are counted after the last
// ')'.
func parseProcStatCPU(b []byte) (time.Duration, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("malformed /proc/PID/stat")
	}
	f := strings.Fields(string(b[i+1:]))
	// After the name: state is field 3, utime field 14, stime field 15.
	if len(f) < 13 {
		return 0, errors.New("malformed /proc/PID/stat: too few fields")
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, errors.New("malformed /proc/PID/stat: utime/stime")
	}
	return time.Duration(ut+st) * time.Second / clockTicks, nil
}

// peakRSS returns the child's peak resident set size so far (VmHWM), in bytes.
func (p *benchProc) peakRSS() (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.pid()))
	if err != nil {
		return 0, fmt.Errorf("%s: read peak RSS: %w", p.name, err)
	}
	return parseVmHWM(b)
}

// parseVmHWM reads the VmHWM line of /proc/PID/status ("VmHWM:   12345 kB").
func parseVmHWM(b []byte) (int64, error) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "VmHWM:") {
			continue
		}
		f := strings.Fields(line[len("VmHWM:"):])
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("malformed VmHWM line %q", line)
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("malformed VmHWM line %q", line)
		}
		return kb << 10, nil
	}
	return 0, errors.New("no VmHWM line in /proc/PID/status")
}

// freePort returns a TCP port on 127.0.0.1 that nothing listens on at the moment.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// waitPort waits until addr accepts TCP connections, p exits, or timeout passes.
func waitPort(p *benchProc, addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if p.exited() {
			return fmt.Errorf("%s exited before it listened on %s (log: %s)%s", p.name, addr, p.log, p.logTail())
		}
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s did not listen on %s within %v (log: %s)", p.name, addr, timeout, p.log)
}

// stdoutTee copies a child's stdout to its log file, keeps the first 64 KiB of it, and
// hands its first line to a channel (the emulator prints its address there).
type stdoutTee struct {
	w     io.Writer
	mu    sync.Mutex
	buf   []byte
	first chan string
	sent  bool
}

const stdoutKeep = 64 << 10

func newStdoutTee(w io.Writer) *stdoutTee {
	return &stdoutTee{w: w, first: make(chan string, 1)}
}

func (t *stdoutTee) Write(p []byte) (int, error) {
	t.mu.Lock()
	if len(t.buf) < stdoutKeep {
		t.buf = append(t.buf, p[:min(len(p), stdoutKeep-len(t.buf))]...)
	}
	if !t.sent {
		if i := bytes.IndexByte(t.buf, '\n'); i >= 0 {
			t.first <- string(t.buf[:i])
			t.sent = true
		}
	}
	t.mu.Unlock()
	return t.w.Write(p)
}

// firstLine waits for the first line the child prints on stdout, for timeout.
func (p *benchProc) firstLine(timeout time.Duration) (string, error) {
	select {
	case l := <-p.stdout.first:
		return l, nil
	case <-p.done:
		select {
		case l := <-p.stdout.first:
			return l, nil
		default:
		}
		return "", fmt.Errorf("%s exited without printing a line (log: %s)%s", p.name, p.log, p.logTail())
	case <-time.After(timeout):
		return "", fmt.Errorf("%s printed no line within %v (log: %s)", p.name, timeout, p.log)
	}
}

// output returns what the child has printed on stdout so far (its first 64 KiB).
func (p *benchProc) output() []byte {
	p.stdout.mu.Lock()
	defer p.stdout.mu.Unlock()
	return bytes.Clone(p.stdout.buf)
}
