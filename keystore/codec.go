package keystore

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// The stored forms of records, which every backend of this module
// shares: keys in a compact binary form (below), users, credit accounts
// and notices as JSON. A Store may keep records in any form it likes;
// one that uses these reads what the others wrote, and gets the key
// record's compatibility with older releases for free. Every Unmarshal
// function returns values that share no memory with its input, so a
// store may pass it a buffer that its transaction reuses.

// MarshalKey encodes k in the binary key record format. The id is not
// included: it names the record.
func MarshalKey(k Key) []byte { return encodeKey(k) }

// UnmarshalKey decodes a record written by MarshalKey for the key id.
func UnmarshalKey(id string, b []byte) (Key, error) { return decodeKey(id, b) }

// UnixMicros returns t in Unix microseconds, the resolution stores keep,
// or 0 for the zero time.
func UnixMicros(t time.Time) int64 { return micros(t) }

// FromUnixMicros is the inverse of UnixMicros.
func FromUnixMicros(us int64) time.Time { return fromMicros(us) }

func micros(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMicro()
}

func fromMicros(us int64) time.Time {
	if us == 0 {
		return time.Time{}
	}
	return time.UnixMicro(us)
}

// userRecord is the stored form of a User, whose name names the record.
type userRecord struct {
	PasswordHash string   `json:"password_hash"`
	Created      int64    `json:"created"`
	Scopes       []string `json:"scopes,omitempty"`
	Plan         string   `json:"plan,omitempty"`
}

// MarshalUser encodes u, without its name.
func MarshalUser(u User) ([]byte, error) {
	return json.Marshal(userRecord{PasswordHash: u.PasswordHash, Created: micros(u.Created), Scopes: u.Scopes, Plan: u.Plan})
}

// UnmarshalUser decodes a record written by MarshalUser for the user name.
func UnmarshalUser(name string, b []byte) (User, error) {
	var r userRecord
	if err := json.Unmarshal(b, &r); err != nil {
		return User{}, fmt.Errorf("corrupt user record %q: %w", name, err)
	}
	return User{Name: name, PasswordHash: r.PasswordHash, Created: fromMicros(r.Created), Scopes: r.Scopes, Plan: r.Plan}, nil
}

// MarshalCreditAccount encodes a, without its id.
func MarshalCreditAccount(a CreditAccount) ([]byte, error) { return json.Marshal(a) }

// UnmarshalCreditAccount decodes a record of MarshalCreditAccount for the
// account id.
func UnmarshalCreditAccount(id string, b []byte) (CreditAccount, error) {
	var a CreditAccount
	if err := json.Unmarshal(b, &a); err != nil {
		return CreditAccount{}, errors.New("corrupt credit account " + id)
	}
	a.ID = id
	return a, nil
}

// MarshalNotice encodes n, without its endpoint and id.
func MarshalNotice(n Notice) ([]byte, error) { return json.Marshal(n) }

// UnmarshalNotice decodes a record of MarshalNotice for the endpoint's
// notice id.
func UnmarshalNotice(endpoint, id string, b []byte) (Notice, error) {
	var n Notice
	if err := json.Unmarshal(b, &n); err != nil {
		return Notice{}, errors.Join(errCorruptRecord, err)
	}
	n.Endpoint, n.ID = endpoint, id
	return n, nil
}

// Key records are stored in a compact binary form (a key costs well under
// 512 bytes on disk with its indexes, even at millions of keys):
//
//	version    byte (1)
//	hash       32 bytes
//	created    uvarint, Unix microseconds
//	last used  uvarint, Unix microseconds, 0 if never
//	expires    uvarint, Unix microseconds, 0 if never
//	flags      byte (bit 0: disabled, bit 1: rotated, bit 2: leaked,
//	           bit 3: stamped; releases before it ignore it)
//	owner, title, preview      uvarint length + bytes each (owner: the
//	           name; in version 1 always a password user's)
//	scopes     uvarint count, then uvarint length + bytes each
//	plan, account, source      uvarint length + bytes each (version 2
//	           only; source "" is the password users)
//
// The id is the record's bucket key and is not repeated. Keys of password
// users without a plan or account are written as version 1, which older
// releases read too. The owner's source is its own field, never inferred
// from the name: a version 1 record holds a password user's name as it
// was stored, whatever characters a release that did not check names let
// into it.
const (
	recordVersion   = 1
	recordVersionV2 = 2
)

