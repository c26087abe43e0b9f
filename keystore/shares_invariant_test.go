package keystore

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Attacks on the safety claim of rate shares (shares.go): while the
// membership is steady, the grants the gateways enforce add up to at most
// the limit, and no interval of the window's length admits more than the
// limit across the gateways. Several Meters follow one in-memory
// ShareTables (memShares) whose followers hear every change in order but
// each with its own random lag; many goroutines take from the Meters in
// changing patterns while a checker freezes every gateway's window at
// once (all their accounts' mutexes held together) and checks the sums.

// memShares is an in-memory ShareTables: tables by id at the store-wide
// revision that wrote them, swapped by compare-and-swap as etcdstore's
// SwapShareTable does, and followed by goroutines that hand every change
// to their follower in revision order, each after a random delay of up
// to lag.
type memShares struct {
	lag time.Duration
	bad func(string) // told of a table no gateway may write

	mu        sync.Mutex
	rev       int64
	tables    map[string]VersionedShareTable
	followers map[*memShareFollower]struct{}
	history   []shareChange
}

// shareChange is one write to a memShares.
type shareChange struct {
	at    time.Time
	id    string
	table *ShareTable // nil: deleted
	rev   int64
}

type memShareFollower struct {
	mu     sync.Mutex
	queue  []shareChange
	signal chan struct{}
}

func newMemShares(lag time.Duration) *memShares {
	return &memShares{lag: lag, bad: func(string) {}, tables: make(map[string]VersionedShareTable),
		followers: make(map[*memShareFollower]struct{})}
}

func cloneShareTable(t ShareTable) ShareTable {
	t.Entries = slices.Clone(t.Entries)
	return t
}

// SwapShareTable implements ShareTables like etcdstore: rev 0 requires
// the table to be absent, any other rev that it was last written at; a
// nil table deletes it (deleting an absent table succeeds and writes
// nothing, as an etcd delete of no key does not advance the revision).
func (s *memShares) SwapShareTable(ctx context.Context, id string, rev int64, t *ShareTable) (int64, bool, error) {
	if err := ctx.Err(); err != nil {
		return 0, false, err
	}
	if t != nil {
		b, err := MarshalShareTable(*t)
		if err == nil {
			_, err = UnmarshalShareTable(b)
		}
		var sum int64
		for _, e := range t.Entries {
			sum += e.Grant
		}
		if err != nil || sum > t.Rate.Limit {
			s.bad(fmt.Sprintf("a gateway wrote table %s at base rev %d that no gateway may write (grants add up to %d of %d): %v; %s",
				id, rev, sum, t.Rate.Limit, err, fmtEntries(t.Entries)))
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, ok := s.tables[id]
	if rev == 0 && ok || rev != 0 && (!ok || cur.Rev != rev) {
		return s.rev, false, nil
	}
	var c shareChange
	if t == nil {
		if !ok {
			return s.rev, true, nil
		}
		s.rev++
		delete(s.tables, id)
		c = shareChange{at: time.Now(), id: id, rev: s.rev}
	} else {
		s.rev++
		kept := cloneShareTable(*t)
		s.tables[id] = VersionedShareTable{Table: kept, Rev: s.rev}
		c = shareChange{at: time.Now(), id: id, table: &kept, rev: s.rev}
	}
	s.history = append(s.history, c)
	for f := range s.followers {
		f.mu.Lock()
		f.queue = append(f.queue, c)
		f.mu.Unlock()
		select {
		case f.signal <- struct{}{}:
		default:
		}
	}
	return s.rev, true, nil
}

// FollowShareTables implements ShareTables: SharesLoaded with every
// table and the current revision, then every later change in order,
// from this goroutine, until ctx ends.
func (s *memShares) FollowShareTables(ctx context.Context, f ShareFollower) {
	fl := &memShareFollower{signal: make(chan struct{}, 1)}
	s.mu.Lock()
	tables := make(map[string]VersionedShareTable, len(s.tables))
	for id, v := range s.tables {
		tables[id] = VersionedShareTable{Table: cloneShareTable(v.Table), Rev: v.Rev}
	}
	rev := s.rev
	s.followers[fl] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.followers, fl)
		s.mu.Unlock()
	}()
	f.SharesLoaded(tables, rev)
	for {
		fl.mu.Lock()
		q := fl.queue
		fl.queue = nil
		fl.mu.Unlock()
		for _, c := range q {
			if s.lag > 0 {
				select {
				case <-ctx.Done():
					return
				case <-time.After(rand.N(s.lag)):
				}
			}
			var t *ShareTable
			if c.table != nil {
				ct := cloneShareTable(*c.table)
				t = &ct
			}
			f.ShareChanged(c.id, t, c.rev)
		}
		if len(q) == 0 {
			select {
			case <-ctx.Done():
				return
			case <-fl.signal:
			}
		}
	}
}

