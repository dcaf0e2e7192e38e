package storage_test

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/livenessq/livenessq/storage"
)

func TestLocalKeyEscape(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	parent := t.TempDir()
	root := filepath.Join(parent, "root")
	b, err := storage.NewLocal(storage.LocalConfig{Root: root, Create: true})
	require.NoError(t, err)
	defer b.Close()
	require.NoError(t, os.WriteFile(filepath.Join(parent, "outside.txt"), []byte("secret"), 0o600))

	for _, tc := range []struct {
		desc string
		key  string
	}{
		{desc: "parent", key: "../outside.txt"},
		{desc: "parent after a directory", key: "a/../../outside.txt"},
		{desc: "dot-dot alone", key: ".."},
		{desc: "dot-dot at the end", key: "a/.."},
		{desc: "absolute path", key: "/etc/passwd"},
		{desc: "absolute path to the file outside", key: filepath.Join(parent, "outside.txt")},
		{desc: "dot segment", key: "./a"},
		{desc: "dot alone", key: "."},
		{desc: "inner dot segment", key: "a/./b"},
		{desc: "empty segment", key: "a//b"},
		{desc: "trailing slash", key: "a/"},
		{desc: "reserved temporary name", key: ".livenessq-tmp-x"},
		{desc: "reserved temporary directory", key: "a/.livenessq-tmp-x/b"},
		{desc: "segment longer than 255 bytes", key: strings.Repeat("s", 256)},
		{desc: "NUL byte", key: "a\x00b"},
		{desc: "empty", key: ""},
	} {
		err := b.Put(ctx, tc.key, strings.NewReader("escaped"), nil)
		require.ErrorIs(t, err, storage.ErrInvalidKey, "Put: %s", tc.desc)
		_, err = b.Get(ctx, tc.key, nil)
		require.ErrorIs(t, err, storage.ErrInvalidKey, "Get: %s", tc.desc)
		_, err = b.Stat(ctx, tc.key)
		require.ErrorIs(t, err, storage.ErrInvalidKey, "Stat: %s", tc.desc)
		require.ErrorIs(t, b.Delete(ctx, tc.key), storage.ErrInvalidKey, "Delete: %s", tc.desc)
		require.ErrorIs(t, storage.ValidateKey(tc.key), storage.ErrInvalidKey, "ValidateKey: %s", tc.desc)
	}
	for _, err := range b.List(ctx, "../") {
		require.ErrorIs(t, err, storage.ErrInvalidKey, "List of a prefix leaving the root")
	}

	// Names that only look like escapes are ordinary keys.
	for _, key := range []string{"..a", "a..", "a/...", "...", ".hidden", "a/.b/c", `back\slash`} {
		require.NoError(t, b.Put(ctx, key, strings.NewReader(key), nil), key)
		require.NoError(t, storage.ValidateKey(key), key)
	}
	// Nothing was written outside the root, and the file there is intact.
	entries, err := os.ReadDir(parent)
	require.NoError(t, err)
	require.Len(t, entries, 2, "only root/ and outside.txt in the parent")
	data, err := os.ReadFile(filepath.Join(parent, "outside.txt"))
	require.NoError(t, err)
	require.Equal(t, "secret", string(data))
}

func TestLocalSymlinks(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	parent := t.TempDir()
	root := filepath.Join(parent, "root")
	outside := filepath.Join(parent, "outside")
	require.NoError(t, os.MkdirAll(outside, 0o755))
	require.NoError(t, os.MkdirAll(root, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(outside, "secret.txt"), []byte("secret"), 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(root, "real.jpg"), []byte("inside"), 0o600))
	require.NoError(t, os.Symlink(outside, filepath.Join(root, "out")))
	require.NoError(t, os.Symlink(filepath.Join(outside, "secret.txt"), filepath.Join(root, "secret.txt")))
	require.NoError(t, os.Symlink("real.jpg", filepath.Join(root, "link.jpg")))
	b, err := storage.NewLocal(storage.LocalConfig{Root: root})
	require.NoError(t, err)
	defer b.Close()

	_, err = b.Get(ctx, "out/secret.txt", nil)
	require.ErrorIs(t, err, storage.ErrInvalidKey, "a directory link leading out of the root")
	_, err = b.Get(ctx, "secret.txt", nil)
	require.ErrorIs(t, err, storage.ErrInvalidKey, "a file link leading out of the root")
	err = b.Put(ctx, "out/planted.txt", strings.NewReader("x"), nil)
	require.ErrorIs(t, err, storage.ErrInvalidKey)
	_, err = os.Stat(filepath.Join(outside, "planted.txt"))
	require.ErrorIs(t, err, os.ErrNotExist, "nothing written through the link")

	// A link that stays inside the root works, and is listed; escaping links are not.
	r, err := b.Get(ctx, "link.jpg", nil)
	require.NoError(t, err)
	data, err := io.ReadAll(r)
	r.Close()
	require.NoError(t, err)
	require.Equal(t, "inside", string(data))
	var keys []string
	for a, err := range b.List(ctx, "") {
		require.NoError(t, err)
		keys = append(keys, a.Key)
	}
	require.Equal(t, []string{"link.jpg", "real.jpg"}, keys)
}

func TestLocalHidesTemporaryFiles(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	root := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(root, "a"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(root, "a", ".livenessq-tmp-leftover"), []byte("x"), 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(root, "a", "k.jpg"), []byte("x"), 0o600))
	b, err := storage.NewLocal(storage.LocalConfig{Root: root})
	require.NoError(t, err)
	defer b.Close()
	var keys []string
	for a, err := range b.List(ctx, "") {
		require.NoError(t, err)
		keys = append(keys, a.Key)
	}
	require.Equal(t, []string{"a/k.jpg"}, keys, "a temporary file left by a crash is not an object")
}

func TestNewLocal(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	require.NoError(t, os.WriteFile(file, nil, 0o600))
	for _, tc := range []struct {
		desc    string
		cfg     storage.LocalConfig
		wantErr string
	}{
		{desc: "existing directory", cfg: storage.LocalConfig{Root: dir}},
		{desc: "missing directory", cfg: storage.LocalConfig{Root: filepath.Join(dir, "missing")}, wantErr: "does not exist"},
		{desc: "missing directory, created", cfg: storage.LocalConfig{Root: filepath.Join(dir, "new", "deeper"), Create: true}},
		{desc: "a file", cfg: storage.LocalConfig{Root: file}, wantErr: "not a directory"},
		{desc: "empty", cfg: storage.LocalConfig{}, wantErr: "empty"},
	} {
		b, err := storage.NewLocal(tc.cfg)
		if tc.wantErr != "" {
			require.ErrorContains(t, err, tc.wantErr, tc.desc)
			continue
		}
		require.NoError(t, err, tc.desc)
		require.Equal(t, tc.cfg.Root, b.Name(), tc.desc)
		require.Equal(t, "file://"+tc.cfg.Root, b.URL(), tc.desc)
		require.NoError(t, b.Close(), tc.desc)
		require.NoError(t, b.Close(), "%s: closing twice", tc.desc)
	}
}
