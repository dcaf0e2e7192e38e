package main

import (
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// The Docker engine does not run here, so the packaging is checked by reading it:
// docker-compose.yml is parsed (with the small YAML subset parser below) and every
// variable handed to a service that runs the livenessq image must be one its command
// reads, as `livenessq <command> --help` prints them ([$VAR]), or one of the credential
// variables read outside the flags.

// credentialVars are read by the binary outside its flags: the Kairos credentials
// (kairosFlags.client) and the AWS SDK's default chain.
var credentialVars = []string{"KAIROS_APP_ID", "KAIROS_APP_KEY", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"}

func TestComposeServicesUseVariablesTheBinaryReads(t *testing.T) {
	t.Parallel()
	compose := readCompose(t)
	bin := buildBinary(t)

	helpOf := map[string]string{}
	help := func(cmd string) string {
		if h, ok := helpOf[cmd]; ok {
			return h
		}
		r := runCmd(t, bin, nil, cmd, "--help")
		require.Equalf(t, 0, r.code, "livenessq %s --help: %s", cmd, r.stderr)
		helpOf[cmd] = r.stdout
		return r.stdout
	}
	commands := listCommands(t, bin)
	require.Contains(t, commands, "worker")
	varsOf := func(cmd string) map[string]bool {
		vars := map[string]bool{}
		for _, m := range regexp.MustCompile(`\[\$([A-Z0-9_]+)\]`).FindAllStringSubmatch(help(cmd), -1) {
			vars[m[1]] = true
		}
		for _, v := range credentialVars {
			vars[v] = true
		}
		return vars
	}
	anyCommandVars := map[string]bool{}
	for _, c := range commands {
		for v := range varsOf(c) {
			anyCommandVars[v] = true
		}
	}

	services := yamlMap(t, compose, "services")
	var checked []string
	for name, raw := range services {
		svc, ok := raw.(map[string]any)
		require.Truef(t, ok, "service %s is not a map", name)
		if !runsLivenessq(svc) {
			continue
		}
		checked = append(checked, name)
		env := serviceEnv(t, name, svc)
		cmd := yamlStrings(t, svc["command"])
		if len(cmd) == 0 {
			// An entrypoint for one-off commands (`docker compose run cli status`): each
			// variable must be read by some command.
			for v := range env {
				require.Truef(t, anyCommandVars[v], "service %s sets %s, which no livenessq command reads", name, v)
			}
			continue
		}
		require.Containsf(t, commands, cmd[0], "service %s runs unknown command %q", name, cmd[0])
		reads := varsOf(cmd[0])
		for v := range env {
			require.Truef(t, reads[v], "service %s sets %s, which `livenessq %s` does not read", name, v, cmd[0])
		}
		for _, arg := range cmd[1:] {
			if f, ok := strings.CutPrefix(arg, "--"); ok {
				f, _, _ = strings.Cut(f, "=")
				require.Containsf(t, help(cmd[0]), "--"+f+"\n", "service %s passes --%s, which `livenessq %s` does not take", name, f, cmd[0])
			}
		}
	}
	slices.Sort(checked)
	require.Equal(t, []string{"cli", "emulator", "scheduler", "worker"}, checked, "services running the livenessq image")
}

func TestComposeWiring(t *testing.T) {
	t.Parallel()
	compose := readCompose(t)
	services := yamlMap(t, compose, "services")
	for _, want := range []string{"redis", "minio", "minio-setup", "emulator", "worker", "scheduler", "asynqmon"} {
		require.Containsf(t, services, want, "compose has a %s service", want)
	}
	svc := func(name string) map[string]any { return services[name].(map[string]any) }

	// Every depends_on names a service.
	for name := range services {
		deps, _ := svc(name)["depends_on"].(map[string]any)
		for d := range deps {
			require.Containsf(t, services, d, "service %s depends on unknown service %s", name, d)
		}
	}

	// Redis keeps an append-only file.
	require.Contains(t, strings.Join(yamlStrings(t, svc("redis")["command"]), " "), "--appendonly yes")

	// Two workers; the scheduler runs `schedule`, the emulator `emulator`.
	deploy := svc("worker")["deploy"].(map[string]any)
	require.Equal(t, "2", deploy["replicas"])
	require.Equal(t, []string{"worker"}, yamlStrings(t, svc("worker")["command"]))
	require.Equal(t, []string{"schedule"}, yamlStrings(t, svc("scheduler")["command"]))
	require.Equal(t, []string{"emulator"}, yamlStrings(t, svc("emulator")["command"]))

	// The workers reach the emulator where it listens, with the credentials it accepts.
	wenv, eenv := serviceEnv(t, "worker", svc("worker")), serviceEnv(t, "emulator", svc("emulator"))
	api, err := url.Parse(wenv["KAIROS_API_URL"])
	require.NoError(t, err)
	_, port, _ := strings.Cut(eenv["KAIROS_EMULATOR_ADDR"], ":")
	require.Equal(t, "emulator:"+port, api.Host)
	require.Equal(t, eenv["KAIROS_EMULATOR_APP_ID"], wenv["KAIROS_APP_ID"])
	require.Equal(t, eenv["KAIROS_EMULATOR_APP_KEY"], wenv["KAIROS_APP_KEY"])

	// Workers and scheduler share Redis and storage; storage is the bucket minio-setup
	// creates, with MinIO's credentials.
	senv, menv := serviceEnv(t, "scheduler", svc("scheduler")), serviceEnv(t, "minio", svc("minio"))
	for _, v := range []string{"LIVENESSQ_REDIS_URL", "LIVENESSQ_STORAGE_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"} {
		require.NotEmptyf(t, wenv[v], "worker sets %s", v)
		require.Equalf(t, wenv[v], senv[v], "worker and scheduler agree on %s", v)
	}
	require.Equal(t, menv["MINIO_ROOT_USER"], wenv["AWS_ACCESS_KEY_ID"])
	require.Equal(t, menv["MINIO_ROOT_PASSWORD"], wenv["AWS_SECRET_ACCESS_KEY"])
	su, err := url.Parse(wenv["LIVENESSQ_STORAGE_URL"])
	require.NoError(t, err)
	require.Equal(t, "s3", su.Scheme)
	require.Equal(t, "http://minio:9000", su.Query().Get("endpoint"))
	setup := strings.Join(yamlStrings(t, svc("minio-setup")["entrypoint"]), " ")
	require.Contains(t, setup, "mc mb --ignore-existing local/"+su.Host+" ")
	ru, err := url.Parse(wenv["LIVENESSQ_REDIS_URL"])
	require.NoError(t, err)
	require.Equal(t, "redis:6379", ru.Host)

	// asynqmon reads the same Redis.
	require.Contains(t, yamlStrings(t, svc("asynqmon")["command"]), "--redis-addr="+ru.Host)
	require.True(t, strings.HasPrefix(svc("asynqmon")["image"].(string), "hibiken/asynqmon"))

	// The scheduler's default schedule parses.
	f := scheduleFlags{tz: senv["LIVENESSQ_SCHEDULE_TZ"], threshold: 0.6}
	require.NoError(t, f.every.Set(senv["LIVENESSQ_SCHEDULE"]))
	_, _, err = loadSchedules(&f)
	require.NoError(t, err)
}

func TestDockerfile(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile(filepath.Join("..", "..", "Dockerfile"))
	require.NoError(t, err)
	var froms []string
	var run, user, entrypoint string
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "FROM "):
			froms = append(froms, line)
		case strings.HasPrefix(line, "RUN ") && strings.Contains(line, "go build"):
			run = line
		case strings.HasPrefix(line, "USER "):
			user = line
		case strings.HasPrefix(line, "ENTRYPOINT "):
			entrypoint = line
		}
	}
	require.Len(t, froms, 2, "a build stage and a final stage")
	require.True(t, strings.HasPrefix(froms[0], "FROM golang:1.26 "), froms[0])
	require.Contains(t, []string{"FROM gcr.io/distroless/static:nonroot", "FROM scratch"}, froms[1])
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", `-ldflags "-s -w"`, "./cmd/livenessq"} {
		require.Contains(t, run, want)
	}
	name, _, _ := strings.Cut(strings.TrimPrefix(user, "USER "), ":")
	require.NotContains(t, []string{"", "root", "0"}, name, "the image runs as a non-root user")
	require.Equal(t, `ENTRYPOINT ["/livenessq"]`, entrypoint)
}

