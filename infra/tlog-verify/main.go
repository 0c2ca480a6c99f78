// Command tlog-verify checks what the pcvhub ledger published with implementations that
// share no code with it:
//
//   - the checkpoint's Ed25519 line with golang.org/x/mod/sumdb/note (signed-note);
//   - its ML-DSA-44 line (C2SP tlog-cosignature v1.1.0-rc.1, type 0x06) with
//     github.com/cloudflare/circl;
//   - the root recomputed from the C2SP tlog-tiles hash tiles, and every entry bundle
//     against its leaf hashes, with golang.org/x/mod/sumdb/tlog (whose tile reader
//     checks each tile against the signed root as it reads it);
//   - the inclusion and consistency proofs the ledger produced, with
//     github.com/transparency-dev/merkle, and against the proofs tlog builds from the tiles.
//
// Usage: tlog-verify -tiles DIR|URL -vkey VKEY -mldsa-vkey VKEY [-proofs FILE]
//        [-witness-vkey VKEY]... [-witness-policy FILE]
//
// With -witness-vkey, each witness's cosignature line on the checkpoint must verify
// (transparency-dev/formats, witness.go); with -witness-policy, the checkpoint must
// satisfy that witness policy.
//
// With a URL (http://127.0.0.1:PORT/, as `pcvhub ledger serve` prints it) every file is
// fetched over HTTP, as a tlog client would.
//
// It prints one "ok ..." line per check and exits 0, or prints what failed to stderr and
// exits 1. FILE is JSON: {"inclusion": [{"index", "size", "path"}],
// "consistency": [{"old_size", "new_size", "path"}]}, paths as base64 hashes.
package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/cloudflare/circl/sign/mldsa/mldsa44"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

const tileHeight = 8 // C2SP tlog-tiles: 256 hashes wide

type proofs struct {
	Inclusion []struct {
		Index int64    `json:"index"`
		Size  int64    `json:"size"`
		Path  [][]byte `json:"path"`
	} `json:"inclusion"`
	Consistency []struct {
		OldSize int64    `json:"old_size"`
		NewSize int64    `json:"new_size"`
		Path    [][]byte `json:"path"`
	} `json:"consistency"`
}

func main() {
	tiles := flag.String("tiles", "", "folder or http:// URL holding checkpoint and tile/")
	vkey := flag.String("vkey", "", "the log's Ed25519 note verifier key")
	pqVkey := flag.String("mldsa-vkey", "", "the log's ML-DSA-44 cosignature verifier key")
	proofFile := flag.String("proofs", "", "JSON file of proofs to check (optional)")
	var witnessVkeys stringList
	flag.Var(&witnessVkeys, "witness-vkey", "a witness's cosignature vkey (type 0x04 or 0x06) whose line must verify (repeatable)")
	witnessPolicy := flag.String("witness-policy", "", "a witness policy file the checkpoint's cosignatures must satisfy (optional)")
	flag.Parse()
	if *tiles == "" || *vkey == "" || *pqVkey == "" {
		fail(errors.New("usage: tlog-verify -tiles DIR -vkey VKEY -mldsa-vkey VKEY [-proofs FILE]"))
	}
	if err := run(*tiles, *vkey, *pqVkey, *proofFile, witnessVkeys, *witnessPolicy); err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "tlog-verify:", err)
	os.Exit(1)
}

// source reads a log's files from a folder or from an HTTP prefix.
type source string

func (s source) read(rel string) ([]byte, error) {
	if !strings.HasPrefix(string(s), "http://") && !strings.HasPrefix(string(s), "https://") {
		return os.ReadFile(filepath.Join(string(s), rel))
	}
	resp, err := http.Get(strings.TrimSuffix(string(s), "/") + "/" + rel)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", rel, resp.Status)
	}
	return io.ReadAll(resp.Body)
}

func run(dir, vkey, pqVkey, proofFile string, witnessVkeys []string, witnessPolicy string) error {
	src := source(dir)
	raw, err := src.read("checkpoint")
	if err != nil {
		return err
	}
	verifier, err := note.NewVerifier(vkey)
	if err != nil {
		return fmt.Errorf("vkey: %w", err)
	}
	n, err := note.Open(raw, note.VerifierList(verifier))
	if err != nil {
		return fmt.Errorf("checkpoint: Ed25519 note signature: %w", err)
	}
	origin, tree, err := parseCheckpoint(n.Text)
	if err != nil {
		return err
	}
	fmt.Printf("ok checkpoint Ed25519 line (x/mod/sumdb/note): %s size %d root %s\n",
		origin, tree.N, tree.Hash)

	if err := checkMLDSA(n, pqVkey, origin, tree); err != nil {
		return err
	}
	fmt.Printf("ok checkpoint ML-DSA-44 line (circl)\n")

	if len(witnessVkeys) > 0 || witnessPolicy != "" {
		if err := checkWitnesses(raw, verifier, witnessVkeys, witnessPolicy); err != nil {
			return err
		}
	}

	reader := tlog.TileHashReader(tree, tileDir{src})
	root, err := tlog.TreeHash(tree.N, reader)
	if err != nil {
		return fmt.Errorf("tiles: %w", err)
	}
	if root != tree.Hash {
		return fmt.Errorf("tiles: root %s, checkpoint says %s", root, tree.Hash)
	}
	fmt.Printf("ok root from tiles (x/mod/sumdb/tlog)\n")

	if err := checkEntries(src, tree.N, reader); err != nil {
		return err
	}
	fmt.Printf("ok %d entries hash to their leaf hashes\n", tree.N)

	if proofFile == "" {
		return nil
	}
	data, err := os.ReadFile(proofFile)
	if err != nil {
		return err
	}
	var ps proofs
	if err := json.Unmarshal(data, &ps); err != nil {
		return fmt.Errorf("%s: %w", proofFile, err)
	}
	return checkProofs(ps, tree, reader)
}

