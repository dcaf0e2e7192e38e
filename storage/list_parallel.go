package storage

import (
	"context"
	"fmt"
	"iter"
	"sync"
)

// levelLister is a driver that can list one level of a key hierarchy: the objects
// directly under a prefix and the sub-prefixes ("directories", up to the next '/') below
// it, together in lexical byte order. An entry with Prefix set stands for every key that
// starts with it. Errors follow list's rules.
type levelLister interface {
	listLevel(ctx context.Context, prefix string) iter.Seq2[levelEntry, error]
}

// levelEntry is an object (Attributes) or, when Prefix is not empty, a sub-prefix.
type levelEntry struct {
	Attributes
	Prefix string
}

// ListParallel's limits: how many levels below the prefix are split into sub-prefixes
// (deeper ones are listed whole), how many keys a sub-prefix's listing holds for the
// consumer (one S3 page), and how many entries the consumer looks ahead through to find
// the next sub-prefixes to start.
const (
	listParallelDepth  = 3
	listParallelBuffer = 1000
	listParallelAhead  = 4096
)

// ListParallel is List with the sub-prefixes below prefix ("directories" up to a '/',
// split up to three levels deep until there are parallel of them) listed concurrently,
// up to parallel at a time, for storage where one listing request at a time is the
// bottleneck (S3). Keys still come in lexical byte order, each once, and memory stays
// bounded (about parallel × 3,000 keys held ahead of the consumer). It is List itself
// when parallel < 2 and for local storage; a flat prefix (nothing to split) is listed
// as List would.
func (b *Bucket) ListParallel(ctx context.Context, prefix string, parallel int) iter.Seq2[Attributes, error] {
	ll, ok := b.drv.(levelLister)
	if !ok || parallel < 2 {
		return b.List(ctx, prefix)
	}
	return func(yield func(Attributes, error) bool) {
		full, err := b.listPrefix(ctx, prefix)
		if err != nil {
			yield(Attributes{}, err)
			return
		}
		var wg sync.WaitGroup
		ctx, cancel := context.WithCancel(ctx)
		defer wg.Wait()
		defer cancel()

		// The units of the listing, in order: objects, and the sub-prefixes to list whole.
		units := make(chan listUnit, listParallelBuffer)
		wg.Go(func() {
			defer close(units)
			enumerate(ctx, ll, full, 0, parallel, units)
		})
		// A listing that ctx ended stops without a word (its channel just closes): the
		// end of each is checked, so that a cut listing is an error, never a short one.
		ended := func() bool {
			if err := ctx.Err(); err != nil {
				yield(Attributes{}, fmt.Errorf("storage: list prefix %q: %w", full, err))
				return true
			}
			return false
		}
		emit := func(l listed) bool {
			if l.err != nil {
				yield(Attributes{}, l.err)
				return false
			}
			return yield(b.relative(l.a), nil)
		}
		// A window of units, holding at most parallel started sub-prefix listings.
		var window []listUnit
		started, more := 0, true
		for {
			for more && started < parallel && len(window) < listParallelAhead {
				u, ok := <-units
				if !ok {
					more = false
					break
				}
				if u.prefix != "" {
					u.keys = make(chan listed, listParallelBuffer)
					wg.Go(func() { listWhole(ctx, b.drv, u.prefix, u.keys) })
					started++
				}
				window = append(window, u)
			}
			if len(window) == 0 {
				ended()
				return
			}
			u := window[0]
			window = window[1:]
			if u.keys == nil {
				if !emit(u.listed) {
					return
				}
				continue
			}
			started--
			for l := range u.keys {
				if !emit(l) {
					return
				}
			}
			if ended() {
				return
			}
		}
	}
}

// listUnit is one object (or an error), or a sub-prefix listed whole into keys.
type listUnit struct {
	listed
	prefix string
	keys   chan listed
}

type listed struct {
	a   Attributes
	err error
}

// enumerate sends the units under prefix in order: objects as they are, sub-prefixes to
// be listed whole. A level whose sub-prefixes are fewer than parallel (seen whole
// within its first listParallelAhead entries) is split one level further, down to
// listParallelDepth levels, so that a tree with one or two top "directories" still
// gives enough listings to run at once. It stops after an error (sent) or when ctx ends.
func enumerate(ctx context.Context, ll levelLister, prefix string, depth, parallel int, units chan<- listUnit) bool {
	next, stop := iter.Pull2(ll.listLevel(ctx, prefix))
	defer stop()
	type entry struct {
		e   levelEntry
		err error
	}
	var head []entry
	prefixes, whole := 0, false
	for len(head) < listParallelAhead {
		e, err, ok := next()
		if !ok {
			whole = true
			break
		}
		head = append(head, entry{e, err})
		if err != nil {
			whole = true
			break
		}
		if e.Prefix != "" {
			prefixes++
		}
	}
	split := whole && prefixes < parallel && depth+1 < listParallelDepth
	send := func(e levelEntry, err error) bool {
		u := listUnit{listed: listed{e.Attributes, err}}
		if err == nil && e.Prefix != "" {
			if split {
				return enumerate(ctx, ll, e.Prefix, depth+1, parallel, units)
			}
			u = listUnit{prefix: e.Prefix}
		}
		select {
		case units <- u:
			return err == nil
		case <-ctx.Done():
			return false
		}
	}
	for _, h := range head {
		if !send(h.e, h.err) {
			return false
		}
	}
	for !whole {
		e, err, ok := next()
		if !ok {
			return true
		}
		if !send(e, err) {
			return false
		}
	}
	return true
}

// listWhole lists prefix into keys and closes it; it stops after an error (sent) or
// when ctx ends.
func listWhole(ctx context.Context, drv driver, prefix string, keys chan<- listed) {
	defer close(keys)
	for a, err := range drv.list(ctx, prefix) {
		select {
		case keys <- listed{a, err}:
		case <-ctx.Done():
			return
		}
		if err != nil {
			return
		}
	}
}
