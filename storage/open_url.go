package storage

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// OpenURL opens the storage that rawURL names:
//
//	s3://bucket[/prefix][?endpoint=URL][&region=R][&path_style=true][&create_bucket=true][&ca_bundle=PATH]
//	file:///abs/dir[?create=true]
//	dir/path              (a plain directory path, relative or absolute)
//
// An s3 URL gives NewS3 its S3Config (credentials come from the SDK's default chain,
// never from the URL); a directory gives NewLocal its LocalConfig. A malformed URL gets
// an error that says what is wrong (and never echoes a password in it). Close the Bucket
// when done.
func OpenURL(ctx context.Context, rawURL string) (*Bucket, error) {
	switch {
	case rawURL == "":
		return nil, errors.New("storage: empty storage URL: want s3://bucket[/prefix]?…, file:///dir or a directory path")
	case strings.TrimSpace(rawURL) != rawURL:
		return nil, errors.New("storage: storage URL has leading or trailing spaces")
	}
	scheme, ok := urlScheme(rawURL)
	if !ok {
		return NewLocal(LocalConfig{Root: rawURL})
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // url.Error repeats the URL, which may hold a secret
		}
		return nil, fmt.Errorf("storage: malformed storage URL: %v", err)
	}
	// Errors show the URL without its query (whose values could be anything, even a
	// misplaced secret) and without a password.
	shown := *u
	shown.RawQuery, shown.ForceQuery = "", false
	bad := func(format string, args ...any) error {
		return fmt.Errorf("storage: bad storage URL %s: %s", shown.Redacted(), fmt.Sprintf(format, args...))
	}
	switch scheme {
	case "s3":
		cfg, err := parseS3URL(u, bad)
		if err != nil {
			return nil, err
		}
		return NewS3(ctx, cfg)
	case "file":
		cfg, err := parseFileURL(u, bad)
		if err != nil {
			return nil, err
		}
		return NewLocal(cfg)
	}
	return nil, bad("unsupported scheme %q: want s3://, file:// or a directory path", scheme)
}

// schemeRE matches a URL scheme followed by ':'.
var schemeRE = regexp.MustCompile(`^([A-Za-z][A-Za-z0-9+.-]*):`)

// urlScheme returns the lowercased scheme of raw when raw is meant as a URL: it has
// "://" after its scheme, or its scheme is one we know ("s3:bucket" is a malformed URL,
// not a directory).
func urlScheme(raw string) (string, bool) {
	m := schemeRE.FindStringSubmatch(raw)
	if m == nil {
		return "", false
	}
	scheme := strings.ToLower(m[1])
	if strings.HasPrefix(raw[len(m[0]):], "//") || scheme == "s3" || scheme == "file" {
		return scheme, true
	}
	return "", false
}

// parseS3URL turns s3://bucket[/prefix]?… into an S3Config.
func parseS3URL(u *url.URL, bad func(string, ...any) error) (S3Config, error) {
	var cfg S3Config
	switch {
	case u.Opaque != "" || u.Host == "":
		return cfg, bad("missing bucket name: want s3://bucket[/prefix]")
	case u.User != nil:
		return cfg, bad("credentials do not belong in the URL: use AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or a profile)")
	case u.Port() != "" || strings.HasSuffix(u.Host, ":"):
		return cfg, bad("the bucket name %q has a port: put the server in endpoint=http://host:port", u.Host)
	case u.Fragment != "" || strings.HasSuffix(u.String(), "#"):
		return cfg, bad("unexpected fragment %q", u.Fragment)
	}
	cfg.Bucket = u.Host
	if err := checkBucketName(cfg.Bucket); err != nil {
		return cfg, bad("%s", strings.TrimPrefix(err.Error(), "storage: s3: "))
	}
	cfg.Prefix = strings.TrimPrefix(u.Path, "/")
	q, err := parseQuery(u.RawQuery, bad, "endpoint", "region", "path_style", "create_bucket", "ca_bundle")
	if err != nil {
		return cfg, err
	}
	cfg.Endpoint = q["endpoint"]
	if cfg.Endpoint != "" {
		if _, err := canonicalEndpoint(cfg.Endpoint); err != nil {
			return cfg, bad("%s", strings.TrimPrefix(err.Error(), "storage: s3: "))
		}
	}
	cfg.Region = q["region"]
	cfg.CABundle = q["ca_bundle"]
	if cfg.PathStyle, err = parseBool(q, "path_style", bad); err != nil {
		return cfg, err
	}
	if cfg.CreateBucket, err = parseBool(q, "create_bucket", bad); err != nil {
		return cfg, err
	}
	return cfg, nil
}

// parseFileURL turns file:///dir[?create=true] into a LocalConfig.
func parseFileURL(u *url.URL, bad func(string, ...any) error) (LocalConfig, error) {
	var cfg LocalConfig
	switch {
	case u.Opaque != "":
		return cfg, bad("want file:///absolute/path (three slashes)")
	case u.Host != "" && u.Host != "localhost":
		return cfg, bad("file URL has host %q: want file:///absolute/path (three slashes), or a plain path", u.Host)
	case u.User != nil:
		return cfg, bad("file URL must not carry credentials")
	case u.Path == "" || !strings.HasPrefix(u.Path, "/"):
		return cfg, bad("file URL has no absolute path: want file:///absolute/path")
	case u.Fragment != "":
		return cfg, bad("unexpected fragment %q", u.Fragment)
	}
	cfg.Root = u.Path
	q, err := parseQuery(u.RawQuery, bad, "create")
	if err != nil {
		return cfg, err
	}
	if cfg.Create, err = parseBool(q, "create", bad); err != nil {
		return cfg, err
	}
	return cfg, nil
}

// parseQuery parses a query whose parameters must be among known, each at most once and
// not empty.
func parseQuery(raw string, bad func(string, ...any) error, known ...string) (map[string]string, error) {
	vals, err := url.ParseQuery(raw)
	if err != nil {
		return nil, bad("malformed query: %v", err)
	}
	out := make(map[string]string, len(vals))
	for k, v := range vals {
		switch {
		case !slices.Contains(known, k):
			return nil, bad("unknown parameter %q (known: %s)", k, strings.Join(known, ", "))
		case len(v) > 1:
			return nil, bad("parameter %q given %d times", k, len(v))
		case v[0] == "":
			return nil, bad("parameter %q is empty", k)
		}
		out[k] = v[0]
	}
	return out, nil
}

// parseBool reads an optional boolean parameter (default false).
func parseBool(q map[string]string, name string, bad func(string, ...any) error) (bool, error) {
	v, ok := q[name]
	if !ok {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, bad("parameter %s=%q is not true or false", name, v)
	}
	return b, nil
}
