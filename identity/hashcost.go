package identity

import (
	"context"
	"fmt"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// hashCosts makes every password check take as long as the most
// expensive kind of hash a user may have, so that the time of a refusal
// tells neither whether the user exists nor which kind of hash they have.
//
// A kind is an algorithm with its cost parameters. The kinds are those of
// the configured users, of the stored users (read once, before the first
// check), of HashPassword (what the CLI writes), and any met later in the
// store. Each kind's cost is measured, as a moving average of the checks
// made with it; an unknown user is checked against a fake hash of the
// most expensive kind, and a check of a cheaper kind is padded (by
// sleeping, after giving back its hashing slot) to that kind's cost.
type hashCosts struct {
	mu    sync.Mutex
	kinds map[string]*kindCost
	worst *kindCost // the most expensive kind
}

type kindCost struct {
	name string
	fake string // a hash of this kind of a password nobody knows
	avg  time.Duration
}

// The weight of a new measurement in a kind's moving average.
const costWeight = 0.2

// hashKind names h's algorithm and cost parameters ("" if neither
// bcrypt nor argon2id).
func hashKind(h string) string {
	if isBcrypt(h) {
		cost, err := bcrypt.Cost([]byte(h))
		if err != nil {
			return ""
		}
		return fmt.Sprintf("bcrypt cost=%d", cost)
	}
	if p, key, err := parseArgon2id(h); err == nil {
		return fmt.Sprintf("argon2id m=%d,t=%d,p=%d,len=%d", p.memory, p.time, p.threads, len(key))
	}
	return ""
}

// add learns the kind of h, measuring it once if it is new, and reports
// whether it was new.
func (c *hashCosts) add(h string) bool {
	kind := hashKind(h)
	if kind == "" {
		return false
	}
	c.mu.Lock()
	_, known := c.kinds[kind]
	c.mu.Unlock()
	if known {
		return false
	}
	fake := FakeHashLike(h)
	start := time.Now()
	_, _ = ComparePassword(fake, "antitiming-calibration")
	took := time.Since(start)
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, known := c.kinds[kind]; known {
		return false
	}
	if c.kinds == nil {
		c.kinds = make(map[string]*kindCost)
	}
	k := &kindCost{name: kind, fake: fake, avg: took}
	c.kinds[kind] = k
	c.pickWorst()
	return true
}

// observe records that a check with a hash of h's kind took d.
func (c *hashCosts) observe(h string, d time.Duration) {
	kind := hashKind(h)
	c.mu.Lock()
	defer c.mu.Unlock()
	k := c.kinds[kind]
	if k == nil {
		return
	}
	k.avg += time.Duration(costWeight * float64(d-k.avg))
	c.pickWorst()
}

func (c *hashCosts) pickWorst() {
	for _, k := range c.kinds {
		if c.worst == nil || k.avg > c.worst.avg {
			c.worst = k
		}
	}
}

// fake returns the hash an unknown user is checked against: one of the
// most expensive kind.
func (c *hashCosts) fake() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.worst == nil {
		return fakeBcrypt
	}
	return c.worst.fake
}

// target is how long every check should take: the cost of the most
// expensive kind.
func (c *hashCosts) target() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.worst == nil {
		return 0
	}
	return c.worst.avg
}

// pad sleeps until target has passed since start, or ctx ends.
func (c *hashCosts) pad(ctx context.Context, start time.Time) {
	wait := time.Until(start.Add(c.target()))
	if wait <= 0 {
		return
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
