package storage_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/livenessq/livenessq/storage"
)

func TestOpenURL(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	spaced := filepath.Join(dir, "with space")
	require.NoError(t, os.Mkdir(spaced, 0o755))
	file := filepath.Join(dir, "file.txt")
	require.NoError(t, os.WriteFile(file, nil, 0o600))
	cwd, err := os.Getwd()
	require.NoError(t, err)

	for _, tc := range []struct {
		desc     string
		url      string
		wantURL  string // canonical URL of the opened Bucket
		wantName string
		wantErr  string // a part of the error; "" for success
		secret   string // must not appear in the error
	}{
		// S3, parsed without any request.
		{desc: "s3 bucket", url: "s3://photos?region=eu-west-1",
			wantURL: "s3://photos?region=eu-west-1", wantName: "photos"},
		{desc: "s3 full form", url: "s3://photos/2024/may?endpoint=http://127.0.0.1:9000&region=us-east-1&path_style=true",
			wantURL: "s3://photos/2024/may?endpoint=http://127.0.0.1:9000&region=us-east-1&path_style=true", wantName: "photos"},
		{desc: "s3 parameters in another order, trailing slashes", url: "s3://photos/2024/may/?path_style=true&region=us-east-1&endpoint=http://127.0.0.1:9000/",
			wantURL: "s3://photos/2024/may?endpoint=http://127.0.0.1:9000&region=us-east-1&path_style=true", wantName: "photos"},
		{desc: "s3 endpoint case and escaped query", url: "s3://photos?endpoint=HTTPS%3A%2F%2FS3.Example.COM&region=r1&path_style=false",
			wantURL: "s3://photos?endpoint=https://s3.example.com&region=r1", wantName: "photos"},
		{desc: "s3 prefix with spaces and unicode", url: "s3://photos/my%20selfies/%C3%A9t%C3%A9?region=r1",
			wantURL: "s3://photos/my%20selfies/%C3%A9t%C3%A9?region=r1", wantName: "photos"},
		{desc: "s3 bucket with dots and dashes", url: "s3://my.photo-bucket?region=r1&path_style=1",
			wantURL: "s3://my.photo-bucket?region=r1&path_style=true", wantName: "my.photo-bucket"},

		// Local directories.
		{desc: "plain absolute path", url: dir, wantURL: "file://" + dir, wantName: dir},
		{desc: "plain relative path", url: ".", wantURL: "file://" + cwd, wantName: cwd},
		{desc: "plain path with a trailing slash", url: dir + "/", wantURL: "file://" + dir, wantName: dir},
		{desc: "file URL", url: "file://" + dir, wantURL: "file://" + dir, wantName: dir},
		{desc: "file URL with localhost", url: "file://localhost" + dir, wantURL: "file://" + dir, wantName: dir},
		{desc: "file URL with an escaped space", url: "file://" + filepath.ToSlash(dir) + "/with%20space",
			wantURL: "file://" + dir + "/with%20space", wantName: spaced},
		{desc: "plain path with a space", url: spaced, wantURL: "file://" + dir + "/with%20space", wantName: spaced},
		{desc: "file URL, created", url: "file://" + dir + "/made/here?create=true",
			wantURL: "file://" + dir + "/made/here", wantName: dir + "/made/here"},

		// Malformed.
		{desc: "empty", url: "", wantErr: "empty storage URL"},
		{desc: "leading space", url: " s3://photos", wantErr: "spaces"},
		{desc: "s3 without bucket", url: "s3://", wantErr: "missing bucket name"},
		{desc: "s3 with one slash", url: "s3:/photos", wantErr: "missing bucket name"},
		{desc: "s3 without slashes", url: "s3:photos", wantErr: "missing bucket name"},
		{desc: "s3 with three slashes", url: "s3:///photos", wantErr: "missing bucket name"},
		{desc: "s3 upper-case bucket", url: "s3://Photos", wantErr: "lowercase"},
		{desc: "s3 short bucket", url: "s3://ab", wantErr: "3 to 63"},
		{desc: "s3 bucket with underscore", url: "s3://my_photos", wantErr: "lowercase letters, digits"},
		{desc: "s3 with a port", url: "s3://photos:9000", wantErr: "has a port"},
		{desc: "s3 with credentials", url: "s3://AKIAEXAMPLE:hunter2secret@photos", wantErr: "credentials do not belong", secret: "hunter2secret"},
		{desc: "s3 with a bad escape and credentials", url: "s3://AK:hunter2secret@pho%zztos", wantErr: "malformed storage URL", secret: "hunter2secret"},
		{desc: "s3 with a space in the bucket", url: "s3://pho tos", wantErr: "malformed storage URL"},
		{desc: "s3 endpoint not http", url: "s3://photos?endpoint=ftp://host", wantErr: "http:// or https://"},
		{desc: "s3 endpoint without host", url: "s3://photos?endpoint=http://", wantErr: "has no host"},
		{desc: "s3 endpoint without scheme", url: "s3://photos?endpoint=127.0.0.1:9000", wantErr: "endpoint"},
		{desc: "s3 bad boolean", url: "s3://photos?path_style=maybe", wantErr: `path_style="maybe" is not true or false`},
		{desc: "s3 bad create_bucket", url: "s3://photos?create_bucket=yes", wantErr: "create_bucket"},
		{desc: "s3 misspelt parameter", url: "s3://photos?regoin=us-east-1", wantErr: `unknown parameter "regoin"`},
		{desc: "s3 credentials as parameters", url: "s3://photos?secret_key=hunter2secret", wantErr: `unknown parameter "secret_key"`, secret: "hunter2secret"},
		{desc: "s3 repeated parameter", url: "s3://photos?region=a&region=b", wantErr: "given 2 times"},
		{desc: "s3 empty parameter", url: "s3://photos?region=", wantErr: `"region" is empty`},
		{desc: "s3 semicolon in query", url: "s3://photos?region=a;b", wantErr: "malformed query"},
		{desc: "s3 fragment", url: "s3://photos?region=r1#frag", wantErr: "fragment"},
		{desc: "s3 missing CA bundle", url: "s3://photos?region=r1&ca_bundle=/no/such/ca.pem", wantErr: "CA bundle"},
		{desc: "unsupported scheme", url: "gs://photos", wantErr: `unsupported scheme "gs"`},
		{desc: "http URL", url: "http://example.com/photos", wantErr: `unsupported scheme "http"`},
		{desc: "file URL with a host", url: "file://relative/dir", wantErr: `has host "relative"`},
		{desc: "file URL without slashes", url: "file:relative", wantErr: "three slashes"},
		{desc: "file URL to a missing directory", url: "file://" + dir + "/missing", wantErr: "does not exist"},
		{desc: "file URL bad create", url: "file://" + dir + "?create=maybe", wantErr: "not true or false"},
		{desc: "file URL unknown parameter", url: "file://" + dir + "?region=x", wantErr: `unknown parameter "region"`},
		{desc: "plain path to a missing directory", url: filepath.Join(dir, "missing"), wantErr: "does not exist"},
		{desc: "plain path to a file", url: file, wantErr: "not a directory"},
	} {
		b, err := storage.OpenURL(context.Background(), tc.url)
		if tc.wantErr != "" {
			require.Error(t, err, tc.desc)
			require.Contains(t, err.Error(), tc.wantErr, tc.desc)
			if tc.secret != "" {
				require.NotContains(t, err.Error(), tc.secret, "%s: the error shows the secret", tc.desc)
			}
			continue
		}
		require.NoError(t, err, tc.desc)
		require.Equal(t, tc.wantURL, b.URL(), tc.desc)
		require.Equal(t, tc.wantName, b.Name(), tc.desc)
		// The canonical URL opens the same storage.
		again, err := storage.OpenURL(context.Background(), b.URL())
		require.NoError(t, err, "%s: reopen %s", tc.desc, b.URL())
		require.Equal(t, b.URL(), again.URL(), tc.desc)
		require.NoError(t, again.Close())
		require.NoError(t, b.Close())
	}
}

func TestLocalURLRoundTrip(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b, err := storage.OpenURL(ctx, t.TempDir())
	require.NoError(t, err)
	defer b.Close()
	sub := b.Sub("results")
	require.NoError(t, sub.Put(ctx, "k.json", strings.NewReader("{}"), nil))
	require.Equal(t, b.URL()+"/results", sub.URL())
	// A view's URL opens its prefix as a root of its own.
	same, err := storage.OpenURL(ctx, sub.URL())
	require.NoError(t, err)
	defer same.Close()
	_, err = same.Stat(ctx, "k.json")
	require.NoError(t, err)
}
