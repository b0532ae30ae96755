package webhook

import (
	"context"

	"github.com/aerodb/authority/client"
)

// WatchSubscribe adapts client.Watch: each subscription is a *client.Watcher
// over domains (all if none) from the given index (0: from now).
func WatchSubscribe(c *client.Client, domains ...string) Subscribe {
	return func(ctx context.Context, fromIndex uint64) (Source, error) {
		w, err := c.Watch(ctx, fromIndex, domains...)
		if err != nil {
			return nil, err
		}
		return w, nil
	}
}
