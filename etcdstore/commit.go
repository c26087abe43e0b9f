package etcdstore

import (
	"context"
	"errors"
	"slices"
	"sync"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

// Key creations are written by one goroutine in group commits, as in
// boltstore: the CreateKey calls waiting when a transaction is built share
// it, and each is answered once the cluster has committed it. Each key is
// a transaction nested in the group's, with its own conditions: etcd
// evaluates every condition of a transaction against the state before it,
// so one key's taken digest fails only that key, and its Else branch says
// why, all in one round trip.

// keyTxnOps is the most operations on one level of a key's nested
// transaction (three puts, four with a last use; four conditions with a
// user and a limit).
const keyTxnOps = 4

// maxGroup bounds the keys of one group: etcd counts the operations of a
// nested transaction against what its parent leaves of --max-txn-ops.
const maxGroup = maxTxnOps - keyTxnOps

// maxGroupBytes keeps a group's request well under etcd's default
// --max-request-bytes (1.5 MiB).
const maxGroupBytes = 1 << 20

// errStoreClosed answers creations still waiting when the store closes.
var errStoreClosed = errors.New("etcd: store closed")

// A mintRequest is one CreateKey waiting for its group.
type mintRequest struct {
	key  keystore.Key
	opts keystore.CreateOptions
	ctx  context.Context // the caller's, bounded by the request timeout
	done chan error      // buffered: the writer never waits on a caller
	// uncertain is set once a try failed in a way that may have been
	// applied; lastErr is that failure, the answer if ctx ends.
	uncertain bool
	lastErr   error
	// alone sends the request in a group of its own, after a group failed
	// for good: a fault of one request must not fail the others.
	alone bool
}

// minter is the group-commit writer, shared by copies of a Store (a
// snapshot's) and started by the first CreateKey.
type minter struct {
	start    sync.Once
	requests chan *mintRequest
	ctx      context.Context // ended by Close
	stop     context.CancelFunc
	stopped  chan struct{}
}

func newMinter() *minter {
	ctx, stop := context.WithCancel(context.Background())
	return &minter{requests: make(chan *mintRequest), ctx: ctx, stop: stop, stopped: make(chan struct{})}
}

// close stops the writer, if it ran, once it has answered every request.
func (m *minter) close() {
	m.stop()
	started := true
	m.start.Do(func() { started = false })
	if started {
		<-m.stopped
	}
}

// CreateKey stores k in a group commit that fails for k alone if its
// digest or id is taken, or, with a limit, if the owner holds that many
// keys, counted for the group and guarded against keys added since.
func (s *Store) CreateKey(ctx context.Context, k keystore.Key, opts keystore.CreateOptions) error {
	if opts.StoredUser && k.Owner.Source != keystore.SourcePassword {
		return keystore.ErrUnknownOwner
	}
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	s.minter.start.Do(func() { go s.writeMints() })
	req := &mintRequest{key: k, opts: opts, ctx: ctx, done: make(chan error, 1)}
	select {
	case s.minter.requests <- req:
	case <-s.minter.ctx.Done():
		return errStoreClosed
	case <-ctx.Done():
		return fault(ctx.Err())
	}
	// Once handed over, wait for the outcome even if ctx ends: the writer
	// knows whether the key was committed, and answers at most a try's
	// timeout after ctx's deadline.
	return <-req.done
}

// writeMints commits the waiting creations, group after group, until the
// store closes.
func (s *Store) writeMints() {
	m := s.minter
	defer close(m.stopped)
	var pending []*mintRequest // waiting, oldest first
	for failures := 0; ; {
		if len(pending) == 0 {
			select {
			case <-m.ctx.Done():
				return
			case req := <-m.requests:
				pending = append(pending, req)
			}
		}
		pending = drainMints(m.requests, pending)
		if m.ctx.Err() != nil {
			for _, req := range pending {
				req.done <- errStoreClosed
			}
			return
		}
		pending = answerExpired(pending)
		group, rest := takeGroup(s, pending)
		retry, transientErr := s.commitGroup(group)
		pending = append(retry, rest...)
		if transientErr {
			failures++
			backoff(m.ctx, failures)
		} else {
			failures = 0
		}
	}
}

// drainMints adds the requests waiting now to pending, up to a few
// groups' worth.
func drainMints(requests chan *mintRequest, pending []*mintRequest) []*mintRequest {
	for len(pending) < 4*maxGroup {
		select {
		case req := <-requests:
			pending = append(pending, req)
		default:
			return pending
		}
	}
	return pending
}

// answerExpired answers the requests whose caller stopped waiting, with
// what the caller would have been told without groups: the failure of a
// try that may have been applied, or that time ran out.
func answerExpired(pending []*mintRequest) []*mintRequest {
	live := pending[:0]
	for _, req := range pending {
		switch {
		case req.ctx.Err() == nil:
			live = append(live, req)
		case req.lastErr != nil:
			req.done <- fault(req.lastErr)
		default:
			req.done <- fault(req.ctx.Err())
		}
	}
	clear(pending[len(live):])
	return live
}

// takeGroup splits pending into the next group and the rest: at most
// maxGroup keys and maxGroupBytes, a request marked alone by itself, and
// no two with one digest or id (etcd refuses a transaction that puts a
// key twice; the later waits for the next group, which finds the earlier
// stored).
func takeGroup(s *Store, pending []*mintRequest) (group, rest []*mintRequest) {
	digests := make(map[keystore.Hash]bool, len(pending))
	ids := make(map[string]bool, len(pending))
	size := 0
	for _, req := range pending {
		n := s.mintSize(req.key)
		switch {
		case len(group) > 0 && (req.alone || group[0].alone),
			len(group) == maxGroup,
			len(group) > 0 && size+n > maxGroupBytes,
			digests[req.key.Hash] || ids[req.key.ID]:
			rest = append(rest, req)
			continue
		}
		group = append(group, req)
		digests[req.key.Hash], ids[req.key.ID] = true, true
		size += n
	}
	return group, rest
}

// mintSize is about what k adds to a group's request.
func (s *Store) mintSize(k keystore.Key) int {
	const perOp = 16 // framing of an operation
	return 4*len(s.keyPath(hexOf(k.Hash))) + len(encodeRecord(k)) + 2*len(s.ownerPath(k)) + 8*perOp
}

// commitGroup commits group in one transaction and answers its requests,
// but for those to try again in the next group: all of them after a
// transient failure (reported), and those whose owner gained a key since
// it was counted.
func (s *Store) commitGroup(group []*mintRequest) (retry []*mintRequest, transientErr bool) {
	if len(group) == 0 {
		return nil, false
	}
	ctx, cancel := context.WithTimeout(s.minter.ctx, s.timeout)
	defer cancel()
	guards, group, retry := s.guardLimits(ctx, group)
	if len(group) == 0 {
		return retry, false
	}
	ops := make([]clientv3.Op, len(group))
	for i, req := range group {
		ops[i] = s.mintOp(req, guards)
	}
	resp, err := s.commit(ctx, func(t clientv3.Txn) clientv3.Txn { return t.Then(ops...) })
	switch {
	case err != nil && transient(err):
		for _, req := range group {
			req.uncertain, req.lastErr = true, err
		}
		return append(group, retry...), true
	case err != nil && len(group) > 1:
		for _, req := range group {
			req.alone = true
		}
		return append(group, retry...), false
	case err != nil:
		group[0].done <- fault(err)
		return retry, false
	}
	for i, req := range group {
		answer, again := outcome(req, resp.Responses[i].GetResponseTxn())
		if again {
			retry = append(retry, req)
		} else {
			req.done <- answer
		}
	}
	return retry, false
}

// mintOp is the transaction nested in a group's that stores one key if
// its digest and id are free, its user (if asked) exists and its owner's
// index did not change since it was counted; else it reads why not.
func (s *Store) mintOp(req *mintRequest, guards map[keystore.Owner]clientv3.Cmp) clientv3.Op {
	k := req.key
	cmps := s.absent(k)
	why := []clientv3.Op{
		clientv3.OpGet(s.keyPath(hexOf(k.Hash))),
		clientv3.OpGet(s.idPath(k.ID), clientv3.WithCountOnly()),
	}
	if req.opts.StoredUser {
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(s.userPath(k.Owner.Name)), ">", 0))
		why = append(why, clientv3.OpGet(s.userPath(k.Owner.Name), clientv3.WithCountOnly()))
	}
	if guard, ok := guards[k.Owner]; ok && req.opts.MaxPerOwner > 0 {
		cmps = append(cmps, guard)
	}
	return clientv3.OpTxn(cmps, s.putKeyOps(k), why)
}

