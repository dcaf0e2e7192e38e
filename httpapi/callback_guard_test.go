package httpapi_test

import (
	"context"
	"net/netip"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/livenessq/livenessq/httpapi"
)

func TestPublicAddr(t *testing.T) {
	t.Parallel()
	tests := []struct {
		addr   string
		public bool
	}{
		{"93.184.216.34", true},
		{"8.8.8.8", true},
		{"2606:4700:4700::1111", true},
		{"127.0.0.1", false},
		{"127.1.2.3", false},
		{"::1", false},
		{"10.1.2.3", false},
		{"172.16.0.1", false},
		{"192.168.1.1", false},
		{"169.254.169.254", false}, // cloud metadata
		{"fe80::1", false},
		{"fd00::1", false},
		{"0.0.0.0", false},
		{"::", false},
		{"224.0.0.1", false},
		{"ff02::1", false},
		{"100.64.0.1", false},
		{"255.255.255.255", false},
		{"::ffff:127.0.0.1", false},
		{"::ffff:10.0.0.1", false},
		{"64:ff9b::a00:1", false}, // NAT64 of 10.0.0.1
		{"2002:a00:1::", false},   // 6to4 of 10.0.0.1
	}
	for _, tt := range tests {
		t.Run(tt.addr, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tt.public, httpapi.PublicAddr(netip.MustParseAddr(tt.addr)))
		})
	}
}

func TestCheckCallbackURL(t *testing.T) {
	t.Parallel()
	tests := []struct {
		desc         string
		url          string
		allowPrivate bool
		wantErr      error
	}{
		{desc: "public address", url: "https://93.184.216.34/hook?x=1", wantErr: nil},
		{desc: "public IPv6 with a port", url: "http://[2606:4700:4700::1111]:8443/hook"},
		{desc: "ftp", url: "ftp://93.184.216.34/hook", wantErr: httpapi.ErrInvalidCallbackURL},
		{desc: "javascript", url: "javascript:alert(1)", wantErr: httpapi.ErrInvalidCallbackURL},
		{desc: "relative", url: "/hook", wantErr: httpapi.ErrInvalidCallbackURL},
		{desc: "no host", url: "http:///hook", wantErr: httpapi.ErrInvalidCallbackURL},
		{desc: "credentials", url: "https://user:pw@93.184.216.34/hook", wantErr: httpapi.ErrInvalidCallbackURL},
		{desc: "fragment", url: "https://93.184.216.34/hook#x", wantErr: httpapi.ErrInvalidCallbackURL},
		{desc: "loopback", url: "http://127.0.0.1:8080/hook", wantErr: httpapi.ErrCallbackAddress},
		{desc: "IPv6 loopback", url: "http://[::1]/hook", wantErr: httpapi.ErrCallbackAddress},
		{desc: "private", url: "http://10.0.0.7/hook", wantErr: httpapi.ErrCallbackAddress},
		{desc: "link-local metadata", url: "http://169.254.169.254/latest/meta-data", wantErr: httpapi.ErrCallbackAddress},
		{desc: "unspecified", url: "http://0.0.0.0/", wantErr: httpapi.ErrCallbackAddress},
		{desc: "localhost by name", url: "http://localhost:9000/hook", wantErr: httpapi.ErrCallbackAddress},
		{desc: "a .localhost name", url: "http://api.localhost/hook", wantErr: httpapi.ErrCallbackAddress},
		{desc: "loopback allowed", url: "http://127.0.0.1:8080/hook", allowPrivate: true},
		{desc: "localhost allowed", url: "http://localhost:8080/hook", allowPrivate: true},
		{desc: "ftp even when private is allowed", url: "ftp://127.0.0.1/", allowPrivate: true, wantErr: httpapi.ErrInvalidCallbackURL},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			t.Parallel()
			err := httpapi.CheckCallbackURL(context.Background(), tt.url, tt.allowPrivate, nil)
			if tt.wantErr == nil {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, tt.wantErr)
		})
	}
}

func TestSignature(t *testing.T) {
	t.Parallel()
	// RFC 4231-style known answer: HMAC-SHA256("key", "The quick brown fox jumps over the lazy dog").
	body := []byte("The quick brown fox jumps over the lazy dog")
	sig := httpapi.Sign([]byte("key"), body)
	require.Equal(t, "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8", sig)
	require.True(t, httpapi.VerifySignature([]byte("key"), body, sig))
	require.False(t, httpapi.VerifySignature([]byte("other"), body, sig))
	require.False(t, httpapi.VerifySignature([]byte("key"), append(body, '.'), sig))
	require.False(t, httpapi.VerifySignature([]byte("key"), body, ""))
}