// Bits of a record's flags byte.
const (
	flagDisabled = 1 << iota
	flagRotated
	flagLeaked
	flagStamped
)

func encodeKey(k Key) []byte {
	source := k.Owner.Source
	if source == SourcePassword {
		source = ""
	}
	n := 1 + len(k.Hash) + 3*binary.MaxVarintLen64 + 1 + 4*binary.MaxVarintLen32 + len(k.Owner.Name) + len(k.Title) + len(k.Preview)
	for _, s := range k.Scopes {
		n += binary.MaxVarintLen32 + len(s)
	}
	version := byte(recordVersion)
	if k.Plan != "" || k.Account != "" || source != "" {
		version = recordVersionV2
		n += 3*binary.MaxVarintLen32 + len(k.Plan) + len(k.Account) + len(source)
	}
	b := make([]byte, 0, n)
	b = append(b, version)
	b = append(b, k.Hash[:]...)
	b = binary.AppendUvarint(b, uint64(micros(k.Created)))
	b = binary.AppendUvarint(b, uint64(micros(k.LastUsed)))
	b = binary.AppendUvarint(b, uint64(micros(k.Expires)))
	var flags byte
	if k.Disabled {
		flags |= flagDisabled
	}
	if k.Rotated {
		flags |= flagRotated
	}
	if k.Leaked {
		flags |= flagLeaked
	}
	if k.Stamped {
		flags |= flagStamped
	}
	b = append(b, flags)
	for _, s := range []string{k.Owner.Name, k.Title, k.Preview} {
		b = appendString(b, s)
	}
	b = binary.AppendUvarint(b, uint64(len(k.Scopes)))
	for _, s := range k.Scopes {
		b = appendString(b, s)
	}
	if version == recordVersionV2 {
		b = appendString(b, k.Plan)
		b = appendString(b, k.Account)
		b = appendString(b, source)
	}
	return b
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// decodeKey reads a record; the result shares no memory with b, which a
// store may reuse once its transaction is over.
func decodeKey(id string, b []byte) (Key, error) {
	d := recordDecoder{b: b}
	version := d.byte()
	if version != recordVersion && version != recordVersionV2 {
		return Key{}, fmt.Errorf("%w %q: unknown version", errCorruptRecord, id)
	}
	k := Key{ID: id}
	copy(k.Hash[:], d.bytes(len(k.Hash)))
	k.Created = fromMicros(int64(d.uvarint()))
	k.LastUsed = fromMicros(int64(d.uvarint()))
	k.Expires = fromMicros(int64(d.uvarint()))
	flags := d.byte()
	k.Disabled, k.Rotated, k.Leaked = flags&flagDisabled != 0, flags&flagRotated != 0, flags&flagLeaked != 0
	k.Stamped = flags&flagStamped != 0
	k.Owner, k.Title, k.Preview = PasswordUser(d.string()), d.string(), d.string()
	if n := d.uvarint(); n > 0 && n <= uint64(len(b)) {
		k.Scopes = make([]string, n)
		for i := range k.Scopes {
			k.Scopes[i] = d.string()
		}
	}
	if version == recordVersionV2 {
		var source string
		k.Plan, k.Account, source = d.string(), d.string(), d.string()
		switch {
		case k.Plan == "" && k.Account == "" && source == "":
			d.err = true // version 1 says that
		case source != "":
			k.Owner.Source = source
		}
	}
	if d.err || len(d.b) != 0 {
		return Key{}, fmt.Errorf("%w %q", errCorruptRecord, id)
	}
	return k, nil
}

// recordDecoder reads fields in order, remembering the first overrun.
type recordDecoder struct {
	b   []byte
	err bool
}

func (d *recordDecoder) bytes(n int) []byte {
	if n < 0 || n > len(d.b) {
		d.err, d.b = true, nil
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

func (d *recordDecoder) byte() byte {
	if v := d.bytes(1); v != nil {
		return v[0]
	}
	return 0
}

func (d *recordDecoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err, d.b = true, nil
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *recordDecoder) string() string {
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.err, d.b = true, nil
		return ""
	}
	return string(d.bytes(int(n)))
}