// outcome is a request's answer from its nested transaction's response
// (mintOp), or again if only its owner's guard failed.
func outcome(req *mintRequest, r *pb.TxnResponse) (answer error, again bool) {
	if r.Succeeded {
		return nil, false
	}
	if rec := r.Responses[0].GetResponseRange().Kvs; len(rec) > 0 {
		// After a try that may have been applied, the key found may be
		// this one.
		if stored, err := decodeRecord(rec[0].Value); req.uncertain && err == nil && stored.ID == req.key.ID {
			return nil, false
		}
		return keystore.ErrExists, false
	}
	switch {
	case r.Responses[1].GetResponseRange().Count > 0:
		return keystore.ErrExists, false
	case req.opts.StoredUser && r.Responses[2].GetResponseRange().Count == 0:
		return keystore.ErrUnknownOwner, false
	case req.opts.MaxPerOwner > 0:
		return nil, true // another key of the owner arrived meanwhile
	}
	return keystore.ErrExists, false
}

// guardLimits counts, in one read, the keys of the owners whose requests
// have a limit, and returns for each a comparison that holds only while
// no entry of the owner's index changed since, with the requests of group
// that may go in this one. It answers ErrLimit to the requests whose owner
// is at the limit already, and leaves for the next group those that fit
// only if others of the group before them fail.
func (s *Store) guardLimits(ctx context.Context, group []*mintRequest) (guards map[keystore.Owner]clientv3.Cmp, admitted, later []*mintRequest) {
	var owners []keystore.Owner
	for _, req := range group {
		if req.opts.MaxPerOwner > 0 && !slices.Contains(owners, req.key.Owner) {
			owners = append(owners, req.key.Owner)
		}
	}
	if len(owners) == 0 {
		return nil, group, nil
	}
	counts, guards, err := s.countKeysOf(ctx, owners)
	taken := make(map[keystore.Owner]int, len(owners)) // by requests admitted
	for _, req := range group {
		limit, o := req.opts.MaxPerOwner, req.key.Owner
		switch {
		case limit <= 0:
			admitted = append(admitted, req)
		case err != nil:
			req.done <- fault(err)
		case counts[o]+taken[o] < limit:
			taken[o]++
			admitted = append(admitted, req)
		case taken[o] > 0:
			later = append(later, req)
		case req.uncertain && s.isOurs(ctx, req.key):
			req.done <- nil
		default:
			req.done <- keystore.ErrLimit
		}
	}
	return guards, admitted, later
}

// countKeysOf counts the keys of each owner, maxTxnOps owners a read, and
// returns the guards of those counts (see underLimit).
func (s *Store) countKeysOf(ctx context.Context, owners []keystore.Owner) (map[keystore.Owner]int, map[keystore.Owner]clientv3.Cmp, error) {
	counts := make(map[keystore.Owner]int, len(owners))
	guards := make(map[keystore.Owner]clientv3.Cmp, len(owners))
	for chunk := range slices.Chunk(owners, maxTxnOps) {
		ops := make([]clientv3.Op, len(chunk))
		for i, o := range chunk {
			ops[i] = clientv3.OpGet(s.ownerPrefix(o), clientv3.WithPrefix(), clientv3.WithCountOnly())
		}
		resp, err := s.readTxn(ctx, ops...)
		if err != nil {
			return nil, nil, err
		}
		for i, o := range chunk {
			counts[o] = int(resp.Responses[i].GetResponseRange().Count)
			guards[o] = s.ownerUnchangedSince(o, resp.Header.Revision)
		}
	}
	return counts, guards, nil
}
