package boltstore

import (
	"bytes"
	"cmp"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

// Key creations are written by one goroutine in group commits: every
// CreateKey waiting when a transaction starts shares it.

// maxCommitBatch bounds how many key creations share one transaction.
const maxCommitBatch = 1024

// Once a group commit has been shared by lingerAfter or more requests,
// the next one waits for more (see commitTarget): until it holds as many
// as are about to come (at most lingerUntil), none has come for
// lingerGap, or lingerMax has passed. After a wait that gained none, the
// next lingerBackoff commits do not wait. With 4 to 128 clients on 2
// cores this minted as fast or faster, at as little or less CPU per key,
// as the earlier waits, and those as shorter waits or none
// (BENCHMARKS.md).
const (
	lingerAfter   = 4
	lingerUntil   = 64
	lingerGap     = time.Millisecond
	lingerMax     = 4 * time.Millisecond
	lingerBackoff = 16
)

type createRequest struct {
	key  keystore.Key
	val  []byte      // key's record
	at   digestEntry // where its digest is indexed
	opts keystore.CreateOptions
	done chan error
}

func newCreateRequest(k keystore.Key, opts keystore.CreateOptions) createRequest {
	return createRequest{key: k, val: keystore.MarshalKey(k), at: digestEntryOf(k), opts: opts, done: make(chan error, 1)}
}

func (s *Store) writeCreates() {
	defer close(s.writerDone)
	linger := time.NewTimer(lingerMax)
	linger.Stop()
	last := 0 // requests in the previous commit
	skip := 0 // commits to make without waiting, after a wait that gained nothing
	// The batch's array is reused: a commit is done with it when it
	// returns.
	var batch []createRequest
	for {
		clear(batch) // the array keeps no committed request alive
		batch = s.drain(batch[:0])
		queued := len(batch) // came while the previous commit was written
		if queued == 0 {
			select {
			case <-s.quit:
				return
			case first := <-s.creates:
				batch = s.drain(append(batch, first))
			}
		}
		switch until := commitTarget(last, queued); {
		case skip > 0:
			skip--
		case len(batch) < until:
			var gained bool
			if batch, gained = s.gather(batch, until, linger); !gained {
				// The clients expected did not come back at once
				// (they pause between mints): waiting only delays.
				skip = lingerBackoff
			}
		}
		last = len(batch)
		s.commitCreates(batch)
	}
}

// commitTarget returns how many requests a group commit should hold
// before it is written, given the previous commit's size and how many
// requests came while that one was being written; with fewer, it waits for
// more (gather). Each commit costs two fsyncs and the pages of every index
// it touches, whatever it holds, so under load fewer, fuller commits cost
// less CPU per key.
//
// The clients the previous commit answered are about to mint again, and
// those queued meanwhile are others: together, about how many clients are
// minting. Waiting for them all merges clients that would otherwise
// alternate between two half-full commits (with 64 clients, about 30 keys
// a commit instead of 64). A lone request, or a few, is not held back;
// nor is the rest of a commit whose clients are all in.
func commitTarget(last, queued int) int {
	if last < lingerAfter {
		return 0
	}
	return min(last+queued, lingerUntil)
}

// drain adds the requests waiting now to batch.
func (s *Store) drain(batch []createRequest) []createRequest {
	for len(batch) < maxCommitBatch {
		select {
		case req := <-s.creates:
			batch = append(batch, req)
		default:
			return batch
		}
	}
	return batch
}

// gather adds requests to batch as they come, until it holds until, none
// has come for lingerGap or lingerMax has passed, and reports whether any
// came. timer is left stopped.
func (s *Store) gather(batch []createRequest, until int, timer *time.Timer) ([]createRequest, bool) {
	drained := len(batch)
	deadline := time.Now().Add(lingerMax)
	timer.Reset(lingerGap)
	defer timer.Stop()
	for len(batch) < until {
		select {
		case req := <-s.creates:
			batch = append(batch, req)
			timer.Reset(min(lingerGap, time.Until(deadline)))
		case <-timer.C:
			return batch, len(batch) > drained
		}
	}
	return batch, true
}

// commitCreates writes a batch in one transaction. A duplicate or a limit
// fails only its own request; a failed commit fails them all.
func (s *Store) commitCreates(batch []createRequest) {
	results := make([]error, len(batch))
	err := s.db.Update(func(tx *bolt.Tx) error {
		// Ids grow with time, so new records append to the keys bucket;
		// full pages suit appends (bbolt's default, half-full, suits
		// random inserts, as into the hash index).
		tx.Bucket(bucketKeys).FillPercent = 0.95
		present := newPresence(tx)
		var indexed []int // the batch's digests, put in order at the end
		for i, req := range batch {
			if results[i] = present.checkCreate(req.key, req.at, req.opts); results[i] != nil {
				continue
			}
			if slices.ContainsFunc(indexed, func(j int) bool { return batch[j].key.Hash == req.key.Hash }) {
				results[i] = keystore.ErrExists // a digest not in the index yet
				continue
			}
			// Requests of one batch see each other's ids and owner
			// entries (limits) in the transaction, and digests above.
			if err := putKeyRecord(tx, req.key, req.val); err != nil {
				return err
			}
			indexed = append(indexed, i)
		}
		// In order, the inserts walk each index once from left to right:
		// stamped digests append at its end, others land where they
		// fall.
		type put struct {
			at digestEntry
			id string
		}
		puts := make([]put, len(indexed))
		for j, i := range indexed {
			puts[j] = put{batch[i].at, batch[i].key.ID}
		}
		slices.SortFunc(puts, func(a, b put) int {
			return cmp.Or(bytes.Compare(a.at.bucket, b.at.bucket), bytes.Compare(a.at.key, b.at.key))
		})
		tx.Bucket(bucketStamped).FillPercent = 0.95 // appends
		for _, p := range puts {
			if err := tx.Bucket(p.at.bucket).Put(p.at.key, []byte(p.id)); err != nil {
				return err
			}
		}
		return nil
	})
	for i, req := range batch {
		if err != nil {
			req.done <- err
		} else {
			req.done <- results[i]
		}
	}
}
