package storage_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/livenessq/livenessq/storage"
)

func TestValidateKey(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		desc string
		key  string
		ok   bool
	}{
		{desc: "simple", key: "a.jpg", ok: true},
		{desc: "nested", key: "2024/05/a b ü.jpg", ok: true},
		{desc: "dots inside names", key: "a..b/...c", ok: true},
		{desc: "longest", key: strings.Repeat("a/", storage.MaxKeyLen/2-1) + "ab", ok: true},
		{desc: "empty", key: ""},
		{desc: "too long", key: strings.Repeat("a/", storage.MaxKeyLen/2) + "a"},
		{desc: "invalid UTF-8", key: "\xff"},
		{desc: "NUL", key: "a\x00"},
		{desc: "absolute", key: "/a"},
		{desc: "parent", key: "a/../../b"},
		{desc: "current", key: "./a"},
		{desc: "double slash", key: "a//b"},
		{desc: "trailing slash", key: "a/"},
		{desc: "reserved", key: ".livenessq-tmp-1"},
	} {
		err := storage.ValidateKey(tc.key)
		if tc.ok {
			require.NoError(t, err, tc.desc)
			continue
		}
		require.ErrorIs(t, err, storage.ErrInvalidKey, tc.desc)
	}
}
