package main

import (
	"bytes"
	"image/jpeg"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/livenessq/livenessq/internal/testenv"
	"github.com/livenessq/livenessq/kairos/kairostest"
)

func TestParseProcStatCPU(t *testing.T) {
	t.Parallel()
	// The command name may hold spaces and parentheses; utime is 1234 and stime 566 ticks.
	stat := "4242 (live nessq (x)) S 1 4242 4242 0 -1 4194560 1234 0 0 0 1234 566 0 0 20 0 9 0 100 1000000 300 18446744073709551615\n"
	got, err := parseProcStatCPU([]byte(stat))
	require.NoError(t, err)
	require.Equal(t, 18*time.Second, got)
	for _, bad := range []string{"", "4242 (x", "4242 (x) S 1 2", "4242 (x) S 1 2 3 4 5 6 7 8 9 10 a b"} {
		_, err := parseProcStatCPU([]byte(bad))
		require.Error(t, err, "%q", bad)
	}
}

func TestParseVmHWM(t *testing.T) {
	t.Parallel()
	got, err := parseVmHWM([]byte("Name:\tlivenessq\nVmPeak:\t  900000 kB\nVmHWM:\t   46184 kB\nVmRSS:\t   40000 kB\n"))
	require.NoError(t, err)
	require.Equal(t, int64(46184<<10), got)
	_, err = parseVmHWM([]byte("Name:\tx\n"))
	require.Error(t, err)
	_, err = parseVmHWM([]byte("VmHWM:\t12 MB\n"))
	require.Error(t, err)
}

func TestBenchProcReadsItsChild(t *testing.T) {
	t.Parallel()
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	dir := t.TempDir()
	p, err := startProc("child", dir, sh, []string{"-c", "echo listening on http://127.0.0.1:1; echo second; i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; sleep 5"}, nil)
	require.NoError(t, err)
	defer p.kill()
	line, err := p.firstLine(10 * time.Second)
	require.NoError(t, err)
	require.Equal(t, "listening on http://127.0.0.1:1", line)
	cpu, err := p.cpuTime()
	require.NoError(t, err)
	require.GreaterOrEqual(t, cpu, time.Duration(0))
	rss, err := p.peakRSS()
	require.NoError(t, err)
	require.Positive(t, rss)
	// The child's second line may come after its first was read: wait for it.
	require.Eventually(t, func() bool { return strings.Contains(string(p.output()), "second") },
		10*time.Second, 10*time.Millisecond, "the child's output is kept after its first line")
	require.NoError(t, p.stop(5*time.Second), "a child stopped with SIGTERM is not an error of the bench")
	require.True(t, p.exited())
	log, err := os.ReadFile(filepath.Join(dir, "child.log"))
	require.NoError(t, err)
	require.Contains(t, string(log), "second", "stdout is kept in the child's log too")
}

func TestBenchFlagErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		desc string
		args []string
		want string
	}{
		{desc: "unknown scenario", args: []string{"--only", "budget,speed"}, want: `"speed" is not one of`},
		{desc: "no scenario", args: []string{"--only", ","}, want: "name at least one"},
		{desc: "kill after the end", args: []string{"--budget-kill-at", "40s"}, want: "--budget-kill-at"},
		{desc: "too few selfies", args: []string{"--only", "meet", "--selfies", "100"}, want: "--selfies (100)"},
		{desc: "small enqueue", args: []string{"--only", "enqueue", "--enqueue-keys", "5000"}, want: "--enqueue-keys"},
		{desc: "zero workers", args: []string{"--budget-workers", "0"}, want: "--budget-workers"},
		{desc: "argument", args: []string{"extra"}, want: "unexpected arguments"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := run(t.Context(), append([]string{"bench"}, tc.args...), func(string) string { return "" }, nil, &out, &errOut)
			require.Equal(t, 2, code, "stdout %s\nstderr %s", out.String(), errOut.String())
			require.Contains(t, errOut.String(), tc.want)
		})
	}
}

