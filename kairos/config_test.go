package kairos_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/livenessq/livenessq/kairos"
)

// secretKey is the app key used by every test in this package; no output may contain it.
const secretKey = "sk-live-0123456789abcdef-SECRET"

func TestConfigNeverPrintsTheKey(t *testing.T) {
	t.Parallel()
	cfg := kairos.Config{
		BaseURL: "https://example.test/v0.2/liveness-verification", AppID: "app", AppKey: secretKey,
		HeaderStyle: kairos.HeaderUnderscore, HTTPClient: &http.Client{}, Timeout: time.Second, UserAgent: "ua",
	}
	type wrapper struct {
		Name   string
		Kairos kairos.Config
		Ptr    *kairos.Config
	}
	values := []any{cfg, &cfg, wrapper{"w", cfg, &cfg}, []kairos.Config{cfg}, map[string]kairos.Config{"k": cfg}}
	var out strings.Builder
	for _, v := range values {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%T", "%10.3v"} {
			fmt.Fprintf(&out, verb+"\n", v)
		}
		fmt.Fprintln(&out, v)
		b, err := json.Marshal(v)
		require.NoError(t, err)
		out.Write(b)
	}
	fmt.Fprint(&out, cfg.String(), cfg.GoString())

	var logs bytes.Buffer
	log := zerolog.New(&logs)
	log.Info().Interface("cfg", cfg).Stringer("cfg_str", cfg).Any("ptr", &cfg).Msg("configured")

	for _, s := range []string{out.String(), logs.String()} {
		require.NotContains(t, s, secretKey)
		require.NotContains(t, s, "SECRET")
		require.Contains(t, s, "[redacted]")
	}
	require.Contains(t, out.String(), `AppID:"app"`, "the rest is still printed")
	require.Contains(t, logs.String(), `"app_key":"[redacted]"`)
	require.Equal(t, `kairos.Config{BaseURL:"" AppID:"" AppKey:"" HeaderStyle:hyphen Timeout:0s UserAgent:"" MaxConns:0}`, kairos.Config{}.String())
}

func TestNewValidates(t *testing.T) {
	t.Parallel()
	valid := kairos.Config{AppID: "app", AppKey: secretKey}
	_, err := kairos.New(valid)
	require.NoError(t, err)
	for _, tc := range []struct {
		desc string
		mod  func(*kairos.Config)
		want string
	}{
		{desc: "no app id", mod: func(c *kairos.Config) { c.AppID = "" }, want: "AppID is required"},
		{desc: "no app key", mod: func(c *kairos.Config) { c.AppKey = "" }, want: "AppKey is required"},
		{desc: "key with a newline", mod: func(c *kairos.Config) { c.AppKey = secretKey + "\r\nX-Evil: 1" }, want: "AppKey contains"},
		{desc: "id with a newline", mod: func(c *kairos.Config) { c.AppID = "a\nb" }, want: "AppID contains"},
		{desc: "relative URL", mod: func(c *kairos.Config) { c.BaseURL = "/v0.2/liveness-verification" }, want: "absolute"},
		{desc: "ftp URL", mod: func(c *kairos.Config) { c.BaseURL = "ftp://host/x" }, want: "absolute"},
		{desc: "bad URL", mod: func(c *kairos.Config) { c.BaseURL = "http://[::1" }, want: "BaseURL"},
		{desc: "header style", mod: func(c *kairos.Config) { c.HeaderStyle = 7 }, want: "HeaderStyle"},
		{desc: "negative timeout", mod: func(c *kairos.Config) { c.Timeout = -time.Second }, want: "Timeout"},
		{desc: "user agent", mod: func(c *kairos.Config) { c.UserAgent = "a\x00" }, want: "UserAgent"},
		{desc: "negative max conns", mod: func(c *kairos.Config) { c.MaxConns = -1 }, want: "MaxConns"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			cfg := valid
			tc.mod(&cfg)
			c, err := kairos.New(cfg)
			require.Nil(t, c)
			require.ErrorContains(t, err, tc.want)
			require.NotContains(t, err.Error(), secretKey)
		})
	}
}

func TestHeaderStyleString(t *testing.T) {
	t.Parallel()
	require.Equal(t, "hyphen", kairos.HeaderHyphen.String())
	require.Equal(t, "underscore", kairos.HeaderUnderscore.String())
	require.Equal(t, "HeaderStyle(9)", kairos.HeaderStyle(9).String())
}
