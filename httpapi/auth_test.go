package httpapi_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/require"

	"github.com/livenessq/livenessq/httpapi"
)

func TestParseTokens(t *testing.T) {
	t.Parallel()
	const good, good2 = "0123456789abcdef", "fedcba9876543210-x:y"
	tests := []struct {
		desc    string
		in      string
		names   []string
		wantErr string
	}{
		{desc: "one", in: "ci:" + good, names: []string{"ci"}},
		{desc: "two with spaces and a colon in a token", in: " ci:" + good + " , billing:" + good2 + ",", names: []string{"ci", "billing"}},
		{desc: "empty", in: "", wantErr: "no tokens"},
		{desc: "only commas", in: " , ,", wantErr: "no tokens"},
		{desc: "no colon", in: good, wantErr: "entry 1 is not name:token"},
		{desc: "empty name", in: ":" + good, wantErr: "a name must be"},
		{desc: "bad name", in: "c i:" + good, wantErr: "only ASCII letters"},
		{desc: "short token", in: "ci:zq9x", wantErr: "shorter than 16"},
		{desc: "space in token", in: "ci:0123456789 abcdef", wantErr: "space, control"},
		{desc: "duplicate name", in: "ci:" + good + ",ci:" + good2, wantErr: `name "ci" is used twice`},
		{desc: "duplicate token", in: "ci:" + good + ",cd:" + good, wantErr: "same token"},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			t.Parallel()
			tok, err := httpapi.ParseTokens(tt.in)
			if tt.wantErr != "" {
				require.Error(t, err)
				require.True(t, errors.Is(err, httpapi.ErrInvalidTokens))
				require.Contains(t, err.Error(), tt.wantErr)
				for _, secret := range []string{good, good2, "zq9x", "0123456789 abcdef"} {
					require.NotContains(t, err.Error(), secret, "a token leaked into the error")
				}
				return
			}
			require.NoError(t, err)
			if diff := cmp.Diff(tt.names, tok.Names()); diff != "" {
				t.Errorf("names (-want +got):\n%s", diff)
			}
		})
	}
}

func TestTokensAuthenticate(t *testing.T) {
	t.Parallel()
	tok, err := httpapi.ParseTokens("ci:0123456789abcdef,billing:ffffffffffffffff0000")
	require.NoError(t, err)
	tests := []struct {
		desc   string
		header string
		name   string
		ok     bool
	}{
		{desc: "first", header: "Bearer 0123456789abcdef", name: "ci", ok: true},
		{desc: "second, scheme in lowercase", header: "bearer ffffffffffffffff0000", name: "billing", ok: true},
		{desc: "missing", header: ""},
		{desc: "basic scheme", header: "Basic 0123456789abcdef"},
		{desc: "no token", header: "Bearer "},
		{desc: "prefix of a token", header: "Bearer 0123456789abcde"},
		{desc: "token plus more", header: "Bearer 0123456789abcdef0"},
		{desc: "a name, not a token", header: "Bearer ci"},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			t.Parallel()
			name, ok := tok.Authenticate(tt.header)
			require.Equal(t, tt.ok, ok)
			require.Equal(t, tt.name, name)
		})
	}
}

func TestCheckKey(t *testing.T) {
	t.Parallel()
	tests := []struct {
		desc string
		key  string
		ok   bool
	}{
		{desc: "plain", key: "a.jpg", ok: true},
		{desc: "nested with spaces and unicode", key: "dir/sub dir/ünï.jpg", ok: true},
		{desc: "dots inside a name", key: "a/..b/c..jpg", ok: true},
		{desc: "empty", key: ""},
		{desc: "parent segment", key: "a/../b.jpg"},
		{desc: "leading parent", key: "../etc/passwd"},
		{desc: "trailing parent", key: "a/.."},
		{desc: "dot segment", key: "a/./b"},
		{desc: "backslash parent", key: `a\..\b`},
		{desc: "absolute", key: "/etc/passwd"},
		{desc: "NUL", key: "a\x00b"},
		{desc: "too long", key: strings.Repeat("k", 1025)},
		{desc: "longest", key: strings.Repeat("k", 1024), ok: true},
		{desc: "invalid UTF-8", key: "a\xffb"},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			t.Parallel()
			err := httpapi.CheckKey(tt.key)
			if tt.ok {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, httpapi.ErrInvalidKey)
		})
	}
}
