package dagwrap

import (
	"testing"

	"github.com/filecoin-project/dagstore"
	"github.com/filecoin-project/dagstore/shard"
)

func closedNow(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// A wait for a release ends with the release's event, and also with any
// event that leaves the shard not serving: the dagstore drops a release
// that finds the shard recovering without an event, and a blockstore's
// Close hung on it (seen with TestUnsealsBounded on the database backend).
func TestReleaseWaitsEnd(t *testing.T) {
	var r releases
	k := shard.KeyFromString("piece")
	serving := dagstore.ShardInfo{ShardState: dagstore.ShardStateServing}

	a, b := r.expect(k), r.expect(k)
	r.observe(dagstore.Trace{Key: k, Op: dagstore.OpShardRelease, After: serving})
	if closedNow(a) {
		t.Fatal("one of two expected releases ended the wait")
	}
	r.observe(dagstore.Trace{Key: shard.KeyFromString("other"), Op: dagstore.OpShardRelease})
	if closedNow(a) {
		t.Fatal("another shard's release ended the wait")
	}
	r.observe(dagstore.Trace{Key: k, Op: dagstore.OpShardRelease, After: dagstore.ShardInfo{ShardState: dagstore.ShardStateAvailable}})
	if !closedNow(a) || !closedNow(b) {
		t.Fatal("the last expected release did not end the waits")
	}

	c := r.expect(k)
	r.observe(dagstore.Trace{Key: k, Op: dagstore.OpShardAcquire, After: serving})
	if closedNow(c) {
		t.Fatal("an acquire ended the wait")
	}
	r.observe(dagstore.Trace{Key: k, Op: dagstore.OpShardRecover, After: dagstore.ShardInfo{ShardState: dagstore.ShardStateRecovering}})
	if !closedNow(c) {
		t.Fatal("the shard went recovering (its release will be dropped), and the wait goes on")
	}
}
