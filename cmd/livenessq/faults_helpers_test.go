package main

// The harness of the fault suite (faults_test.go): real processes for everything that a
// scenario kills or restarts (redis-server, versitygw, livenessq workers), the Kairos
// emulator behind a recorder of every API request, and the checks every scenario shares
// (exactly one result per key, batch counts, nothing archived, no secret in any output).

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"image"
	"image/color"
	"image/gif"
	_ "image/jpeg" // image.DecodeConfig of the corpus
	_ "image/png"
	"io"
	"math"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/livenessq/livenessq/enqueue"
	"github.com/livenessq/livenessq/internal/testenv"
	"github.com/livenessq/livenessq/kairos/kairostest"
	"github.com/livenessq/livenessq/results"
	"github.com/livenessq/livenessq/storage"
)

// ---------------------------------------------------------------------------------------
// Secrets and the outputs they must never appear in (scenario 8).

// faultLeaks collects, across every scenario, the secrets handed to processes and every
// text those processes produced or that a user can read back: logs, command output,
// /metrics scrapes, `status` output, result JSON and Redis result hashes.
var faultLeaks struct {
	mu      sync.Mutex
	secrets map[string]string // value → what it is
	texts   []faultText
	bytes   int
}

type faultText struct{ source, text string }

// addFaultSecret registers a value that must appear in no collected output.
func addFaultSecret(what, value string) {
	if value == "" {
		return
	}
	faultLeaks.mu.Lock()
	defer faultLeaks.mu.Unlock()
	if faultLeaks.secrets == nil {
		faultLeaks.secrets = map[string]string{}
	}
	faultLeaks.secrets[value] = what
}

// collectFaultText adds text, named by source, to the outputs greped for secrets.
func collectFaultText(source, text string) {
	faultLeaks.mu.Lock()
	defer faultLeaks.mu.Unlock()
	faultLeaks.texts = append(faultLeaks.texts, faultText{source, text})
	faultLeaks.bytes += len(text)
}

// findFaultLeaks returns one line per secret found in a collected text.
func findFaultLeaks() (leaks []string, texts, nbytes, nsecrets int) {
	faultLeaks.mu.Lock()
	defer faultLeaks.mu.Unlock()
	for _, tx := range faultLeaks.texts {
		for value, what := range faultLeaks.secrets {
			for _, needle := range faultNeedles(value) {
				if i := strings.Index(tx.text, needle); i >= 0 {
					lo, hi := max(0, i-60), min(len(tx.text), i+len(needle)+20)
					ctx := strings.ReplaceAll(tx.text[lo:hi], needle, "<"+what+">")
					leaks = append(leaks, fmt.Sprintf("%s: %s found: …%s…", tx.source, what, ctx))
					break
				}
			}
		}
	}
	return leaks, len(faultLeaks.texts), faultLeaks.bytes, len(faultLeaks.secrets)
}

// faultNeedles is what counts as a leak of value: the value, and its last 16
// characters (a truncated or prefixed copy).
func faultNeedles(value string) []string {
	if len(value) > 16 {
		return []string{value, value[len(value)-16:]}
	}
	return []string{value}
}

// faultSecret returns prefix followed by 24 random hex digits.
func faultSecret(prefix string) string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// ---------------------------------------------------------------------------------------
// The emulator, in this process, behind a recorder.

// faultCall is one API request the emulator answered.
type faultCall struct {
	start, end time.Time
	status     int
	requestID  string // the emulator's X-Request-Id
}

// faultEmulator is the Kairos emulator served over real HTTP, recording when each API
// request arrived and was answered, and with what status.
type faultEmulator struct {
	emu *kairostest.Emulator
	srv *httptest.Server
	mu  sync.Mutex
	log []faultCall
}

func newFaultEmulator(t testing.TB, cfg kairostest.Config) *faultEmulator {
	t.Helper()
	e := &faultEmulator{emu: kairostest.New(cfg)}
	e.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/_emulator/") {
			e.emu.ServeHTTP(w, r)
			return
		}
		rec := &faultStatusRecorder{ResponseWriter: w, status: http.StatusOK}
		start := time.Now()
		e.emu.ServeHTTP(rec, r)
		e.mu.Lock()
		e.log = append(e.log, faultCall{start: start, end: time.Now(), status: rec.status, requestID: rec.Header().Get("X-Request-Id")})
		e.mu.Unlock()
	}))
	t.Cleanup(e.srv.Close)
	return e
}

// apiURL is the base URL workers call.
func (e *faultEmulator) apiURL() string { return e.srv.URL + "/v0.2/liveness-verification" }

// setFaults posts faults (JSON) to the emulator's admin API, as an operator's script would.
func (e *faultEmulator) setFaults(t testing.TB, faults string) {
	t.Helper()
	resp, err := http.Post(e.srv.URL+kairostest.FaultsPath, "application/json", strings.NewReader(faults))
	require.NoError(t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	require.Equal(t, http.StatusNoContent, resp.StatusCode, "POST %s %s: %s", kairostest.FaultsPath, faults, b)
}

// stats reads the emulator's counters from its admin API.
func (e *faultEmulator) stats(t testing.TB) kairostest.Stats {
	t.Helper()
	resp, err := http.Get(e.srv.URL + kairostest.StatsPath)
	require.NoError(t, err)
	defer resp.Body.Close()
	var s kairostest.Stats
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&s))
	return s
}