// table returns the stored table of id, if any.
func (s *memShares) table(id string) (VersionedShareTable, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.tables[id]
	if ok {
		v.Table = cloneShareTable(v.Table)
	}
	return v, ok
}

// lastChanges describes the last n writes.
func (s *memShares) lastChanges(n int) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := s.history[max(len(s.history)-n, 0):]
	var b strings.Builder
	for _, c := range h {
		if c.table == nil {
			fmt.Fprintf(&b, "\n    %s rev %d: deleted", c.at.Format("15:04:05.000000"), c.rev)
		} else {
			fmt.Fprintf(&b, "\n    %s rev %d: %s", c.at.Format("15:04:05.000000"), c.rev, fmtEntries(c.table.Entries))
		}
	}
	return b.String()
}

func fmtEntries(es []ShareEntry) string {
	var parts []string
	for _, e := range es {
		w := ""
		if e.Wants {
			w = "*"
		}
		parts = append(parts, fmt.Sprintf("%s:%d%s", e.Member, e.Grant, w))
	}
	return "[" + strings.Join(parts, " ") + "]"
}

var _ ShareTables = (*memShares)(nil)

// shareGateway is one gateway of a shareCluster.
type shareGateway struct {
	id     string
	m      *Meter
	l      *Limits
	closed atomic.Bool // left: enforces nothing, but what it admitted counts
}

// admission is a request a gateway admitted: its Take began at t0 and
// returned at t1 (Unix ns), so the window counted it in a slot between
// those of t0 and t1.
type admission struct {
	t0, t1 int64
	gw     int
}

// shareCluster is n gateways sharing one key store and one memShares,
// all holding the same key to a plan of one rate.
type shareCluster struct {
	t      *testing.T
	rate   Rate
	id     string // the share table's
	shares *memShares
	gws    []*shareGateway

	mu         sync.Mutex
	admitted   []admission
	violations []string
	nViolation int
	samples    int
	maxLimits  int64 // the largest sum of enforced limits sampled
	maxCounts  int64 // the largest sum of counts sampled
	// uncounted: check the enforced limits and the tables only, not
	// what the windows count (a membership change let them count more).
	uncounted bool
}

const shareTestAccount = "k"

// newShareCluster starts n gateways g0..g(n-1); now, if set, gives a
// gateway's MeterOptions.Now.
func newShareCluster(t *testing.T, n int, rate Rate, lag time.Duration, now func(i int) func() time.Time) *shareCluster {
	t.Helper()
	c := &shareCluster{t: t, rate: rate, id: ShareTableID(shareTestAccount, rate), shares: newMemShares(lag)}
	c.shares.bad = func(s string) { c.violation(s) }
	ks := openTestStore(t)
	var ids []string
	for i := range n {
		ids = append(ids, fmt.Sprintf("g%d", i))
	}
	ctx := context.Background()
	for i, id := range ids {
		var opts MeterOptions
		if now != nil {
			opts.Now = now(i)
		}
		m := newTestMeter(t, ks, opts)
		m.FollowLoad(ctx, c.shares)
		c.gws = append(c.gws, &shareGateway{id: id, m: m})
	}
	for _, g := range c.gws {
		g.m.SetMembers(Members{Self: g.id, IDs: ids})
	}
	plan := &Plan{Name: "p", Rates: []Rate{rate}}
	for _, g := range c.gws {
		g.l = g.m.limitsFor(meterKey(shareTestAccount), plan)
	}
	return c
}

func (c *shareCluster) violation(s string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.nViolation++
	if len(c.violations) < 3 {
		c.violations = append(c.violations, s)
	}
}

// take takes one request from gateway i, and records it if admitted.
func (c *shareCluster) take(i int, rec *[]admission) bool {
	t0 := time.Now().UnixNano()
	v, err := c.gws[i].l.Take(context.Background(), 0)
	t1 := time.Now().UnixNano()
	if err != nil {
		c.t.Error(err)
		return false
	}
	if v.Allowed {
		*rec = append(*rec, admission{t0, t1, i})
	}
	return v.Allowed
}