// listCommands returns the commands `livenessq help` lists.
func listCommands(t *testing.T, bin string) []string {
	t.Helper()
	r := runCmd(t, bin, nil, "help")
	require.Equal(t, 0, r.code, r.stderr)
	_, list, ok := strings.Cut(r.stdout, "Commands:\n")
	require.True(t, ok, r.stdout)
	var cmds []string
	for _, line := range strings.Split(list, "\n") {
		if !strings.HasPrefix(line, "  ") {
			if len(cmds) > 0 {
				break
			}
			continue
		}
		cmds = append(cmds, strings.Fields(line)[0])
	}
	return cmds
}

// runsLivenessq reports whether a compose service runs the image the Dockerfile builds.
func runsLivenessq(svc map[string]any) bool {
	if _, ok := svc["build"]; ok {
		return true
	}
	img, _ := svc["image"].(string)
	return strings.HasPrefix(img, "livenessq")
}

// serviceEnv returns a service's environment (map form), with compose's ${VAR:-default}
// interpolation resolved to the defaults.
func serviceEnv(t *testing.T, name string, svc map[string]any) map[string]string {
	t.Helper()
	raw, ok := svc["environment"]
	if !ok {
		return map[string]string{}
	}
	m, ok := raw.(map[string]any)
	require.Truef(t, ok, "service %s: environment must be a map (VAR: value)", name)
	env := map[string]string{}
	interp := regexp.MustCompile(`\$\{([A-Z0-9_]+)(:?-([^}]*))?\}`)
	for k, v := range m {
		s, ok := v.(string)
		require.Truef(t, ok, "service %s: %s must be a string", name, k)
		env[k] = interp.ReplaceAllString(s, "$3")
	}
	return env
}