// calls returns a copy of the recorded API requests.
func (e *faultEmulator) calls() []faultCall {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.log)
}

type faultStatusRecorder struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (r *faultStatusRecorder) WriteHeader(code int) {
	if !r.wrote {
		r.status, r.wrote = code, true
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *faultStatusRecorder) Write(b []byte) (int, error) {
	r.wrote = true
	return r.ResponseWriter.Write(b)
}

// ---------------------------------------------------------------------------------------
// Server processes a scenario kills and restarts.

// faultServerProc is a server process (redis-server, versitygw) that can be killed with
// SIGKILL and started again on the same port and directory.
type faultServerProc struct {
	name string
	bin  string
	args []string
	env  []string
	dir  string
	port int
	log  string // path of its output

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// faultFreePort returns a loopback port that was free a moment ago, below the kernel's
// range of ephemeral ports: a server stopped for a while must get its port back, and a
// port in that range could meanwhile be taken by an outgoing connection (even by a
// client's connection to itself, retrying the stopped server).
//
// With bus set, port+10000 (a Redis Cluster node's bus port) must be free too, and below
// that range as well.
func faultFreePort(t testing.TB, bus bool) int {
	t.Helper()
	low := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil {
				low = n
			}
		}
	}
	faultPorts.Lock()
	defer faultPorts.Unlock()
	// A port handed out earlier in this process is not free, even while its server is
	// down or not yet listening: the scenarios run in parallel.
	free := func(p int) bool {
		if faultPorts.given[p] {
			return false
		}
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err == nil {
			ln.Close()
		}
		return err == nil
	}
	give := func(p int) int {
		faultPorts.given[p] = true
		if bus {
			faultPorts.given[p+10000] = true
		}
		return p
	}
	top := low
	if bus {
		top = low - 10000
	}
	if top > 12000 {
		for range 200 {
			p := 10000 + mrand.IntN(top-10000)
			if free(p) && (!bus || free(p+10000)) {
				return give(p)
			}
		}
	}
	require.False(t, bus, "no free port pair for a Redis Cluster node")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	return give(ln.Addr().(*net.TCPAddr).Port)
}

// faultPorts are the ports faultFreePort has handed out in this process.
var faultPorts = struct {
	sync.Mutex
	given map[int]bool
}{given: map[int]bool{}}

func (s *faultServerProc) addr() string { return "127.0.0.1:" + strconv.Itoa(s.port) }

