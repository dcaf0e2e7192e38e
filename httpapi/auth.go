package httpapi

import (
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"strings"
)

// Bounds of a bearer token and its name.
const (
	// MinTokenLen is the shortest token ParseTokens accepts, in bytes.
	MinTokenLen = 16
	// MaxTokenLen is the longest token ParseTokens accepts, in bytes.
	MaxTokenLen = 512
	// MaxTokenNameLen is the longest token name.
	MaxTokenNameLen = 64
)

// Tokens is the set of bearer tokens the API accepts, each known by a name that appears
// in logs and batch sources in its stead. It keeps only SHA-256 digests of the tokens
// and is safe for concurrent use.
type Tokens struct {
	names   []string
	digests [][sha256.Size]byte
}

// ParseTokens reads a token list in the LIVENESSQ_API_TOKENS form: name:token pairs
// separated by commas ("ci:3f9a…,billing:77c1…"); white space around entries is
// ignored. Names are 1..MaxTokenNameLen ASCII letters, digits, '.', '_' or '-', each used
// once; tokens are MinTokenLen..MaxTokenLen printable ASCII characters without spaces or
// commas, each used once. An empty list is an error: the API has no anonymous mode.
// Errors wrap ErrInvalidTokens and name the entry by position and name, never by its
// token.
func ParseTokens(s string) (*Tokens, error) {
	t := &Tokens{}
	seenName := map[string]bool{}
	seenDigest := map[[sha256.Size]byte]bool{}
	n := 0
	for entry := range strings.SplitSeq(s, ",") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		n++
		name, token, ok := strings.Cut(entry, ":")
		name, token = strings.TrimSpace(name), strings.TrimSpace(token)
		if !ok {
			return nil, fmt.Errorf("%w: entry %d is not name:token", ErrInvalidTokens, n)
		}
		if err := validateTokenName(name); err != nil {
			return nil, fmt.Errorf("%w: entry %d: %v", ErrInvalidTokens, n, err)
		}
		if seenName[name] {
			return nil, fmt.Errorf("%w: entry %d: name %q is used twice", ErrInvalidTokens, n, name)
		}
		if err := validateToken(token); err != nil {
			return nil, fmt.Errorf("%w: entry %d (name %q): %v", ErrInvalidTokens, n, name, err)
		}
		d := sha256.Sum256([]byte(token))
		if seenDigest[d] {
			return nil, fmt.Errorf("%w: entry %d (name %q): the same token is given to two names", ErrInvalidTokens, n, name)
		}
		seenName[name], seenDigest[d] = true, true
		t.names = append(t.names, name)
		t.digests = append(t.digests, d)
	}
	if n == 0 {
		return nil, fmt.Errorf("%w: no tokens: give name:token pairs separated by commas", ErrInvalidTokens)
	}
	return t, nil
}

func validateTokenName(name string) error {
	if name == "" || len(name) > MaxTokenNameLen {
		return fmt.Errorf("a name must be 1 to %d characters", MaxTokenNameLen)
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return fmt.Errorf("name %q: only ASCII letters, digits, '.', '_' and '-' are allowed", name)
		}
	}
	return nil
}

func validateToken(token string) error {
	if len(token) < MinTokenLen {
		return fmt.Errorf("token shorter than %d characters", MinTokenLen)
	}
	if len(token) > MaxTokenLen {
		return fmt.Errorf("token longer than %d characters", MaxTokenLen)
	}
	for i := 0; i < len(token); i++ {
		if c := token[i]; c <= ' ' || c >= 0x7f {
			return fmt.Errorf("token holds a space, control or non-ASCII character")
		}
	}
	return nil
}

// Names returns the token names, in the order given.
func (t *Tokens) Names() []string { return append([]string(nil), t.names...) }

// Authenticate returns the name of the token an Authorization header value carries
// ("Bearer <token>", the scheme case-insensitive), or false when the header is missing,
// malformed or carries no accepted token. It compares the token's digest with every
// accepted digest in constant time, so the answer's timing does not depend on which
// token matched, or on how much of a token was right.
func (t *Tokens) Authenticate(header string) (name string, ok bool) {
	scheme, token, found := strings.Cut(strings.TrimSpace(header), " ")
	if !found || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	if token == "" {
		return "", false
	}
	d := sha256.Sum256([]byte(token))
	match := -1
	for i := range t.digests {
		if subtle.ConstantTimeCompare(d[:], t.digests[i][:]) == 1 {
			match = i
		}
	}
	if match < 0 {
		return "", false
	}
	return t.names[match], true
}