func (c *shareCluster) record(rec []admission) {
	c.mu.Lock()
	c.admitted = append(c.admitted, rec...)
	c.mu.Unlock()
}

// gwSample is one gateway's state at a snapshot.
type gwSample struct {
	id     string
	closed bool
	tabled bool
	limit  int64 // what its window enforces now
	count  int64 // what its window counts now
	// what its rate shares know: a table at rev, granted enforced.
	known          bool
	table          *ShareTable
	rev, granted   int64
	wants, holds   bool
	absentFor      map[string]time.Duration
	pendingChanges int
}

// snapshot freezes every gateway's window at once, by holding all their
// accounts' mutexes together (no code path holds two accounts of
// different meters, so this cannot deadlock), and reads them at one now.
func (c *shareCluster) snapshot() (time.Time, []gwSample) {
	accts := make([]*account, len(c.gws))
	for i, g := range c.gws {
		accts[i] = g.l.key.Load()
		accts[i].mu.Lock()
	}
	defer func() {
		for _, a := range accts {
			a.mu.Unlock()
		}
	}()
	now := time.Now()
	out := make([]gwSample, len(c.gws))
	for i, g := range c.gws {
		a := accts[i]
		j := slices.Index(a.rates, c.rate)
		w := a.windows[j] // a copy: advancing it changes nothing
		s := g.m.shares.Load()
		limit := w.limit
		if !a.tabled[j] && a.share != s { // the next Take sets the equal part
			limit = partOf(c.rate.Limit, s)
		}
		w.advance(now.UnixNano())
		smp := gwSample{id: g.id, closed: g.closed.Load(), tabled: a.tabled[j], limit: limit, count: w.sum}
		if rs := g.m.follow.Load(); rs != nil {
			rs.mu.Lock() // after an account's mu, as Meter.account takes them
			if st := rs.states[c.id]; st != nil {
				smp.known, smp.table, smp.rev, smp.granted = true, st.table, st.rev, st.granted
				smp.wants, smp.holds = st.busy(now)
			}
			smp.absentFor = make(map[string]time.Duration)
			for id, since := range rs.absent {
				smp.absentFor[id] = now.Sub(since)
			}
			smp.pendingChanges = len(rs.changes)
			rs.mu.Unlock()
		}
		out[i] = smp
	}
	return now, out
}

// describe shows a snapshot with the store's table and its last writes.
func (c *shareCluster) describe(now time.Time, smp []gwSample) string {
	var b strings.Builder
	fmt.Fprintf(&b, "at %s:", now.Format("15:04:05.000000"))
	for _, s := range smp {
		fmt.Fprintf(&b, "\n  %s: window limit %d, counts %d, tabled %v", s.id, s.limit, s.count, s.tabled)
		if s.closed {
			b.WriteString(" (closed: left)")
		}
		switch {
		case !s.known:
			b.WriteString("; shares: no state")
		case s.table == nil:
			fmt.Fprintf(&b, "; shares: no table (rev %d), granted %d, wants %v holds %v", s.rev, s.granted, s.wants, s.holds)
		default:
			fmt.Fprintf(&b, "; shares: table rev %d %s, granted %d, wants %v holds %v", s.rev, fmtEntries(s.table.Entries), s.granted, s.wants, s.holds)
		}
		if s.pendingChanges > 0 {
			fmt.Fprintf(&b, ", %d change(s) heard not applied", s.pendingChanges)
		}
		if len(s.absentFor) > 0 {
			fmt.Fprintf(&b, ", absent %v", s.absentFor)
		}
	}
	if v, ok := c.shares.table(c.id); ok {
		fmt.Fprintf(&b, "\n  store: rev %d %s", v.Rev, fmtEntries(v.Table.Entries))
	} else {
		b.WriteString("\n  store: no table")
	}
	fmt.Fprintf(&b, "\n  last writes:%s", c.shares.lastChanges(12))
	return b.String()
}