func readCompose(t *testing.T) map[string]any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "docker-compose.yml"))
	require.NoError(t, err)
	doc, err := parseYAMLSubset(string(b))
	require.NoError(t, err, "docker-compose.yml must stay within the YAML subset compose_test.go parses")
	return doc
}

func yamlMap(t *testing.T, m map[string]any, key string) map[string]any {
	t.Helper()
	v, ok := m[key].(map[string]any)
	require.Truef(t, ok, "%s is a map", key)
	return v
}

func yamlStrings(t *testing.T, v any) []string {
	t.Helper()
	if v == nil {
		return nil
	}
	l, ok := v.([]any)
	require.Truef(t, ok, "want a list, got %T", v)
	out := make([]string, len(l))
	for i, e := range l {
		s, ok := e.(string)
		require.Truef(t, ok, "want a list of strings, got %T", e)
		out[i] = s
	}
	return out
}

// parseYAMLSubset parses the YAML subset docker-compose.yml keeps to: block maps
// ("key: value", "key:" then a deeper block) and block lists of scalars ("- value"),
// scalars plain, 'single-' or "double-quoted", flow lists written as JSON arrays of
// strings, and comments. Anything else (anchors, aliases, flow maps, block scalars,
// tabs, several documents) is an error rather than a misreading. Scalars stay strings.
func parseYAMLSubset(src string) (map[string]any, error) {
	type line struct {
		n      int
		indent int
		text   string
	}
	var lines []line
	for i, raw := range strings.Split(src, "\n") {
		s := strings.TrimRight(raw, " \r")
		body := strings.TrimLeft(s, " ")
		if body == "" || strings.HasPrefix(body, "#") {
			continue
		}
		if strings.HasPrefix(s, "\t") || strings.Contains(s[:len(s)-len(body)], "\t") {
			return nil, fmt.Errorf("line %d: tab in indentation", i+1)
		}
		if body == "---" || body == "..." {
			return nil, fmt.Errorf("line %d: one document only", i+1)
		}
		body, err := stripComment(body)
		if err != nil {
			return nil, fmt.Errorf("line %d: %v", i+1, err)
		}
		lines = append(lines, line{i + 1, len(s) - len(strings.TrimLeft(s, " ")), body})
	}

	var parseBlock func(pos, indent int) (any, int, error)
	parseBlock = func(pos, indent int) (any, int, error) {
		if pos >= len(lines) || lines[pos].indent != indent {
			return nil, pos, nil
		}
		if strings.HasPrefix(lines[pos].text, "- ") || lines[pos].text == "-" {
			var list []any
			for pos < len(lines) && lines[pos].indent == indent && strings.HasPrefix(lines[pos].text, "-") {
				item := strings.TrimSpace(strings.TrimPrefix(lines[pos].text, "-"))
				if item == "" || strings.Contains(item, ": ") || strings.HasSuffix(item, ":") {
					return nil, pos, fmt.Errorf("line %d: only lists of scalars are supported", lines[pos].n)
				}
				v, err := yamlScalar(item)
				if err != nil {
					return nil, pos, fmt.Errorf("line %d: %v", lines[pos].n, err)
				}
				list = append(list, v)
				pos++
			}
			return list, pos, nil
		}
		m := map[string]any{}
		for pos < len(lines) && lines[pos].indent == indent {
			l := lines[pos]
			key, rest, ok := strings.Cut(l.text, ":")
			if !ok || (rest != "" && rest[0] != ' ') {
				return nil, pos, fmt.Errorf("line %d: want key: value", l.n)
			}
			key = strings.TrimSpace(key)
			if k, err := yamlScalar(key); err == nil {
				key, _ = k.(string)
			}
			if _, dup := m[key]; dup {
				return nil, pos, fmt.Errorf("line %d: duplicate key %q", l.n, key)
			}
			rest = strings.TrimSpace(rest)
			pos++
			if rest != "" {
				v, err := yamlScalar(rest)
				if err != nil {
					return nil, pos, fmt.Errorf("line %d: %v", l.n, err)
				}
				m[key] = v
				continue
			}
			if pos < len(lines) && lines[pos].indent > indent {
				v, next, err := parseBlock(pos, lines[pos].indent)
				if err != nil {
					return nil, next, err
				}
				m[key], pos = v, next
			} else if pos < len(lines) && lines[pos].indent == indent && strings.HasPrefix(lines[pos].text, "- ") {
				v, next, err := parseBlock(pos, indent) // a list at the key's own indentation
				if err != nil {
					return nil, next, err
				}
				m[key], pos = v, next
			} else {
				m[key] = nil
			}
		}
		return m, pos, nil
	}
	v, pos, err := parseBlock(0, 0)
	if err != nil {
		return nil, err
	}
	if pos != len(lines) {
		return nil, fmt.Errorf("line %d: unexpected indentation", lines[pos].n)
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("the document is not a map")
	}
	return m, nil
}

