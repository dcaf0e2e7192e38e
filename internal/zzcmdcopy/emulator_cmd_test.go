package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/livenessq/livenessq/kairos"
	"github.com/livenessq/livenessq/kairos/kairostest"
)

// The emulator process serves the API with the rules and credentials its flags give,
// prints its address on one line, and stops on SIGTERM.
func TestEmulatorServesItsFlags(t *testing.T) {
	t.Parallel()
	bin := buildBinary(t)
	emu, apiURL := startEmulator(t, bin, "--rule", "fixed-*.jpg=score:0.875", "--rule", "blank-*=noface",
		"--rule", "bad-*=status:422", "--latency", "1ms")
	require.True(t, strings.HasPrefix(emu.stdout(), "listening on http://127.0.0.1:"), emu.stdout())

	verify := func(name, key string) (*kairos.Result, error) {
		c, err := kairos.New(kairos.Config{BaseURL: apiURL, AppID: testAppID, AppKey: key})
		require.NoError(t, err)
		img := kairostest.JPEG(400, 400, 5)
		return c.Verify(context.Background(), kairos.Selfie{Name: name, Body: bytes.NewReader(img), Size: int64(len(img)), ContentType: "image/jpeg"}, 0.6)
	}
	res, err := verify("fixed-1.jpg", testAppKey)
	require.NoError(t, err)
	require.InDelta(t, 0.875, res.Score, 1e-9)
	res, err = verify("blank-1.jpg", testAppKey)
	require.NoError(t, err)
	require.Empty(t, res.Faces)
	_, err = verify("bad-1.jpg", testAppKey)
	require.ErrorIs(t, err, kairos.ErrRejected)
	_, err = verify("fixed-1.jpg", "wrong-key")
	require.ErrorIs(t, err, kairos.ErrUnauthorized)

	code, body := httpGet(t, strings.TrimSuffix(apiURL, "/v0.2/liveness-verification")+kairostest.StatsPath)
	require.Equal(t, 200, code)
	var stats kairostest.Stats
	require.NoError(t, json.Unmarshal([]byte(body), &stats))
	require.Equal(t, int64(4), stats.Total)

	require.Equal(t, 0, emu.stop(), emu.stderr())
	require.NotContains(t, emu.output(), testAppKey)
}

func TestEmulatorFlagErrors(t *testing.T) {
	t.Parallel()
	checkFlagErrors(t, []flagErrorCase{
		{desc: "rule without action", args: []string{"emulator", "--rule", "x-*"}, want: []string{"-rule", "PATTERN="}},
		{desc: "rule score", args: []string{"emulator", "--rule", "x-*=score:2"}, want: []string{"-rule", "[0, 1]"}},
		{desc: "rules from the environment", env: []string{"KAIROS_EMULATOR_RULES=a=noface;b=status:99"}, args: []string{"emulator"},
			want: []string{"$KAIROS_EMULATOR_RULES", "400..599"}},
		{desc: "error rate", args: []string{"emulator", "--error-rate", "1.5"}, want: []string{"--error-rate", "[0, 1]"}},
		{desc: "auth status", args: []string{"emulator", "--auth-failure-status", "500"}, want: []string{"--auth-failure-status"}},
		{desc: "outage", args: []string{"emulator", "--outage", "10s"}, want: []string{"-outage", "START+LENGTH"}},
		{desc: "address", args: []string{"emulator", "--addr", "nowhere:xyz"}, want: []string{"--addr"}},
	})
}

func TestParseRule(t *testing.T) {
	t.Parallel()
	score := 0.25
	for _, tc := range []struct {
		desc, in string
		want     kairostest.Rule
	}{
		{"score", "*_spoof.jpg=score:0.25", kairostest.Rule{Pattern: "*_spoof.jpg", Score: &score}},
		{"no face", "empty-*=noface", kairostest.Rule{Pattern: "empty-*", NoFace: true}},
		{"status", "big-*.png=status:413", kairostest.Rule{Pattern: "big-*.png", Status: 413}},
	} {
		got, err := parseRule(tc.in)
		require.NoError(t, err, tc.desc)
		require.Equal(t, tc.want, got, tc.desc)
		require.Equal(t, tc.in, formatRule(got), tc.desc)
	}
	for _, bad := range []string{"", "=noface", "x", "x=maybe", "x=status:abc", "[=noface"} {
		_, err := parseRule(bad)
		require.Error(t, err, bad)
	}

	var outs outageList
	require.NoError(t, outs.Set("30s+10s; 1m+1s"))
	require.Equal(t, outageList{{30 * time.Second, 10 * time.Second}, {time.Minute, time.Second}}, outs)
	f := emulatorFlags{authStatus: 401, maxBody: 1 << 20, outages: outs, sampleRules: true}
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	cfg, err := f.config(start)
	require.NoError(t, err)
	require.Equal(t, start.Add(30*time.Second), cfg.Outages[0].From)
	require.Equal(t, start.Add(40*time.Second), cfg.Outages[0].To)
	require.Len(t, cfg.Rules, len(sampleRules()))
}
