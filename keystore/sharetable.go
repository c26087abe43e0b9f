package keystore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// ShareTable is how the gateways sharing a store divide one rate limit
// that one of them ran short of (see rateShares): what each may admit
// within the window. A limit without a table is divided equally.
type ShareTable struct {
	// Account is the account whose limit this is (a key's or an owner's).
	Account string
	// Rate is the limit.
	Rate Rate
	// Entries are the gateways' parts, ordered by member. A gateway
	// without an entry has none.
	Entries []ShareEntry
}

// ShareEntry is one gateway's part of a limit.
type ShareEntry struct {
	// Member is the gateway (Members.Self).
	Member string
	// Grant is how many requests the gateway's window may count.
	Grant int64
	// Wants says the gateway was refused for lack of grant just now.
	Wants bool
}

// VersionedShareTable is a table with the store revision that wrote it.
type VersionedShareTable struct {
	Table ShareTable
	Rev   int64
}

// ShareTables is implemented by stores that several gateways share
// (etcdstore): they keep the share tables, each under its ShareTableID,
// and hand every change to every gateway.
type ShareTables interface {
	// FollowShareTables hands f every table the store holds, then each
	// change, until ctx ends; after a break that lost changes, every
	// table again.
	FollowShareTables(ctx context.Context, f ShareFollower)
	// SwapShareTable writes t (nil: deletes the table) if the table is
	// still at revision rev (0: absent), and returns the revision of the
	// write; ok is false if the table had changed.
	SwapShareTable(ctx context.Context, id string, rev int64, t *ShareTable) (newRev int64, ok bool, err error)
}

// ShareFollower hears the share tables of a store.
type ShareFollower interface {
	// SharesLoaded hands every table the store held at revision rev, by
	// id, replacing all known before.
	SharesLoaded(tables map[string]VersionedShareTable, rev int64)
	// ShareChanged hands one table as written at rev; nil when deleted.
	ShareChanged(id string, t *ShareTable, rev int64)
}

// ShareTableID names the table of account's limit r: readable, and free
// of characters a store's paths reserve. A changed limit is another
// table.
func ShareTableID(account string, r Rate) string {
	return url.PathEscape(account) + "/" + url.PathEscape(r.Name) + "/" + strconv.FormatInt(r.Limit, 10) + "/" + r.Window.String()
}

// entry returns member's entry, and whether it has one.
func (t *ShareTable) entry(member string) (ShareEntry, bool) {
	if t == nil {
		return ShareEntry{}, false
	}
	i, ok := entryIndex(t.Entries, member)
	if !ok {
		return ShareEntry{}, false
	}
	return t.Entries[i], true
}

// entryIndex finds member's place in entries, ordered by member.
func entryIndex(entries []ShareEntry, member string) (int, bool) {
	return slices.BinarySearchFunc(entries, member, func(e ShareEntry, m string) int { return strings.Compare(e.Member, m) })
}

// with returns a copy of t with member's entry set to e.
func (t *ShareTable) with(e ShareEntry) *ShareTable {
	next := &ShareTable{Account: t.Account, Rate: t.Rate, Entries: slices.Clone(t.Entries)}
	i, ok := entryIndex(next.Entries, e.Member)
	if ok {
		next.Entries[i] = e
	} else {
		next.Entries = slices.Insert(next.Entries, i, e)
	}
	return next
}

// shareTableRecord is the stored form of a ShareTable.
type shareTableRecord struct {
	Account string             `json:"account"`
	Name    string             `json:"name"`
	Limit   int64              `json:"limit"`
	Window  int64              `json:"window_ns"`
	Entries []shareEntryRecord `json:"entries"`
}

type shareEntryRecord struct {
	Member string `json:"member"`
	Grant  int64  `json:"grant"`
	Wants  bool   `json:"wants,omitempty"`
}

// MarshalShareTable encodes t.
func MarshalShareTable(t ShareTable) ([]byte, error) {
	r := shareTableRecord{Account: t.Account, Name: t.Rate.Name, Limit: t.Rate.Limit, Window: int64(t.Rate.Window),
		Entries: make([]shareEntryRecord, 0, len(t.Entries))}
	for _, e := range t.Entries {
		r.Entries = append(r.Entries, shareEntryRecord(e))
	}
	return json.Marshal(r)
}

// UnmarshalShareTable decodes a record written by MarshalShareTable,
// refusing one whose grants could not have been written by a gateway
// (negative, unordered or repeated members, more than the limit).
func UnmarshalShareTable(b []byte) (ShareTable, error) {
	var r shareTableRecord
	if err := json.Unmarshal(b, &r); err != nil {
		return ShareTable{}, fmt.Errorf("share table: %w", err)
	}
	if r.Limit <= 0 || r.Window <= 0 {
		return ShareTable{}, errors.New("share table: the limit and its window must be positive")
	}
	t := ShareTable{Account: r.Account, Rate: Rate{Name: r.Name, Limit: r.Limit, Window: time.Duration(r.Window)},
		Entries: make([]ShareEntry, 0, len(r.Entries))}
	var sum int64
	for i, e := range r.Entries {
		if e.Grant < 0 || e.Grant > r.Limit || i > 0 && e.Member <= r.Entries[i-1].Member {
			return ShareTable{}, fmt.Errorf("share table: entry %d is not a gateway's part", i)
		}
		if sum += e.Grant; sum > r.Limit {
			return ShareTable{}, errors.New("share table: the parts exceed the limit")
		}
		t.Entries = append(t.Entries, ShareEntry(e))
	}
	return t, nil
}
