package agent

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/aerodb/authority/client"
	"github.com/aerodb/authority/jepsen-like/history"
)

func TestAcquireOutcome(t *testing.T) {
	live := context.Background()
	ended, cancel := context.WithCancel(context.Background())
	cancel()
	for _, c := range []struct {
		ctx  context.Context
		err  error
		want string
	}{
		{live, fmt.Errorf("%w: domain %q is held", client.ErrFailedPrecondition, "fence"), history.Fail},
		{live, client.ErrNotLeader, history.Fail},
		{live, errors.New("rpc error: code = Unavailable desc = connection refused"), history.Fail},
		{live, fmt.Errorf("%w: reading it back failed", client.ErrOutcomeUnknown), history.Info},
		// The grant committed; its first renewal did not come in time.
		{live, fmt.Errorf("authority: first renewal of %q: %w", "fence", context.DeadlineExceeded), history.Info},
		{live, client.ErrLeaseLost, history.Info},
		{live, client.ErrLeaseExpired, history.Info},
		{ended, client.ErrFailedPrecondition, history.Info},
	} {
		if got := acquireOutcome(c.ctx, c.err); got != c.want {
			t.Errorf("acquireOutcome(%v) = %s, want %s", c.err, got, c.want)
		}
	}
}