func TestWriteBenchReportKeepsNotes(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "BENCHMARKS.md")
	m := benchMachine{cpus: 2, model: "Test CPU", memory: 8 << 30, kernel: "6.1", goVer: "go1.26", loadAvg: "0.10 0.20 0.30"}
	require.NoError(t, writeBenchReport(path, m, []string{"--only", "overhead", "--report", "a b.md"}, "overhead: 2.00× vs ≤ 3× → PASS\n"))
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	s := string(b)
	require.Contains(t, s, "2 CPUs, Test CPU; 8.0 GiB RAM")
	require.Contains(t, s, "`livenessq bench --only overhead --report 'a b.md'`")
	require.Contains(t, s, "overhead: 2.00× vs ≤ 3× → PASS")

	// Hand-written notes survive the next run.
	require.NoError(t, os.WriteFile(path, append(b, []byte("\n## Notes\n\nThe profile showed X.\n")...), 0o644))
	require.NoError(t, writeBenchReport(path, m, nil, "overhead: 2.50× vs ≤ 3× → PASS\n"))
	b, err = os.ReadFile(path)
	require.NoError(t, err)
	s = string(b)
	require.Contains(t, s, "2.50×")
	require.NotContains(t, s, "2.00×")
	require.Equal(t, 1, strings.Count(s, "## Notes"))
	require.Contains(t, s, "The profile showed X.")
}

func TestShellJoin(t *testing.T) {
	t.Parallel()
	require.Equal(t, `--only budget 'a b' '' 'it'\''s'`, shellJoin([]string{"--only", "budget", "a b", "", "it's"}))
}

func TestBenchImages(t *testing.T) {
	t.Parallel()
	a, b := withSeed(kairostest.JPEG(400, 400, 0), 1), withSeed(kairostest.JPEG(400, 400, 0), 2)
	require.NotEqual(t, a, b)
	for _, img := range [][]byte{a, b, selfiesSmall(1).body(0)} {
		c, err := jpeg.DecodeConfig(bytes.NewReader(img))
		require.NoError(t, err)
		require.Equal(t, 400, c.Width)
	}
	require.Equal(t, "enq/100000/a/009/009999.jpg", enqueueKeys(100000).key(9999))
	require.Equal(t, "enq/20000/a/009/009999.jpg", enqueueKeys(20000).key(9999), "a prefix per size")
	require.Equal(t, "enq/100000/b/010/010000.jpg", enqueueKeys(100000).key(10000))
}

// TestBenchSmoke runs `livenessq bench` end to end at tiny sizes, on the redis-server and
// versitygw it starts itself (never the shared test services: the bench flushes
// databases): every chosen scenario prints its target lines and none fails. The figures
// themselves mean nothing at these sizes.
func TestBenchSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts redis-server, versitygw and worker processes")
	}
	gw := testenv.Binary(t, testenv.EnvVersityGW)
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Skip("no redis-server on PATH")
	}
	exe := buildBinary(t)
	work := t.TempDir()
	cmd := exec.Command(exe, "bench", "--only", "budget,overhead,meet",
		"--versitygw", gw, "--work-dir", work, "--report", filepath.Join(work, "BENCHMARKS.md"),
		"--selfies", "40", "--budget-selfies", "40", "--budget-rate", "10", "--budget-workers", "2",
		"--budget-duration", "2s", "--budget-kill-at", "1s", "--budget-latency", "10ms",
		"--overhead-tasks", "20", "--meet-tasks", "40", "--meet-rate", "40")
	cmd.Env = append(os.Environ(), envAsBinary+"=1") // the bench and its children run as livenessq
	out, err := cmd.CombinedOutput()
	s := string(out)
	require.NotContains(t, s, "ERROR", s)
	if err != nil { // missed targets exit 1, which is fine at these sizes
		ee, ok := err.(*exec.ExitError)
		require.True(t, ok && ee.ExitCode() == 1, "%v\n%s", err, s)
		require.Contains(t, s, "target(s) missed")
	}
	for _, want := range []string{
		"budget rate over the run:", "budget 403s:", "ours:", "usual:",
		"overhead CPU per selfie / CPU per no-op task:", "meet the budget wall time:",
		"summary (",
	} {
		require.Contains(t, s, want)
	}
	report, err := os.ReadFile(filepath.Join(work, "BENCHMARKS.md"))
	require.NoError(t, err)
	require.Contains(t, string(report), "meet the budget wall time:")
}