// parseCheckpoint reads a C2SP tlog-checkpoint body: origin, size, base64 root.
func parseCheckpoint(text string) (string, tlog.Tree, error) {
	lines := strings.Split(text, "\n")
	if len(lines) != 4 || lines[3] != "" {
		return "", tlog.Tree{}, fmt.Errorf("checkpoint body is not three lines: %q", text)
	}
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil || size < 0 || strconv.FormatInt(size, 10) != lines[1] {
		return "", tlog.Tree{}, fmt.Errorf("checkpoint size %q", lines[1])
	}
	hash, err := tlog.ParseHash(lines[2])
	if err != nil {
		return "", tlog.Tree{}, fmt.Errorf("checkpoint root %q: %w", lines[2], err)
	}
	return lines[0], tlog.Tree{N: size, Hash: hash}, nil
}

// checkMLDSA verifies the log's tlog-cosignature ML-DSA-44 line over the subtree/v1
// cosigned_message. note.Open left it among the unverified signatures (unknown type).
func checkMLDSA(n *note.Note, vkey, origin string, tree tlog.Tree) error {
	parts := strings.SplitN(vkey, "+", 3)
	if len(parts) != 3 {
		return fmt.Errorf("ML-DSA-44 vkey is not name+id+key")
	}
	name := parts[0]
	material, err := base64.StdEncoding.DecodeString(parts[2])
	if err != nil || len(material) != 1+mldsa44.PublicKeySize || material[0] != 0x06 {
		return fmt.Errorf("ML-DSA-44 vkey: not a type 0x06 key of %d bytes", mldsa44.PublicKeySize)
	}
	id := sha256.Sum256(append([]byte(name+"\n"), material...))
	if hex.EncodeToString(id[:4]) != parts[1] {
		return fmt.Errorf("ML-DSA-44 vkey: key id %s, key hashes to %x", parts[1], id[:4])
	}
	var pub mldsa44.PublicKey
	if err := pub.UnmarshalBinary(material[1:]); err != nil {
		return fmt.Errorf("ML-DSA-44 vkey: %w", err)
	}
	for _, sig := range n.UnverifiedSigs {
		if sig.Name != name || sig.Hash != binary.BigEndian.Uint32(id[:4]) {
			continue
		}
		b, err := base64.StdEncoding.DecodeString(sig.Base64)
		if err != nil || len(b) != 4+8+mldsa44.SignatureSize {
			return fmt.Errorf("ML-DSA-44 line of %s: not a key id, timestamp and signature", name)
		}
		var msg bytes.Buffer
		msg.WriteString("subtree/v1\n\x00")
		msg.WriteByte(byte(len(name)))
		msg.WriteString(name)
		msg.Write(b[4:12])
		msg.WriteByte(byte(len(origin)))
		msg.WriteString(origin)
		binary.Write(&msg, binary.BigEndian, uint64(0))
		binary.Write(&msg, binary.BigEndian, uint64(tree.N))
		msg.Write(tree.Hash[:])
		if !mldsa44.Verify(&pub, msg.Bytes(), nil, b[12:]) {
			return fmt.Errorf("ML-DSA-44 line of %s does not verify", name)
		}
		return nil
	}
	return fmt.Errorf("checkpoint carries no ML-DSA-44 line of %s", name)
}

// tileDir reads C2SP tile paths (tile/<L>/<N>[.p/<W>], without sumdb's height element).
type tileDir struct{ src source }

func (d tileDir) Height() int { return tileHeight }

func (d tileDir) ReadTiles(tiles []tlog.Tile) ([][]byte, error) {
	out := make([][]byte, len(tiles))
	for i, t := range tiles {
		data, err := d.src.read(c2spPath(strconv.Itoa(t.L), t.N, t.W))
		if err != nil {
			return nil, err
		}
		out[i] = data
	}
	return out, nil
}

func (d tileDir) SaveTiles([]tlog.Tile, [][]byte) {}