// check takes a snapshot and checks that the live gateways' enforced
// limits, plus what the gateways that left still count, add up to at
// most the limit, and that all the windows together count at most the
// limit.
func (c *shareCluster) check() {
	now, smp := c.snapshot()
	var limits, counts int64
	for _, s := range smp {
		if s.closed {
			limits += s.count
		} else {
			limits += s.limit
		}
		counts += s.count
	}
	c.mu.Lock()
	c.samples++
	c.maxLimits, c.maxCounts = max(c.maxLimits, limits), max(c.maxCounts, counts)
	c.mu.Unlock()
	if limits > c.rate.Limit {
		c.violationf("the gateways enforce %d of a limit of %d (a gateway that left counts what its window counts) %s",
			limits, c.rate.Limit, func() string { return c.describe(now, smp) })
	}
	if counts > c.rate.Limit && !c.uncounted {
		c.violationf("the gateways' windows count %d requests together, over the limit of %d, %s",
			counts, c.rate.Limit, func() string { return c.describe(now, smp) })
	}
}

// violationf records a violation, describing the state only for the
// first few.
func (c *shareCluster) violationf(format string, sum, limit int64, state func() string) {
	c.mu.Lock()
	few := len(c.violations) < 3
	c.mu.Unlock()
	s := ""
	if few {
		s = state()
	}
	c.violation(fmt.Sprintf(format, sum, limit, s))
}

// runChecker checks every millisecond until the returned stop is
// called.
func (c *shareCluster) runChecker() (stop func()) {
	done, finished := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				c.check()
			}
		}
	}()
	return func() {
		close(done)
		<-finished
	}
}

// checkAdmissions checks that no windowSlots+1 consecutive slots (the
// span a window counts) hold more than the limit of the admitted
// requests across the gateways, counting only requests whose Take began
// and returned within them, so that no scheduling delay can make a false
// alarm. It returns the most it found.
func (c *shareCluster) checkAdmissions() int {
	c.mu.Lock()
	all := slices.Clone(c.admitted)
	c.mu.Unlock()
	slot := int64(c.rate.Window) / windowSlots
	slices.SortFunc(all, func(a, b admission) int { return int(a.t0/slot - b.t0/slot) })
	most, worst := 0, -1
	for i := range all {
		if i > 0 && all[i].t0/slot == all[i-1].t0/slot {
			continue
		}
		first := all[i].t0 / slot
		n := 0
		for j := i; j < len(all) && all[j].t0/slot <= first+windowSlots; j++ {
			if all[j].t1/slot <= first+windowSlots {
				n++
			}
		}
		if n > most {
			most, worst = n, i
		}
	}
	if int64(most) > c.rate.Limit {
		first := all[worst].t0 / slot
		per := make([]int, len(c.gws))
		for _, a := range all[worst:] {
			if a.t0/slot > first+windowSlots {
				break
			}
			if a.t1/slot <= first+windowSlots {
				per[a.gw]++
			}
		}
		c.t.Errorf("%d requests admitted across the gateways within %d consecutive slots of %v (one window's span) from %s, over the limit of %d; by gateway %v",
			most, windowSlots+1, time.Duration(slot), time.Unix(0, first*slot).Format("15:04:05.000000"), c.rate.Limit, per)
	}
	return most
}

