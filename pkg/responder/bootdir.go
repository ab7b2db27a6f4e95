package responder

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
	"go.uber.org/zap"
)

// bootDir is rarpd's boot-file rule: answer only when the boot directory
// holds a file whose name starts with the mapped IP in 8 upper-case hex
// digits ("0A630001", "0A630001.SUN4M"). rarpd reads the directory for
// every request; this keeps the set of addresses in memory and rebuilds
// it when the directory changes.
type bootDir struct {
	path string
	set  atomic.Pointer[map[uint32]struct{}]
	log  *zap.Logger
	mu   sync.Mutex
}

func newBootDir(path string, log *zap.Logger) (*bootDir, error) {
	b := &bootDir{path: path, log: log}
	if err := b.refresh(); err != nil {
		return nil, err
	}
	return b, nil
}

func (b *bootDir) has(ip uint32) bool {
	_, ok := (*b.set.Load())[ip]
	return ok
}

// refresh reads the directory again. On error the previous set stays.
func (b *bootDir) refresh() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	ents, err := os.ReadDir(b.path)
	if err != nil {
		return fmt.Errorf("boot directory: %w", err)
	}
	set := make(map[uint32]struct{}, len(ents))
	for _, e := range ents {
		if ip, ok := bootName(e.Name()); ok {
			set[ip] = struct{}{}
		}
	}
	b.set.Store(&set)
	return nil
}

// bootName reads the address a boot file name stands for: its first 8
// characters as upper-case hex, as rarpd compares them with "%08X".
func bootName(name string) (uint32, bool) {
	if len(name) < 8 {
		return 0, false
	}
	for i := 0; i < 8; i++ {
		c := name[i]
		if !('0' <= c && c <= '9' || 'A' <= c && c <= 'F') {
			return 0, false
		}
	}
	v, err := strconv.ParseUint(name[:8], 16, 32)
	return uint32(v), err == nil
}

// watch refreshes the set when the directory changes, until ctx ends.
func (b *bootDir) watch(ctx context.Context) {
	w, err := fsnotify.NewWatcher()
	if err == nil {
		err = w.Add(b.path)
	}
	if err != nil {
		b.log.Warn("boot directory changes will be seen only on SIGHUP", zap.String("dir", b.path), zap.Error(err))
		if w != nil {
			w.Close()
		}
		return
	}
	defer w.Close()
	t := time.NewTimer(time.Hour)
	t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case _, ok := <-w.Events:
			if !ok {
				return
			}
			t.Reset(100 * time.Millisecond)
		case _, ok := <-w.Errors:
			if !ok {
				return
			}
			t.Reset(100 * time.Millisecond)
		case <-t.C:
			if err := b.refresh(); err != nil {
				b.log.Error("boot directory not read; keeping the previous list", zap.Error(err))
			}
		}
	}
}