func c2spPath(level string, n int64, w int) string {
	s := fmt.Sprintf("%03d", n)
	for len(s)%3 != 0 {
		s = "0" + s
	}
	var groups []string
	for i := 0; i < len(s); i += 3 {
		groups = append(groups, s[i:i+3])
	}
	for i := range groups[:len(groups)-1] {
		groups[i] = "x" + groups[i]
	}
	p := "tile/" + level + "/" + strings.Join(groups, "/")
	if w != 1<<tileHeight {
		p += ".p/" + strconv.Itoa(w)
	}
	return p
}

// checkEntries reads each entry bundle (u16-length-prefixed entries) and compares every
// entry's RFC 6962 leaf hash with the (signed-root-checked) hash the tiles hold for it.
func checkEntries(src source, size int64, reader tlog.HashReader) error {
	for start := int64(0); start < size; start += 256 {
		w := int(min(256, size-start))
		rel := c2spPath("entries", start/256, w)
		data, err := src.read(rel)
		if err != nil {
			return err
		}
		// one read per bundle: the tile reader authenticates the tiles once for all 256
		indexes := make([]int64, w)
		for i := range indexes {
			indexes[i] = tlog.StoredHashIndex(0, start+int64(i))
		}
		want, err := reader.ReadHashes(indexes)
		if err != nil {
			return fmt.Errorf("leaf hashes of leaves %d..%d (%s or a tile above it): %w",
				start, start+int64(w)-1, c2spPath("0", start/256, w), err)
		}
		for i := 0; i < w; i++ {
			if len(data) < 2 {
				return fmt.Errorf("%s: entry %d is missing", rel, i)
			}
			l := int(binary.BigEndian.Uint16(data))
			if len(data) < 2+l {
				return fmt.Errorf("%s: entry %d is cut short", rel, i)
			}
			if tlog.RecordHash(data[2:2+l]) != want[i] {
				return fmt.Errorf("%s: entry %d (leaf %d) does not hash to its leaf hash", rel, i, start+int64(i))
			}
			data = data[2+l:]
		}
		if len(data) != 0 {
			return fmt.Errorf("%s: %d bytes after its %d entries", rel, len(data), w)
		}
	}
	return nil
}

func checkProofs(ps proofs, tree tlog.Tree, reader tlog.HashReader) error {
	hasher := rfc6962.DefaultHasher
	for _, p := range ps.Inclusion {
		if p.Size > tree.N {
			return fmt.Errorf("inclusion proof for size %d beyond the checkpoint's %d", p.Size, tree.N)
		}
		root, err := tlog.TreeHash(p.Size, reader)
		if err != nil {
			return err
		}
		leaf, err := reader.ReadHashes([]int64{tlog.StoredHashIndex(0, p.Index)})
		if err != nil {
			return err
		}
		if err := proof.VerifyInclusion(hasher, uint64(p.Index), uint64(p.Size), leaf[0][:], p.Path, root[:]); err != nil {
			return fmt.Errorf("inclusion proof of leaf %d in %d (transparency-dev/merkle): %w", p.Index, p.Size, err)
		}
		theirs, err := tlog.ProveRecord(p.Size, p.Index, reader)
		if err != nil {
			return err
		}
		if !samePath(theirs, p.Path) {
			return fmt.Errorf("inclusion proof of leaf %d in %d differs from x/mod/sumdb/tlog's", p.Index, p.Size)
		}
	}
	fmt.Printf("ok %d inclusion proofs (transparency-dev/merkle, equal to x/mod/sumdb/tlog's)\n", len(ps.Inclusion))
	for _, p := range ps.Consistency {
		if p.NewSize > tree.N {
			return fmt.Errorf("consistency proof to size %d beyond the checkpoint's %d", p.NewSize, tree.N)
		}
		oldRoot, err := tlog.TreeHash(p.OldSize, reader)
		if err != nil {
			return err
		}
		newRoot, err := tlog.TreeHash(p.NewSize, reader)
		if err != nil {
			return err
		}
		if err := proof.VerifyConsistency(hasher, uint64(p.OldSize), uint64(p.NewSize), p.Path, oldRoot[:], newRoot[:]); err != nil {
			return fmt.Errorf("consistency proof from %d to %d (transparency-dev/merkle): %w", p.OldSize, p.NewSize, err)
		}
		if p.OldSize > 0 {
			theirs, err := tlog.ProveTree(p.NewSize, p.OldSize, reader)
			if err != nil {
				return err
			}
			if !samePath(theirs, p.Path) {
				return fmt.Errorf("consistency proof from %d to %d differs from x/mod/sumdb/tlog's", p.OldSize, p.NewSize)
			}
		}
	}
	fmt.Printf("ok %d consistency proofs (transparency-dev/merkle, equal to x/mod/sumdb/tlog's)\n", len(ps.Consistency))
	return nil
}

func samePath(theirs []tlog.Hash, ours [][]byte) bool {
	if len(theirs) != len(ours) {
		return false
	}
	for i := range theirs {
		if !bytes.Equal(theirs[i][:], ours[i]) {
			return false
		}
	}
	return true
}