// finish reports what the checks found, failing the test on a violation.
func (c *shareCluster) finish() {
	most := -1
	if !c.uncounted {
		most = c.checkAdmissions()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t.Logf("%d snapshots: at most %d enforced and %d counted together; %d admitted, at most %d in one window's span; %d table writes (limit %d)",
		c.samples, c.maxLimits, c.maxCounts, len(c.admitted), most, len(c.shares.history), c.rate.Limit)
	if c.nViolation > 0 {
		c.t.Errorf("%d invariant violation(s); the first:\n%s", c.nViolation, strings.Join(c.violations, "\n\n"))
	}
}

// loadFor runs workers goroutines for d, each taking from the gateway
// pick chooses (by worker and time since the start) with a short pause
// after each Take.
func (c *shareCluster) loadFor(d time.Duration, workers int, pick func(w int, since time.Duration) int) int {
	start := time.Now()
	var wg sync.WaitGroup
	var admitted atomic.Int64
	for w := range workers {
		wg.Go(func() {
			var rec []admission
			for since := time.Duration(0); since < d; since = time.Since(start) {
				g := pick(w, since)
				if g < 0 || c.gws[g].closed.Load() {
					time.Sleep(time.Millisecond)
					continue
				}
				if c.take(g, &rec) {
					admitted.Add(1)
				}
				time.Sleep(500*time.Microsecond + rand.N(3*time.Millisecond))
			}
			c.record(rec)
		})
	}
	wg.Wait()
	return int(admitted.Load())
}

// burstsFor fires, for d, bursts of 20 to 150 requests at once at a
// random gateway, with random pauses of up to 400 ms between them.
func (c *shareCluster) burstsFor(d time.Duration) int {
	start := time.Now()
	var admitted atomic.Int64
	var wg sync.WaitGroup
	for time.Since(start) < d {
		g, n := rand.N(len(c.gws)), 20+rand.N(131)
		for range n {
			wg.Go(func() {
				var rec []admission
				if c.take(g, &rec) {
					admitted.Add(1)
				}
				c.record(rec)
			})
		}
		time.Sleep(rand.N(400 * time.Millisecond))
	}
	wg.Wait()
	return int(admitted.Load())
}

// checkThroughout starts the checker and returns what stops it, checks
// once more and reports: defer c.checkThroughout()().
func (c *shareCluster) checkThroughout() (done func()) {
	stop := c.runChecker()
	return func() {
		stop()
		c.check()
		c.finish()
	}
}

// loadUntilStopped runs loadFor's load, 16 workers, until the returned
// stop is called, which returns how many were admitted.
func (c *shareCluster) loadUntilStopped(pick func(w int, since time.Duration) int) (stop func() int) {
	ctx, cancel := context.WithCancel(context.Background())
	loaded := make(chan int)
	go func() {
		var got int
		for ctx.Err() == nil {
			got += c.loadFor(100*time.Millisecond, 16, pick)
		}
		loaded <- got
	}()
	return func() int {
		cancel()
		return <-loaded
	}
}

// TestRateSharesInvariantUnderLoad: 3 and 5 gateways sharing a limit of
// 100 per 2 s, under a load spread over all of them, all on one, moving
// from one to the next every second, and random bursts, followers
// lagging each other by up to 3 ms a change. At every snapshot the
// enforced limits add up to at most 100 and the windows count at most
// 100 together; no window's span admits more than 100 across them.
func TestRateSharesInvariantUnderLoad(t *testing.T) {
	rate := Rate{Name: "r", Limit: 100, Window: 2 * time.Second}
	for _, n := range []int{3, 5} {
		t.Run(fmt.Sprintf("%d gateways", n), func(t *testing.T) {
			t.Parallel()
			c := newShareCluster(t, n, rate, 3*time.Millisecond, nil)
			stop := c.runChecker()
			const phase = 2 * time.Second
			const workers = 16
			got := c.loadFor(phase, workers, func(w int, _ time.Duration) int { return w % n })
			t.Logf("spread: %d admitted in %v", got, phase)
			got = c.loadFor(phase, workers, func(int, time.Duration) int { return n - 1 })
			t.Logf("all on g%d: %d admitted in %v", n-1, got, phase)
			got = c.loadFor(2*phase, workers, func(_ int, since time.Duration) int { return int(since/time.Second) % n })
			t.Logf("moving every second: %d admitted in %v", got, 2*phase)
			got = c.burstsFor(phase)
			t.Logf("random bursts: %d admitted in %v", got, phase)
			stop()
			c.check()
			c.finish()
		})
	}
}

// TestRateSharesGatewayLeaves: a gateway holding most of the limit
// leaves (its Meter is closed, and the others' membership drops it).
// What it admitted counts for a window still, so the others must not
// exceed what it leaves them until then; they get its share back a
// little over a window after they saw it leave.
func TestRateSharesGatewayLeaves(t *testing.T) {
	rate := Rate{Name: "r", Limit: 100, Window: 2 * time.Second}
	for _, n := range []int{3, 5} {
		t.Run(fmt.Sprintf("%d gateways", n), func(t *testing.T) {
			t.Parallel()
			c := newShareCluster(t, n, rate, 3*time.Millisecond, nil)
			defer c.checkThroughout()()
			// All the load on g0 until it holds at least 80.
			endLoad := c.loadUntilStopped(func(int, time.Duration) int { return 0 })
			var held int64
			deadline := time.Now().Add(5 * time.Second)
			for time.Now().Before(deadline) {
				if v, ok := c.shares.table(c.id); ok {
					if e, _ := v.Table.entry("g0"); e.Grant >= 80 {
						held = e.Grant
						break
					}
				}
				time.Sleep(5 * time.Millisecond)
			}
			t.Logf("g0 admitted %d", endLoad())
			if held == 0 {
				v, _ := c.shares.table(c.id)
				t.Fatalf("g0 never came to hold 80 of the limit: %+v", v)
			}
			// g0 leaves.
			c.gws[0].closed.Store(true)
			if err := c.gws[0].m.Close(); err != nil {
				t.Fatal(err)
			}
			left := time.Now()
			var ids []string
			for _, g := range c.gws[1:] {
				ids = append(ids, g.id)
			}
			for _, g := range c.gws[1:] {
				g.m.SetMembers(Members{Self: g.id, IDs: ids})
			}
			t.Logf("g0 left holding %d", held)
			// Everything on the others, until they enforce the whole limit.
			endLoad = c.loadUntilStopped(func(w int, _ time.Duration) int { return 1 + w%(n-1) })
			var back time.Duration
			for back == 0 && time.Since(left) < 3*rate.Window {
				_, smp := c.snapshot()
				var sum int64
				for _, s := range smp[1:] {
					sum += s.limit
				}
				if sum >= rate.Limit-int64(n) {
					back = time.Since(left)
				}
				time.Sleep(time.Millisecond)
			}
			if back > 0 {
				time.Sleep(rate.Window / 2) // load on, still checked
			}
			t.Logf("the others admitted %d", endLoad())
			if back == 0 {
				now, smp := c.snapshot()
				t.Fatalf("the others did not get g0's share back within %v of its leaving: %s", 3*rate.Window, c.describe(now, smp))
			}
			t.Logf("the others enforced the whole limit %v after g0 left (window %v)", back, rate.Window)
		})
	}
}

// calledFrom reports whether the caller's caller runs within a function
// whose name contains fn.
func calledFrom(fn string) bool {
	var pcs [24]uintptr
	frames := runtime.CallersFrames(pcs[:runtime.Callers(3, pcs[:])])
	for {
		f, more := frames.Next()
		if strings.Contains(f.Function, fn) {
			return true
		}
		if !more {
			return false
		}
	}
}

// TestRateSharesDeletionRace: a gateway that holds the whole limit and
// whose window has counted nothing for a window deletes the table, so
// that every gateway enforces its equal part again. evaluate reads the
// count, and only later lowers the window to 0 (lower), with the window
// open in between. A burst that lands in between is admitted under the
// old grant of 100; the table must then stay, granting g0 what its window
// counts, or g0 would count 100 against an equal part of 34 while the
// others, hearing the deletion, enforced 33 each: 166 in one window. To
// land the burst there every time, g0's clock (MeterOptions.Now) notices
// when rateShares.count reads its window empty and releases 100 requests
// then, and the meter's mutex is held meanwhile (as Meter.forget holds it
// while it looks at every account, or as a preempted goroutine would be
// late), so that the lowering, which takes it first, comes after the
// requests.
func TestRateSharesDeletionRace(t *testing.T) {
	rate := Rate{Name: "r", Limit: 100, Window: 2 * time.Second}
	var (
		armed atomic.Bool
		acct  atomic.Pointer[account]
		fire  = make(chan struct{})
		fired atomic.Int64
		c     *shareCluster
		// burstDone is closed once the burst's requests are through.
		burstDone = make(chan struct{})
	)
	now := func(i int) func() time.Time {
		if i != 0 {
			return nil
		}
		return func() time.Time {
			n := time.Now()
			if !armed.Load() || !calledFrom("(*rateShares).count") {
				return n
			}
			// count holds the account's mutex: its window is ours to read.
			a := acct.Load()
			j := slices.Index(a.rates, rate)
			w := a.windows[j]
			w.advance(n.UnixNano())
			if a.tabled[j] && w.sum == 0 && w.limit == rate.Limit && armed.CompareAndSwap(true, false) {
				fired.Store(n.UnixNano())
				close(fire)
				// Hold the meter's mutex, as forget does while it looks
				// at every account, until the burst is through: lower
				// waits for it, the requests (which do not need it) not.
				held := make(chan struct{})
				go func() {
					m := c.gws[0].m
					m.mu.Lock()
					close(held)
					select {
					case <-burstDone:
					case <-time.After(20 * time.Millisecond):
					}
					m.mu.Unlock()
				}()
				select {
				case <-held:
				case <-time.After(5 * time.Millisecond): // forget waits for this account
				}
			}
			return n
		}
	}
	c = newShareCluster(t, 3, rate, 3*time.Millisecond, now)
	acct.Store(c.gws[0].l.key.Load())
	defer c.checkThroughout()()

	// All the load on g0 until it holds the whole limit.
	endLoad := c.loadUntilStopped(func(int, time.Duration) int { return 0 })
	whole := func() bool {
		v, ok := c.shares.table(c.id)
		e, _ := v.Table.entry("g0")
		return ok && e.Grant == rate.Limit
	}
	deadline := time.Now().Add(5 * time.Second)
	for !whole() && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("g0 admitted %d", endLoad())
	if !whole() {
		v, _ := c.shares.table(c.id)
		t.Fatalf("g0 never came to hold the whole limit: %+v", v)
	}
	idle := time.Now()
	// 100 requests wait for g0's window to be found empty.
	var wg sync.WaitGroup
	var burst atomic.Int64
	for range rate.Limit {
		wg.Go(func() {
			select {
			case <-fire:
			case <-time.After(3 * rate.Window):
				return
			}
			var rec []admission
			if c.take(0, &rec) {
				burst.Add(1)
			}
			c.record(rec)
		})
	}
	armed.Store(true)
	wg.Wait()
	close(burstDone)
	if fired.Load() == 0 {
		now, smp := c.snapshot()
		t.Fatalf("g0's window was never found empty under the whole grant: %s", c.describe(now, smp))
	}
	at := time.Unix(0, fired.Load())
	t.Logf("g0's window found empty %v after its load stopped; %d of the burst admitted", at.Sub(idle), burst.Load())
	// Once g0 has written what it decided, the others take what they
	// are given, until a window after the burst.
	for _, ok := c.shares.table(c.id); ok && time.Since(at) < 500*time.Millisecond; _, ok = c.shares.table(c.id) {
		time.Sleep(time.Millisecond)
	}
	if _, ok := c.shares.table(c.id); !ok {
		t.Logf("g0 deleted the table %v after it found its window empty", time.Since(at))
	}
	var rec []admission
	others := 0
	for time.Since(at) < rate.Window-200*time.Millisecond {
		for g := 1; g < 3; g++ {
			if c.take(g, &rec) {
				others++
			}
		}
		time.Sleep(time.Millisecond)
	}
	c.record(rec)
	now2, smp := c.snapshot()
	t.Logf("then g1 and g2 admitted %d within the window; %s", others, c.describe(now2, smp))
}

// TestRateSharesOverGrantAfterJoin: a gateway whose window counts more
// than its entry grants (here because a third gateway joined while no
// table existed, which shrank its equal part from 50 to 34 after it had
// admitted 50: the documented exception while the membership changes)
// must not write its count as its grant once a table appears, which
// would make the grants add up to 116 of 100 with the membership steady
// (and etcd followers would refuse such a record as damaged): giving back
// "down to the count" is bounded by what its entry and the free part
// allow, and the window admits nothing until it counts less.
func TestRateSharesOverGrantAfterJoin(t *testing.T) {
	rate := Rate{Name: "r", Limit: 100, Window: 2 * time.Second}
	c := newShareCluster(t, 3, rate, 3*time.Millisecond, nil)
	c.uncounted = true
	two := []string{"g0", "g1"}
	for _, g := range c.gws[:2] {
		g.m.SetMembers(Members{Self: g.id, IDs: two})
	}
	var rec []admission
	for range 50 {
		if !c.take(0, &rec) {
			t.Fatal("g0 refused within its equal part of 50")
		}
	}
	all := []string{"g0", "g1", "g2"}
	for _, g := range c.gws {
		g.m.SetMembers(Members{Self: g.id, IDs: all})
	}
	// The membership is steady from here on.
	stop := c.runChecker()
	defer func() {
		stop()
		c.check()
		c.finish()
		v, _ := c.shares.table(c.id)
		t.Logf("store: rev %d %s", v.Rev, fmtEntries(v.Table.Entries))
	}()
	got := c.loadFor(time.Second, 8, func(w int, _ time.Duration) int { return 1 + w%2 })
	t.Logf("g0 admitted 50 of 2 gateways' equal parts; after g2 joined, g1 and g2 admitted %d in 1s", got)
}
