//go:build tools

// Package tools pins the independent witness the interop tests run against:
// filippo.io/torchwood's litewitness (c2sp.org/tlog-witness, Ed25519 cosignature/v1,
// SQLite state, key in an ssh-agent) and its witnessctl.
package tools

import (
	_ "filippo.io/torchwood/cmd/litewitness"
	_ "filippo.io/torchwood/cmd/witnessctl"
)
