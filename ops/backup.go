package ops

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-apikeys/caddy-apikeys/keystore"
	"github.com/caddy-apikeys/caddy-apikeys/wire"
)

// Snapshot is a consistent copy of a gateway's store on its way to a
// backup file: a bbolt file of Size bytes holding Counts records, as of
// Taken. Its bytes are read once, with WriteTo; Close releases it.
type Snapshot struct {
	Size   int64
	Counts keystore.Counts
	Taken  time.Time

	writeTo func(io.Writer) (int64, error)
	close   func() error
}

// WriteTo writes the snapshot's bytes to w.
func (s Snapshot) WriteTo(w io.Writer) (int64, error) { return s.writeTo(w) }

// Close releases the snapshot (a read transaction, a response body).
func (s Snapshot) Close() error { return s.close() }

// Headers of a snapshot on the admin API, beside Content-Length.
const (
	headerCounts = "Apikeys-Backup-Counts"
	headerTaken  = "Apikeys-Backup-Taken"
)

// Backup takes a consistent snapshot of the store while the gateway keeps
// serving: the admin API streams it (GET /apikeys/backup), and
// `caddy apikeys backup` writes it to a file and checks it.
var Backup = register(&Op[None, Snapshot]{
	Name: "back up the store", Method: http.MethodGet, Path: "backup",
	Run: func(ctx context.Context, env *Env, _ None) (Snapshot, error) {
		sn, ok := env.Keyring.Store().(keystore.Snapshotter)
		if !ok {
			return Snapshot{}, wire.Fail(http.StatusNotImplemented, "this store cannot be backed up here: use its own backup tools")
		}
		s, err := sn.Snapshot(ctx)
		if err != nil {
			return Snapshot{}, err
		}
		c := s.Counts()
		env.event("store backed up", zap.Int("keys", c.Keys), zap.Int("users", c.Users), zap.Int("credit_accounts", c.Credits), zap.Int64("bytes", s.Size()))
		return Snapshot{Size: s.Size(), Counts: s.Counts(), Taken: time.Now(), writeTo: s.WriteTo, close: s.Close}, nil
	},
})

// serve writes the snapshot as the admin API's answer.
func (s Snapshot) serve(w http.ResponseWriter) error {
	defer s.Close()
	counts, _ := json.Marshal(s.Counts)
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Content-Length", strconv.FormatInt(s.Size, 10))
	h.Set("Content-Disposition", `attachment; filename="apikeys-backup.db"`)
	h.Set(headerCounts, string(counts))
	h.Set(headerTaken, s.Taken.UTC().Format(time.RFC3339Nano))
	w.WriteHeader(http.StatusOK)
	// Once the answer has begun, a failure can only cut it short: the
	// receiver counts the bytes against Content-Length.
	if _, err := s.WriteTo(deadlineWriter{w, http.NewResponseController(w)}); err != nil {
		return &CutShortError{Err: err}
	}
	return nil
}

// streamStall is how long a backup's receiver may take to accept the next
// bytes before the answer is cut short: a stalled receiver holds a file
// and a connection, not the gateway's shutdown.
const streamStall = 30 * time.Second

// deadlineWriter moves the connection's write deadline before each write.
type deadlineWriter struct {
	w  io.Writer
	rc *http.ResponseController
}

func (d deadlineWriter) Write(p []byte) (int, error) {
	_ = d.rc.SetWriteDeadline(time.Now().Add(streamStall)) // unsupported: no deadline
	return d.w.Write(p)
}

// CutShortError says a streamed answer was cut short (the client left, or
// the store failed) after it had begun: nothing more can be written to
// the client, only logged.
type CutShortError struct{ Err error }

func (e *CutShortError) Error() string { return "answer cut short: " + e.Err.Error() }
func (e *CutShortError) Unwrap() error { return e.Err }

// receive takes the snapshot from the admin API's answer, which it then
// owns.
func (s *Snapshot) receive(res *http.Response) error {
	if err := json.Unmarshal([]byte(res.Header.Get(headerCounts)), &s.Counts); err != nil {
		_ = res.Body.Close()
		return fmt.Errorf("the admin API's backup has no valid %s header: %w", headerCounts, err)
	}
	taken, err := time.Parse(time.RFC3339Nano, res.Header.Get(headerTaken))
	if err != nil || res.ContentLength < 0 {
		_ = res.Body.Close()
		return errors.New("the admin API's backup has no length or time")
	}
	s.Size, s.Taken = res.ContentLength, taken
	s.writeTo = func(w io.Writer) (int64, error) { return io.Copy(w, res.Body) }
	s.close = res.Body.Close
	return nil
}

// streamed is an operation's output that is a stream, not JSON.
type streamed interface {
	serve(w http.ResponseWriter) error
}

// received is the pointer to such an output, filled from a response.
type received interface {
	receive(res *http.Response) error
}