// stripComment removes a " #" comment outside quotes.
func stripComment(s string) (string, error) {
	var quote byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote == '"' && c == '\\':
			i++
		case quote != 0 && c == quote:
			quote = 0
		case quote == 0 && (c == '"' || c == '\'') && (i == 0 || strings.IndexByte(" [,", s[i-1]) >= 0):
			quote = c // a quote opens a scalar only where one starts
		case quote == 0 && c == '#' && i > 0 && s[i-1] == ' ':
			return strings.TrimRight(s[:i], " "), nil
		}
	}
	if quote != 0 {
		return "", fmt.Errorf("unterminated quote (multi-line strings are not supported)")
	}
	return s, nil
}

// yamlScalar reads one scalar or JSON-array flow list.
func yamlScalar(s string) (any, error) {
	switch s[0] {
	case '[':
		var l []string
		if err := json.Unmarshal([]byte(s), &l); err != nil {
			return nil, fmt.Errorf("flow list %s: write it as a JSON array of strings: %v", s, err)
		}
		out := make([]any, len(l))
		for i, e := range l {
			out[i] = e
		}
		return out, nil
	case '"':
		var v string
		if err := json.Unmarshal([]byte(s), &v); err != nil {
			return nil, fmt.Errorf("double-quoted %s: %v", s, err)
		}
		return v, nil
	case '\'':
		if len(s) < 2 || s[len(s)-1] != '\'' {
			return nil, fmt.Errorf("single-quoted %s: unterminated", s)
		}
		return strings.ReplaceAll(s[1:len(s)-1], "''", "'"), nil
	case '{', '&', '*', '|', '>', '!', '%', '@', '`':
		return nil, fmt.Errorf("%q: flow maps, anchors, aliases, tags and block scalars are not supported", s)
	}
	return s, nil
}

func TestParseYAMLSubset(t *testing.T) {
	t.Parallel()
	doc, err := parseYAMLSubset(`# comment
a: 1 # trailing
b:
  c: "x # not a comment"
  e: ["p", "q\"r"]
  f:
    - one
    - 'it''s'
  g:
  - at the key's indentation
h:
`)
	require.NoError(t, err)
	want := map[string]any{
		"a": "1",
		"b": map[string]any{
			"c": "x # not a comment", "e": []any{"p", `q"r`},
			"f": []any{"one", "it's"}, "g": []any{"at the key's indentation"},
		},
		"h": nil,
	}
	require.Equal(t, want, doc)

	for _, bad := range []string{
		"a: &x 1\n", "a: *x\n", "a: {b: 1}\n", "a: |\n  text\n", "a:\n\t- x\n", "a: 1\na: 2\n",
		"a:\n  - b: 1\n", "a: \"open\n", "---\na: 1\n", "a: [1, 2]\n",
	} {
		_, err := parseYAMLSubset(bad)
		require.Errorf(t, err, "%q", bad)
	}
}
