package plugin

import (
	"bytes"
	"context"
	"os"
	"time"
)

// Watch reloads the live plugin from path whenever the file's content
// changes, checking every interval, until ctx ends. A file that fails to
// load is logged and counted (Stats.LoadFailures) and the previous version
// keeps serving; it is retried only when the file changes again. Replace
// the file atomically (write a temporary file, then rename) so a
// half-written module is never read.
func (e *Engine) Watch(ctx context.Context, path string, interval time.Duration) {
	var last []byte
	if id, ok := e.Live(); ok {
		if b, err := os.ReadFile(path); err == nil && SHA256Hex(b) == id.SHA256 {
			last = b
		}
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		b, err := os.ReadFile(path)
		switch {
		case err != nil:
			e.cfg.Logger.Warn("watch plugin file", "path", path, "err", err)
		case !bytes.Equal(b, last):
			last = b
			if id, err := e.load(ctx, b, path); err != nil {
				e.cfg.Logger.Error("reload plugin: keeping the previous version", "path", path, "err", err)
			} else {
				e.cfg.Logger.Info("plugin reloaded", "path", path, "plugin_sha256", id.SHA256, "signer", id.Signer)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