// start launches the process and waits until ready reports nil.
func (s *faultServerProc) start(t testing.TB, ready func() error) {
	t.Helper()
	f, err := os.OpenFile(s.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	require.NoError(t, err)
	cmd := exec.Command(s.bin, s.args...)
	cmd.Dir = s.dir
	cmd.Env = append(os.Environ(), s.env...)
	cmd.Stdout, cmd.Stderr = f, f
	require.NoError(t, cmd.Start(), "start %s", s.name)
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); f.Close(); close(done) }()
	s.mu.Lock()
	s.cmd, s.done = cmd, done
	s.mu.Unlock()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := ready()
		if err == nil {
			return
		}
		select {
		case <-done:
			out, _ := os.ReadFile(s.log)
			t.Fatalf("%s exited before it was ready: %v\n%s", s.name, err, out)
		default:
		}
		if time.Now().After(deadline) {
			out, _ := os.ReadFile(s.log)
			t.Fatalf("%s not ready on %s after 30s: %v\n%s", s.name, s.addr(), err, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// kill sends SIGKILL and waits for the process to end.
func (s *faultServerProc) kill() {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-done
}

// faultRedis is a redis-server of a scenario's own, in its own directory.
type faultRedis struct {
	faultServerProc
}

// startFaultRedis starts a redis-server on a free loopback port; extra are more
// arguments (e.g. "--appendonly", "yes"). It is killed when the test ends.
func startFaultRedis(t testing.TB, name string, extra ...string) *faultRedis {
	t.Helper()
	bin := testenv.Binary(t, testenv.EnvRedisServer)
	dir := t.TempDir()
	port := faultFreePort(t, slices.Contains(extra, "--cluster-enabled"))
	r := &faultRedis{faultServerProc{name: name, bin: bin, dir: dir, port: port, log: filepath.Join(dir, "redis.log")}}
	r.args = append([]string{"--bind", "127.0.0.1", "--port", strconv.Itoa(r.port), "--dir", dir,
		"--save", "", "--daemonize", "no", "--protected-mode", "no"}, extra...)
	t.Cleanup(r.kill)
	r.start(t)
	return r
}

// start starts (or restarts, on the same port and directory) the server and waits for
// it to answer PING (after loading its AOF).
func (r *faultRedis) start(t testing.TB) {
	t.Helper()
	r.faultServerProc.start(t, func() error {
		c := redis.NewClient(&redis.Options{Addr: r.addr(), MaxRetries: -1, DialTimeout: time.Second})
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		return c.Ping(ctx).Err()
	})
}

// url returns the URL of database db.
func (r *faultRedis) url(db int) string { return fmt.Sprintf("redis://%s/%d", r.addr(), db) }

// faultS3 is a versitygw of a scenario's own (posix backend in its own directory).
type faultS3 struct {
	faultServerProc
	s3 testenv.S3
}

// startFaultS3 starts a versitygw with fresh credentials on a free loopback port. It is
// killed when the test ends.
func startFaultS3(t testing.TB) *faultS3 {
	t.Helper()
	bin := testenv.Binary(t, testenv.EnvVersityGW)
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	require.NoError(t, os.MkdirAll(data, 0o755))
	access, secret := "faults-"+faultSecret("")[:8], faultSecret("s3-secret-")
	addFaultSecret("the S3 secret of a scenario's own versitygw", secret)
	s := &faultS3{faultServerProc: faultServerProc{name: "versitygw", bin: bin, dir: dir, port: faultFreePort(t, false), log: filepath.Join(dir, "versitygw.log"),
		env: []string{"ROOT_ACCESS_KEY=" + access, "ROOT_SECRET_KEY=" + secret}}}
	s.args = []string{"--port", s.addr(), "--access", access, "--secret", secret, "posix", data}
	s.s3 = testenv.S3{Endpoint: "http://" + s.addr(), AccessKey: access, SecretKey: secret, Region: "us-east-1"}
	t.Cleanup(s.kill)
	s.start(t)
	return s
}

// start starts (or restarts, on the same port and directory) the server and waits for
// it to accept connections.
func (s *faultS3) start(t testing.TB) {
	t.Helper()
	s.faultServerProc.start(t, func() error {
		c, err := net.DialTimeout("tcp", s.addr(), time.Second)
		if err == nil {
			c.Close()
		}
		return err
	})
}

// faultCluster is a Redis Cluster of three masters on loopback ports.
type faultCluster struct {
	nodes []*faultRedis
}

func startFaultCluster(t testing.TB) *faultCluster {
	t.Helper()
	c := &faultCluster{}
	for i := range 3 {
		n := startFaultRedis(t, fmt.Sprintf("redis-cluster-%d", i), "--cluster-enabled", "yes",
			"--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "5000", "--appendonly", "no")
		c.nodes = append(c.nodes, n)
	}
	cli := filepath.Join(filepath.Dir(c.nodes[0].bin), "redis-cli")
	if _, err := os.Stat(cli); err != nil {
		p, lerr := exec.LookPath("redis-cli")
		require.NoError(t, lerr, "redis-cli is needed to create the cluster")
		cli = p
	}
	args := []string{"--cluster", "create"}
	for _, n := range c.nodes {
		args = append(args, n.addr())
	}
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	out, err := exec.Command(cli, args...).CombinedOutput()
	require.NoError(t, err, "redis-cli %s:\n%s", strings.Join(args, " "), out)
	// Every node must agree that all slots are served before clients use it.
	deadline := time.Now().Add(30 * time.Second)
	for _, n := range c.nodes {
		for {
			rc := redis.NewClient(&redis.Options{Addr: n.addr()})
			info, err := rc.ClusterInfo(context.Background()).Result()
			rc.Close()
			if err == nil && strings.Contains(info, "cluster_state:ok") && strings.Contains(info, "cluster_slots_ok:16384") {
				break
			}
			require.False(t, time.Now().After(deadline), "cluster node %s not ok: %v %s", n.addr(), err, info)
			time.Sleep(100 * time.Millisecond)
		}
	}
	return c
}

// url returns the redis+cluster URL of the cluster.
func (c *faultCluster) url() string {
	u := "redis+cluster://" + c.nodes[0].addr()
	for i, n := range c.nodes[1:] {
		sep := "&"
		if i == 0 {
			sep = "?"
		}
		u += sep + "addr=" + n.addr()
	}
	return u
}

// ---------------------------------------------------------------------------------------
// The rig: one scenario's Redis, storage, emulator and processes.

// faultRig is everything one scenario runs against.
type faultRig struct {
	t        testing.TB
	name     string
	bin      string
	redisURL string
	rdb      redis.UniversalClient
	s3       testenv.S3
	selfies  *storage.Bucket // where selfies are read from
	selfURL  string
	res      *storage.Bucket // where results are written
	resURL   string
	store    *results.Store
	emu      *faultEmulator
	appID    string
	appKey   string
	queue    string
	insp     *asynq.Inspector

	mu      sync.Mutex
	procs   []*faultWorker
	outputs []faultText
}

// faultRigConfig says what a rig runs against.
type faultRigConfig struct {
	redisURL string
	rdb      redis.UniversalClient
	s3       testenv.S3
	selfies  string // bucket of selfies (created if missing)
	emulator kairostest.Config
}

// newFaultRig builds a rig: the selfie bucket, a results bucket of its own, the emulator
// (with a fresh app key) and a Redis client. The rig's outputs are checked for secrets
// and handed to the leak check when the test ends.
func newFaultRig(t testing.TB, name string, cfg faultRigConfig) *faultRig {
	t.Helper()
	r := &faultRig{t: t, name: name, bin: buildBinary(t), redisURL: cfg.redisURL, rdb: cfg.rdb, s3: cfg.s3,
		appID: "faults-app", appKey: faultSecret("kairos-app-key-"), queue: enqueue.DefaultQueue}
	addFaultSecret("the Kairos app key", r.appKey)
	addFaultSecret("the S3 secret", cfg.s3.SecretKey)
	// Registered first, so it runs last: after every process has been killed.
	t.Cleanup(r.collect)
	if r.rdb == nil {
		opt, err := redis.ParseURL(cfg.redisURL)
		require.NoError(t, err)
		c := redis.NewClient(opt)
		t.Cleanup(func() { c.Close() })
		r.rdb = c
	}
	r.selfies, r.selfURL = openFaultBucket(t, cfg.s3, cfg.selfies)
	resName := faultBucketName(name + "-results")
	r.res, r.resURL = openFaultBucket(t, cfg.s3, resName)
	store, err := results.New(results.Config{Redis: r.rdb, Bucket: r.res})
	require.NoError(t, err)
	r.store = store
	r.insp = asynq.NewInspectorFromRedisClient(r.rdb)
	ecfg := cfg.emulator
	ecfg.AppID, ecfg.AppKey = r.appID, r.appKey
	r.emu = newFaultEmulator(t, ecfg)
	return r
}

var faultBucketSeq struct {
	mu sync.Mutex
	n  int
}

// faultBucketName returns a bucket name unique to this run.
func faultBucketName(name string) string {
	faultBucketSeq.mu.Lock()
	faultBucketSeq.n++
	n := faultBucketSeq.n
	faultBucketSeq.mu.Unlock()
	clean := regexp.MustCompile(`[^a-z0-9]+`).ReplaceAllString(strings.ToLower(name), "-")
	if len(clean) > 30 {
		clean = clean[:30]
	}
	return fmt.Sprintf("f-%s-%d-%x", strings.Trim(clean, "-"), n, time.Now().UnixNano()&0xffffff)
}

// openFaultBucket opens (creating) bucket on s3 and returns it and its storage URL.
func openFaultBucket(t testing.TB, s3 testenv.S3, bucket string) (*storage.Bucket, string) {
	t.Helper()
	b, err := storage.NewS3(context.Background(), storage.S3Config{Bucket: bucket, Endpoint: s3.Endpoint, Region: s3.Region,
		PathStyle: true, AccessKey: s3.AccessKey, SecretKey: s3.SecretKey, CreateBucket: true})
	require.NoError(t, err)
	t.Cleanup(func() { b.Close() })
	return b, s3.URL(bucket)
}

// env is the environment of every livenessq process of the rig. Secrets travel in
// variables, never in arguments.
func (r *faultRig) env(extra ...string) []string {
	return append([]string{
		"LIVENESSQ_REDIS_URL=" + r.redisURL,
		"LIVENESSQ_STORAGE_URL=" + r.selfURL,
		"LIVENESSQ_RESULTS_URL=" + r.resURL,
		"KAIROS_API_URL=" + r.emu.apiURL(),
		"KAIROS_APP_ID=" + r.appID,
		"KAIROS_APP_KEY=" + r.appKey,
		"AWS_ACCESS_KEY_ID=" + r.s3.AccessKey,
		"AWS_SECRET_ACCESS_KEY=" + r.s3.SecretKey,
		"AWS_REGION=" + r.s3.Region,
		"LIVENESSQ_LOG_FORMAT=json",
	}, extra...)
}

// run runs a livenessq command to its end; its output is kept for the leak check.
func (r *faultRig) run(args ...string) cmdResult {
	r.t.Helper()
	res := runCmd(r.t, r.bin, r.env(), args...)
	r.keep("livenessq "+strings.Join(args, " "), res.output())
	return res
}

// keep adds text to the rig's outputs.
func (r *faultRig) keep(source, text string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.outputs = append(r.outputs, faultText{r.name + ": " + source, text})
}

// collect checks the rig's outputs for its secrets and hands them to the leak check.
func (r *faultRig) collect() {
	r.mu.Lock()
	for _, w := range r.procs {
		r.outputs = append(r.outputs, faultText{r.name + ": worker " + w.name, w.output()})
	}
	outs := r.outputs
	r.mu.Unlock()
	if dir := os.Getenv("LIVENESSQ_FAULTS_LOGS"); dir != "" { // keep every output, for a person to read
		for i, o := range outs {
			name := regexp.MustCompile(`[^A-Za-z0-9._-]+`).ReplaceAllString(o.source, "_")
			if len(name) > 120 {
				name = name[:120]
			}
			_ = os.WriteFile(filepath.Join(dir, fmt.Sprintf("%s-%03d.log", name, i)), []byte(o.text), 0o644)
		}
	}
	for _, o := range outs {
		collectFaultText(o.source, o.text)
		for _, s := range []string{r.appKey, r.s3.SecretKey} {
			if s != "" && strings.Contains(o.text, s) {
				r.t.Errorf("%s: a secret appears in the output", o.source)
			}
		}
	}
}

// faultWorker is a `livenessq worker` process.
type faultWorker struct {
	*proc
	name       string
	metricsURL string
}

// startWorker starts a worker with the rig's environment plus env, and args after the
// defaults the scenarios share, and waits until it serves /metrics.
func (r *faultRig) startWorker(name string, env []string, args ...string) *faultWorker {
	r.t.Helper()
	all := append([]string{"worker", "--http-addr", "127.0.0.1:0", "--poll-interval", "100ms",
		"--lease-ttl", "2s", "--shutdown-timeout", "5s"}, args...)
	p := startCmd(r.t, r.bin, r.env(env...), all...)
	w := &faultWorker{proc: p, name: name}
	r.mu.Lock()
	r.procs = append(r.procs, w)
	r.mu.Unlock()
	line := p.waitOutput(r.t, "serving /metrics", 60*time.Second)
	var ev struct {
		Addr string `json:"http_addr"`
	}
	require.NoError(r.t, json.Unmarshal([]byte(line), &ev), "worker log line %q", line)
	w.metricsURL = "http://" + ev.Addr + "/metrics"
	return w
}

// scrape fetches the worker's /metrics; the text is kept for the leak check.
func (r *faultRig) scrape(w *faultWorker) string {
	r.t.Helper()
	code, body := httpGet(r.t, w.metricsURL)
	require.Equal(r.t, http.StatusOK, code)
	r.keep("metrics of "+w.name, body)
	return body
}

// waitUnready waits until the worker's /readyz answers 503 with check (e.g. "redis",
// "storage") failing; the answers are kept for the leak check.
func (r *faultRig) waitUnready(w *faultWorker, check string) {
	r.t.Helper()
	url := strings.TrimSuffix(w.metricsURL, "/metrics") + "/readyz"
	var last string
	eventually(r.t, 15*time.Second, func() bool {
		code, body := httpGet(r.t, url)
		last = body
		r.keep("readyz of "+w.name, body)
		var ans struct {
			Ready  bool              `json:"ready"`
			Checks map[string]string `json:"checks"`
		}
		return code == http.StatusServiceUnavailable && json.Unmarshal([]byte(body), &ans) == nil &&
			!ans.Ready && ans.Checks[check] != "" && ans.Checks[check] != "ok"
	}, "worker %s: /readyz did not report %s as not ready; last answer %s", w.name, check, last)
}

// faultSelfieSizes are the selfies' sizes: few, as the emulator's images are encoded once
// per size (and only the seed changes between selfies of one size).
var faultSelfieSizes = [][2]int{{320, 320}, {360, 400}, {400, 360}, {480, 480}}

// faultSeedSelfies uploads n distinct valid JPEGs under prefix, unless
// the bucket already has them, and returns their keys.
func faultSeedSelfies(t testing.TB, b *storage.Bucket, prefix string, n int) []string {
	t.Helper()
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("%sselfie-%05d.jpg", prefix, i)
	}
	ctx := context.Background()
	have := 0
	for _, err := range b.List(ctx, prefix) {
		require.NoError(t, err)
		have++
	}
	if have >= n {
		return keys
	}
	var wg sync.WaitGroup
	errs := make(chan error, n)
	work := make(chan int)
	for range 16 {
		wg.Go(func() {
			for i := range work {
				sz := faultSelfieSizes[i%len(faultSelfieSizes)]
				img := kairostest.JPEG(sz[0], sz[1], int64(i))
				if err := b.Put(ctx, keys[i], bytes.NewReader(img), &storage.PutOptions{Size: int64(len(img)), ContentType: "image/jpeg"}); err != nil {
					errs <- err
				}
			}
		})
	}
	for i := range keys {
		work <- i
	}
	close(work)
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	return keys
}

// enqueueKeys enqueues keys as batch id with `livenessq enqueue --keys-file` and checks
// that all of them were enqueued.
func (r *faultRig) enqueueKeys(id string, keys []string, args ...string) {
	r.t.Helper()
	f := filepath.Join(r.t.TempDir(), "keys.txt")
	require.NoError(r.t, os.WriteFile(f, []byte(strings.Join(keys, "\n")+"\n"), 0o644))
	res := r.run(append([]string{"enqueue", "--keys-file", f, "--batch", id, "--json"}, args...)...)
	require.Equal(r.t, 0, res.code, "enqueue: %s", res.output())
	var rep enqueueReport
	require.NoError(r.t, json.Unmarshal([]byte(res.stdout), &rep), "enqueue --json: %s", res.stdout)
	require.Equal(r.t, int64(len(keys)), rep.Enqueued, "enqueue: %s", res.output())
}

// batch returns the batch's summary (nil when it cannot be read yet).
func (r *faultRig) batch(id string) *results.BatchSummary {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := r.store.Batch(ctx, id)
	if err != nil {
		return nil
	}
	return s
}

// done returns how many results batch id has (0 while it cannot be read).
func (r *faultRig) done(id string) int64 {
	if s := r.batch(id); s != nil {
		return s.Done
	}
	return 0
}

// waitDone waits until batch id has at least n results.
func (r *faultRig) waitDone(id string, n int64, timeout time.Duration) {
	r.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		d := r.done(id)
		if d >= n {
			return
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("batch %s: %d results after %v, want at least %d\n%s", id, d, timeout, n, r.queueState())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitComplete waits until batch id is complete and returns when that was seen.
func (r *faultRig) waitComplete(id string, timeout time.Duration) time.Time {
	r.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if s := r.batch(id); s != nil && s.Complete {
			return time.Now()
		}
		if time.Now().After(deadline) {
			s := r.batch(id)
			r.t.Fatalf("batch %s not complete after %v: %+v\n%s", id, timeout, s, r.queueState())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// queueState describes the queue, for failure messages.
func (r *faultRig) queueState() string {
	qi, err := r.insp.GetQueueInfo(r.queue)
	if err != nil {
		return "queue: " + err.Error()
	}
	return fmt.Sprintf("queue %s: pending %d active %d scheduled %d retry %d archived %d completed %d paused %v",
		qi.Queue, qi.Pending, qi.Active, qi.Scheduled, qi.Retry, qi.Archived, qi.Completed, qi.Paused)
}

// archived returns the number of archived tasks in the rig's queue.
func (r *faultRig) archived() int {
	r.t.Helper()
	qi, err := r.insp.GetQueueInfo(r.queue)
	require.NoError(r.t, err)
	return qi.Archived
}

// faultOutcome is what checkExactlyOnce found.
type faultOutcome struct {
	records map[string]*results.Record
	summary *results.BatchSummary
}

// maxAttempts returns the largest attempts of any record.
func (o faultOutcome) maxAttempts() int {
	m := 0
	for _, rec := range o.records {
		m = max(m, rec.Attempts)
	}
	return m
}

// statusCounts returns the number of records per status.
func (o faultOutcome) statusCounts() map[results.Status]int {
	c := map[results.Status]int{}
	for _, rec := range o.records {
		c[rec.Status]++
	}
	return c
}

// checkExactlyOnce checks that every key of batch id has exactly one result, that
// storage and Redis agree on it byte for byte (the JSON in storage, the batch's record
// and the key's latest result), and that the batch's counts add up to len(keys). It
// returns the records, which are also kept for the leak check.
func (r *faultRig) checkExactlyOnce(id string, keys []string) faultOutcome {
	r.t.Helper()
	t := r.t
	ctx := context.Background()
	stored := map[string][]byte{}
	for a, err := range r.res.List(ctx, "") {
		require.NoError(t, err)
		k, ok := strings.CutSuffix(a.Key, ".json")
		require.True(t, ok, "unexpected object %q among the results", a.Key)
		rd, err := r.res.Get(ctx, a.Key, nil)
		require.NoError(t, err)
		b, err := io.ReadAll(rd)
		rd.Close()
		require.NoError(t, err)
		stored[k] = b
	}
	inBatch, err := r.rdb.HGetAll(ctx, results.BatchResultsKey(id)).Result()
	require.NoError(t, err)
	want := map[string]bool{}
	for _, k := range keys {
		want[k] = true
	}
	require.Len(t, want, len(keys), "keys must be distinct")
	var missing, extra, disagree []string
	out := faultOutcome{records: map[string]*results.Record{}}
	var all strings.Builder
	for k := range want {
		js, ok := stored[k]
		if !ok {
			missing = append(missing, k)
			continue
		}
		all.Write(js)
		if string(js) != inBatch[k] {
			disagree = append(disagree, k+" (storage vs batch record)")
			continue
		}
		latest, err := r.rdb.HGet(ctx, results.ResultKey(k), results.ResultFieldJSON).Result()
		if err != nil || latest != string(js) {
			disagree = append(disagree, k+" (storage vs latest result)")
			continue
		}
		rec, err := results.UnmarshalRecord(js)
		require.NoError(t, err, "result of %q", k)
		require.Equal(t, k, rec.Key)
		require.Equal(t, id, rec.BatchID)
		out.records[k] = rec
	}
	for k := range stored {
		if !want[k] {
			extra = append(extra, k+" (storage)")
		}
	}
	for k := range inBatch {
		if !want[k] {
			extra = append(extra, k+" (batch record)")
		}
	}
	r.keep("result JSON of batch "+id, all.String())
	require.Empty(t, missing, "keys without a result")
	require.Empty(t, extra, "results for keys that were not enqueued")
	require.Empty(t, disagree, "storage and Redis disagree")

	s := r.batch(id)
	require.NotNil(t, s, "batch %s", id)
	n := int64(len(keys))
	var sum int64
	for _, c := range s.Counts {
		sum += c
	}
	require.Equal(t, n, s.Enqueued, "batch enqueued")
	require.Equal(t, n, s.Done, "batch done")
	require.Equal(t, n, sum, "batch counts %v", s.Counts)
	require.True(t, s.Complete, "batch complete")
	for st, c := range out.statusCounts() {
		require.Equal(t, int64(c), s.Counts[st], "batch count of %s", st)
	}
	out.summary = s
	return out
}

// status runs `livenessq status` (text and JSON, and for the batch when id is given);
// the outputs are kept for the leak check. It returns the text output.
func (r *faultRig) status(id string) string {
	r.t.Helper()
	var text string
	for _, args := range [][]string{{"status"}, {"status", "--json"}} {
		if id != "" {
			args = append(args, "--batch", id)
		}
		res := r.run(args...)
		require.Equal(r.t, 0, res.code, "livenessq %s: %s", strings.Join(args, " "), res.output())
		if len(args) == 1 || args[1] != "--json" {
			text = res.stdout
		}
	}
	return text
}

// faultLogEvent is one JSON log line of a livenessq process.
type faultLogEvent map[string]any

// faultLogEvents parses the JSON log lines of out (other lines are skipped).
func faultLogEvents(out string) []faultLogEvent {
	var evs []faultLogEvent
	for line := range strings.SplitSeq(out, "\n") {
		if !strings.HasPrefix(line, "{") {
			continue
		}
		var ev faultLogEvent
		if json.Unmarshal([]byte(line), &ev) == nil {
			evs = append(evs, ev)
		}
	}
	return evs
}

func (ev faultLogEvent) str(k string) string {
	s, _ := ev[k].(string)
	return s
}

func (ev faultLogEvent) num(k string) (float64, bool) {
	f, ok := ev[k].(float64)
	return f, ok
}

// faultMetric returns the sum of the samples of metric (with any labels matching
// labels, e.g. `reason="storage"`) in a Prometheus text exposition.
func faultMetric(exposition, metric, labels string) float64 {
	var sum float64
	for line := range strings.SplitSeq(exposition, "\n") {
		if strings.HasPrefix(line, "#") || !strings.HasPrefix(line, metric) {
			continue
		}
		rest := line[len(metric):]
		if rest == "" || (rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		if labels != "" && !strings.Contains(rest, labels) {
			continue
		}
		f := strings.Fields(rest)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err == nil {
			sum += v
		}
	}
	return sum
}

// ---------------------------------------------------------------------------------------
// The bad-input corpus (testdata/bad) and the pre-check's fuzz seeds.

// badCorpusDir is testdata/bad at the repository's root.
const badCorpusDir = "../../testdata/bad"

// badCorpusFile is one committed file of the corpus and what the worker must make of it.
type badCorpusFile struct {
	name   string
	data   func() []byte
	status results.Status
	reason string // a substring of the result's reason
}

// badCorpus lists the committed files. Regenerate them with
// LIVENESSQ_UPDATE_TESTDATA=1 go test -run TestBadCorpusFiles ./cmd/livenessq
var badCorpus = []badCorpusFile{
	{"empty.jpg", func() []byte { return nil }, results.StatusInvalidImage, ""},
	{"truncated.jpg", func() []byte {
		b := kairostest.JPEG(640, 640, 7)
		return b[:len(b)*6/10]
	}, results.StatusInvalidImage, ""},
	{"corrupt-header.png", func() []byte {
		b := bytes.Clone(kairostest.PNG(640, 640, 7))
		b[24] = 7 // IHDR bit depth 7 (invalid), and the IHDR checksum no longer matches
		return b
	}, results.StatusInvalidImage, ""},
	{"animation.gif", faultGIF, results.StatusInvalidImage, "gif"},
	{"photo.heic", func() []byte {
		return []byte("This is not an image, only a text file named like a HEIC photo.\n")
	}, results.StatusInvalidImage, ""},
	{"narrow-299x800.jpg", func() []byte { return kairostest.JPEG(299, 800, 1) }, results.StatusInvalidImage, "299"},
	{"tall-800x5001.jpg", func() []byte { return kairostest.JPEG(800, 5001, 1) }, results.StatusInvalidImage, "5001"},
	{"huge-30000x30000.png", func() []byte { return faultPNGHeader(30000, 30000) }, results.StatusInvalidImage, "30000"},
}

// faultGIF returns a two-frame 400×400 GIF.
func faultGIF() []byte {
	pal := color.Palette{color.Black, color.White}
	var frames []*image.Paletted
	for i := range 2 {
		img := image.NewPaletted(image.Rect(0, 0, 400, 400), pal)
		for y := range 400 {
			for x := range 400 {
				img.SetColorIndex(x, y, uint8((x/40+y/40+i)%2))
			}
		}
		frames = append(frames, img)
	}
	var buf bytes.Buffer
	if err := gif.EncodeAll(&buf, &gif.GIF{Image: frames, Delay: []int{50, 50}}); err != nil {
		panic(err)
	}
	return buf.Bytes()
}

// faultPNGHeader returns a PNG whose valid IHDR claims w×h (8-bit RGB) followed by a tiny
// IDAT and IEND: decoding its pixels would need w×h×3 bytes.
func faultPNGHeader(w, h uint32) []byte {
	var b bytes.Buffer
	b.WriteString("\x89PNG\r\n\x1a\n")
	chunk := func(typ string, data []byte) {
		var hdr [4]byte
		hdr[0], hdr[1], hdr[2], hdr[3] = byte(len(data)>>24), byte(len(data)>>16), byte(len(data)>>8), byte(len(data))
		b.Write(hdr[:])
		body := append([]byte(typ), data...)
		b.Write(body)
		c := crc32.ChecksumIEEE(body)
		b.Write([]byte{byte(c >> 24), byte(c >> 16), byte(c >> 8), byte(c)})
	}
	ihdr := []byte{byte(w >> 24), byte(w >> 16), byte(w >> 8), byte(w), byte(h >> 24), byte(h >> 16), byte(h >> 8), byte(h), 8, 2, 0, 0, 0}
	chunk("IHDR", ihdr)
	chunk("IDAT", []byte{0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01})
	chunk("IEND", nil)
	return b.Bytes()
}

// readBadCorpus returns the committed corpus, failing t if a file is missing.
func readBadCorpus(t testing.TB) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for _, f := range badCorpus {
		b, err := os.ReadFile(filepath.Join(badCorpusDir, f.name))
		require.NoError(t, err, "testdata/bad/%s is missing: regenerate it with LIVENESSQ_UPDATE_TESTDATA=1 go test -run TestBadCorpusFiles ./cmd/livenessq", f.name)
		out[f.name] = b
	}
	return out
}

// precheckFuzzDir holds the worker's FuzzPrecheck seed corpus.
const precheckFuzzDir = "../../worker/testdata/fuzz/FuzzPrecheck"

// faultWriteFuzzSeed writes data as a `go test fuzz v1` corpus file holding one []byte.
func faultWriteFuzzSeed(path string, data []byte) error {
	return os.WriteFile(path, []byte("go test fuzz v1\n[]byte("+strconv.Quote(string(data))+")\n"), 0o644)
}

// errBadCorpus marks a committed corpus file whose properties are wrong.
var errBadCorpus = errors.New("bad corpus file")

// checkBadCorpusFile checks that a committed file has the property it stands for.
func checkBadCorpusFile(name string, b []byte) error {
	cfgOf := func() (image.Config, string, error) { return image.DecodeConfig(bytes.NewReader(b)) }
	switch name {
	case "empty.jpg":
		if len(b) != 0 {
			return fmt.Errorf("%w: %s has %d bytes", errBadCorpus, name, len(b))
		}
	case "truncated.jpg":
		if !bytes.HasPrefix(b, []byte{0xff, 0xd8, 0xff}) || bytes.HasSuffix(b, []byte{0xff, 0xd9}) {
			return fmt.Errorf("%w: %s is not a JPEG cut before its end", errBadCorpus, name)
		}
	case "corrupt-header.png":
		if _, _, err := cfgOf(); err == nil || !bytes.HasPrefix(b, []byte("\x89PNG")) {
			return fmt.Errorf("%w: %s: a PNG whose header does not decode (err %v)", errBadCorpus, name, err)
		}
	case "animation.gif":
		if c, f, err := cfgOf(); err != nil || f != "gif" || c.Width != 400 {
			return fmt.Errorf("%w: %s: %v %s %v", errBadCorpus, name, c, f, err)
		}
	case "photo.heic":
		if _, _, err := cfgOf(); err == nil {
			return fmt.Errorf("%w: %s decodes as an image", errBadCorpus, name)
		}
	default:
		var w, h int
		var format string
		if _, err := fmt.Sscanf(strings.NewReplacer("-", " ", "x", " ", ".", " ").Replace(name), "%s %d %d %s", new(string), &w, &h, &format); err != nil {
			return fmt.Errorf("%w: %s: cannot read the size from the name: %v", errBadCorpus, name, err)
		}
		c, f, err := cfgOf()
		if err != nil || c.Width != w || c.Height != h || (f != format && !(f == "jpeg" && format == "jpg")) {
			return fmt.Errorf("%w: %s: header says %dx%d %s (%v)", errBadCorpus, name, c.Width, c.Height, f, err)
		}
	}
	return nil
}

// ---------------------------------------------------------------------------------------
// Backoff statistics (scenario 4).

// faultKS returns the Kolmogorov–Smirnov statistic of xs (each in [0, 1]) against the
// uniform distribution on [0, 1].
func faultKS(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	n := float64(len(s))
	d := 0.0
	for i, x := range s {
		d = math.Max(d, math.Max(float64(i+1)/n-x, x-float64(i)/n))
	}
	return d
}
