package main

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// benchMachine describes the machine a bench ran on.
type benchMachine struct {
	cpus    int
	model   string
	memory  int64 // bytes
	kernel  string
	goVer   string
	loadAvg string
}

func (m benchMachine) String() string {
	return fmt.Sprintf("%d CPUs (%s), %.1f GiB RAM, Linux %s, %s, load average %s",
		m.cpus, m.model, float64(m.memory)/(1<<30), m.kernel, m.goVer, m.loadAvg)
}

// readMachine reads the CPU model, memory and kernel from /proc.
func readMachine() benchMachine {
	m := benchMachine{cpus: runtime.NumCPU(), model: "unknown CPU", goVer: runtime.Version(), loadAvg: loadAverage()}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.model = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	if f, err := os.Open("/proc/meminfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) >= 2 && fields[0] == "MemTotal:" {
				kb, _ := strconv.ParseInt(fields[1], 10, 64)
				m.memory = kb << 10
				break
			}
		}
		f.Close()
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.kernel = strings.TrimSpace(string(b))
	}
	return m
}

// loadAverage returns the 1, 5 and 15 minute load averages from /proc/loadavg.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// benchNotesHeading starts the hand-written part of BENCHMARKS.md, which
// writeBenchReport keeps when it rewrites the file.
const benchNotesHeading = "\n## Notes"

// writeBenchReport writes BENCHMARKS.md: the machine, the command and the printout,
// followed by the "## Notes" section of the existing file, if any.
func writeBenchReport(path string, m benchMachine, args []string, printout string) error {
	notes := ""
	if old, err := os.ReadFile(path); err == nil {
		if i := strings.Index(string(old), benchNotesHeading); i >= 0 {
			notes = string(old[i:])
		}
	}
	var b strings.Builder
	b.WriteString("# Benchmarks\n\n")
	b.WriteString("Measured by `livenessq bench`: real Redis (redis-server) and an S3-compatible server\n")
	b.WriteString("(versitygw) started by the bench, the Kairos emulator and every worker and enqueuer as\n")
	b.WriteString("processes of their own, so that each process's CPU time (/proc/PID/stat) and peak RSS\n")
	b.WriteString("(VmHWM, rusage) are its alone. Each figure is a ratio measured in one run. Targets are\n")
	b.WriteString("those of issues 5 and 8.\n\n")
	fmt.Fprintf(&b, "- Date: %s\n", time.Now().UTC().Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(&b, "- Machine: %d CPUs, %s; %.1f GiB RAM; Linux %s; %s\n", m.cpus, m.model, float64(m.memory)/(1<<30), m.kernel, m.goVer)
	fmt.Fprintf(&b, "- Load average when the run started: %s\n", m.loadAvg)
	cmd := "livenessq bench"
	if len(args) > 0 {
		cmd += " " + shellJoin(args)
	}
	fmt.Fprintf(&b, "- Command: `%s`\n\n", cmd)
	b.WriteString("## Printout\n\n```\n")
	b.WriteString(strings.TrimRight(printout, "\n"))
	b.WriteString("\n```\n")
	b.WriteString(notes)
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

// shellJoin quotes args for a shell where needed.
func shellJoin(args []string) string {
	out := make([]string, len(args))
	for i, a := range args {
		if a == "" || strings.ContainsAny(a, " \t\n'\"$`\\|&;<>()*?[]#~") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		out[i] = a
	}
	return strings.Join(out, " ")
}
