package etcdstore

import (
	"context"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

// syncPoint is a moment at which the cluster was at revision rev: once the
// watch has delivered every change up to rev, it has every change made
// before at.
type syncPoint struct {
	at  time.Time
	rev int64
}

// WatchKeys reports every change under keys/ to w until ctx ends.
//
// A watch that breaks resumes from the revision after the last change it
// delivered, so nothing is missed; if that revision was compacted away, or
// on the first start, w.ChangesLost is called and the watch starts afresh.
// Every SyncInterval it asks the cluster for its current revision with a
// linearizable read (which a member cut off from the leader cannot answer)
// and for a progress report on the watch; when the watch has delivered up
// to that revision, w.CaughtUp is told the time the read was sent.
func (s *Store) WatchKeys(ctx context.Context, w keystore.KeyWatcher) {
	// A member that loses its leader ends the watch rather than go quiet.
	ctx = clientv3.WithRequireLeader(ctx)
	points := make(chan syncPoint, 1)
	var syncer sync.WaitGroup
	syncer.Go(func() { s.requestSyncPoints(ctx, points) })
	defer syncer.Wait()
	next := int64(0) // revision to resume from; 0: start afresh
	for ctx.Err() == nil {
		if next == 0 {
			rev, err := s.currentRevision(ctx)
			if err != nil {
				sleep(ctx, s.syncEvery)
				continue
			}
			// Forget after learning the revision, so that whatever is
			// read from now on is at least as new as where the watch
			// starts.
			w.ChangesLost()
			next = rev + 1
		}
		from := next
		next = s.follow(ctx, w, next, points)
		if ctx.Err() != nil {
			return
		}
		if next == 0 {
			s.logger.Warn("key changes since the watch broke were compacted away; cache dropped, watching afresh",
				zap.Int64("resume_revision", from))
		} else {
			s.logger.Warn("key watch broken; resuming from the last change seen", zap.Int64("revision", next))
		}
		sleep(ctx, s.syncEvery/5) // before resuming a broken watch
	}
}

// follow runs one watch from revision from and returns the revision to
// resume from, or 0 if it must start afresh.
func (s *Store) follow(ctx context.Context, w keystore.KeyWatcher, from int64, points <-chan syncPoint) int64 {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	watch := s.cli.Watch(ctx, s.prefix+"keys/", clientv3.WithPrefix(), clientv3.WithRev(from))
	delivered := from - 1
	var pending []syncPoint
	for {
		select {
		case <-ctx.Done():
			return from
		case p := <-points:
			pending = append(pending, p)
		case resp, ok := <-watch:
			if !ok {
				return from
			}
			if resp.CompactRevision != 0 {
				return 0 // changes we never saw were compacted away
			}
			if err := resp.Err(); err != nil {
				s.logger.Debug("key watch ended", zap.Error(err))
				return from
			}
			for _, ev := range resp.Events {
				if h, ok := s.hashFromPath(ev.Kv.Key); ok {
					if ev.IsCreate() {
						w.KeyCreated(h)
					} else {
						w.KeyChanged(h)
					}
				}
				from = ev.Kv.ModRevision + 1
				delivered = max(delivered, ev.Kv.ModRevision)
			}
			if resp.IsProgressNotify() {
				delivered = max(delivered, resp.Header.Revision)
			}
		}
		kept := pending[:0]
		for _, p := range pending {
			if p.rev <= delivered {
				w.CaughtUp(p.at)
			} else if time.Since(p.at) < 10*s.syncEvery {
				kept = append(kept, p)
			}
		}
		pending = kept
	}
}

// requestSyncPoints sends a sync point every SyncInterval and asks for a
// progress report on the watch stream, until ctx ends.
func (s *Store) requestSyncPoints(ctx context.Context, points chan<- syncPoint) {
	t := time.NewTicker(s.syncEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		at := time.Now()
		rctx, cancel := context.WithTimeout(ctx, s.syncEvery)
		rev, err := s.currentRevision(rctx)
		if err == nil {
			select {
			case points <- syncPoint{at: at, rev: rev}:
			case <-rctx.Done():
			}
			// The same metadata as the watch's context, to reach its stream.
			_ = s.cli.RequestProgress(rctx)
		}
		cancel()
	}
}

// currentRevision returns the cluster's revision by a linearizable read.
func (s *Store) currentRevision(ctx context.Context) (int64, error) {
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	resp, err := s.cli.Get(ctx, s.prefix+"keys/", clientv3.WithCountOnly(), clientv3.WithLimit(1))
	if err != nil {
		return 0, err
	}
	return resp.Header.Revision, nil
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
