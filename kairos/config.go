package kairos

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// DefaultBaseURL is the v0.2 liveness-verification endpoint, used when Config.BaseURL is
// empty. It is the only place the host appears in the code.
const DefaultBaseURL = "https://idv-eu.kairos.com/v0.2/liveness-verification"

// Defaults applied by New to zero Config fields.
const (
	// DefaultTimeout bounds one Verify call, upload and answer included.
	DefaultTimeout = 60 * time.Second
	// DefaultUserAgent is sent as User-Agent when Config.UserAgent is empty.
	DefaultUserAgent = "livenessq-kairos/1"
	// DefaultMaxConns is Config.MaxConns when it is 0.
	DefaultMaxConns = 64
)

// redacted replaces the app key wherever a Config is printed or marshalled.
const redacted = "[redacted]"

// HeaderStyle chooses how the credential headers are spelled on the wire.
type HeaderStyle int

const (
	// HeaderHyphen sends app-id / app-key (the v0.2 header list; the default, since many
	// proxies drop header names with underscores).
	HeaderHyphen HeaderStyle = iota
	// HeaderUnderscore sends app_id / app_key (the spelling of the v0.1 docs and all code
	// samples).
	HeaderUnderscore
)

// String returns "hyphen" or "underscore" (or "HeaderStyle(N)" for an invalid value).
func (s HeaderStyle) String() string {
	switch s {
	case HeaderHyphen:
		return "hyphen"
	case HeaderUnderscore:
		return "underscore"
	}
	return "HeaderStyle(" + strconv.Itoa(int(s)) + ")"
}

// Config configures a Client. The zero value of every field except AppID and AppKey is
// usable. Config never prints or marshals AppKey: String, GoString, Format (every verb,
// %+v and %#v included) and MarshalJSON show "[redacted]" in its place.
type Config struct {
	// BaseURL is the full URL requests are POSTed to. Default DefaultBaseURL. Must be an
	// absolute http or https URL.
	BaseURL string
	// AppID is the Kairos application id. Required.
	AppID string
	// AppKey is the Kairos application key. Required. A secret: sent only in its header.
	AppKey string
	// HeaderStyle spells the credential headers. Default HeaderHyphen.
	HeaderStyle HeaderStyle
	// HTTPClient sends the requests. Default: a client whose transport is
	// http.DefaultTransport's with MaxConns idle connections per host and a 256 KiB
	// write buffer. The Client uses a shallow copy whose CheckRedirect refuses redirects
	// (a redirected POST would lose its body); its other fields are kept.
	HTTPClient *http.Client
	// MaxConns is how many connections to the API the default HTTPClient keeps open
	// between calls: set it to the calls a process makes at once (the worker's
	// --concurrency), so that none is closed after its call and dialled again (a new
	// TLS handshake) for the next. Default DefaultMaxConns; ignored with HTTPClient.
	MaxConns int
	// Timeout bounds one Verify call, from sending the first byte to reading the whole
	// answer. Default DefaultTimeout; must not be negative.
	Timeout time.Duration
	// UserAgent is sent as the User-Agent header. Default DefaultUserAgent.
	UserAgent string
}

// withDefaults returns cfg with the documented defaults applied.
func (cfg Config) withDefaults() Config {
	if cfg.BaseURL == "" {
		cfg.BaseURL = DefaultBaseURL
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.UserAgent == "" {
		cfg.UserAgent = DefaultUserAgent
	}
	if cfg.MaxConns == 0 {
		cfg.MaxConns = DefaultMaxConns
	}
	return cfg
}

// validate reports the first invalid field. Its errors never contain AppKey.
func (cfg Config) validate() error {
	u, err := url.Parse(cfg.BaseURL)
	if err != nil {
		return fmt.Errorf("kairos: Config.BaseURL: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return errors.New("kairos: Config.BaseURL must be an absolute http or https URL")
	}
	if cfg.AppID == "" {
		return errors.New("kairos: Config.AppID is required")
	}
	if !validHeaderValue(cfg.AppID) {
		return errors.New("kairos: Config.AppID contains characters not allowed in a header")
	}
	if cfg.AppKey == "" {
		return errors.New("kairos: Config.AppKey is required")
	}
	if !validHeaderValue(cfg.AppKey) {
		return errors.New("kairos: Config.AppKey contains characters not allowed in a header")
	}
	if cfg.HeaderStyle != HeaderHyphen && cfg.HeaderStyle != HeaderUnderscore {
		return fmt.Errorf("kairos: Config.HeaderStyle: invalid value %d", int(cfg.HeaderStyle))
	}
	if cfg.Timeout < 0 {
		return errors.New("kairos: Config.Timeout must not be negative")
	}
	if cfg.MaxConns < 0 {
		return errors.New("kairos: Config.MaxConns must not be negative")
	}
	if !validHeaderValue(cfg.UserAgent) {
		return errors.New("kairos: Config.UserAgent contains characters not allowed in a header")
	}
	return nil
}

// validHeaderValue reports whether s can be sent as an HTTP header value: no control
// characters other than horizontal tab, no DEL.
func validHeaderValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < ' ' && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

// redactedKey is what printing shows for AppKey: "[redacted]" when set, "" when not.
func (cfg Config) redactedKey() string {
	if cfg.AppKey == "" {
		return ""
	}
	return redacted
}

// String returns a one-line description with AppKey redacted.
func (cfg Config) String() string {
	return fmt.Sprintf("kairos.Config{BaseURL:%q AppID:%q AppKey:%q HeaderStyle:%v Timeout:%v UserAgent:%q MaxConns:%d}",
		cfg.BaseURL, cfg.AppID, cfg.redactedKey(), cfg.HeaderStyle, cfg.Timeout, cfg.UserAgent, cfg.MaxConns)
}

// GoString returns the String form, so %#v never shows AppKey either.
func (cfg Config) GoString() string { return cfg.String() }

// Format implements fmt.Formatter: every verb prints the String form (quoted for %q), so
// no verb or flag (%v, %+v, %#v, %s, %x, ...) prints AppKey.
func (cfg Config) Format(f fmt.State, verb rune) {
	s := cfg.String()
	if verb == 'q' {
		s = strconv.Quote(s)
	}
	_, _ = f.Write([]byte(s))
}

// MarshalJSON encodes the Config with AppKey redacted and HTTPClient omitted, so loggers
// that marshal values (zerolog's Interface) never see the key.
func (cfg Config) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		BaseURL     string `json:"base_url"`
		AppID       string `json:"app_id"`
		AppKey      string `json:"app_key"`
		HeaderStyle string `json:"header_style"`
		Timeout     string `json:"timeout"`
		UserAgent   string `json:"user_agent"`
		MaxConns    int    `json:"max_conns"`
	}{cfg.BaseURL, cfg.AppID, cfg.redactedKey(), cfg.HeaderStyle.String(), cfg.Timeout.String(), cfg.UserAgent, cfg.MaxConns})
}
