package httpapi

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
	"time"
)

// MaxCallbackURLLen is the longest callback URL accepted, in bytes.
const MaxCallbackURLLen = 2048

// resolveTimeout bounds the DNS lookup of a callback host when a batch is created.
const resolveTimeout = 5 * time.Second

// reserved lists ranges callbacks may not reach besides those netip.Addr's predicates
// name (loopback, private, link-local, multicast, unspecified).
var reserved = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),       // "this" network
	netip.MustParsePrefix("100.64.0.0/10"),   // carrier-grade NAT, shared address space
	netip.MustParsePrefix("192.0.0.0/24"),    // IETF protocol assignments
	netip.MustParsePrefix("192.0.2.0/24"),    // documentation
	netip.MustParsePrefix("198.18.0.0/15"),   // benchmarking
	netip.MustParsePrefix("198.51.100.0/24"), // documentation
	netip.MustParsePrefix("203.0.113.0/24"),  // documentation
	netip.MustParsePrefix("240.0.0.0/4"),     // reserved, and the broadcast address
	netip.MustParsePrefix("64:ff9b::/96"),    // NAT64: may lead to any IPv4 address
	netip.MustParsePrefix("64:ff9b:1::/48"),  // local-use NAT64
	netip.MustParsePrefix("100::/64"),        // discard
	netip.MustParsePrefix("2001:db8::/32"),   // documentation
	netip.MustParsePrefix("2002::/16"),       // 6to4: embeds any IPv4 address
	netip.MustParsePrefix("fec0::/10"),       // deprecated site-local
}

// PublicAddr reports whether a callback may reach ip when private addresses are not
// allowed: false for loopback, private (RFC 1918, fc00::/7), link-local (including
// 169.254.169.254, the cloud metadata service), unspecified, multicast and other
// reserved ranges, for IPv4 addresses written as IPv6 too.
func PublicAddr(ip netip.Addr) bool {
	ip = ip.Unmap()
	if !ip.IsValid() || ip.IsLoopback() || ip.IsPrivate() || ip.IsUnspecified() ||
		ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() || ip.IsInterfaceLocalMulticast() ||
		ip.IsMulticast() {
		return false
	}
	for _, p := range reserved {
		if p.Contains(ip) {
			return false
		}
	}
	return true
}

// CheckCallbackURL returns nil for a callback URL a batch may carry: an absolute http or
// https URL of at most MaxCallbackURLLen bytes with a host, no user name or password
// (the receiver authenticates callbacks by their signature) and no fragment. Unless
// allowPrivate is set, every address the host resolves to (with resolver; nil means
// net.DefaultResolver) must be a PublicAddr. Errors wrap ErrInvalidCallbackURL or
// ErrCallbackAddress and say what is wrong. The Dispatcher checks addresses again when
// it connects, as DNS answers may change.
func CheckCallbackURL(ctx context.Context, raw string, allowPrivate bool, resolver *net.Resolver) error {
	if len(raw) > MaxCallbackURLLen {
		return fmt.Errorf("%w: longer than %d bytes", ErrInvalidCallbackURL, MaxCallbackURLLen)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("%w: cannot be parsed", ErrInvalidCallbackURL)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("%w: the scheme must be http or https", ErrInvalidCallbackURL)
	}
	if u.Opaque != "" || u.Host == "" || u.Hostname() == "" {
		return fmt.Errorf("%w: it needs a host", ErrInvalidCallbackURL)
	}
	if u.User != nil {
		return fmt.Errorf("%w: it must not carry a user name or password", ErrInvalidCallbackURL)
	}
	if u.Fragment != "" {
		return fmt.Errorf("%w: it must not carry a fragment", ErrInvalidCallbackURL)
	}
	if allowPrivate {
		return nil
	}
	host := u.Hostname()
	if ip, err := netip.ParseAddr(host); err == nil {
		if !PublicAddr(ip) {
			return fmt.Errorf("%w: %s is a loopback, private, link-local or reserved address", ErrCallbackAddress, ip)
		}
		return nil
	}
	if strings.EqualFold(strings.TrimSuffix(host, "."), "localhost") || strings.HasSuffix(strings.ToLower(strings.TrimSuffix(host, ".")), ".localhost") {
		return fmt.Errorf("%w: %s is a loopback name", ErrCallbackAddress, host)
	}
	if resolver == nil {
		resolver = net.DefaultResolver
	}
	rctx, cancel := context.WithTimeout(ctx, resolveTimeout)
	defer cancel()
	addrs, err := resolver.LookupNetIP(rctx, "ip", host)
	if err != nil || len(addrs) == 0 {
		return fmt.Errorf("%w: host %q does not resolve", ErrInvalidCallbackURL, host)
	}
	for _, ip := range addrs {
		if !PublicAddr(ip) {
			return fmt.Errorf("%w: host %q resolves to %s, a loopback, private, link-local or reserved address", ErrCallbackAddress, host, ip.Unmap())
		}
	}
	return nil
}

// dialControl is a net.Dialer Control hook refusing connections to addresses that are
// not PublicAddr: it runs on the address actually dialled, after DNS, so neither a
// changed DNS answer nor a redirect can lead a callback into the internal network.
func dialControl(_, address string, _ syscall.RawConn) error {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrCallbackAddress, err)
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return fmt.Errorf("%w: %q is not an IP address", ErrCallbackAddress, host)
	}
	if !PublicAddr(ip) {
		return fmt.Errorf("%w: %s", ErrCallbackAddress, ip.Unmap())
	}
	return nil
}
