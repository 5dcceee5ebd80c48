package fedclient

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
)

// ErrAddressRefused is returned (wrapped in the dial error) for a connection
// to an address in ip_range_blacklist and not in ip_range_whitelist.
var ErrAddressRefused = errors.New("address refused by ip_range_blacklist")

// DefaultIPRangeBlacklist is Synapse's default ip_range_blacklist: loopback,
// private, link-local, shared, documentation, benchmarking and multicast
// ranges, which a remote server must not make this one call.
var DefaultIPRangeBlacklist = []string{
	"127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
	"100.64.0.0/10", "192.0.0.0/24", "169.254.0.0/16", "192.88.99.0/24",
	"198.18.0.0/15", "192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24",
	"224.0.0.0/4", "::1/128", "fe80::/10", "fc00::/7", "2001:db8::/32",
	"ff00::/8", "fec0::/10",
}

// alwaysRefused are unroutable addresses that Synapse adds to any blacklist.
var alwaysRefused = []string{"0.0.0.0/32", "::/128"}

// ParseRanges reads CIDR ranges or single addresses ("192.168.1.1"), as
// Synapse's ip_range lists take them.
func ParseRanges(list []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range list {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			a, aerr := netip.ParseAddr(s)
			if aerr != nil {
				return nil, fmt.Errorf("%q is not an IP range such as 10.0.0.0/8 or an address", s)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// ipFilter decides which addresses outbound connections may reach.
type ipFilter struct {
	deny, allow []netip.Prefix
}

// newIPFilter builds the filter; a nil blacklist means DefaultIPRangeBlacklist,
// an empty one refuses only the unroutable addresses.
func newIPFilter(blacklist, whitelist []string) (ipFilter, error) {
	if blacklist == nil {
		blacklist = DefaultIPRangeBlacklist
	}
	deny, err := ParseRanges(append(append([]string{}, blacklist...), alwaysRefused...))
	if err != nil {
		return ipFilter{}, fmt.Errorf("ip_range_blacklist: %w", err)
	}
	allow, err := ParseRanges(whitelist)
	if err != nil {
		return ipFilter{}, fmt.Errorf("ip_range_whitelist: %w", err)
	}
	return ipFilter{deny: deny, allow: allow}, nil
}

// allowed reports whether ip may be connected to: the whitelist overrides
// the blacklist, as in Synapse.
func (f ipFilter) allowed(ip netip.Addr) bool {
	ip = ip.Unmap() // ::ffff:127.0.0.1 is 127.0.0.1
	if contains(f.allow, ip) {
		return true
	}
	return !contains(f.deny, ip)
}

func contains(ranges []netip.Prefix, ip netip.Addr) bool {
	for _, p := range ranges {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// control runs on every socket before it connects, with the address the
// connection really goes to: checking there rather than on names means a
// DNS answer that changes between lookup and dial (rebinding) cannot reach
// a refused address.
func (f ipFilter) control(_ context.Context, network, address string, _ syscall.RawConn) error {
	if network != "tcp4" && network != "tcp6" {
		return fmt.Errorf("dial %s %s: only TCP is allowed", network, address)
	}
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("dial %s: %w", address, err)
	}
	if !f.allowed(ap.Addr()) {
		return fmt.Errorf("dial %s: %w", address, ErrAddressRefused)
	}
	return nil
}

// DNS is the part of *net.Resolver discovery uses; tests give a fake one.
type DNS interface {
	LookupSRV(ctx context.Context, service, proto, name string) (string, []*net.SRV, error)
	LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error)
}

// dialer connects to host:port addresses, resolving names itself so that
// every address tried passes the filter.
type dialer struct {
	dns    DNS
	net    net.Dialer
	filter ipFilter
}

func newDialer(dns DNS, filter ipFilter) *dialer {
	d := &dialer{dns: dns, filter: filter}
	d.net.ControlContext = filter.control
	return d
}

// DialContext dials each address of the host in turn and returns the first
// connection made.
func (d *dialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", address, err)
	}
	var ips []netip.Addr
	if ip, err := netip.ParseAddr(host); err == nil {
		ips = []netip.Addr{ip}
	} else {
		addrs, err := d.dns.LookupIPAddr(ctx, host)
		if err != nil {
			return nil, fmt.Errorf("dial %s: %w", address, err)
		}
		for _, a := range addrs {
			if ip, ok := netip.AddrFromSlice(a.IP); ok && a.Zone == "" {
				ips = append(ips, ip.Unmap())
			}
		}
		if len(ips) == 0 {
			return nil, fmt.Errorf("dial %s: no address for %s", address, host)
		}
	}
	var errs []error
	for _, ip := range ips {
		conn, err := d.net.DialContext(ctx, network, net.JoinHostPort(ip.String(), port))
		if err == nil {
			return conn, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, errors.Join(errs...)
}
