package rarptable

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
	"go.uber.org/zap"

	"github.com/rarp-announce/rarp-announce/pkg/wait"
)

// Reloader loads tables into a Holder: once at start, on request (SIGHUP)
// and when a file changes (Watch). A table is built aside and swapped in
// only when it loaded without a problem; otherwise the table in service
// stays and the error says why.
type Reloader struct {
	Loader  *Loader
	Holder  *Holder
	Logger  *zap.Logger // nil: no logging
	Metrics *Metrics    // nil: not counted
	// Debounce is how long Watch waits after a change for more changes
	// before it reloads (0: 250 ms), so an editor's several writes make
	// one reload; never more than eight times it after the first.
	Debounce time.Duration

	// RetryMin and RetryMax bound the backoff of Start's background
	// retries (0: 1 s and 30 s).
	RetryMin, RetryMax time.Duration

	mu     sync.Mutex // one load at a time
	state  map[string]fileState
	loaded bool // a load succeeded: Start's retries stop
}

// fileState is what Watch compares to tell a real change of a table file
// from other activity in its directory.
type fileState struct {
	ino, dev uint64
	size     int64
	mtime    time.Time
	err      string
}

func statFile(path string) fileState {
	fi, err := os.Stat(path) // follows symlinks: a ConfigMap swap changes the target
	if err != nil {
		return fileState{err: err.Error()}
	}
	s := fileState{size: fi.Size(), mtime: fi.ModTime()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		s.ino, s.dev = st.Ino, st.Dev
	}
	return s
}

// Reload loads the files and swaps the new table in. why is logged
// ("start", "SIGHUP", "file changed").
func (r *Reloader) Reload(ctx context.Context, why string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	log := r.Logger
	if log == nil {
		log = zap.NewNop()
	}
	// Remember the files as they are before reading them: a change that
	// lands during the load is then seen as a change by Watch.
	st := map[string]fileState{}
	for _, f := range r.Loader.Files.Paths() {
		st[f] = statFile(f)
	}
	r.state = st
	res, err := r.Loader.Load(ctx)
	if err != nil && ctx.Err() != nil {
		// Stopping (SIGTERM while names waited on DNS): no bad table
		// to report or count.
		log.Info("table load cancelled", zap.String("trigger", why), zap.Error(err))
		return err
	}
	if err != nil {
		r.Metrics.failed()
		old := r.Holder.Load()
		log.Error("table not loaded; still serving the previous table",
			zap.String("trigger", why), zap.Int("entries", old.Len()), zap.String("problems", err.Error()))
		return err
	}
	old := r.Holder.Load()
	r.Holder.Store(res.Table)
	r.loaded = true
	r.Metrics.loaded(res)
	for _, w := range res.Warnings {
		log.Warn("table line not used", zap.String("line", w.String()))
	}
	log.Info("table loaded", zap.String("trigger", why), zap.Strings("files", r.Loader.Files.Paths()),
		zap.Int("entries", res.Table.Len()), zap.Int("previous_entries", old.Len()),
		zap.Int("host_names", res.Names), zap.Duration("took", res.Duration))
	return nil
}

// Start makes the first load of a starting responder. A table whose files
// can never load as they are (a problem in their text) is an error: the
// configuration is wrong, and the caller refuses to start (exit 2). A load
// that failed only for reasons that may pass by themselves (a host name
// that does not resolve while DNS is down at boot, a file not there yet;
// LoadError.Transient) is not: Start returns nil, the Holder serves what
// it held (an empty table: unknown MACs are not answered), and the load is
// retried in the background with backoff until one succeeds (or Watch or
// a SIGHUP loaded a table first) or ctx ends. The announcer must not stay
// down because the responder's DNS was late.
func (r *Reloader) Start(ctx context.Context) error {
	err := r.Reload(ctx, "start")
	if err == nil {
		return nil
	}
	var le *LoadError
	if !errors.As(err, &le) || !le.Transient() {
		return err
	}
	if r.Logger != nil {
		r.Logger.Warn("responder table not loaded at start; retrying in the background, unknown MACs are not answered meanwhile",
			zap.Error(err))
	}
	go r.retry(ctx)
	return nil
}

// retry reloads with exponential backoff until a load has succeeded.
func (r *Reloader) retry(ctx context.Context) {
	b := wait.Backoff{Min: r.RetryMin, Max: r.RetryMax}
	if b.Min <= 0 {
		b.Min = time.Second
	}
	if b.Max <= 0 {
		b.Max = 30 * time.Second
	}
	for wait.Sleep(ctx.Done(), b.Next()) {
		if r.Loaded() || r.Reload(ctx, "retry after a failed start") == nil {
			return
		}
	}
}

// Loaded reports whether a table has been loaded since the Reloader was
// made (after a failed Start, whether the responder serves a real table).
func (r *Reloader) Loaded() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.loaded
}

// changed reports whether any table file differs from when it was last
// loaded.
func (r *Reloader) changed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, f := range r.Loader.Files.Paths() {
		if statFile(f) != r.state[f] {
			return true
		}
	}
	return false
}

// Watch reloads whenever a table file changes, until ctx ends. It watches
// the files' directories rather than the files, so a file replaced by
// rename (editors, config management) or a Kubernetes ConfigMap's
// symlink swap is seen, and a file that is deleted and created again is
// picked up. Events in a directory that leave the table files unchanged
// do not reload.
func (r *Reloader) Watch(ctx context.Context) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch table files: %w", err)
	}
	defer w.Close()
	dirs := map[string]bool{}
	for _, f := range r.Loader.Files.Paths() {
		d := filepath.Dir(f)
		if dirs[d] {
			continue
		}
		if err := w.Add(d); err != nil {
			return fmt.Errorf("watch %s: %w", d, err)
		}
		dirs[d] = true
	}
	debounce := r.Debounce
	if debounce <= 0 {
		debounce = 250 * time.Millisecond
	}
	// Each event puts the look at the files off by debounce (a file
	// written in several steps is read once, whole), but never more than
	// settleMax past the first event not looked at yet: another file in
	// the same directory changing more often than debounce (a log, a
	// lease file) would otherwise put it off for ever.
	settleMax := 8 * debounce
	var first time.Time // the first event since the last look (zero: none)
	// A change between the last load and the watches added above made
	// no event (a table edited while the daemon was starting): look at
	// the files once now, as after an event.
	timer := time.NewTimer(debounce)
	defer timer.Stop()
	later := func() {
		now := time.Now()
		if first.IsZero() {
			first = now
		}
		timer.Reset(max(0, min(debounce, first.Add(settleMax).Sub(now))))
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case _, ok := <-w.Events:
			if !ok {
				return errors.New("table file watcher closed")
			}
			later()
		case err, ok := <-w.Errors:
			if !ok {
				return errors.New("table file watcher closed")
			}
			// An overflow loses events: check the files anyway.
			if r.Logger != nil {
				r.Logger.Warn("table file watcher", zap.Error(err))
			}
			later()
		case <-timer.C:
			first = time.Time{}
			if r.changed() {
				_ = r.Reload(ctx, "file changed")
			}
		}
	}
}
