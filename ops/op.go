// Package ops holds the operator's operations on keys and users, each
// defined once: its name, where the admin API serves it, what it takes,
// what it gives and how it fails. The admin API serves them all (Serve),
// and `caddy apikeys` runs them through a Runner: Remote over a running
// gateway's admin API, or Local on a store it opened (--db). Operators are
// trusted: they act on any owner's keys and may give keys any scope of the
// vocabulary, and the per-owner cap does not hold them; the rest of the
// key policy (lifetimes, vocabulary, titles) does. It has no dependency on
// Caddy.
package ops

import (
	"context"

	"go.uber.org/zap"

	"github.com/caddy-apikeys/caddy-apikeys/keystore"
	"github.com/caddy-apikeys/caddy-apikeys/notify"
)

// Env is what operations act on and tell of what they did.
type Env struct {
	// Keyring is the running gateway's, or one over a store opened here.
	Keyring *keystore.Keyring
	// Audit receives an event for every change.
	Audit *zap.Logger
	// Via names the surface in audit events and notices: "admin_api" or
	// "cli".
	Via string
	// Remote is the admin API client's address, if any.
	Remote string
	// Offline says the store was opened directly: the users a config
	// declares are not known.
	Offline bool
	// Counters count keys made and removed; nil counts nothing.
	Counters Counters
	// Publish queues notices of what happened to keys; nil sends none (a
	// stopped gateway has no notify endpoints).
	Publish func(context.Context, ...notify.Event)
}

// Counters count what operations did to keys, for the gateway's metrics.
type Counters interface {
	// Minted counts keys created.
	Minted(n int)
	// Deleted counts keys deleted or revoked.
	Deleted(n int)
	// Leaked counts keys reported leaked.
	Leaked(n int)
}

func (e *Env) event(msg string, fields ...zap.Field) {
	fields = append(fields, zap.String("via", e.Via))
	if e.Remote != "" {
		fields = append(fields, zap.String("remote_addr", e.Remote))
	}
	e.Audit.Info(msg, fields...)
}

func (e *Env) notify(ctx context.Context, events ...notify.Event) {
	if e.Publish != nil && len(events) > 0 {
		e.Publish(ctx, events...)
	}
}

func (e *Env) count(f func(Counters)) {
	if e.Counters != nil {
		f(e.Counters)
	}
}

// None is the input of an operation that takes nothing, and the output of
// one that answers nothing (204).
type None struct{}

// Op is one operation, defined once. The admin API serves it at Method
// and Path (under /apikeys/); In's fields tagged `path:"<name>"` are the
// path's {<name>} segments, the others come from the query string (GET,
// DELETE) or the JSON body (POST, PUT), named as their json tags say.
type Op[In, Out any] struct {
	// Name says what it does, for help and errors, e.g. "create a key".
	Name string
	// Method and Path say where the admin API serves it, e.g. "POST"
	// and "keys/{id}/disable".
	Method, Path string
	// Run does it.
	Run func(ctx context.Context, env *Env, in In) (Out, error)
}

// route is an Op without its types, as Serve and the runners see it.
type route interface {
	name() string
	method() string
	path() string
	// newInput returns a pointer to a zero In.
	newInput() any
	// newOutput returns a pointer to a zero Out.
	newOutput() any
	// run runs the operation on *in.
	run(ctx context.Context, env *Env, in any) (any, error)
}

func (o *Op[In, Out]) name() string   { return o.Name }
func (o *Op[In, Out]) method() string { return o.Method }
func (o *Op[In, Out]) path() string   { return o.Path }
func (o *Op[In, Out]) newInput() any  { return new(In) }
func (o *Op[In, Out]) newOutput() any { return new(Out) }

func (o *Op[In, Out]) run(ctx context.Context, env *Env, in any) (any, error) {
	return o.Run(ctx, env, *in.(*In))
}

// A Runner runs operations where they happen.
type Runner interface {
	// call runs op with the input *in and stores its output in *out.
	call(ctx context.Context, op route, in, out any) error
	// Close releases what the runner holds.
	Close() error
}

// Do runs op with in on r.
func Do[In, Out any](ctx context.Context, r Runner, op *Op[In, Out], in In) (Out, error) {
	var out Out
	err := r.call(ctx, op, &in, &out)
	return out, err
}

// Local runs operations on an Env of this process.
type Local struct {
	Env *Env
	// Release, if set, is called by Close: it lets go of the store.
	Release func() error
}

func (l *Local) call(ctx context.Context, op route, in, out any) error {
	res, err := op.run(ctx, l.Env, in)
	if err != nil {
		return err
	}
	assign(out, res)
	return nil
}

// Close releases the store.
func (l *Local) Close() error {
	if l.Release == nil {
		return nil
	}
	return l.Release()
}
